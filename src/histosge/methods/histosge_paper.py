"""``histosge-paper``: HisToSGE as the authors published it (``HisToSGE.paper()``).

The network on image features and grid position only, the authors' schedule: 1000 fixed
epochs, groups of 50, lr 1e-3, no early stopping (``model.train.PAPER_CONFIG``). It keeps no
training spot out of its fit, so its per-gene reliability refits the network on random folds.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..model.contexts import Spots
from ..model.parts import Projector
from ..model.train import PAPER_CONFIG, TrainConfig
from ..model.train import fit as fit_network
from ._histosge import HisToSGEBase
from ._registry import builtin


@builtin("histosge-paper")  # its spec: methods/_builtin.py
class HisToSGEPaper(HisToSGEBase):
    """The paper's model; the parameters are ``HisToSGEBase``'s (only ``network`` and ``seed`` are read)."""

    NETWORK: ClassVar[TrainConfig] = PAPER_CONFIG

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None, progress: bool = False,
            reliability: bool = False) -> HisToSGEPaper:
        y = np.asarray(y, np.float32)
        self._start(train, reliability)
        self.network_ = fit_network(train.features, train.rows, train.cols, y, self._config(), progress=progress)
        self.probe_ = Projector.fit(train.features)
        self._fit_novelty(train.features)
        self._scores_from(None, y)
        if reliability:
            self._reliability(train, y, progress)
        return self

    def _reliability(self, train: Spots, y: np.ndarray, progress: bool) -> None:
        """Refit the network on random folds of the training spots (held out as ``recover`` holds
        them out) and score what it predicts for the spots it did not see."""
        from ..model.reliability import REFIT_FOLDS, estimate, random_folds, sparse_genes

        folds = random_folds(len(y), REFIT_FOLDS, self.seed)
        oof = np.zeros_like(y)
        for f in np.unique(folds):
            out = folds == f
            net = fit_network(train.features[~out], train.rows[~out], train.cols[~out], y[~out], self._config(),
                              progress=progress)
            oof[out] = net.predict(train.features[out], train.rows[out], train.cols[out])
        self.reliability_ = estimate(y, np.maximum(oof, 0), folds, sparse=sparse_genes(y),
                                     scope=f"the network refitted on {REFIT_FOLDS} random folds of the training "
                                           "spots, each fold predicted by the fit without it")

    def _predict(self, query: Spots, groups, context) -> tuple[np.ndarray, np.ndarray]:
        pred = self.network_.predict(query.features, query.rows, query.cols)
        return np.maximum(pred, 0).astype(np.float32), query.features
