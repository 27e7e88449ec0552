"""Does the image fit the spot positions? Scores that see more than tissue versus glass.

Every positions file says which spots lie under tissue: Space Ranger lists all ~5,000 spots of
the slide with ``in_tissue`` 0/1, a legacy-ST selection file lists the selected spots of the
array (the positions it leaves out, on the same lattice, are the spots off tissue). If the image
is the one the positions were measured on, *tissue-ness* at a spot (the colour distance from
the slide background, averaged over the spot) separates the two groups: the AUC of in-tissue
versus off-tissue spots is close to 1. A flipped, rotated, shifted, rescaled or foreign image
puts in-tissue spots on glass and off-tissue spots on tissue, and the AUC falls.

A low AUC alone misses a small shift on a large section, and a symmetric section keeps a fair
AUC when flipped. So the positions are also scored under the transforms a wrong image would
need to fit them: flips, rotations, swapped x/y, shifts of whole spot pitches, and scale factors
20-33% off. The image fails when

- the AUC at the given positions is below ``MIN_AUC`` (the spots do not follow the tissue), or
- some transform fits at least ``MARGIN`` better (the positions fit a moved image better than
  this one), naming that transform in the message.

Also recorded, not used to refuse: ``count_rho``, the Spearman correlation across in-tissue
spots of the total counts with the haematoxylin (nuclear stain) density under the spot, i.e.
whether more cellular tissue yields more transcripts. It is 0.59-0.72 on the aligned her2st
sections, but +0.43 and -0.26 on the two aligned DLPFC sections (600 px images, 4 px spots),
so it cannot tell an aligned image from a misaligned one on its own (docs/BAD_INPUTS.md lists
it for every variant).

Thresholds are calibrated by ``bench/alignment_scores.py`` on the shipped sections and their
flipped / rotated / shifted / rescaled / foreign-image variants
(``bench/results/alignment_scores.json``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Below this AUC (in-tissue vs off-tissue spots at the tissue edge) the image does not fit.
MIN_EDGE_AUC = 0.85
#: A transform of the positions that raises the edge AUC by this much means the image was moved.
#: 0.03: on the shipped sections the best alternative of the right image is 0.016-0.041 *below*
#: its edge AUC (bench/results/alignment_scores.json); on 3,000 random synthetic tissues no right
#: image is refused at 0.02-0.05 and 0.03 lets fewer moved ones pass than 0.05
#: (bench/alignment_sweep.py).
MARGIN = 0.03
#: Fewer spots than this on either side: no score (too few to tell).
MIN_SPOTS = 10
#: Longest side of the image the score is computed on (pixels); larger images are downsampled.
MAX_SIDE = 1500


def background_colour(img: np.ndarray) -> np.ndarray:
    """Median colour of the image border (the slide glass or padding around the tissue)."""
    f = img[..., :3]
    b = max(2, min(f.shape[:2]) // 20)
    border = np.concatenate(
        [f[:b].reshape(-1, 3), f[-b:].reshape(-1, 3), f[:, :b].reshape(-1, 3), f[:, -b:].reshape(-1, 3)]
    )
    return np.median(border.astype(np.float32), axis=0)


def tissue_map(img: np.ndarray, radius: float) -> np.ndarray | None:
    """Per pixel: colour distance from the background, averaged over a spot-sized window.

    None when the image has no contrast (one colour: an all-transparent RGBA image, a blank).
    """
    f = np.asarray(img)[..., :3].astype(np.float32)
    if f.ndim != 3 or min(f.shape[:2]) < 8:
        return None
    dist = np.sqrt(((f - background_colour(f)) ** 2).sum(axis=2))
    size = int(np.clip(2 * round(radius) + 1, 1, min(f.shape[:2])))
    dist = ndi.uniform_filter(dist, size=size, mode="nearest")
    if np.ptp(dist) < 10:
        return None
    return dist


def cellularity_map(img: np.ndarray, radius: float) -> np.ndarray:
    """Haematoxylin (nuclear stain) density from colour deconvolution, averaged over a spot."""
    from skimage.color import rgb2hed

    h = rgb2hed(np.asarray(img)[..., :3])[..., 0]
    size = int(np.clip(2 * round(radius) + 1, 1, min(h.shape[:2])))
    return ndi.uniform_filter(h, size=size, mode="nearest")


def sample(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Values of map ``m`` at (x, y) pixel positions (nearest pixel); NaN outside the map."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    h, w = m.shape
    xs, ys = np.round(xy[:, 0]), np.round(xy[:, 1])
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs >= 0) & (ys >= 0) & (xs < w) & (ys < h)
    out = np.full(len(xy), np.nan)
    out[ok] = m[ys[ok].astype(int), xs[ok].astype(int)]
    return out


def auc(on: np.ndarray, off: np.ndarray) -> float:
    """P(tissue-ness of an in-tissue spot > that of an off-tissue spot); spots off the image count
    as glass. NaN with fewer than ``MIN_SPOTS`` on either side."""
    from scipy.stats import rankdata

    on = np.where(np.isfinite(on), on, 0.0)
    off = np.where(np.isfinite(off), off, 0.0)
    if len(on) < MIN_SPOTS or len(off) < MIN_SPOTS:
        return float("nan")
    r = rankdata(np.concatenate([on, off]))
    return float((r[: len(on)].sum() - len(on) * (len(on) + 1) / 2) / (len(on) * len(off)))


def transforms(width: int, height: int, pitch: float, max_shift: int = 6) -> list[tuple[str, object]]:
    """(name, f(xy) -> xy) for the ways an image can be wrong for its positions.

    Flips and rotations are about the image centre (the image was flipped or rotated whole);
    scale factors about the origin (a scale factor multiplies pixel coordinates); shifts are
    half and whole spot pitches up to ``max_shift`` pitches in each direction.
    """
    cx, cy = (width - 1) / 2, (height - 1) / 2
    out: list[tuple[str, object]] = [
        ("flipped left-right", lambda p: np.c_[2 * cx - p[:, 0], p[:, 1]]),
        ("flipped upside down", lambda p: np.c_[p[:, 0], 2 * cy - p[:, 1]]),
        ("rotated 180 degrees", lambda p: np.c_[2 * cx - p[:, 0], 2 * cy - p[:, 1]]),
        ("rotated 90 degrees clockwise", lambda p: np.c_[cx + (cy - p[:, 1]), cy + (p[:, 0] - cx)]),
        ("rotated 90 degrees anticlockwise", lambda p: np.c_[cx - (cy - p[:, 1]), cy - (p[:, 0] - cx)]),
        ("with x and y swapped (positions stored as (y, x)?)", lambda p: p[:, ::-1].copy()),
    ]
    for deg in (-15, -10, -5, -3, 3, 5, 10, 15):  # small rotations of the whole image
        t = np.radians(deg)
        out.append((f"rotated {abs(deg)} degrees {'clockwise' if deg > 0 else 'anticlockwise'}",
                    lambda p, c=np.cos(t), s=np.sin(t): np.c_[cx + c * (p[:, 0] - cx) - s * (p[:, 1] - cy),
                                                              cy + s * (p[:, 0] - cx) + c * (p[:, 1] - cy)]))
    for s in (0.75, 0.8, 0.85, 0.9, 0.95, 1.05, 1.1, 1.15, 1.2, 1.25, 1.33):
        out.append((f"scaled by {s:g} (a wrong scale factor)", lambda p, s=s: p * s))
    if pitch > 0:
        steps = sorted({i / 2 for i in range(-2, 3)} | set(range(-max_shift, max_shift + 1)))
        for i in steps:
            for j in steps:
                if (i, j) != (0, 0):
                    out.append(((i, j), lambda p, dx=i * pitch, dy=j * pitch: p + [dx, dy]))
    return out


def _edge(a: np.ndarray, b: np.ndarray, pitch: float, reach: float = 2.5) -> np.ndarray:
    """Mask of the spots of ``a`` within ``reach`` pitches of a spot of ``b`` (the tissue edge)."""
    from scipy.spatial import cKDTree

    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), bool)
    d, _ = cKDTree(b).query(a)
    return d <= reach * pitch


def score(
    img: np.ndarray,
    xy_on: np.ndarray,
    xy_off: np.ndarray,
    radius: float,
    pitch: float,
    *,
    totals: np.ndarray | None = None,
    search: bool = True,
    fullres_per_px: float | None = None,
) -> dict:
    """Alignment scores of spot positions (in ``img`` pixels) against ``img``.

    ``xy_on``: spots under tissue; ``xy_off``: spots the positions file puts off tissue;
    ``radius`` and ``pitch``: spot radius and spot spacing in ``img`` pixels; ``totals``: total
    counts of the ``xy_on`` spots; ``fullres_per_px``: full-resolution pixels per ``img`` pixel
    (names shifts in full-resolution pixels). Returns a dict (stored in
    ``uns['histosge']['alignment']``):

    - ``auc``: in-tissue vs off-tissue spots, all of them;
    - ``edge_auc``: the same for spots within 2.5 pitches of the tissue edge (what moves when
      the image moves); the refusal is decided on it;
    - ``best_alternative``, ``best_alternative_edge_auc``: the transform of the positions that
      fits the image best;
    - ``count_rho``: Spearman correlation of total counts with haematoxylin density (in-tissue spots);
    - ``n_on``, ``n_off``, ``n_edge``; ``status``: 'ok', 'misaligned: ...' or 'not scored: ...'.
    """
    img = np.asarray(img)
    xy_on = np.asarray(xy_on, np.float64).reshape(-1, 2)
    xy_off = np.asarray(xy_off, np.float64).reshape(-1, 2)
    step = 1.0
    if max(img.shape[:2]) > MAX_SIDE:
        step = float(int(np.ceil(max(img.shape[:2]) / MAX_SIDE)))
        img = img[:: int(step), :: int(step)]
    on_s, off_s, radius_s, pitch_s = xy_on / step, xy_off / step, radius / step, pitch / step
    out: dict = {"n_on": int(len(xy_on)), "n_off": int(len(xy_off)), "min_edge_auc": MIN_EDGE_AUC,
                 "margin": MARGIN}
    m = tissue_map(img, radius_s)
    if m is None:
        out["status"] = "not scored: the image has no contrast (one colour)"
        return out
    if len(xy_on) < MIN_SPOTS or len(xy_off) < MIN_SPOTS:
        out["status"] = (f"not scored: {len(xy_on)} spots under tissue and {len(xy_off)} off tissue "
                         f"(need {MIN_SPOTS} of each)")
        return out
    e_on, e_off = _edge(on_s, off_s, pitch_s), _edge(off_s, on_s, pitch_s)
    out["n_edge"] = int(e_on.sum() + e_off.sum())
    on = sample(m, on_s)
    out["auc"] = auc(on, sample(m, off_s))
    edge_auc = auc(on[e_on], sample(m, off_s[e_off]))
    if not np.isfinite(edge_auc):
        out["status"] = f"not scored: only {out['n_edge']} spots at the tissue edge"
        return out
    out["edge_auc"] = edge_auc
    if totals is not None and len(totals) == len(on):
        from scipy.stats import spearmanr

        cells = sample(cellularity_map(img, radius_s), on_s)
        totals = np.asarray(totals, np.float64)
        ok = np.isfinite(cells) & np.isfinite(totals)
        if ok.sum() >= MIN_SPOTS and np.ptp(cells[ok]) > 0 and np.ptp(totals[ok]) > 0:
            rho = spearmanr(totals[ok], cells[ok]).statistic
            if np.isfinite(rho):
                out["count_rho"] = float(rho)
    h, w = m.shape
    best_name, best = None, -1.0
    if search:
        a_on, a_off = on_s[e_on], off_s[e_off]
        for name, f in transforms(w, h, pitch_s):
            a = auc(sample(m, f(a_on)), sample(m, f(a_off)))
            if np.isfinite(a) and a > best:
                best_name, best = name, a
        if isinstance(best_name, tuple):  # a shift, named in full-resolution pixels when the scale is known
            f, unit = (fullres_per_px, "full-resolution px") if fullres_per_px else (1.0, "px")
            best_name = (f"shifted by ({best_name[0] * pitch * f:+.0f}, {best_name[1] * pitch * f:+.0f}) {unit}")
        if best_name is not None:
            out["best_alternative"], out["best_alternative_edge_auc"] = best_name, float(best)
    better = best_name is not None and best >= edge_auc + MARGIN
    hint = f"; the positions fit the image better {best_name} (edge AUC {best:.2f})" if better else ""
    if edge_auc < MIN_EDGE_AUC:
        out["status"] = (f"misaligned: spots under tissue do not follow the tissue edge "
                         f"(edge AUC {edge_auc:.2f} < {MIN_EDGE_AUC:g}){hint}")
    elif better:
        out["status"] = f"misaligned: edge AUC {edge_auc:.2f} as given{hint}"
    else:
        out["status"] = "ok"
    return out


def lattice_off_spots(rows: np.ndarray, cols: np.ndarray, xy: np.ndarray, grid: str, margin: int = 0
                      ) -> np.ndarray:
    """Pixel positions of the lattice spots that ``rows``/``cols`` leave out (off tissue).

    For positions files that list only spots under tissue (legacy-ST selection files): every
    lattice position in the bounding box of the listed ones (grown by ``margin`` steps) that is
    not listed, placed by the affine array-to-pixel fit of the listed spots. The default
    ``margin=0`` stays inside the array: beyond it, tissue may lie where no spot was printed.
    """
    from ..geometry import array_to_pixel, fit_array_to_pixel, lattice_positions

    rows = np.asarray(rows, np.float64)
    cols = np.asarray(cols, np.float64)
    if len(rows) < 3:
        return np.empty((0, 2))
    coef = fit_array_to_pixel(rows, cols, xy)
    r_all, c_all = lattice_positions(rows, cols, grid, margin)
    have = set(zip(rows.astype(np.int64).tolist(), cols.astype(np.int64).tolist(), strict=True))
    keep = np.array([(r, c) not in have for r, c in zip(r_all.tolist(), c_all.tolist(), strict=True)], bool)
    return array_to_pixel(coef, r_all[keep], c_all[keep])
