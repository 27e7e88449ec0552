"""Checks every reader runs, so a broken input fails at read time with the file and the fix.

Each check either passes, warns (the data can be used after a visible repair such as dropping
spots) or raises ``InputError``. The readers call them in the same order: ids, counts,
coordinates against the image, then the finished AnnData against the convention in
docs/ARCHITECTURE.md (``check_section``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import keys
from ..errors import InputError
from ..geometry import spot_pitch


class InputWarning(UserWarning):
    """The input was repaired on reading (spots dropped, images ignored); says what and why."""


def warn(msg: str) -> None:
    warnings.warn(msg, InputWarning, stacklevel=3)


def _examples(values: Sequence, n: int = 3) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:n]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


# -- ids ------------------------------------------------------------------------------------------
def check_unique(ids: Sequence, *, what: str, where: str) -> None:
    """Duplicate barcodes make the join with positions ambiguous: refuse them."""
    index = pd.Index(ids)
    if index.has_duplicates:
        dups = index[index.duplicated()].unique()
        raise InputError(
            f"duplicate {what}: {_examples(dups)}",
            where=where,
            fix="each must appear once; remove the repeated rows",
        )


def match_ids(counts_ids: Sequence, pos_ids: Sequence, *, counts_where: str, pos_where: str) -> pd.Index:
    """Counts spots that have a position, in counts order; warn about the others, fail if none.

    Positions may list more spots than the counts (a Visium slide lists all 4992), so only
    counts spots without a position are reported.
    """
    counts_ids = pd.Index(counts_ids)
    found = counts_ids.isin(pd.Index(pos_ids))
    if not found.any():
        raise InputError(
            f"no spot of the counts matrix is in the positions file "
            f"(counts: {_examples(counts_ids)}; positions: {_examples(pos_ids)})",
            where=pos_where,
            fix=f"use the positions file of the same section as {counts_where}",
        )
    if not found.all():
        warn(
            f"{counts_where}: {int((~found).sum())} of {len(counts_ids)} spots have no position in "
            f"{pos_where} ({_examples(counts_ids[~found])}); they are dropped"
        )
    return counts_ids[found]


# -- counts ---------------------------------------------------------------------------------------
def _values(X) -> np.ndarray:
    return X.data if sp.issparse(X) else np.asarray(X).ravel()


def check_counts(X, *, where: str, require_raw: bool = False, allow_negative: bool = False) -> bool:
    """Validate a count matrix; return True when it holds raw counts (non-negative integers).

    NaN/inf is always an error. Negative values are an error in count files
    (``allow_negative=False``); a processed .h5ad may hold them. Non-integers are an error only
    when ``require_raw`` (seurat_v3 HVG selection needs counts); otherwise they are reported.
    """
    v = _values(X)
    if v.size == 0 and (X.shape[0] == 0 or X.shape[1] == 0):
        raise InputError(
            "the count matrix is empty", where=where, fix="check that the file holds spots and genes"
        )
    if not np.issubdtype(v.dtype, np.number):
        raise InputError(
            f"counts are not numbers (dtype {v.dtype})", where=where, fix="give a numeric count table"
        )
    if not np.isfinite(v).all():
        n = int((~np.isfinite(v)).sum())
        raise InputError(
            f"{n} count values are NaN or infinite",
            where=where,
            fix="fill missing counts with 0 or remove those spots",
        )
    negative = bool((v < 0).any())
    if negative and (require_raw or not allow_negative):
        raise InputError(
            f"{int((v < 0).sum())} count values are negative (min {v.min():g})",
            where=where,
            fix="give raw UMI counts (non-negative integers), not scaled or corrected values",
        )
    integer = bool(np.all(np.mod(v, 1) == 0)) if np.issubdtype(v.dtype, np.floating) else True
    if not integer and require_raw:
        bad = v[np.mod(v, 1) != 0]
        raise InputError(
            f"counts are not integers (e.g. {bad[0]:g}); raw counts are required here",
            where=where,
            fix="give the raw count matrix (not normalised/log data), or choose a method that accepts it",
        )
    if not integer or negative:
        warn(
            f"{where}: values are not raw counts ({'negative' if negative else 'non-integer'}); recorded as "
            "uns['histosge']['raw_counts'] = False, so HVG selection must not use seurat_v3"
        )
    return integer and not negative


def drop_empty_spots(adata, *, where: str):
    """Remove spots with zero total counts (warning); fail if nothing is left.

    All-zero genes are kept so sections keep the same gene list; they carry no signal and
    HVG selection ignores them.
    """
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    empty = totals == 0
    if empty.all():
        raise InputError(
            f"all {adata.n_obs} spots have zero counts",
            where=where,
            fix="check that the counts file is not empty",
        )
    if (np.asarray(adata.X.sum(axis=0)).ravel() != 0).sum() == 0:  # pragma: no cover - implied above
        raise InputError("all genes have zero counts", where=where, fix="check the counts file")
    if empty.any():
        warn(
            f"{where}: {int(empty.sum())} spots with zero counts dropped "
            f"({_examples(adata.obs_names[empty])})"
        )
        adata = adata[~empty].copy()
    info = adata.uns.get("histosge")
    if isinstance(info, dict) and "dropped" in info:
        info["dropped"]["zero counts"] = int(empty.sum())
    return adata


def dropped_text(dropped: dict | None) -> str:
    """The spots a reader left out, for a summary: ``"12 not selected (selected = 0), 2 with zero
    counts"``, or ``"none"``."""
    parts = [f"{n} {why}" for why, n in (dropped or {}).items() if n]
    return ", ".join(parts) if parts else "none"


