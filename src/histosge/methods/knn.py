"""``knn``: inverse-distance-weighted mean of the k nearest measured spots, no image at all.

``model.neighbours`` as it is (distances in full-resolution pixels, k chosen by leave-one-out
CV on the training spots): it shows what spatial smoothness alone buys. It reads the measured
expression of the predicted section's own spots, so it predicts a section with measured spots
(those spots are its context), never an H&E image alone, and protocol X does not run it.
"""

from __future__ import annotations

import numpy as np

from ..model import Spots
from ..model.neighbours import choose_k, idw
from ._registry import builtin
from .base import Method, check_fit_inputs


@builtin("knn")  # its spec: methods/_builtin.py
class KNN(Method):
    """``choices``: the k searched (default ``model.neighbours.K_CHOICES``). ``seed`` is unused."""

    def __init__(self, *, choices: tuple[int, ...] | None = None, seed: int = 0):
        super().__init__(seed=seed)
        self.choices = None if choices is None else tuple(int(k) for k in choices)

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> KNN:
        y = check_fit_inputs(train, y, groups)
        self.xy_ = np.asarray(train.xy, np.float64)
        self.y_ = y
        self.k_ = int(choose_k(self.xy_, self.y_, self.choices))
        self.info = {"k": self.k_}
        return self

    def predict(self, query: Spots, *, groups: np.ndarray | None = None,
                context: tuple[Spots, np.ndarray] | None = None) -> np.ndarray:
        """``context``: measured spots (and their log1p expression) of the query's section that
        stand in for the training spots; k stays the one chosen at fit."""
        self.check_fitted()
        if context is None:
            xy, y = self.xy_, self.y_
        else:
            xy, y = np.asarray(context[0].xy, np.float64), np.asarray(context[1], np.float32)
        return idw(xy, y, np.asarray(query.xy, np.float64), self.k_)
