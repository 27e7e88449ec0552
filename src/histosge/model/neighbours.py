"""Spatial neighbour interpolation: the floor every model must clear, and context for ours.

Inverse-distance-weighted average of the k nearest training spots, with distances in
full-resolution pixels (physical, isotropic; Visium array coordinates are not). ``k`` is
chosen by leave-one-out cross-validation on the training spots.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

K_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16, 24)


def idw(train_xy: np.ndarray, train_y: np.ndarray, query_xy: np.ndarray, k: int, *,
        exclude_self: bool = False, power: float = 1.0) -> np.ndarray:
    """IDW average of the ``k`` nearest training spots for each query position.

    ``exclude_self`` drops each query's own spot (query == train set), giving the
    leave-one-out estimate used to train models on what interpolation misses.
    """
    train_xy = np.asarray(train_xy, np.float64)
    query_xy = np.asarray(query_xy, np.float64)
    k_eff = min(k + int(exclude_self), len(train_xy))
    dist, idx = cKDTree(train_xy).query(query_xy, k=k_eff)
    dist = dist.reshape(len(query_xy), -1)
    idx = idx.reshape(len(query_xy), -1)
    if exclude_self:
        dist, idx = dist[:, 1:], idx[:, 1:]
    scale = np.median(dist[:, :1]) if dist.size else 1.0
    w = 1.0 / np.power(np.maximum(dist, 1e-3 * max(scale, 1e-9)), power)
    w /= w.sum(1, keepdims=True)
    y = np.asarray(train_y, np.float32)
    return np.einsum("qk,qkg->qg", w.astype(np.float32), y[idx]).astype(np.float32)


def choose_k(train_xy: np.ndarray, train_y: np.ndarray, choices=K_CHOICES) -> int:
    """The k with the lowest leave-one-out MSE on the training spots."""
    best_k, best = choices[0], np.inf
    for k in choices:
        if k >= len(train_xy):
            break
        err = float(((idw(train_xy, train_y, train_xy, k, exclude_self=True) - train_y) ** 2).mean())
        if err < best:
            best_k, best = k, err
    return best_k


def ring_mean(xy: np.ndarray, values: np.ndarray, k: int = 7) -> np.ndarray:
    """Mean of ``values`` over each spot and its ``k - 1`` nearest spots of the same section.

    With k = 7 that is a Visium spot and its hexagonal ring (a legacy-ST spot and its 4 edge
    and 2 of its diagonal neighbours): the tissue around a spot, seen through its neighbours'
    image features, which is known wherever the image is, measured or not.
    """
    xy = np.asarray(xy, np.float64)
    values = np.asarray(values, np.float32)
    if len(xy) == 0:
        return values.copy()
    _, idx = cKDTree(xy).query(xy, k=min(k, len(xy)))
    return values[np.asarray(idx).reshape(len(xy), -1)].mean(1)
