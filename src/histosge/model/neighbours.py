"""Spatial neighbour interpolation: the floor every model must clear, and context for ours.

Inverse-distance-weighted average of the k nearest training spots, with distances in
full-resolution pixels (physical, isotropic; Visium array coordinates are not). ``k`` is
chosen by leave-one-out cross-validation on the training spots.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

#: Neighbour counts searched. Up to 256: with a cap of 24 the leave-one-out optimum sat on the
#: cap on every benchmark section, and the knn baseline's pcc was held down by the grid; on
#: DLPFC the optimum lies near 128-192 (docs/MODEL_NOTES.md, section 10).
K_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
#: Values gathered per block in ``idw`` (~64 MB of float32).
_BLOCK_VALUES = 16_000_000


def idw_weights(dist: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Unnormalised IDW weights (float64), distances floored at 1e-3 x the median nearest one so
    a query on top of a training spot gets a large, finite weight. ``idw`` and ``choose_k`` share it."""
    scale = np.median(dist[:, :1]) if dist.size else 1.0
    return 1.0 / np.power(np.maximum(dist, 1e-3 * max(scale, 1e-9)), power)


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
    w = idw_weights(dist, power)
    w = (w / w.sum(1, keepdims=True)).astype(np.float32)
    y = np.asarray(train_y, np.float32)
    out = np.empty((len(query_xy), y.shape[1]), np.float32)
    # In blocks of queries: the gathered (queries, k, genes) array of a 4x Visium grid at k = 96
    # would take ~5 GB at once.
    step = max(1, _BLOCK_VALUES // max(1, idx.shape[1] * y.shape[1]))
    for start in range(0, len(query_xy), step):
        sl = slice(start, start + step)
        out[sl] = np.einsum("qk,qkg->qg", w[sl], y[idx[sl]])
    return out


def choose_k(train_xy: np.ndarray, train_y: np.ndarray, choices=None) -> int:
    """The k with the lowest leave-one-out MSE of ``idw`` on the training spots.

    ``choices``: the k searched (default ``K_CHOICES``; those >= the number of spots are
    skipped). All of them come from one neighbour query: the IDW sums are accumulated
    neighbour by neighbour and scored at each k in ``choices``.
    """
    choices = K_CHOICES if choices is None else choices
    xy = np.asarray(train_xy, np.float64)
    usable = sorted(int(k) for k in choices if k < len(xy))
    if not usable:
        return int(choices[0])
    y = np.asarray(train_y, np.float32)
    k_max = usable[-1]
    dist, idx = cKDTree(xy).query(xy, k=k_max + 1)
    dist, idx = dist.reshape(len(xy), -1)[:, 1:], idx.reshape(len(xy), -1)[:, 1:]  # drop each spot itself
    w = idw_weights(dist).astype(np.float32)
    total = np.zeros_like(y)
    w_sum = np.zeros((len(xy), 1), np.float32)
    best_k, best = usable[0], np.inf
    for j in range(k_max):
        total += w[:, j : j + 1] * y[idx[:, j]]
        w_sum += w[:, j : j + 1]
        if j + 1 in usable:
            err = float(((total / w_sum - y) ** 2).mean())
            if err < best:
                best_k, best = j + 1, err
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
