"""An H&E slide with no spatial data, made into spots that a trained model can predict.

``read_slide(path, pitch_um=..., spot_diameter_um=...)`` opens a whole-slide image (pyramidal
TIFF / OME-TIFF / SVS through tifffile, NDPI / MRXS / ... through OpenSlide, or a plain
JPEG / PNG / TIFF with ``mpp``), finds the tissue on a low-resolution copy, and lays a
hexagonal lattice of virtual spots over it at the given pitch in micrometres. The result is a
section AnnData without expression (``X`` has no genes): ``obsm['spatial']`` in level-0 pixels,
``obs['array_row'/'array_col']`` on the Visium convention (neighbours on a row two columns
apart), ``uns['spatial'][library]`` with a thumbnail and its scale factor, and
``uns['histosge']`` with the pixel size, so that every patch is cut in micrometres.

The pixel size is never guessed: it comes from the file (SVS ``MPP``, OME ``PhysicalSizeX``,
TIFF resolution tags; see ``read.image``) or from ``mpp``; without either, or with pixels that
are not square, the slide is refused. So is a lattice whose spots could not fit in memory
(``check_lattice_size``), before it is laid.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import keys
from ..errors import InputError
from .image import ANISOTROPY_TOLERANCE, ImageSource

#: Plausible pixel sizes (um/px): below, no scanner; above 10, a thumbnail, not a slide.
MPP_RANGE = (0.05, 10.0)
#: Longest side of the thumbnail kept in ``uns['spatial']`` (and the tissue search's resolution).
THUMBNAIL_SIDE = 2000
#: A virtual spot is kept when at least this fraction of its disc lies on tissue.
MIN_TISSUE_FRACTION = 0.5


#: Bytes per point of the lattice laid over the slide's bounding box (grid indices, positions, mask).
LATTICE_BYTES = 64
#: Bytes per kept spot of the slide's AnnData alone (names, obs, positions).
SPOT_BYTES = 400
#: Of the memory available, what a slide's spots may take.
MEMORY_SHARE = 0.8


def available_memory() -> float | None:
    """Bytes this process can still use: MemAvailable, capped by a cgroup limit; None if unknown."""
    found = []
    try:
        with open("/proc/meminfo") as fh:
            found += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as fh, open("/sys/fs/cgroup/memory.current") as cur:
            limit = fh.read().strip()
            if limit != "max":
                found.append(int(limit) - int(cur.read().strip()))
    except (OSError, ValueError):
        pass
    return float(min(found)) if found else None


def check_lattice_size(width: int, height: int, pitch_px: float, tissue_fraction: float, *, pitch_um: float,
                       bytes_per_spot: float, where: str) -> None:
    """Refuse, before laying it, a lattice whose spots cannot fit in memory: points over the
    slide's box x ``LATTICE_BYTES`` plus spots on tissue x (``SPOT_BYTES`` + ``bytes_per_spot``,
    what predicting each costs) against ``MEMORY_SHARE`` of ``available_memory()``."""
    points = (width / (pitch_px / 2) + 1) * (height / (pitch_px * np.sqrt(3) / 2) + 1) / 2
    spots = points * max(tissue_fraction, 0.0)
    need = points * LATTICE_BYTES + spots * (SPOT_BYTES + max(bytes_per_spot, 0.0))
    avail = available_memory()
    if avail is not None and need > MEMORY_SHARE * avail:
        raise InputError(f"a {pitch_um:g} um lattice on this slide is about {spots:,.0f} spots on tissue "
                         f"({points:,.0f} lattice points), about {need / 1e9:,.1f} GB to lay and predict; "
                         f"{avail / 1e9:,.1f} GB of memory is available", where=where,
                         fix="give a larger spot pitch (--pitch-um, or --factor 4/9/16 of the model's own), or a "
                             "crop of the slide")


def check_mpp(mpp: float, *, where: str) -> float:
    """A pixel size that can be a slide's: positive, and between ``MPP_RANGE``."""
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise InputError(f"pixel size {mpp!r} is not a number", where=where, fix="e.g. --mpp 0.5") from None
    lo, hi = MPP_RANGE
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"pixel size {value:g} um/px is not positive", where=where,
                         fix="give the scanner's micrometres per pixel, e.g. --mpp 0.5 (40x) or 0.25 (80x)")
    if not lo <= value <= hi:
        raise InputError(f"pixel size {value:g} um/px is outside {lo:g}-{hi:g} um/px: not a slide at full "
                         "resolution", where=where, fix="give the full-resolution slide and its pixel size")
    return value


