"""``he-stats`` features over whole batches of patches. It lives outside ``histosge.encode`` on
purpose: importing that package imports torch, and this module needs none of it. The torch
encoder around it is ``histosge.encode.handcrafted``.

``he-stats``: hand-crafted H&E features that need no weights and run fast on a CPU.

Per patch (resized to 128 px), for two regions, the central disc (diameter = half the patch side,
i.e. the spot itself at ``patch_scale=2``) and the ring around it:

* colour moments: RGB mean and standard deviation;
* stain deconvolution with fixed Ruifrok-Johnston vectors (``skimage.color.rgb2hed``):
  haematoxylin mean/std/p10/p50/p90, eosin mean/std/p50/p90, DAB-channel mean/std (on H&E the
  third channel soaks up what the fixed eosin vector misses), and an 8-bin haematoxylin histogram;
* tissue fraction, nuclear fraction (haematoxylin above two thresholds), nuclei per 1000 px
  (connected haematoxylin blobs);
* texture: a 10-bin uniform LBP histogram (P=8, R=1) of the grey image;

and, over the whole patch, GLCM contrast / dissimilarity / homogeneity / energy / correlation of
the 16-level haematoxylin image at distances 1, 2 and 4 (averaged over 4 angles).

Per-slide Macenko stain estimation was left out on purpose: it makes a spot's features depend on
the rest of the slide, and fixed vectors keep the features comparable across sections.

How it runs. Stain deconvolution and the grey image are numpy over the whole ``(b, S, S, 3)``
block (one log, one stacked matrix product). What has no batched form (LBP with its
interpolated circle samples, the GLCM counts, the nuclear mask's opening and connected
components, the per-region sums, counts and order statistics) is one compiled pass per patch
(numba, ``nogil``), and the GLCM properties are numpy over the block again. Blocks of ``BLOCK``
patches are shared between threads, so there are no worker processes.

The numbers are those of the one-patch-at-a-time version this replaced
(``tests/hestats_reference.py``: scikit-image's ``rgb2hed``, ``local_binary_pattern``,
``graycomatrix``/``graycoprops``, scipy's ``binary_opening`` and ``label``, numpy's
``percentile``) to 1e-5. Everything that is thresholded or rounded (tissue and nuclear masks,
grey levels, LBP comparisons, histogram bins, the 16-level image) is computed with the same
floating-point operations in the same order, so it is bit for bit the same; sums and means may
differ in the last bits (another summation order).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

INPUT_SIZE = 128
SPOT_FRACTION = 0.5  # diameter of the central disc relative to the patch side
H_EDGES = np.linspace(0.0, 0.32, 9)
GLCM_DISTANCES = (1, 2, 4)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_LEVELS = 16
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
LBP_P, LBP_R = 8, 1.0
LBP_BINS = LBP_P + 2  # uniform LBP has P + 2 codes
VERSION = "he-stats/1"
#: Patches per block handed to a thread.
BLOCK = 8

# skimage.color.hed_from_rgb: the inverse of the Ruifrok-Johnston H, E, DAB stain vectors
HED_FROM_RGB = np.array(
    [
        [1.87798274, -1.00767869, -0.55611582],
        [-0.06590806, 1.13473037, -0.1355218],
        [-0.60190736, -0.48041419, 1.57358807],
    ]
)
GREY = np.array([0.299, 0.587, 0.114])

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
_REGION_DIM = len(_REGION_NAMES)
_N_HIST = len(H_EDGES) - 1


def _masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    r = np.hypot(yy - c, xx - c)
    inner = r <= size * SPOT_FRACTION / 2.0
    ring = (~inner) & (r <= size / 2.0)
    return inner, ring


@functools.lru_cache(maxsize=8)
def _region_code(size: int) -> np.ndarray:
    """Per pixel: 0 in the disc, 1 in the ring, 2 outside both (the patch corners)."""
    inner, ring = _masks(size)
    code = np.full((size, size), 2, np.int8)
    code[inner] = 0
    code[ring] = 1
    code.flags.writeable = False
    return code


def _lbp_points() -> np.ndarray:
    """Circle sample offsets (row, col), rounded to 5 decimals as scikit-image does."""
    k = np.arange(LBP_P, dtype=np.double)
    rr = np.round(-LBP_R * np.sin(2 * np.pi * k / LBP_P), 5)
    cc = np.round(LBP_R * np.cos(2 * np.pi * k / LBP_P), 5)
    return np.stack([rr, cc], axis=1)


def _glcm_offsets() -> np.ndarray:
    """(row, col) offset per (distance, angle), rounded half away from zero as scikit-image does."""

    def half_away(x: float) -> int:
        return int(x + 0.5) if x > 0 else int(x - 0.5)

    return np.array(
        [(half_away(np.sin(a) * d), half_away(np.cos(a) * d)) for d in GLCM_DISTANCES for a in GLCM_ANGLES],
        np.int64,
    )


_LBP_POINTS = _lbp_points()
_GLCM_OFFSETS = _glcm_offsets()


# -- numpy over the block ---------------------------------------------------------------------------
def rgb2hed(rgb: np.ndarray) -> np.ndarray:
    """``skimage.color.rgb2hed`` of float64 RGB ``(..., 3)``: optical density (log over log 1e-6)
    times the stain matrix, clipped at 0. The product is a stack of the same ``(S, 3) @ (3, 3)``
    products as on one image, so every pixel gets the same bits."""
    od = np.maximum(rgb, 1e-6)
    np.log(od, out=od)
    od /= np.log(1e-6)
    stains = od @ HED_FROM_RGB
    np.maximum(stains, 0, out=stains)
    return stains


def glcm_props(counts: np.ndarray) -> np.ndarray:
    """``graycomatrix(symmetric=True, normed=True)`` then ``graycoprops`` contrast, dissimilarity,
    homogeneity, energy and correlation, from one-way co-occurrence counts ``(b, L, L, D, A)``;
    averaged over the angles -> ``(b, D, 5)`` (zero-variance correlation is 1, as scikit-image)."""
    p = counts + counts.transpose(0, 2, 1, 3, 4)
    p = p.astype(np.float64)
    for _ in range(2):  # normalised by graycomatrix, and again by graycoprops
        sums = p.sum(axis=(1, 2), keepdims=True)
        sums[sums == 0] = 1
        p = p / sums
    n = p.shape[1]
    i = np.arange(n, dtype=np.float64).reshape(1, n, 1, 1, 1)
    j = np.arange(n, dtype=np.float64).reshape(1, 1, n, 1, 1)
    d2 = (i - j) ** 2
    contrast = (p * d2).sum(axis=(1, 2))
    dissimilarity = (p * np.abs(i - j)).sum(axis=(1, 2))
    homogeneity = (p * (1.0 / (1.0 + d2))).sum(axis=(1, 2))
    energy = np.sqrt((p**2).sum(axis=(1, 2)))
    diff_i = i - (i * p).sum(axis=(1, 2), keepdims=True)
    diff_j = j - (j * p).sum(axis=(1, 2), keepdims=True)
    std_i = np.sqrt((p * diff_i**2).sum(axis=(1, 2)))
    std_j = np.sqrt((p * diff_j**2).sum(axis=(1, 2)))
    cov = (p * (diff_i * diff_j)).sum(axis=(1, 2))
    flat = (std_i < 1e-15) | (std_j < 1e-15)
    correlation = np.where(flat, 1.0, cov / np.where(flat, 1.0, std_i * std_j))
    props = np.stack([contrast, dissimilarity, homogeneity, energy, correlation], axis=-1)  # (b, D, A, 5)
    return np.nan_to_num(props.mean(axis=2), nan=0.0)


# -- compiled, one patch at a time ------------------------------------------------------------------
def _lbp_geometry(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per circle sample: the floor and ceil shifts of row and column (constant over the image, as
    the offsets are within one pixel) and the fractional parts per row and per column, each
    computed as scikit-image's bilinear interpolation computes it (``r + rp - floor(r + rp)``)."""
    shifts = np.empty((LBP_P, 4), np.int64)
    dr = np.empty((LBP_P, h))
    dc = np.empty((LBP_P, w))
    for i, (rp, cp) in enumerate(_LBP_POINTS):
        for axis, (n, off) in enumerate(((h, rp), (w, cp))):
            pos = np.arange(n, dtype=np.double) + off
            lo, hi = np.floor(pos), np.ceil(pos)
            base = np.arange(n)
            if not (np.all(lo - base == lo[0]) and np.all(hi - base == hi[0])):
                raise AssertionError("LBP sample offsets must shift every pixel alike")
            shifts[i, 2 * axis : 2 * axis + 2] = int(lo[0]), int(hi[0])
            (dr if axis == 0 else dc)[i] = pos - lo
    return shifts, dr, dc


