"""Read an .h5ad that already has spot positions (``obsm['spatial']``) into the section AnnData.

The file may come from scanpy, squidpy or another lab's pipeline, so nothing in it is trusted:
images in ``uns['spatial']`` that do not fit the spot coordinates (or are not images at all) are
dropped with a warning, raw counts are looked for in ``layers['counts']`` and ``.raw`` before
``X``, and a missing grid (``array_row``/``array_col``) is derived from the pixel positions.

Whether ``X`` holds raw counts is recorded in ``uns['histosge']['raw_counts']``; when False
(log-normalised data such as the squidpy mouse-brain crop) HVG selection must not use seurat_v3.

Grid derivation (no ``array_row``/``array_col``): the spot pitch ``d`` is the median
nearest-neighbour distance. Neighbour directions tell the lattice: Visium is hexagonal (neighbours
at 0, 60 and 120 degrees), legacy ST square (0 and 90 degrees). Rows are then
``round((y - y_min) / row_step)`` and columns ``round((x - x_min) / col_step)``, with the steps
measured from the neighbours (hex: ``col_step = d / 2`` so same-row neighbours are 2 columns
apart and ``row + col`` is even, as in Space Ranger). The slide is assumed axis-aligned with the
image; a rotated one gives colliding grid positions, which is an InputError.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree

from .. import keys
from ..errors import InputError
from ..geometry import detect_lattice, spot_pitch
from . import checks
from .image import ImageSource
from .pixels import is_valid_image_array

# Spot diameter relative to the centre-to-centre pitch when scalefactors do not say:
# Visium 55 um spots 100 um apart; legacy ST 100 um spots 200 um apart.
DIAMETER_PER_PITCH = {"hex": 0.55, "square": 0.5, "checkerboard": 0.5}
#: Spot diameter in microns assumed from the lattice when the file does not say.
SPOT_UM_BY_GRID = {"hex": 55.0, "square": 100.0, "checkerboard": 100.0}
#: Non-negative, non-integer values above this are not log-scale expression: log1p is applied.
LINEAR_MAX = 50.0


def grid_from_pixels(xy: np.ndarray, *, where: str) -> tuple[np.ndarray, np.ndarray, str, float]:
    """(array_row, array_col, 'hex', 'square' or 'checkerboard', pitch in pixels) from spot centres."""
    fix = "add obs['array_row'] and obs['array_col'] (the spot grid) to the .h5ad"
    if len(xy) < 3:
        raise InputError(f"cannot derive a spot grid from {len(xy)} spots", where=where, fix=fix)
    k = min(7, len(xy))
    dist, idx = cKDTree(xy).query(xy, k=k)
    d = float(np.median(dist[:, 1]))
    if not d > 0:
        raise InputError("several spots share one pixel position", where=where, fix="check obsm['spatial']")
    found = idx[:, 1:] < len(xy)  # cKDTree marks missing neighbours with index n
    vec = xy[np.where(found, idx[:, 1:], 0)] - xy[:, None, :]
    near = found & (dist[:, 1:] < 1.3 * d)
    vec = vec[near]
    angle = np.degrees(np.arctan2(np.abs(vec[:, 1]), np.abs(vec[:, 0])))  # 0..90, folded
    flat, sixty, ninety, diagonal = (np.mean(np.abs(angle - a) < 12) for a in (0, 60, 90, 45))
    if diagonal >= 0.8:  # a checkerboard: a square lattice rotated by 45 degrees, neighbours on diagonals
        step = np.abs(vec[np.abs(angle - 45) < 12])
        col_step, row_step = float(np.median(step[:, 0])), float(np.median(step[:, 1]))
        row = np.round((xy[:, 1] - xy[:, 1].min()) / row_step)
        col = np.round((xy[:, 0] - xy[:, 0].min()) / col_step)
        if np.mean((row + col) % 2) > 0.5:
            col += 1
        if not pd.MultiIndex.from_arrays([row, col]).has_duplicates and np.all((row + col) % 2 == 0):
            return row, col, "checkerboard", d
    hexagonal = sixty > ninety
    if flat + max(sixty, ninety) < 0.8:  # neighbours not along the image axes
        raise InputError(
            "spot positions do not form a regular axis-aligned grid (neighbours are not along rows)",
            where=where,
            fix=fix,
        )
    horiz = np.abs(vec[np.abs(angle) < 12, 0])
    col_pitch = float(np.median(horiz)) if len(horiz) else d
    if hexagonal:
        diag = np.abs(vec[np.abs(angle - 60) < 12, 1])
        row_step = float(np.median(diag)) if len(diag) else d * np.sqrt(3) / 2
        col_step = col_pitch / 2
    else:
        vert = np.abs(vec[np.abs(angle - 90) < 12, 1])
        row_step = float(np.median(vert)) if len(vert) else d
        col_step = col_pitch
    row = np.round((xy[:, 1] - xy[:, 1].min()) / row_step)
    col = np.round((xy[:, 0] - xy[:, 0].min()) / col_step)
    if hexagonal and np.mean((row + col) % 2) > 0.5:
        col += 1  # Space Ranger convention: row + col even
    if pd.MultiIndex.from_arrays([row, col]).has_duplicates:
        raise InputError(
            "spot positions do not form a regular axis-aligned grid (derived grid positions collide)",
            where=where,
            fix=fix,
        )
    return row.astype(np.float64), col.astype(np.float64), "hex" if hexagonal else "square", col_pitch


def _pick_counts(adata: ad.AnnData, where: str):
    """The most raw matrix the file has: layers['counts'], then .raw (if integer), then X."""
    if "counts" in adata.layers:
        return adata.layers["counts"], adata.var, "layers['counts']"
    if adata.raw is not None:
        raw_x = adata.raw.X
        vals = raw_x.data if sp.issparse(raw_x) else np.asarray(raw_x).ravel()
        if vals.size and np.all(np.isfinite(vals)) and np.all(vals >= 0) and np.all(np.mod(vals, 1) == 0):
            return raw_x, adata.raw.var, ".raw.X"
    return adata.X, adata.var, "X"


def _library(adata: ad.AnnData, library_id: str | None, where: str) -> tuple[str, dict]:
    spatial = adata.uns.get(keys.SPATIAL) or {}
    if library_id is not None:
        if spatial and library_id not in spatial:
            raise InputError(
                f"no library {library_id!r} in uns['spatial'] (has {', '.join(map(str, spatial))})",
                where=where,
                fix="choose one of those library ids",
            )
        return library_id, dict(spatial.get(library_id, {}))
    if len(spatial) > 1:
        raise InputError(
            f"uns['spatial'] holds {len(spatial)} libraries ({', '.join(map(str, spatial))})",
            where=where,
            fix="pass library_id= to pick the section",
        )
    if spatial:
        lib = next(iter(spatial))
        return str(lib), dict(spatial[lib])
    return Path(where).stem, {}


def _log_if_linear(X, raw: bool, *, where: str):
    """Normalised but not log-transformed values (non-integer, >= 0, max > ``LINEAR_MAX``) get
    log1p, as the model's targets are log1p expression; returns (X, what was done or None)."""
    if raw:
        return X, None
    v = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if v.size == 0 or v.min() < 0 or v.max() <= LINEAR_MAX:
        return X, None
    checks.warn(f"{where}: values look normalised but not log-transformed (up to {v.max():.4g}); "
                "log1p applied, as the model predicts log1p expression")
    X = X.copy()
    if sp.issparse(X):
        X.data = np.log1p(X.data)
    else:
        X = np.log1p(np.asarray(X, dtype=np.float64))
    return X, "log1p applied on reading (X was normalised but not log-transformed)"