def open_slide(path: str | os.PathLike, *, mpp: float | None = None) -> ImageSource:
    """The slide as an ``ImageSource`` whose ``mpp`` is known, or one clear error."""
    path = Path(path)
    if mpp is not None:
        mpp = check_mpp(mpp, where="--mpp")
    src = ImageSource(path, mpp=mpp)
    try:
        if src.mpp is None and src.mpp_problem:
            raise InputError(f"the slide's pixel size cannot be read: {src.mpp_problem}", where=str(path),
                             fix="give it with --mpp (micrometres per pixel, e.g. 0.5 at 20x), or correct the metadata")
        if src.mpp is None:
            raise InputError("the slide's pixel size is unknown (no MPP, PhysicalSizeX or resolution tags)",
                             where=str(path), fix="give it with --mpp (micrometres per pixel, e.g. 0.5 at 20x)")
        if mpp is None and src.mpp_y is not None and abs(src.mpp_y / src.mpp - 1) > ANISOTROPY_TOLERANCE:
            raise InputError(f"the pixels are not square: {src.mpp_source} give {src.mpp:g} um wide and "
                             f"{src.mpp_y:g} um high; spots and patches would be stretched", where=str(path),
                             fix="resample the slide to square pixels (e.g. vips resize, bfconvert) and give that")
        check_mpp(src.mpp, where=str(path))
    except InputError:
        src.close()
        raise
    return src


#: Tissue score (max of saturation and darkness, 0-1) at or below which a pixel looks like glass: white,
#: light grey or the pink tint some slides' glass has (her2st C4's glass scores 0.11-0.16; its tissue 0.2-0.7).
GLASS_SCORE = 0.17
#: A pixel's score is at most this many times its saturation: grey (saturation 0.01-0.03) is never tissue.
GREY_SAT_FACTOR = 5.0
#: Below this fraction of glass-like pixels the image has no background to speak of (a crop of tissue, a
#: tissue microarray core filling the frame, a slide scanned edge to edge): everything not glass-like is tissue.
MIN_BACKGROUND = 0.05
#: The brighter of Otsu's two classes must reach this mean score to be tissue (else it is glass: the printed
#: spot array, dust, a stain gradient).
MIN_TISSUE_SCORE = 0.2


def tissue_mask(thumb: np.ndarray) -> np.ndarray:
    """Tissue pixels of an RGB thumbnail: saturation or darkness (where there is colour) above a
    threshold, after a small smoothing; the slide glass (white, light grey or faintly tinted,
    unsaturated) and a grey or black scanner background are background.

    With glass in view, the threshold is Otsu's between glass and tissue. Otsu's split needs two
    populations: on a crop that is all tissue it would cut the tissue itself in two (dark nuclei
    against pale stroma, leaving gaps over clear tissue), so with less than ``MIN_BACKGROUND`` of
    glass-like pixels every pixel above ``GLASS_SCORE`` is tissue; and an image whose brighter class
    is still glass-like (glass alone, its printed spot array) has no tissue.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    rgb = thumb[..., :3].astype(np.float32) / 255.0
    sat = rgb.max(-1) - rgb.min(-1)
    dark = 1.0 - rgb.mean(-1)
    # darkness counts only where there is colour (stained tissue): a grey or black scanner background,
    # unsaturated however dark, scores as glass
    score = ndi.uniform_filter(np.minimum(np.maximum(sat, dark), GREY_SAT_FACTOR * sat), size=3)
    if np.ptp(score) < 0.05:  # one flat colour: no tissue to tell from glass
        return np.zeros(score.shape, bool)
    if (score <= GLASS_SCORE).mean() < MIN_BACKGROUND:  # little or no background: no glass class to split off
        threshold = GLASS_SCORE
    else:
        threshold = max(threshold_otsu(score), 0.08)
        if not score[score > threshold].mean() >= MIN_TISSUE_SCORE:  # both classes glass-like
            return np.zeros(score.shape, bool)
    mask = score > threshold
    mask = ndi.binary_opening(mask, iterations=1)
    return ndi.binary_fill_holes(ndi.binary_closing(mask, iterations=2))


def hex_lattice(width: float, height: float, pitch_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(array_row, array_col, xy) of a hexagonal lattice over a width x height box, pitch
    ``pitch_px``: rows sqrt(3)/2 pitch apart, same-row neighbours two columns (one pitch) apart,
    row + col even, as Visium numbers its spots."""
    row_step = pitch_px * np.sqrt(3) / 2
    n_rows = int(np.floor(height / row_step)) + 1
    n_cols = int(np.floor(width / (pitch_px / 2))) + 1
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    keep = (rows + cols) % 2 == 0
    rows, cols = rows[keep].astype(np.float64), cols[keep].astype(np.float64)
    xy = np.column_stack([cols * pitch_px / 2, rows * row_step])
    return rows, cols, xy