@functools.lru_cache(maxsize=8)
def _lbp_tables(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tables = _lbp_geometry(h, w)
    for arr in tables:
        arr.flags.writeable = False
    return tables


@njit(cache=True, nogil=True)
def _lbp_uniform(grey_u8, shifts, dr, dc, out):
    """``local_binary_pattern(img, 8, 1, 'uniform')``: scikit-image's loop (``_texture.pyx``) with
    its bilinear interpolation (``_shared/interpolation.pxd``), operation for operation, on a
    zero-padded copy (its constant mode). Samples on the pixel grid are the pixel itself
    (``(1 - 0) * p + 0 * p``); changes are counted along the bit string, not around the circle."""
    h, w = grey_u8.shape
    n_points = shifts.shape[0]
    img = np.zeros((h + 2, w + 2), np.float64)
    for r in range(h):
        for c in range(w):
            img[r + 1, c + 1] = grey_u8[r, c]
    for r in range(h):
        for c in range(w):
            centre = img[r + 1, c + 1]
            changes = 0
            ones = 0
            prev = 0
            for i in range(n_points):
                r0, r1 = r + 1 + shifts[i, 0], r + 1 + shifts[i, 1]
                c0, c1 = c + 1 + shifts[i, 2], c + 1 + shifts[i, 3]
                if r0 == r1 and c0 == c1:
                    bit = 1 if img[r0, c0] - centre >= 0 else 0
                else:
                    wr, wc = dr[i, r], dc[i, c]
                    top = (1 - wc) * img[r0, c0] + wc * img[r0, c1]
                    bottom = (1 - wc) * img[r1, c0] + wc * img[r1, c1]
                    bit = 1 if (1 - wr) * top + wr * bottom - centre >= 0 else 0
                ones += bit
                if i > 0 and bit != prev:
                    changes += 1
                prev = bit
            out[r, c] = ones if changes <= 2 else n_points + 1


@njit(cache=True, nogil=True)
def _nuclei_per_region(hmask, code, counts):
    """Nuclei: ``binary_opening`` of the haematoxylin mask with the 3 x 3 cross (outside = False),
    then 4-connected components; ``counts[r]`` += components with a pixel in region ``r``."""
    h, w = hmask.shape
    eroded = np.zeros((h, w), np.bool_)
    for r in range(h):
        for c in range(w):
            eroded[r, c] = (
                hmask[r, c]
                and r > 0
                and hmask[r - 1, c]
                and r < h - 1
                and hmask[r + 1, c]
                and c > 0
                and hmask[r, c - 1]
                and c < w - 1
                and hmask[r, c + 1]
            )
    opened = np.zeros((h, w), np.bool_)
    for r in range(h):
        for c in range(w):
            opened[r, c] = (
                eroded[r, c]
                or (r > 0 and eroded[r - 1, c])
                or (r < h - 1 and eroded[r + 1, c])
                or (c > 0 and eroded[r, c - 1])
                or (c < w - 1 and eroded[r, c + 1])
            )
    seen = np.zeros((h, w), np.bool_)
    stack = np.empty(h * w, np.int64)
    for r0 in range(h):
        for c0 in range(w):
            if not opened[r0, c0] or seen[r0, c0]:
                continue
            touched0 = False
            touched1 = False
            seen[r0, c0] = True
            top = 0
            stack[0] = r0 * w + c0
            top = 1
            while top > 0:
                top -= 1
                r, c = divmod(stack[top], w)
                if code[r, c] == 0:
                    touched0 = True
                elif code[r, c] == 1:
                    touched1 = True
                for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < h and 0 <= cc < w and opened[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack[top] = rr * w + cc
                        top += 1
            if touched0:
                counts[0] += 1
            if touched1:
                counts[1] += 1


@njit(cache=True, nogil=True)
def _glcm_counts(levels_img, offsets, counts):
    """One-way co-occurrence counts ``counts[k, i, j]`` of pixel pairs (r, c) -> (r + dy, c + dx)
    for each offset ``k`` (scikit-image's ``_glcm_loop``; the offsets from ``_glcm_offsets``)."""
    h, w = levels_img.shape
    levels = counts.shape[1]
    for k in range(offsets.shape[0]):
        dy, dx = offsets[k, 0], offsets[k, 1]
        flat = counts[k].reshape(levels * levels)
        for r in range(max(0, -dy), min(h, h - dy)):
            a = levels_img[r]
            b = levels_img[r + dy]
            for c in range(max(0, -dx), min(w, w - dx)):
                flat[a[c] * levels + b[c + dx]] += 1


@njit(cache=True, nogil=True)
def _select(values, lo, hi, k):
    """Rearrange ``values[lo:hi]`` so that ``values[k]`` is the value of rank k (quickselect)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        # median of three as pivot
        a, b, c = values[lo], values[mid], values[hi - 1]
        if a > b:
            a, b = b, a
        if b > c:
            b = c
            if a > b:
                b = a
        pivot = b
        i, j = lo, hi - 1
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return


@njit(cache=True, nogil=True)
def _percentiles(values, qs, out):
    """``np.percentile(values, qs)`` (ascending ``qs``, linear method: numpy's index and lerp
    formulas) into ``out``; ``values`` is reordered. Each rank is selected to the right of the
    previous one."""
    n = values.shape[0]
    lo = 0
    last = -1
    for j in range(qs.shape[0]):
        quantile = qs[j] / 100.0
        virtual = n * quantile + (1.0 + quantile * -1.0) - 1.0
        below = min(max(int(np.floor(virtual)), 0), n - 1)
        above = min(below + 1, n - 1)
        gamma = virtual - np.floor(virtual)
        if below > last:
            _select(values, lo, n, below)
            lo = below + 1
            last = below
        if above > last:
            _select(values, lo, n, above)
            lo = above + 1
            last = above
        a = values[below]
        diff = values[above] - a
        out[j] = values[above] - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


@njit(cache=True, nogil=True)
def _patch_features(rgb, hed, grey, code, lbp_shifts, lbp_dr, lbp_dc, offsets, edges, counts_out, row):
    """One patch: per-region statistics into ``row`` (2 x ``_REGION_DIM``), one-way GLCM counts into
    ``counts_out`` (L, L, n_offsets)."""
    h, w = grey.shape
    grey_u8 = np.empty((h, w), np.uint8)
    h_q = np.empty((h, w), np.uint8)
    hmask = np.empty((h, w), np.bool_)
    n = np.zeros(2)
    sums = np.zeros((2, 6))
    n_tissue = np.zeros(2)
    n_h10 = np.zeros(2)
    n_h18 = np.zeros(2)
    hist = np.zeros((2, 8))
    h_vals = np.empty((2, h * w))
    e_vals = np.empty((2, h * w))
    for r in range(h):
        for c in range(w):
            g = grey[r, c] * 255.0  # np.clip(grey * 255, 0, 255).astype(uint8): clip, then truncate
            if g < 0.0:
                g = 0.0
            elif g > 255.0:
                g = 255.0
            grey_u8[r, c] = np.uint8(g)
            hv = hed[r, c, 0]
            q = hv / 0.32 * 16  # np.clip(h / 0.32 * 16, 0, 15).astype(uint8)
            if q < 0.0:
                q = 0.0
            elif q > 15.0:
                q = 15.0
            h_q[r, c] = np.uint8(q)
            hmask[r, c] = hv > 0.10
            reg = code[r, c]
            if reg > 1:
                continue
            k = int(n[reg])
            n[reg] += 1
            for ch in range(3):
                sums[reg, ch] += rgb[r, c, ch]
                sums[reg, 3 + ch] += hed[r, c, ch]
            red, green, blue = rgb[r, c, 0], rgb[r, c, 1], rgb[r, c, 2]
            sat = max(red, green, blue) - min(red, green, blue)
            if grey[r, c] < 0.85 and sat > 0.04:
                n_tissue[reg] += 1
            if hv > 0.10:
                n_h10[reg] += 1
            if hv > 0.18:
                n_h18[reg] += 1
            # np.histogram over [0, 0.32) in 8 bins of the clipped value: bin b holds e_b <= x < e_b+1
            clipped = min(max(hv, edges[0]), edges[8] - 1e-9)
            b = 0
            for edge in range(1, 8):
                if clipped >= edges[edge]:
                    b = edge
            hist[reg, b] += 1
            h_vals[reg, k] = hv
            e_vals[reg, k] = hed[r, c, 1]
    means = np.zeros((2, 6))
    stds = np.zeros((2, 6))
    for reg in range(2):
        if n[reg] > 0:
            for ch in range(6):
                means[reg, ch] = sums[reg, ch] / n[reg]
    sq = np.zeros((2, 6))
    for r in range(h):
        for c in range(w):
            reg = code[r, c]
            if reg > 1:
                continue
            for ch in range(3):
                d = rgb[r, c, ch] - means[reg, ch]
                sq[reg, ch] += d * d
                d = hed[r, c, ch] - means[reg, 3 + ch]
                sq[reg, 3 + ch] += d * d
    for reg in range(2):
        if n[reg] > 0:
            for ch in range(6):
                stds[reg, ch] = np.sqrt(sq[reg, ch] / n[reg])
    lbp = np.empty((h, w), np.int64)
    _lbp_uniform(grey_u8, lbp_shifts, lbp_dr, lbp_dc, lbp)
    lbp_hist = np.zeros((2, 10))
    for r in range(h):
        for c in range(w):
            reg = code[r, c]
            if reg <= 1:
                lbp_hist[reg, lbp[r, c]] += 1
    nuclei = np.zeros(2)
    _nuclei_per_region(hmask, code, nuclei)
    _glcm_counts(h_q, offsets, counts_out)
    h_qs = np.array([10.0, 50.0, 90.0])
    e_qs = np.array([50.0, 90.0])
    pct = np.empty(3)
    for reg in range(2):  # the order of _REGION_NAMES
        m = max(n[reg], 1.0)
        size = int(n[reg])
        o = reg * 39
        for ch in range(3):
            row[o + ch] = means[reg, ch]
            row[o + 3 + ch] = stds[reg, ch]
        row[o + 6] = means[reg, 3]
        row[o + 7] = stds[reg, 3]
        row[o + 11] = means[reg, 4]
        row[o + 12] = stds[reg, 4]
        row[o + 15] = means[reg, 5]
        row[o + 16] = stds[reg, 5]
        if size > 0:
            _percentiles(h_vals[reg, :size], h_qs, pct)
            row[o + 8], row[o + 9], row[o + 10] = pct[0], pct[1], pct[2]
            _percentiles(e_vals[reg, :size], e_qs, pct)
            row[o + 13], row[o + 14] = pct[0], pct[1]
        else:
            for j in (8, 9, 10, 13, 14):
                row[o + j] = np.nan
        for b in range(8):
            row[o + 17 + b] = hist[reg, b] / m
        row[o + 25] = n_tissue[reg] / m
        row[o + 26] = n_h10[reg] / m
        row[o + 27] = n_h18[reg] / m
        row[o + 28] = 1000.0 * nuclei[reg] / m
        for b in range(10):
            row[o + 29 + b] = lbp_hist[reg, b] / m


@njit(cache=True, nogil=True)
def _block_kernel(rgb, hed, grey, code, lbp_shifts, lbp_dr, lbp_dc, offsets, edges, counts, rows):
    for i in range(rgb.shape[0]):
        _patch_features(rgb[i], hed[i], grey[i], code, lbp_shifts, lbp_dr, lbp_dc, offsets, edges, counts[i], rows[i])


def _block_features(rgb: np.ndarray) -> np.ndarray:
    """Features of a float64 ``(b, S, S, 3)`` block in [0, 1] -> ``(b, DIM)`` float32."""
    b, size = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb, np.float64)
    hed = rgb2hed(rgb)
    grey = rgb @ GREY
    counts = np.zeros((b, len(_GLCM_OFFSETS), GLCM_LEVELS, GLCM_LEVELS), np.int64)
    out = np.empty((b, DIM), np.float64)
    regions = np.empty((b, 2 * _REGION_DIM), np.float64)
    shifts, dr, dc = _lbp_tables(size, size)
    _block_kernel(rgb, hed, grey, _region_code(size), shifts, dr, dc, _GLCM_OFFSETS, H_EDGES, counts, regions)
    out[:, : 2 * _REGION_DIM] = regions
    counts = counts.reshape(b, len(GLCM_DISTANCES), len(GLCM_ANGLES), GLCM_LEVELS, GLCM_LEVELS)
    counts = counts.transpose(0, 3, 4, 1, 2)
    out[:, 2 * _REGION_DIM :] = glcm_props(counts).reshape(b, -1)
    out = out.astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def thread_count() -> int:
    """Threads for he-stats: ``$HISTOSGE_THREADS``, else one per available core."""
    env = os.environ.get("HISTOSGE_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            from .errors import EncoderError

            raise EncoderError(
                f"HISTOSGE_THREADS={env!r} is not a whole number", where="he-stats", fix="e.g. HISTOSGE_THREADS=2"
            ) from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _threads(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    if _pool is None or _pool_size != n:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="he-stats")
        _pool_size = n
    return _pool


def features_batch(patches: np.ndarray, threads: int | None = None) -> np.ndarray:
    """he-stats of a float ``(b, S, S, 3)`` batch in [0, 1] -> ``(b, DIM)`` float32.

    Blocks of ``BLOCK`` patches run on ``threads`` threads (default ``thread_count()``); the
    result does not depend on how the batch is split.
    """
    arr = np.asarray(patches)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"expected square RGB patches (b, S, S, 3), got shape {arr.shape}")
    b = len(arr)
    if b == 0:
        return np.zeros((0, DIM), np.float32)
    starts = range(0, b, BLOCK)

    def run(i: int) -> np.ndarray:
        return _block_features(np.asarray(arr[i : i + BLOCK], np.float64))

    n = min(thread_count() if threads is None else max(1, int(threads)), len(starts))
    if n <= 1:
        return np.concatenate([run(i) for i in starts])
    return np.concatenate(list(_threads(n).map(run, starts)))


def he_features(rgb: np.ndarray) -> np.ndarray:
    """Features of one RGB patch, float in [0, 1], shape (S, S, 3) -> (DIM,)."""
    return features_batch(np.asarray(rgb)[None], threads=1)[0]
