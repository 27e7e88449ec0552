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
from skimage.color import hed_from_rgb as _skimage_hed_from_rgb

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

# the inverse of the Ruifrok-Johnston H, E, DAB stain vectors, scikit-image's own array (its printed
# digits are not enough: the last bits decide where a pixel falls on a threshold)
HED_FROM_RGB = np.array(_skimage_hed_from_rgb, dtype=np.float64)
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


@functools.lru_cache(maxsize=8)
def _region_spans(size: int) -> np.ndarray:
    """Per row, the column spans [c0, c1) of the disc and of the ring (left and right of the disc):
    ``(S, 3, 2)``; the regions are circles, so each row holds one disc run and two ring runs at most."""
    code = _region_code(size)
    spans = np.zeros((size, 3, 2), np.int64)
    for r in range(size):
        runs = {0: [], 1: []}
        c = 0
        while c < size:
            k = c
            while k < size and code[r, k] == code[r, c]:
                k += 1
            if code[r, c] in runs:
                runs[int(code[r, c])].append((c, k))
            c = k
        if len(runs[0]) > 1 or len(runs[1]) > 2:
            raise AssertionError(f"row {r} of the region map is not a disc inside a ring")
        for slot, span in zip((0,), runs[0], strict=False):
            spans[r, slot] = span
        for slot, span in zip((1, 2), runs[1], strict=False):
            spans[r, slot] = span
    spans.flags.writeable = False
    return spans


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


def _compiled(fn):
    """``numba.njit`` without the GIL, cached on disk where numba finds a writable place (the
    package's ``__pycache__``, ``NUMBA_CACHE_DIR`` or the user cache); with none (a read-only install
    and no writable HOME) compiled afresh in each process (seconds) instead of failing to import."""
    try:
        return njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(nogil=True)(fn)


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


@_compiled
def _lbp_uniform(grey_u8, shifts, dr, dc, out):
    """``local_binary_pattern(img, 8, 1, 'uniform')``: scikit-image's loop (``_texture.pyx``) with
    its bilinear interpolation (``_shared/interpolation.pxd``), operation for operation, on a
    zero-padded copy (its constant mode), one image row and one circle sample at a time (loops
    the compiler vectorises). Samples on the pixel grid are the pixel itself (``(1 - 0) * p +
    0 * p``); changes are counted along the bit string, not around the circle, as there."""
    h, w = grey_u8.shape
    n_points = shifts.shape[0]
    img = np.zeros((h + 2, w + 2), np.float64)
    for r in range(h):
        for c in range(w):
            img[r + 1, c + 1] = grey_u8[r, c]
    ones = np.empty(w, np.int64)
    changes = np.empty(w, np.int64)
    bit = np.empty(w, np.int64)
    prev = np.empty(w, np.int64)
    for r in range(h):
        centre = img[r + 1, 1 : w + 1]
        ones[:] = 0
        changes[:] = 0
        for i in range(n_points):
            r0, r1 = r + 1 + shifts[i, 0], r + 1 + shifts[i, 1]
            c0, c1 = 1 + shifts[i, 2], 1 + shifts[i, 3]
            a = img[r0, c0 : c0 + w]
            if r0 == r1 and c0 == c1:
                for c in range(w):
                    bit[c] = 1 if a[c] - centre[c] >= 0 else 0
            else:
                b = img[r0, c1 : c1 + w]
                d = img[r1, c0 : c0 + w]
                e = img[r1, c1 : c1 + w]
                wr = dr[i, r]
                wc = dc[i]
                for c in range(w):
                    top = (1 - wc[c]) * a[c] + wc[c] * b[c]
                    bottom = (1 - wc[c]) * d[c] + wc[c] * e[c]
                    bit[c] = 1 if (1 - wr) * top + wr * bottom - centre[c] >= 0 else 0
            for c in range(w):
                ones[c] += bit[c]
            if i > 0:
                for c in range(w):
                    changes[c] += 1 if bit[c] != prev[c] else 0
            for c in range(w):
                prev[c] = bit[c]
        for c in range(w):
            out[r, c] = ones[c] if changes[c] <= 2 else n_points + 1


@_compiled
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


