"""``histosge+prior``: the default model with a prior, an image-mode model fitted on the other
sections of the dataset (benchmark protocols R+ and G+).

As ``histosge train --mode image`` and ``histosge superres --prior`` do it: the prior
(``cohort.prior``, saved to a file and loaded back by the benchmark) is read by a neighbours-mode
``HisToSGE`` (the section model of ``histosge``) fitted through its public AnnData path on the
section's training spots, because the prior needs what arrays do not carry (the spots' hashes,
to show it never saw them, and the image's scale, to size its rings). So the spots this method
fits and predicts must be the cohort's section: ``fit`` the spots ``cohort.train_index``,
``predict`` every spot of ``cohort.section``. Outside the benchmark, ``histosge superres --prior MODEL`` does the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..model.contexts import Spots
from ._cohort import Cohort, check_cohort
from ._histosge import HisToSGEBase
from ._registry import builtin
from .base import check_fit_inputs


@builtin("histosge+prior")  # its spec: methods/_builtin.py
class HisToSGEPrior(HisToSGEBase):
    """``cohort``: the other sections and the prior fitted on them; the rest as ``HisToSGEBase``."""

    def __init__(self, *, cohort: Cohort | None = None, **params: Any):
        super().__init__(**params)
        self.cohort = cohort

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> HisToSGEPrior:
        from ..model.estimator import HisToSGE

        c = check_cohort(self.cohort, self.spec.name)
        check_fit_inputs(train, y, groups)
        if len(train) != len(c.train_index):
            raise InputError(f"{len(train)} training spots, the cohort's section trains {len(c.train_index)}",
                             where="train", fix="fit the spots cohort.train_index of cohort.section")
        params = {k: v for k, v in super().get_params().items() if k != "seed"} | {"network": self.network}
        # the benchmark scores held-out spots itself: no per-gene reliability estimate
        self.model_ = HisToSGE("neighbours", seed=self.seed, device=self.device, prior=c.prior, reliability=False,
                               **params)
        self.model_.fit(c.section[c.train_index], genes=c.genes, features=c.section_features[c.train_index],
                        progress=False)
        self.info = {**self.model_.info_, "prior_fit_seconds": c.prior_seconds}
        return self

    def fit_record(self) -> dict:
        """``info`` and the correction network's whole training history."""
        return {**self.info, "history": self.model_.method_.network_.history}

    def predict(self, query: Spots, *, groups: np.ndarray | None = None) -> np.ndarray:
        """Every spot of the cohort's section (``query`` must be those spots)."""
        self.check_fitted()
        c = self.cohort
        if len(query) != c.section.n_obs:
            raise InputError(f"{len(query)} query spots, the cohort's section has {c.section.n_obs}", where="query",
                             fix="predict every spot of cohort.section")
        pred = self.model_.predict(c.section, features=c.section_features, progress=False)
        return np.asarray(pred.X, np.float32)