def read_slide(path: str | os.PathLike, *, pitch_um: float, spot_diameter_um: float, mpp: float | None = None,
               library_id: str | None = None, min_tissue: float = MIN_TISSUE_FRACTION,
               bytes_per_spot: float = 0.0) -> ad.AnnData:
    """Virtual spots on the tissue of an H&E slide, ``pitch_um`` apart (hexagonal lattice).

    What lets an image-mode model predict a slide that was never measured: the spots are laid
    in micrometres, so patches cut the tissue area the model was trained on.

    Parameters
    ----------
    path : str or path
        A whole-slide image (pyramidal TIFF, OME-TIFF, SVS; NDPI, MRXS... through OpenSlide) or
        a plain JPEG/PNG/TIFF with ``mpp``.
    pitch_um : float
        Centre-to-centre distance of the virtual spots in micrometres.
    spot_diameter_um : float
        The spot size the model was trained with (Visium 55, legacy ST 100).
    mpp : float, optional
        Micrometres per pixel, overriding (or supplying) the file's own.
    library_id : str, optional
        The key under ``uns['spatial']``; default the file name up to its first dot.
    min_tissue : float
        A spot is kept when this fraction of its disc lies on tissue.
    bytes_per_spot : float
        What predicting each spot will cost besides the spot itself (features, predicted genes):
        a lattice whose spots cannot fit in the memory available is refused before it is laid.

    Returns
    -------
    AnnData
        The virtual spots, no genes (``X`` is spots x 0):

        - ``obs_names`` ``<library_id>_<row>_<col>``; ``obs['array_row']``, ``obs['array_col']``
          on the Visium convention (neighbours on a row two columns apart).
        - ``obsm['spatial']``: spot centres in level-0 pixels (x, y).
        - ``uns['spatial'][library_id]``: ``images['hires']`` (a thumbnail, longest side
          ``THUMBNAIL_SIDE``), ``scalefactors`` (``spot_diameter_fullres``,
          ``tissue_hires_scalef``), ``metadata['source_image_path']``.
        - ``uns['histosge']``: ``grid`` ('hex'), ``library_id``, ``source``, ``mpp``,
          ``spot_diameter_um``, ``pitch_um``, ``raw_counts`` (False), ``slide`` (``width``,
          ``height``, ``levels``, ``tissue_fraction``, ``mpp_source``).

    Raises
    ------
    InputError
        An unreadable or unsupported file, an unknown, implausible or non-square pixel size, no
        tissue, a slide smaller than one spot pitch, a lattice too large for the memory
        available, or no spot on tissue.
    """
    from scipy import ndimage as ndi

    path = Path(path)
    src = open_slide(path, mpp=mpp)
    try:
        pitch_px = float(pitch_um) / src.mpp
        if not pitch_px > 0:
            raise InputError(f"spot pitch {pitch_um} um", where="--pitch-um", fix="give a positive pitch")
        if min(src.width, src.height) < pitch_px:
            raise InputError(f"the slide ({src.width} x {src.height} px at {src.mpp:g} um/px) is smaller than one "
                             f"spot pitch ({pitch_um:g} um)", where=str(path), fix="give a whole slide or section")
        thumb, scale = src.thumbnail(THUMBNAIL_SIDE)
        mask = tissue_mask(thumb)
        if not mask.any():
            raise InputError("no tissue found (the image is glass or one flat colour)", where=str(path),
                             fix="give an H&E slide with tissue on it")
        check_lattice_size(src.width, src.height, pitch_px, float(mask.mean()), pitch_um=float(pitch_um),
                           bytes_per_spot=bytes_per_spot, where=str(path))
        rows, cols, xy = hex_lattice(src.width, src.height, pitch_px)
        # tissue fraction within each spot's disc, read off the thumbnail
        radius = max(0.5, spot_diameter_um / src.mpp * scale / 2)
        frac = ndi.uniform_filter(mask.astype(np.float32), size=max(1, int(round(2 * radius))))
        ty = np.clip(np.round(xy[:, 1] * scale).astype(int), 0, mask.shape[0] - 1)
        tx = np.clip(np.round(xy[:, 0] * scale).astype(int), 0, mask.shape[1] - 1)
        keep = frac[ty, tx] >= min_tissue
        if not keep.any():
            raise InputError(f"no spot of a {pitch_um:g} um lattice lies on tissue", where=str(path),
                             fix="check the pixel size (--mpp) or give a slide with more tissue")
        rows, cols, xy = rows[keep], cols[keep], xy[keep]
        lib = library_id or path.name.split(".")[0]
        names = [f"{lib}_{int(r)}_{int(c)}" for r, c in zip(rows, cols, strict=True)]
        adata = ad.AnnData(X=sp.csr_matrix((len(rows), 0), dtype=np.float32),
                           obs=pd.DataFrame({"array_row": rows, "array_col": cols}, index=pd.Index(names)))
        adata.obsm[keys.SPATIAL] = xy
        adata.uns[keys.SPATIAL] = {lib: {
            "images": {"hires": thumb},
            "scalefactors": {"spot_diameter_fullres": float(spot_diameter_um) / src.mpp,
                             "tissue_hires_scalef": float(scale)},
            "metadata": {"source_image_path": str(path.resolve())},
        }}
        adata.uns["histosge"] = {
            "grid": "hex", "library_id": lib, "source": str(path), "mpp": float(src.mpp),
            "spot_diameter_um": float(spot_diameter_um), "pitch_um": float(pitch_um), "raw_counts": False,
            "slide": {"width": int(src.width), "height": int(src.height), "levels": int(src.level_count),
                      "tissue_fraction": round(float(mask.mean()), 4), "mpp_source": "--mpp" if mpp else "file"},
        }
        return adata
    finally:
        src.close()