@_compiled
def _glcm_counts(levels_img, offsets, counts):
    """One-way co-occurrence counts ``counts[k, i, j]`` of pixel pairs (r, c) -> (r + dy, c + dx)
    for each offset ``k`` (scikit-image's ``_glcm_loop``; the offsets from ``_glcm_offsets``).
    An offset seen before (distance 2 at 45 and 135 degrees rounds to distance 1's) is copied;
    four tables, one per column modulo 4, keep consecutive increments off the same counter."""
    h, w = levels_img.shape
    levels = counts.shape[1]
    t0 = np.zeros(levels * levels, np.int64)
    t1 = np.zeros(levels * levels, np.int64)
    t2 = np.zeros(levels * levels, np.int64)
    t3 = np.zeros(levels * levels, np.int64)
    for k in range(offsets.shape[0]):
        dy, dx = offsets[k, 0], offsets[k, 1]
        done = -1
        for j in range(k):
            if offsets[j, 0] == dy and offsets[j, 1] == dx:
                done = j
        if done >= 0:
            counts[k] = counts[done]
            continue
        t0[:] = 0
        t1[:] = 0
        t2[:] = 0
        t3[:] = 0
        c_lo, c_hi = max(0, -dx), min(w, w - dx)
        for r in range(max(0, -dy), min(h, h - dy)):
            a = levels_img[r]
            b = levels_img[r + dy]
            c = c_lo
            while c + 4 <= c_hi:
                t0[a[c] * levels + b[c + dx]] += 1
                t1[a[c + 1] * levels + b[c + 1 + dx]] += 1
                t2[a[c + 2] * levels + b[c + 2 + dx]] += 1
                t3[a[c + 3] * levels + b[c + 3 + dx]] += 1
                c += 4
            while c < c_hi:
                t0[a[c] * levels + b[c + dx]] += 1
                c += 1
        flat = counts[k].reshape(levels * levels)
        for i in range(levels * levels):
            flat[i] += t0[i] + t1[i] + t2[i] + t3[i]


@_compiled
def _glcm_props(counts, n_angles, out):
    """``graycomatrix(symmetric=True, normed=True)`` then ``graycoprops`` contrast, dissimilarity,
    homogeneity, energy and correlation (zero variance: 1, as scikit-image), averaged over the
    angles: one-way counts ``(n_distances * n_angles, L, L)`` -> ``out`` ``(n_distances, 5)``."""
    levels = counts.shape[1]
    p = np.empty((levels, levels))
    for d in range(out.shape[0]):
        out[d, :] = 0.0
        for a in range(n_angles):
            k = d * n_angles + a
            total = 0.0
            for i in range(levels):
                for j in range(levels):
                    p[i, j] = counts[k, i, j] + counts[k, j, i]
                    total += p[i, j]
            for _ in range(2):  # normalised by graycomatrix, then again by graycoprops
                if total == 0:
                    total = 1.0
                again = 0.0
                for i in range(levels):
                    for j in range(levels):
                        p[i, j] = p[i, j] / total
                        again += p[i, j]
                total = again
            contrast = dissimilarity = homogeneity = asm = mean_i = mean_j = 0.0
            for i in range(levels):
                for j in range(levels):
                    v = p[i, j]
                    diff = i - j
                    contrast += v * diff * diff
                    dissimilarity += v * abs(diff)
                    homogeneity += v / (1.0 + diff * diff)
                    asm += v * v
                    mean_i += i * v
                    mean_j += j * v
            var_i = var_j = cov = 0.0
            for i in range(levels):
                for j in range(levels):
                    v = p[i, j]
                    var_i += v * (i - mean_i) ** 2
                    var_j += v * (j - mean_j) ** 2
                    cov += v * ((i - mean_i) * (j - mean_j))
            std_i, std_j = np.sqrt(var_i), np.sqrt(var_j)
            correlation = 1.0 if (std_i < 1e-15 or std_j < 1e-15) else cov / (std_i * std_j)
            out[d, 0] += contrast / n_angles
            out[d, 1] += dissimilarity / n_angles
            out[d, 2] += homogeneity / n_angles
            out[d, 3] += np.sqrt(asm) / n_angles
            out[d, 4] += correlation / n_angles


@_compiled
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