# -- coordinates ----------------------------------------------------------------------------------
MAX_PIXEL = 1e7  # far beyond any slide (75 mm at 0.25 um/px is 3e5 px)


def check_finite_coords(xy: np.ndarray, *, where: str) -> None:
    """Pixel coordinates must be numbers of a plausible size (NaN/inf/1e30 break geometry)."""
    if not np.isfinite(xy).all():
        raise InputError(
            f"{int((~np.isfinite(xy).all(axis=1)).sum())} spots have missing pixel coordinates",
            where=where,
            fix="every spot needs numeric pixel coordinates",
        )
    if np.abs(xy).max(initial=0) > MAX_PIXEL:
        raise InputError(
            f"pixel coordinates up to {np.abs(xy).max():.3g}, beyond any image",
            where=where,
            fix="give spot centres in pixels of the full-resolution image",
        )


def check_spot_diameter(diameter: float, xy: np.ndarray, *, where: str) -> None:
    """The spot diameter must fit the spot spacing (Visium 0.55 x pitch, legacy ST 0.5 x pitch).

    A diameter far off (another image's pixels, microns instead of pixels) would make every
    patch the wrong size; allowed range 0.2-2 x the median nearest-neighbour distance.
    """
    pitch = spot_pitch(xy)  # NaN for fewer than two spots: nothing to check
    if pitch > 0 and not 0.2 * pitch <= diameter <= 2.0 * pitch:
        raise InputError(
            f"spot_diameter_fullres = {diameter:.4g} px does not fit the spot spacing of {pitch:.4g} px "
            f"(expected about 0.5-0.65 x spacing)",
            where=where,
            fix="use the scale factors written for these positions (spot diameter in full-resolution pixels)",
        )


def check_in_image(xy: np.ndarray, width: int, height: int, *, where: str, image: str) -> None:
    """Spots (x, y in this image's pixels) must fall on the image.

    Most spots outside means the coordinates belong to another image or another scale
    (full-res coordinates against a downsampled image, wrong scale factor): an error. A few
    outside is common at slide edges: a warning.
    """
    x, y = xy[:, 0], xy[:, 1]
    out = (x < 0) | (y < 0) | (x >= width) | (y >= height)
    frac = float(out.mean()) if len(out) else 0.0
    if frac > 0.5:
        raise InputError(
            f"{int(out.sum())} of {len(out)} spots fall outside the {width}x{height} image {image} "
            f"(spot x in [{x.min():.0f}, {x.max():.0f}], y in [{y.min():.0f}, {y.max():.0f}]); "
            f"the coordinates are scaled for another image",
            where=where,
            fix="give the image these coordinates were measured on, or the matching scale factor",
        )
    if out.any():
        warn(f"{where}: {int(out.sum())} of {len(out)} spots fall outside the image {image}")