def _check_swapped(xy: np.ndarray, width: int, height: int, *, where: str, image: str) -> None:
    """obsm['spatial'] stored as (y, x): most spots off the image as given, all on it swapped."""
    def outside(p):
        return float(np.mean((p[:, 0] < 0) | (p[:, 1] < 0) | (p[:, 0] >= width) | (p[:, 1] >= height)))

    if outside(xy) > 0.5 and outside(xy[:, ::-1]) < 0.05:
        raise InputError(
            f"{outside(xy):.0%} of the spots fall outside the {width}x{height} image {image}, none when x and y "
            "are swapped: the coordinates are stored as (y, x)",
            where=where,
            fix="store obsm['spatial'] as (x, y) = (column, row): adata.obsm['spatial'] = "
            "adata.obsm['spatial'][:, ::-1]",
        )


def _check_swapped_on_tissue(img, xy, radius: float, *, where: str, image: str, enforce: bool) -> None:
    """(y, x) on an image where both orders fall inside: far more spots on tissue when swapped."""
    h, w = img.shape[:2]
    swapped = xy[:, ::-1]
    if not ((swapped[:, 0] < w) & (swapped[:, 1] < h)).mean() > 0.95:
        return
    given, turned = checks.on_tissue_fraction(img, xy, radius), checks.on_tissue_fraction(img, swapped, radius)
    if given is None or turned is None:
        return
    if turned[0] >= 0.9 and given[0] < 0.6 and turned[0] - given[0] >= 0.3:
        msg = (f"only {given[0]:.0%} of the spots lie on tissue in {image} as (x, y), {turned[0]:.0%} as (y, x): "
               "the coordinates are stored as (y, x)")
        fix = "store obsm['spatial'] as (x, y): adata.obsm['spatial'] = adata.obsm['spatial'][:, ::-1]"
        if enforce:
            raise InputError(msg, where=where, fix=f"{fix}; {checks.OVERRIDE}")
        checks.warn(f"{where}: {msg}")


