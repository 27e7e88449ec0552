"""Feature hygiene shared by every model that reads image features (ours and the baselines).

A query spot's features are clipped to the range the training spots span before any model
sees them: a feature that is constant on the training spots carries nothing learnable, and
after standardising by its (near-zero) spread one odd query patch becomes a value of 10^4-10^5
that sent a linear probe's MSE on dlpfc/151676 (protocol R, seed 2) from 0.33 to 2.2 and an
MLP's to 28.
"""

from __future__ import annotations

import numpy as np


def clip_to(train_x: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """``query_x`` clipped, feature by feature, to the range of ``train_x`` (float32)."""
    train_x = np.asarray(train_x)
    return np.clip(np.asarray(query_x), train_x.min(0), train_x.max(0)).astype(np.float32)


class FeatureScaler:
    """The training spots' range, mean and spread; ``transform`` clips to the range, then
    standardises. Kept by a fitted network so that its query spots are scaled the same way."""

    def __init__(self, train_x: np.ndarray):
        train_x = np.asarray(train_x, np.float32)
        self.low, self.high = train_x.min(0), train_x.max(0)
        self.mean = train_x.mean(0)
        self.std = train_x.std(0) + 1e-6

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(x, np.float32), self.low, self.high)
        return ((x - self.mean) / self.std).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"low": self.low, "high": self.high, "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray]) -> FeatureScaler:
        self = cls.__new__(cls)
        self.low, self.high, self.mean, self.std = s["low"], s["high"], s["mean"], s["std"]
        return self


def standardise(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``train_x`` and each of ``others`` through a ``FeatureScaler`` fitted on ``train_x``."""
    scaler = FeatureScaler(train_x)
    return [scaler.transform(a) for a in (train_x, *others)]
