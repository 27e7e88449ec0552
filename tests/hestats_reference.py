"""Today's ``he-stats`` (histosge 0.1.0 up to the vectorised rewrite), kept verbatim as the
reference the batched implementation in ``histosge._hestats`` is tested against (same features to
1e-5) and that ``bench/bench_hestats.py`` times as "old". One patch at a time, ~30 numpy and
scikit-image calls each. Not used by the package.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

INPUT_SIZE = 128
SPOT_FRACTION = 0.5  # diameter of the central disc relative to the patch side
H_EDGES = np.linspace(0.0, 0.32, 9)
GLCM_DISTANCES = (1, 2, 4)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
LBP_BINS = 10  # uniform LBP with P=8 has P + 2 codes
VERSION = "he-stats/1"

_REGION_NAMES = (
    [f"rgb_mean_{c}" for c in "rgb"]
    + [f"rgb_std_{c}" for c in "rgb"]
    + ["h_mean", "h_std", "h_p10", "h_p50", "h_p90", "e_mean", "e_std", "e_p50", "e_p90", "d_mean", "d_std"]
    + [f"h_hist_{i}" for i in range(len(H_EDGES) - 1)]
    + ["tissue_frac", "nuc_frac", "nuc_dense_frac", "nuclei_per_kpx"]
    + [f"lbp_{i}" for i in range(LBP_BINS)]
)
FEATURE_NAMES = (
    [f"spot_{n}" for n in _REGION_NAMES]
    + [f"ring_{n}" for n in _REGION_NAMES]
    + [f"glcm_{p}_d{d}" for d in GLCM_DISTANCES for p in GLCM_PROPS]
)
DIM = len(FEATURE_NAMES)


def _masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    r = np.hypot(yy - c, xx - c)
    inner = r <= size * SPOT_FRACTION / 2.0
    ring = (~inner) & (r <= size / 2.0)
    return inner, ring


def _region_features(rgb, hed, tissue, lbp, nuclei_labels, mask) -> list[float]:
    px = rgb[mask]
    h, e, d = hed[..., 0][mask], hed[..., 1][mask], hed[..., 2][mask]
    n = max(int(mask.sum()), 1)
    h_hist = np.histogram(np.clip(h, H_EDGES[0], H_EDGES[-1] - 1e-9), bins=H_EDGES)[0] / n
    hp10, hp50, hp90 = np.percentile(h, (10, 50, 90))
    ep50, ep90 = np.percentile(e, (50, 90))
    labels_here = np.unique(nuclei_labels[mask])
    n_nuclei = int((labels_here > 0).sum())
    lbp_hist = np.bincount(lbp[mask].astype(np.int64), minlength=LBP_BINS)[:LBP_BINS] / n
    return [
        *px.mean(0),
        *px.std(0),
        h.mean(),
        h.std(),
        hp10,
        hp50,
        hp90,
        e.mean(),
        e.std(),
        ep50,
        ep90,
        d.mean(),
        d.std(),
        *h_hist,
        tissue[mask].mean(),
        (h > 0.10).mean(),
        (h > 0.18).mean(),
        1000.0 * n_nuclei / n,
        *lbp_hist,
    ]


def he_features(rgb: np.ndarray) -> np.ndarray:
    """Features of one RGB patch, float in [0, 1], shape (S, S, 3) -> (DIM,)."""
    from skimage.color import rgb2hed
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    size = rgb.shape[0]
    inner, ring = _masks(size)
    hed = rgb2hed(rgb)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    sat = rgb.max(-1) - rgb.min(-1)
    tissue = (grey < 0.85) & (sat > 0.04)
    grey_u8 = np.clip(grey * 255.0, 0, 255).astype(np.uint8)
    lbp = local_binary_pattern(grey_u8, P=8, R=1, method="uniform")
    nuc = ndimage.binary_opening(hed[..., 0] > 0.10)
    labels, _ = ndimage.label(nuc)
    feats = _region_features(rgb, hed, tissue, lbp, labels, inner)
    feats += _region_features(rgb, hed, tissue, lbp, labels, ring)
    h_q = np.clip(hed[..., 0] / 0.32 * 16, 0, 15).astype(np.uint8)
    glcm = graycomatrix(
        h_q,
        distances=GLCM_DISTANCES,
        angles=(0, np.pi / 4, np.pi / 2, 3 * np.pi / 4),
        levels=16,
        symmetric=True,
        normed=True,
    )
    for di in range(len(GLCM_DISTANCES)):
        for prop in GLCM_PROPS:
            value = graycoprops(glcm[:, :, di : di + 1, :], prop).mean()
            feats.append(float(np.nan_to_num(value, nan=0.0)))
    out = np.asarray(feats, dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def reference_batch(patches: np.ndarray) -> np.ndarray:
    """``he_features`` of each patch of a float ``(b, S, S, 3)`` batch in [0, 1] (the old serial path)."""
    arr = np.asarray(patches, np.float64)
    if not len(arr):
        return np.zeros((0, DIM), np.float32)
    return np.stack([he_features(p) for p in arr])