def read_h5ad(
    path: str | os.PathLike,
    *,
    image: str | os.PathLike | None = None,
    library_id: str | None = None,
    annotation_key: str | None = None,
    require_raw: bool = False,
    check_alignment: bool = True,
) -> ad.AnnData:
    """Read an .h5ad with ``obsm['spatial']`` (full-res pixels) and an image.

    Only obs/var columns, the counts, ``obsm['spatial']`` and the images travel into the
    result; embeddings, graphs and other ``uns`` entries of the file are left behind (they
    describe other data). Checked on the way, because a file from anywhere can be wrong in
    ways that would silently ruin a model: fractional ``array_row``/``array_col`` (an error,
    never truncated), the lattice (``geometry.detect_lattice``), coordinates stored as (y, x),
    normalised-but-not-logged values (log1p applied, with a warning), blank images, and when
    the file lists spots off tissue (``obs['in_tissue'] == 0``) the alignment of the image.

    Parameters
    ----------
    path : str or path
        The .h5ad file.
    image : str or path, optional
        The full-resolution H&E the coordinates refer to, when ``uns['spatial']`` has none (or
        to use instead of it).
    library_id : str, optional
        Which library of ``uns['spatial']`` to use (required when there are several); default
        the only one, else the file name.
    annotation_key : str, optional
        An obs column copied into ``obs['annotation']``.
    require_raw : bool
        Refuse values that are not raw counts.
    check_alignment : bool
        False turns a refused alignment into a warning.

    Returns
    -------
    AnnData
        The section AnnData every reader returns (:func:`histosge.read.read_section` lists its
        keys), and:

        - ``obs``: the file's columns (spots under tissue only), ``array_row``/``array_col``
          derived from the pixels when absent, ``obs['annotation']`` (categorical) from
          ``annotation_key`` or the file's own.
        - ``scalefactors['spot_diameter_fullres']``: derived from the spot pitch (with a
          warning) when missing.
        - ``uns['histosge']['spot_diameter_um']``: the file's ``uns['histosge']`` value if it
          has one, else from the grid (hex: 55, Visium; square/checkerboard: 100, legacy ST);
          ``uns['histosge']['spot_diameter_um_source']`` says which;
          ``uns['histosge']['x_transform']`` when log1p was applied.

    Raises
    ------
    InputError
        A missing or unreadable file, no or malformed ``obsm['spatial']``, fractional or
        missing grid positions, no usable image, an image the spots do not fit.
    """
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise InputError(".h5ad file not found", where=where, fix="check the path")
    try:
        src = ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for broken files
        raise InputError(
            f"not a readable .h5ad ({type(err).__name__}: {err})",
            where=where,
            fix="give a file written by anndata",
        ) from None
    if keys.SPATIAL not in src.obsm:
        raise InputError(
            "no obsm['spatial'] (spot pixel coordinates)",
            where=where,
            fix="store spot centres as obsm['spatial'] = (x, y) in full-resolution pixels",
        )
    xy = np.asarray(src.obsm[keys.SPATIAL])
    if xy.ndim != 2 or xy.shape[1] < 2 or not np.issubdtype(xy.dtype, np.number):
        raise InputError(
            f"obsm['spatial'] has shape {xy.shape}, expected (spots, 2) numbers",
            where=where,
            fix="store (x, y)",
        )
    xy = xy[:, :2].astype(np.float64)
    checks.check_finite_coords(xy, where=f"{where} obsm['spatial']")
    checks.check_unique(src.obs_names, what="spot names", where=where)
    xy_off = np.empty((0, 2))
    if "in_tissue" in src.obs:
        under = pd.to_numeric(src.obs["in_tissue"], errors="coerce").to_numpy() == 1
        if not under.any():
            raise InputError("no spot has in_tissue = 1", where=where, fix="keep spots under tissue")
        xy_off = xy[~under]  # spots off tissue: what the alignment score compares against
        src, xy = src[under].copy(), xy[under]

    X, var, counts_key = _pick_counts(src, where)
    raw = checks.check_counts(X, where=f"{where} {counts_key}", require_raw=require_raw, allow_negative=True)
    X, transform = _log_if_linear(X, raw, where=f"{where} {counts_key}")
    lib, entry = _library(src, library_id, where)
    sf_where = f"{where} uns['spatial']['{lib}']['scalefactors']"
    sf = {k: float(v) for k, v in dict(entry.get("scalefactors", {})).items() if np.isscalar(v)}

    obs = src.obs.copy()
    if "array_row" in obs and "array_col" in obs:
        rows = pd.to_numeric(obs["array_row"], errors="coerce").to_numpy(np.float64)
        cols = pd.to_numeric(obs["array_col"], errors="coerce").to_numpy(np.float64)
        if not (np.isfinite(rows).all() and np.isfinite(cols).all()):
            raise InputError(
                "obs array_row/array_col hold missing values", where=where, fix="fill or drop them"
            )
        for key, v in (("array_row", rows), ("array_col", cols)):
            if not np.all(v == np.round(v)):
                raise InputError(
                    f"obs['{key}'] holds non-integer grid positions (e.g. {v[v != np.round(v)][0]:g}); "
                    "they would be truncated",
                    where=where,
                    fix="give whole-number grid indices, or drop array_row/array_col so the grid is derived "
                    "from obsm['spatial']",
                )
        rows, cols, grid = detect_lattice(rows, cols, xy, where=f"{where} obs['array_row'], obs['array_col']")
    else:
        try:
            rows, cols, grid, _ = grid_from_pixels(xy, where=f"{where} obsm['spatial']")
        except InputError as err:
            try:  # a lattice when x and y are swapped: say so, it is the likely cause
                grid_from_pixels(xy[:, ::-1], where=where)
            except InputError:
                raise err from None
            raise InputError(
                "spot positions form a regular grid only with x and y swapped: obsm['spatial'] looks stored "
                "as (y, x)",
                where=f"{where} obsm['spatial']",
                fix="store (x, y) = (column, row): adata.obsm['spatial'] = adata.obsm['spatial'][:, ::-1]",
            ) from None
    obs["array_row"], obs["array_col"] = rows, cols
    if not sf.get("spot_diameter_fullres", 0) > 0:
        sf["spot_diameter_fullres"] = DIAMETER_PER_PITCH[grid] * spot_pitch(xy)
        checks.warn(
            f"{sf_where}['spot_diameter_fullres'] is missing; assumed {sf['spot_diameter_fullres']:.1f} px "
            f"({DIAMETER_PER_PITCH[grid]:g} x the spot pitch of a {grid} grid) -> set it if you know it"
        )
    checks.check_spot_diameter(sf["spot_diameter_fullres"], xy, where=sf_where)
    old = dict(src.uns.get("histosge", {})) if isinstance(src.uns.get("histosge"), dict) else {}
    if isinstance(old.get("spot_diameter_um"), (int, float)) and old["spot_diameter_um"] > 0:
        spot_um, um_source = float(old["spot_diameter_um"]), "uns['histosge']['spot_diameter_um'] of the file"
    else:
        spot_um = SPOT_UM_BY_GRID[grid]
        um_source = (f"assumed from the {grid} grid ({'Visium' if grid == 'hex' else 'legacy ST'}); "
                     "set uns['histosge']['spot_diameter_um'] in the file if that is wrong")
    if annotation_key is not None:
        if annotation_key not in obs:
            raise InputError(
                f"no obs column {annotation_key!r}", where=where, fix=f"choose one of {list(obs.columns)}"
            )
        obs["annotation"] = obs[annotation_key]
    if "annotation" in obs:
        obs["annotation"] = obs["annotation"].astype("category")

    images = {}
    for key, arr in dict(entry.get("images", {})).items():
        scalef = sf.get(f"tissue_{key}_scalef")
        arr = np.asarray(arr)
        if key not in ("hires", "lowres") or scalef is None or not is_valid_image_array(arr):
            checks.warn(
                f"{where}: uns['spatial']['{lib}']['images']['{key}'] is not a usable image "
                f"(shape {arr.shape}, dtype {arr.dtype}, scale factor {scalef}); ignored"
            )
            continue
        img = ImageSource(arr, where=key).read_region(0, 0, arr.shape[1], arr.shape[0])
        s = xy * scalef
        outside = (s[:, 0] < 0) | (s[:, 1] < 0) | (s[:, 0] >= img.shape[1]) | (s[:, 1] >= img.shape[0])
        if outside.mean() > 0.5:
            _check_swapped(xy * scalef, img.shape[1], img.shape[0], where=f"{where} obsm['spatial']",
                           image=f"uns image '{key}'")
            checks.warn(
                f"{where}: {int(outside.sum())} of {len(s)} spots fall outside uns image '{key}' "
                f"({img.shape[1]}x{img.shape[0]} at scale {scalef:g}); image ignored"
            )
            continue
        checks.check_not_blank(img, where=f"{where} uns['spatial']['{lib}']['images']['{key}']")
        images[key] = img
    metadata = {k: v for k, v in dict(entry.get("metadata", {})).items() if isinstance(v, str)}
    metadata.pop("source_image_path", None)
    align_img = align_scale = align_name = None
    if image is not None:
        full = ImageSource(image)
        _check_swapped(xy, full.width, full.height, where=f"{where} obsm['spatial']", image=str(image))
        checks.check_in_image(xy, full.width, full.height, where=f"{where} obsm['spatial']", image=str(image))
        thumb, scale = full.thumbnail(2000)
        full.close()
        checks.check_not_blank(thumb, where=str(image), path=image)
        if "hires" not in images:  # something sc.pl.spatial can draw
            images["hires"], sf["tissue_hires_scalef"] = thumb, scale
        align_img, align_scale, align_name = thumb, scale, str(image)
        metadata["source_image_path"] = str(Path(image).resolve())
    else:
        old_path = dict(entry.get("metadata", {})).get("source_image_path")
        if isinstance(old_path, str) and Path(old_path).exists():
            metadata["source_image_path"] = old_path
    if not images and "source_image_path" not in metadata:
        raise InputError(
            "no usable image: uns['spatial'] has none that fits the spot coordinates",
            where=where,
            fix="pass the full-resolution H&E the coordinates refer to with --image",
        )
    if align_img is None:
        key = next((k for k in ("hires", "lowres") if k in images), None)
        if key is not None:
            align_img, align_scale, align_name = images[key], sf[f"tissue_{key}_scalef"], f"uns image '{key}'"
    alignment: dict = {"status": "not scored: no image to score"}
    if align_img is not None:
        diameter = sf["spot_diameter_fullres"] * align_scale
        if len(xy_off):
            alignment = checks.check_alignment(
                align_img, xy * align_scale, xy_off * align_scale, radius=diameter / 2,
                pitch=spot_pitch(xy) * align_scale, where=f"{where} obsm['spatial']", image=align_name,
                off_source="obs['in_tissue'] = 0", totals=np.asarray(X.sum(axis=1)).ravel(),
                enforce=check_alignment, scale=align_scale,
            )
        else:
            alignment = {"status": "not scored: the file lists no spots off tissue (obs['in_tissue'] = 0)",
                         "n_on": int(len(xy)), "n_off": 0}
        _check_swapped_on_tissue(align_img, xy * align_scale, diameter / 2, where=f"{where} obsm['spatial']",
                                 image=align_name, enforce=check_alignment)
        if alignment["status"].startswith("not scored"):
            checks.check_on_tissue(align_img, xy * align_scale, diameter / 2, where=f"{where} obsm['spatial']",
                                   image=align_name, enforce=check_alignment)

    var = var.copy()
    var.index = ad.utils.make_index_unique(pd.Index(var.index.astype(str)))
    out = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs, var=var)
    out.obsm[keys.SPATIAL] = xy
    out.uns[keys.SPATIAL] = {lib: {"images": images, "scalefactors": sf, "metadata": metadata}}
    return checks.finish_section(out, where=where, grid=grid, library_id=lib, raw_counts=raw,
                                 spot_diameter_um=spot_um, spot_diameter_um_source=um_source, alignment=alignment,
                                 **({"x_transform": transform} if transform else {}))