def tissue_mask(img: np.ndarray, radius: float) -> np.ndarray | None:
    """Pixels that differ in colour from the slide background, or None if there is no contrast.

    The background colour is the median of the image border (slides vary: the DLPFC low-res
    images have a grey ~175 background, her2st a pinkish white). The colour distance to it is
    averaged over a spot-sized window, so pale tissue with white gaps still counts as tissue,
    and thresholded with Otsu's method.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    f = img[..., :3].astype(np.float32)
    if f.shape[0] < 8 or f.shape[1] < 8:
        return None
    b = max(2, min(f.shape[:2]) // 20)
    border = np.concatenate(
        [f[:b].reshape(-1, 3), f[-b:].reshape(-1, 3), f[:, :b].reshape(-1, 3), f[:, -b:].reshape(-1, 3)]
    )
    dist = np.sqrt(((f - np.median(border, axis=0)) ** 2).sum(axis=2))
    dist = ndi.uniform_filter(dist, size=int(np.clip(2 * radius + 1, 1, min(f.shape[:2]))))
    if np.ptp(dist) < 10:
        return None
    return dist > threshold_otsu(dist)


def on_tissue_fraction(img: np.ndarray, xy: np.ndarray, radius: float) -> tuple[float, float] | None:
    """(fraction of spot centres over tissue, fraction of the image that is tissue), or None if unknown."""
    step = max(1, int(np.ceil(max(img.shape[:2]) / 1000)))  # ~1000 px is plenty to tell tissue from glass
    if step > 1:
        img, xy, radius = img[::step, ::step], xy / step, radius / step
    mask = tissue_mask(img, radius)
    if mask is None:
        return None
    h, w = mask.shape
    xs = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
    return float(mask[ys, xs].mean()), float(mask.mean())


def check_on_tissue(img: np.ndarray, xy: np.ndarray, radius: float, *, where: str, image: str,
                    enforce: bool = True) -> None:
    """Spots under tissue should sit on tissue; most of them on background means misalignment.

    Calibrated on the shared data: aligned sections put 82-100% of spots on tissue, the same
    coordinates shifted or scaled put 0-10% there. Error below 30%, warning below 60%.
    """
    inside = (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] < img.shape[1]) & (xy[:, 1] < img.shape[0])
    if inside.sum() < 10:
        return
    found = on_tissue_fraction(img, xy[inside], radius)
    if found is None:
        return
    spots, image_frac = found
    if image_frac < 0.02 or image_frac > 0.9:  # no clear tissue/background split to judge by
        return
    if spots < 0.3 and enforce:
        raise InputError(
            f"only {spots:.0%} of the spots lie on tissue in {image} "
            f"({image_frac:.0%} of the image is tissue); the coordinates do not match this image "
            "(shifted, scaled or from another scan)",
            where=where,
            fix=f"give the image these coordinates were measured on (x = column, y = row); {OVERRIDE}",
        )
    if spots < 0.6:
        warn(f"{where}: only {spots:.0%} of the spots lie on tissue in {image}; check the alignment")


#: How to read an image that fails an alignment check anyway (CLI and Python).
OVERRIDE = "--no-alignment-check (check_alignment=False) reads it anyway"


def check_not_blank(img: np.ndarray, *, where: str, path=None) -> None:
    """An image of one colour gives every spot the same features: refuse it.

    The usual cause is an RGBA PNG whose alpha is 0 everywhere: composited on white, as the
    readers do, nothing of the tissue is left.
    """
    arr = np.asarray(img)
    if arr.size == 0:
        raise InputError("the image is empty (0 pixels)", where=where, fix="give the H&E image of the section")
    step = max(1, int(np.ceil(max(arr.shape[:2]) / 1000)))
    small = (arr[::step, ::step, :3] if arr.ndim == 3 else arr[::step, ::step, None]).astype(np.int64)
    spread = np.ptp(small.reshape(-1, small.shape[-1]), axis=0)  # per channel, across pixels
    if int(spread.max()) > 8:
        return
    transparent = False
    if path is not None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                if "A" in im.getbands():
                    transparent = im.getchannel("A").getextrema()[1] == 0
        except Exception:  # the image was decoded before; only the reason is in question here
            transparent = False
    if transparent:
        raise InputError(
            "the image is fully transparent (alpha 0 everywhere): composited on white it is blank, "
            "so every spot would get the same features",
            where=where,
            fix="save the image without its alpha channel (e.g. as RGB JPEG/PNG) and give that file",
        )
    raise InputError(
        f"the image is a single colour (channels vary by at most {int(spread.max())} of 255): every spot would "
        "get the same features",
        where=where,
        fix="give the H&E image of the section",
    )


def check_alignment(
    img: np.ndarray,
    xy_on: np.ndarray,
    xy_off: np.ndarray,
    *,
    radius: float,
    pitch: float,
    where: str,
    image: str,
    off_source: str,
    totals: np.ndarray | None = None,
    enforce: bool = True,
    scale: float | None = None,
) -> dict:
    """Score how well ``img`` fits the spot positions (``read.alignment``) and refuse a misfit.

    ``xy_on``/``xy_off``: spots under / off tissue in ``img`` pixels (``scale``: ``img`` pixels
    per full-resolution pixel); ``off_source`` says where the off-tissue spots come from.
    ``enforce=False`` (``--no-alignment-check``) turns the refusal into a warning. Returns the
    record for ``uns['histosge']['alignment']``.
    """
    from . import alignment

    result = alignment.score(img, xy_on, xy_off, radius, pitch, totals=totals,
                             fullres_per_px=1 / scale if scale else None)
    result.update(image=str(image), off_tissue_spots=off_source, enforced=bool(enforce))
    status = result["status"]
    if status.startswith("misaligned"):
        reason = status[len("misaligned: "):]
        if enforce:
            raise InputError(
                f"the image {image} does not fit the spot positions: {reason}",
                where=where,
                fix="give the image these positions were measured on (same section and scan, not flipped, "
                f"rotated or rescaled) and its scale factors; {OVERRIDE}",
            )
        warn(f"{where}: the image {image} does not fit the spot positions ({reason}); read anyway "
             "because the alignment check is off")
        result["status"] = "overridden: " + status
    return result


# -- the finished AnnData -------------------------------------------------------------------------
def finish_section(adata, *, where: str, grid: str, library_id: str, counts: str | None = None, **info):
    """The end of every reader: ``uns['histosge']`` (``grid``, ``library_id``, ``source`` (``where``)
    and ``info``: ``raw_counts``, ``spot_diameter_um``, ``alignment`` and what the format adds),
    spots without counts dropped (``counts``: where they were read, default ``where``), the
    section checked against the contract (``check_section``). Returns the section."""
    adata.uns["histosge"] = {"grid": grid, "library_id": library_id, "source": where, **info}
    adata = drop_empty_spots(adata, where=counts or where)
    check_section(adata, where=where)
    return adata


def check_section(adata, *, where: str = "AnnData") -> None:
    """The returned AnnData follows docs/ARCHITECTURE.md (the contract other modules rely on)."""

    def bad(what: str):
        raise InputError(what, where=where, fix="read the section with histosge.read")

    if adata.n_obs == 0 or adata.n_vars == 0:
        bad(f"empty section ({adata.n_obs} spots x {adata.n_vars} genes)")
    if not sp.isspmatrix_csr(adata.X) or adata.X.dtype != np.float32:
        bad("X is not a float32 CSR matrix")
    if not adata.obs_names.is_unique or not adata.var_names.is_unique:
        bad("spot or gene names are not unique")
    for key in ("array_row", "array_col"):
        if key not in adata.obs or adata.obs[key].dtype != np.float64:
            bad(f"obs['{key}'] missing or not float64")
    xy = adata.obsm.get(keys.SPATIAL)
    if xy is None or np.asarray(xy).shape != (adata.n_obs, 2) or not np.isfinite(np.asarray(xy, float)).all():
        bad("obsm['spatial'] missing, not (n, 2) or not finite")
    meta = adata.uns.get("histosge", {})
    lib = meta.get("library_id")
    if lib is None or lib not in adata.uns.get(keys.SPATIAL, {}):
        bad("uns['histosge']['library_id'] does not name a library in uns['spatial']")
    sf = adata.uns[keys.SPATIAL][lib].get("scalefactors", {})
    if not (sf.get("spot_diameter_fullres", 0) > 0):
        bad("scalefactors['spot_diameter_fullres'] missing or not positive")
