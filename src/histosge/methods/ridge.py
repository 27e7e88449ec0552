"""``ridge``: HEST-Benchmark's linear probe on frozen image features.

Features clipped to the training range and standardised, PCA (256 components, at most
n_train - 1), ridge regression with the penalty chosen by efficient leave-one-out CV
(``model.probe``, ``model.parts``; the docstring of ``model.probe.ridge_probe`` says what
differs from HEST).
"""

from __future__ import annotations

import numpy as np

from ..model import Spots
from ..model.parts import Projector, RidgeHead, nest, sub
from ._registry import builtin
from .base import Method, check_fit_inputs


@builtin("ridge")  # its spec: methods/_builtin.py
class Ridge(Method):
    """``n_pcs``: principal components of the features kept. ``seed`` is unused."""

    def __init__(self, *, n_pcs: int = 256, seed: int = 0):
        super().__init__(seed=seed)
        self.n_pcs = int(n_pcs)

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> Ridge:
        check_fit_inputs(train, y, groups)
        self.projector_ = Projector.fit(train.features, self.n_pcs)
        self.head_ = RidgeHead.fit_cv(self.projector_(train.features), y)
        self.info = {"alpha": self.head_.alpha, "n_pcs": self.projector_.n_pcs}
        return self

    def predict(self, query: Spots, *, groups: np.ndarray | None = None) -> np.ndarray:
        self.check_fitted()
        return self.head_.predict(self.projector_(query.features)).astype(np.float32)

    def state(self):
        # The memory order of the coefficients is kept too: BLAS takes another kernel for the
        # other order, and the reloaded model would differ in the last float32 bit.
        fortran = bool(self.head_.coef.flags.f_contiguous and not self.head_.coef.flags.c_contiguous)
        return nest("projector", self.projector_.state()) | nest("head", self.head_.state()), {"coef_fortran": fortran}

    def set_state(self, arrays, meta) -> None:
        self.projector_ = Projector.from_state(sub(arrays, "projector"))
        self.head_ = RidgeHead.from_state(sub(arrays, "head"))
        if meta.get("coef_fortran"):
            self.head_.coef = np.asfortranarray(self.head_.coef)
