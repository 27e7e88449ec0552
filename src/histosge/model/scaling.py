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


def standardise(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Training mean and spread applied to ``train_x`` and each of ``others`` (clipped first)."""
    train_x = np.asarray(train_x, np.float32)
    mu = train_x.mean(0)
    sd = train_x.std(0) + 1e-6
    return [((a - mu) / sd).astype(np.float32) for a in (train_x, *(clip_to(train_x, o) for o in others))]
