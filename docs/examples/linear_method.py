"""``linear``: ridge regression in closed form on standardised image features (no PCA).

About the smallest method that learns from the image, and a template for a new one: keyword
hyperparameters in the constructor, ``fit`` on training spots (``Spots``: features, grid rows
and columns, pixel centres) and their log1p expression (spots x genes), ``predict`` on new
spots. Fitted arrays end in ``_``, so ``histosge train --method linear`` saves it (numbers and
JSON, no pickle) and ``histosge predict`` loads it back.
"""

from __future__ import annotations

import numpy as np

from histosge.methods import Method, check_fit_inputs, register_method
from histosge.model import Spots


@register_method("linear", description="ridge regression in closed form on standardised image features")
class Linear(Method):
    """``alpha``: the ridge penalty (on standardised features)."""

    def __init__(self, *, alpha: float = 10.0, seed: int = 0):
        super().__init__(seed=seed)
        self.alpha = float(alpha)

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> Linear:
        y = check_fit_inputs(train, y, groups)
        x = np.asarray(train.features, np.float64)
        self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-8
        z = (x - self.mean_) / self.scale_
        self.intercept_ = y.mean(0)
        self.coef_ = np.linalg.solve(z.T @ z + self.alpha * np.eye(z.shape[1]), z.T @ (y - self.intercept_))
        self.info = {"alpha": self.alpha}
        return self

    def predict(self, query: Spots, *, groups: np.ndarray | None = None) -> np.ndarray:
        self.check_fitted()
        z = (np.asarray(query.features, np.float64) - self.mean_) / self.scale_
        return (z @ self.coef_ + self.intercept_).astype(np.float32)