@_compiled
def _order_statistics(values, ranks, out):
    """``out[j]`` = the value of rank ``ranks[j]`` (0-based) in ``values``, exactly: values are
    counted into 1024 bins between their min and max (binning is monotonic, so a rank's bin is
    found from the counts), then the rank is selected among that bin's values only."""
    lo, hi = values[0], values[0]
    for v in values:
        lo = min(lo, v)
        hi = max(hi, v)
    if hi == lo:
        out[:] = lo
        return
    n_bins = 1024
    scale = n_bins / (hi - lo)
    counts = np.zeros(n_bins, np.int64)
    for v in values:
        counts[min(int((v - lo) * scale), n_bins - 1)] += 1
    slot_of_bin = np.full(n_bins, -1, np.int64)
    bin_start = np.zeros(ranks.shape[0], np.int64)  # rank of the first value of each rank's bin
    bins = np.zeros(ranks.shape[0], np.int64)
    n_slots = 0
    cum = 0
    j = 0
    for b in range(n_bins):
        while j < ranks.shape[0] and ranks[j] < cum + counts[b]:
            if slot_of_bin[b] < 0:
                slot_of_bin[b] = n_slots
                bins[n_slots] = b
                bin_start[n_slots] = cum
                n_slots += 1
            j += 1
        cum += counts[b]
    size = 0
    for k in range(n_slots):
        size = max(size, counts[bins[k]])
    buf = np.empty((n_slots, size))
    fill = np.zeros(n_slots, np.int64)
    for v in values:
        slot = slot_of_bin[min(int((v - lo) * scale), n_bins - 1)]
        if slot >= 0:
            buf[slot, fill[slot]] = v
            fill[slot] += 1
    for j in range(ranks.shape[0]):
        b = 0
        for k in range(n_slots):
            if bin_start[k] <= ranks[j] < bin_start[k] + counts[bins[k]]:
                b = k
        part = buf[b, : fill[b]]
        rank = ranks[j] - bin_start[b]
        _select(part, 0, part.shape[0], rank)
        out[j] = part[rank]


@_compiled
def _percentiles(values, qs, out):
    """``np.percentile(values, qs)`` (linear method: numpy's index and lerp formulas) into ``out``;
    the order statistics come from ``_order_statistics``."""
    n = values.shape[0]
    m = qs.shape[0]
    ranks = np.empty(2 * m, np.int64)
    gammas = np.empty(m)
    for j in range(m):
        quantile = qs[j] / 100.0
        virtual = n * quantile + (1.0 + quantile * -1.0) - 1.0
        below = min(max(int(np.floor(virtual)), 0), n - 1)
        ranks[2 * j] = below
        ranks[2 * j + 1] = min(below + 1, n - 1)
        gammas[j] = virtual - np.floor(virtual)
    order = np.argsort(ranks)
    values_at = np.empty(2 * m)
    sorted_values = np.empty(2 * m)
    _order_statistics(values, ranks[order], sorted_values)
    values_at[order] = sorted_values
    for j in range(m):
        a, b = values_at[2 * j], values_at[2 * j + 1]
        diff = b - a
        out[j] = b - diff * (1 - gammas[j]) if gammas[j] >= 0.5 else a + diff * gammas[j]


@_compiled
def _region_sums(rgb, hed, grey, spans, slot_lo, slot_hi, edges, h_vals, e_vals, acc):
    """Sums over one region (the row spans ``spans[:, slot_lo:slot_hi]``), kept in registers: ``acc`` gets
    [n, 6 channel sums, tissue, h > 0.10, h > 0.18, 8 histogram counts]; the haematoxylin and
    eosin values are copied out for the percentiles."""
    s0 = s1 = s2 = s3 = s4 = s5 = 0.0
    n_t = n_10 = n_18 = 0.0
    hist = np.zeros(8)
    k = 0
    top = edges[8] - 1e-9
    for r in range(spans.shape[0]):
        for slot in range(slot_lo, slot_hi):
            for c in range(spans[r, slot, 0], spans[r, slot, 1]):
                red, green, blue = rgb[r, c, 0], rgb[r, c, 1], rgb[r, c, 2]
                hv, ev, dv = hed[r, c, 0], hed[r, c, 1], hed[r, c, 2]
                s0 += red
                s1 += green
                s2 += blue
                s3 += hv
                s4 += ev
                s5 += dv
                sat = max(red, green, blue) - min(red, green, blue)
                if grey[r, c] < 0.85 and sat > 0.04:
                    n_t += 1
                if hv > 0.10:
                    n_10 += 1
                if hv > 0.18:
                    n_18 += 1
                # np.histogram over [0, 0.32) of the clipped value: bin b holds e_b <= x < e_b+1
                clipped = min(max(hv, edges[0]), top)
                b = 0
                for edge in range(1, 8):
                    b += 1 if clipped >= edges[edge] else 0
                hist[b] += 1
                h_vals[k] = hv
                e_vals[k] = ev
                k += 1
    acc[0] = k
    acc[1], acc[2], acc[3], acc[4], acc[5], acc[6] = s0, s1, s2, s3, s4, s5
    acc[7], acc[8], acc[9] = n_t, n_10, n_18
    acc[10:18] = hist


