"""``mean``: the training mean of each gene, predicted for every spot.

No image and no position: Pearson is 0 by construction, so it is the floor of MSE and MAE that
any method must beat.
"""

from __future__ import annotations

import numpy as np

from ..model import Spots
from ._registry import builtin
from .base import Method, check_fit_inputs


@builtin("mean")  # its spec: methods/_builtin.py
class Mean(Method):
    """Training mean of each gene. ``seed`` is accepted and unused (nothing is random)."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> Mean:
        y = check_fit_inputs(train, y, groups)
        self.mean_ = y.mean(0, keepdims=True)
        self.info = {}
        return self

    def predict(self, query: Spots, *, groups: np.ndarray | None = None) -> np.ndarray:
        self.check_fitted()
        return np.repeat(np.asarray(self.mean_, np.float32).reshape(1, -1), len(query), axis=0)