@_compiled
def _region_sq(rgb, hed, spans, slot_lo, slot_hi, means, out):
    """Sums of squared deviations from ``means`` (6 channels) over one region (two-pass std)."""
    q0 = q1 = q2 = q3 = q4 = q5 = 0.0
    for r in range(spans.shape[0]):
        for slot in range(slot_lo, slot_hi):
            for c in range(spans[r, slot, 0], spans[r, slot, 1]):
                d = rgb[r, c, 0] - means[0]
                q0 += d * d
                d = rgb[r, c, 1] - means[1]
                q1 += d * d
                d = rgb[r, c, 2] - means[2]
                q2 += d * d
                d = hed[r, c, 0] - means[3]
                q3 += d * d
                d = hed[r, c, 1] - means[4]
                q4 += d * d
                d = hed[r, c, 2] - means[5]
                q5 += d * d
    out[0], out[1], out[2], out[3], out[4], out[5] = q0, q1, q2, q3, q4, q5


@_compiled
def _patch_features(rgb, hed, grey, code, spans, lbp_shifts, lbp_dr, lbp_dc, offsets, n_angles, edges, row,
                    glcm_out):
    """One patch: per-region statistics into ``row`` (2 x ``_REGION_DIM``), GLCM properties into
    ``glcm_out`` (n_distances, 5)."""
    h, w = grey.shape
    grey_u8 = np.empty((h, w), np.uint8)
    h_q = np.empty((h, w), np.uint8)
    hmask = np.empty((h, w), np.bool_)
    for r in range(h):
        for c in range(w):
            g = grey[r, c] * 255.0  # np.clip(grey * 255, 0, 255).astype(uint8): clip, then truncate
            g = min(max(g, 0.0), 255.0)
            grey_u8[r, c] = np.uint8(g)
            hv = hed[r, c, 0]
            q = hv / 0.32 * 16  # np.clip(h / 0.32 * 16, 0, 15).astype(uint8)
            q = min(max(q, 0.0), 15.0)
            h_q[r, c] = np.uint8(q)
            hmask[r, c] = hv > 0.10
    slots = ((0, 1), (1, 3))  # span slots of the disc, and of the ring (left and right)
    n = np.zeros(2)
    means = np.zeros((2, 6))
    stds = np.zeros((2, 6))
    n_tissue = np.zeros(2)
    n_h10 = np.zeros(2)
    n_h18 = np.zeros(2)
    hist = np.zeros((2, 8))
    h_vals = np.empty((2, h * w))
    e_vals = np.empty((2, h * w))
    acc = np.empty(18)
    sq = np.empty(6)
    for reg in range(2):
        lo, hi = slots[reg]
        _region_sums(rgb, hed, grey, spans, lo, hi, edges, h_vals[reg], e_vals[reg], acc)
        n[reg] = acc[0]
        n_tissue[reg], n_h10[reg], n_h18[reg] = acc[7], acc[8], acc[9]
        hist[reg] = acc[10:18]
        if n[reg] > 0:
            for ch in range(6):
                means[reg, ch] = acc[1 + ch] / n[reg]
            _region_sq(rgb, hed, spans, lo, hi, means[reg], sq)
            for ch in range(6):
                stds[reg, ch] = np.sqrt(sq[ch] / n[reg])
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
    counts = np.zeros((offsets.shape[0], GLCM_LEVELS, GLCM_LEVELS), np.int64)
    _glcm_counts(h_q, offsets, counts)
    _glcm_props(counts, n_angles, glcm_out)
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


@_compiled
def _block_kernel(rgb, hed, grey, code, spans, lbp_shifts, lbp_dr, lbp_dc, offsets, n_angles, edges, rows, glcm):
    for i in range(rgb.shape[0]):
        _patch_features(rgb[i], hed[i], grey[i], code, spans, lbp_shifts, lbp_dr, lbp_dc, offsets, n_angles, edges,
                        rows[i], glcm[i])


def _block_features(rgb: np.ndarray) -> np.ndarray:
    """Features of a float64 ``(b, S, S, 3)`` block in [0, 1] -> ``(b, DIM)`` float32."""
    b, size = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb, np.float64)
    hed = rgb2hed(rgb)
    grey = rgb @ GREY
    regions = np.empty((b, 2 * _REGION_DIM), np.float64)
    glcm = np.empty((b, len(GLCM_DISTANCES), len(GLCM_PROPS)), np.float64)
    shifts, dr, dc = _lbp_tables(size, size)
    _block_kernel(rgb, hed, grey, _region_code(size), _region_spans(size), shifts, dr, dc, _GLCM_OFFSETS,
                  len(GLCM_ANGLES), H_EDGES, regions, glcm)
    out = np.concatenate([regions, glcm.reshape(b, -1)], axis=1)
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
