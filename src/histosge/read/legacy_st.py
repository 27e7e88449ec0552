"""Read a legacy Spatial Transcriptomics section (the her2st layout) into the section AnnData.

Legacy ST has no Space Ranger output: a count table whose spots are named ``<x>x<y>`` by their
grid position (spots as rows and genes as columns, as in her2st, or the other way round, as
STUtility writes them), a spot table giving each grid spot's pixel position in the
full-resolution H&E image and whether it lies under tissue (the ST spot detector's output:
columns x, y, pixel_x, pixel_y, selected, read by name, tab- or comma-separated), and the image
itself. Spots are 100 um wide and 200 um apart, so the spot diameter in pixels is half the spot
pitch, measured as the median nearest-neighbour distance between spot centres.

The lattice is detected from the positions (``geometry.detect_lattice``): square (her2st),
checkerboard (only x + y of one parity, as in the mouse olfactory bulb data), or hexagonal.
Spot names with fractional positions (``7.02x18.07``: the spot detector's adjusted
``new_x``/``new_y``) are matched to the spot table's new_x/new_y columns, never truncated.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import keys
from ..errors import InputError
from ..geometry import detect_lattice, spot_pitch
from . import checks
from .image import ImageSource

SELECTION_COLUMNS = ("x", "y", "pixel_x", "pixel_y", "selected")
HIRES_MAX_SIDE = 2000
LEGACY_SPOT_UM = 100.0  # legacy ST spot diameter; spots are 200 um apart
_NUM = r"(-?\d+(?:\.\d*)?)"
_SPOT_ID = re.compile(rf"^\s*{_NUM}x{_NUM}\s*$")


def _read_table(path: Path, what: str, fix: str, sep: str = "\t", **kwargs) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{what} file not found", where=str(path), fix=fix)
    try:
        return pd.read_csv(path, sep=sep, **kwargs)
    except (
        OSError,
        EOFError,
        ValueError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
    ) as err:
        # gzip/zlib/parser errors of truncated or non-tab files all land here
        raise InputError(
            f"cannot parse {what} ({type(err).__name__}: {err})", where=str(path), fix=fix
        ) from None


def _grid_keys(x, y) -> pd.Index:
    return pd.Index([f"{int(a)}x{int(b)}" for a, b in zip(x, y, strict=True)])


def _parse_ids(ids) -> tuple[np.ndarray, list]:
    """(n, 2) float grid positions of ``<x>x<y>`` names (NaN rows where a name does not parse)."""
    out = np.full((len(ids), 2), np.nan)
    bad = []
    for i, name in enumerate(ids):
        m = _SPOT_ID.match(str(name))
        if m is None:
            bad.append(name)
        else:
            out[i] = float(m.group(1)), float(m.group(2))
    return out, bad


def read_counts(path: Path) -> pd.DataFrame:
    """Spots x genes counts, spot ids ``<x>x<y>``: integer ids normalised, fractional ones kept.

    Spots may be rows (her2st) or columns (STUtility): whichever axis holds ``<x>x<y>`` names
    is taken as the spots. ``df.attrs['grid_xy']`` holds the parsed (x, y) of each spot.
    """
    fix = ("give the ST count table: spots named <x>x<y> as rows (or columns) and one gene per column "
           "(or row), tab-separated")
    df = _read_table(path, "counts", fix, index_col=0, low_memory=False)  # wide table: 2x faster
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise InputError(
            f"counts table is empty ({df.shape[0]} spots x {df.shape[1]} genes)", where=str(path), fix=fix
        )
    xy, bad = _parse_ids(df.index.astype(str))
    if bad:
        col_xy, col_bad = _parse_ids(df.columns.astype(str))
        if len(col_bad) < len(df.columns) / 2 and len(col_bad) < len(bad):  # genes x spots (STUtility)
            if col_bad:
                raise InputError(f"spot ids (columns) are not <x>x<y>: {checks._examples(col_bad)}",
                                 where=str(path), fix=fix)
            df, xy, bad = df.T, col_xy, []
    if bad:
        raise InputError(f"spot ids are not <x>x<y>: {checks._examples(bad)}", where=str(path), fix=fix)
    types = pd.api.types
    non_numeric = [c for c, t in df.dtypes.items() if not types.is_numeric_dtype(t) or types.is_bool_dtype(t)]
    if non_numeric:
        raise InputError(
            f"non-numeric counts in gene columns {checks._examples(non_numeric)}", where=str(path), fix=fix
        )
    integer = bool(np.all(xy == np.round(xy)))
    if integer:
        df.index = pd.Index([f"{int(a)}x{int(b)}" for a, b in xy])
    else:
        df.index = pd.Index([str(i).strip() for i in df.index])
    df.columns = ad.utils.make_index_unique(pd.Index(df.columns.astype(str)))
    checks.check_unique(df.index, what="spot ids", where=str(path))
    df.attrs["grid_xy"] = xy
    return df


def read_selection(path: Path) -> pd.DataFrame:
    """The spot table indexed by ``<x>x<y>``: columns by name, tab- or comma-separated.

    Without a ``selected`` column every listed spot is taken as under tissue (a warning says so).
    """
    fix = ("give the ST spot table: tab-separated, header x, y, pixel_x, pixel_y, selected "
           "(the ST spot detector's output; other columns are ignored)")
    df = _read_table(path, "spot selection", fix)
    if not {"x", "y"}.issubset(df.columns) and df.shape[1] == 1 and "," in str(df.columns[0]):
        df = _read_table(path, "spot selection", fix, sep=",")  # a comma-separated export
    required = [c for c in SELECTION_COLUMNS if c != "selected"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(
            f"columns missing: {', '.join(missing)} (found {', '.join(map(str, df.columns))})",
            where=str(path),
            fix=fix,
        )
    if "selected" not in df.columns:
        checks.warn(f"{path}: no 'selected' column; every listed spot is taken as under tissue")
        df["selected"] = 1
    for col in SELECTION_COLUMNS + tuple(c for c in ("new_x", "new_y") if c in df.columns):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(num.to_numpy(np.float64, na_value=np.nan))
        if bad.any():
            raise InputError(
                f"column {col} has missing or non-numeric values in {int(bad.sum())} rows",
                where=str(path),
                fix=fix,
            )
        df[col] = num.astype(np.float64)
    grid = df[["x", "y"]].to_numpy()
    if not np.all(np.mod(grid, 1) == 0):
        bad = grid[np.mod(grid, 1).any(axis=1)][0]
        raise InputError(
            f"grid columns x, y hold non-integers (e.g. {bad[0]:g}, {bad[1]:g})",
            where=str(path),
            fix="x, y are whole array positions; adjusted positions belong in new_x, new_y",
        )
    df.index = _grid_keys(df["x"], df["y"])
    checks.check_unique(df.index, what="grid positions (x, y)", where=str(path))
    return df


def _match_fractional(counts: pd.DataFrame, sel: pd.DataFrame, *, counts_where: str, spots_where: str
                      ) -> pd.DataFrame:
    """Rename counts spots with fractional names (``7.02x18.07``) to the ``<x>x<y>`` key of the spot
    table row whose new_x, new_y they are (nearest within 0.05 grid steps)."""
    from scipy.spatial import cKDTree

    xy = counts.attrs["grid_xy"]
    example = counts.index[np.flatnonzero(np.mod(xy, 1).any(axis=1))[0]]
    if not {"new_x", "new_y"}.issubset(sel.columns):
        raise InputError(
            f"spot names hold fractional grid positions (e.g. {example}) and the spot table has no "
            "new_x, new_y columns to match them",
            where=counts_where,
            fix=f"add the spot detector's new_x, new_y columns to {spots_where}, or name spots by the whole "
            "x, y grid position",
        )
    dist, idx = cKDTree(sel[["new_x", "new_y"]].to_numpy()).query(xy)
    ok = dist <= 0.05
    if not ok.any():
        raise InputError(
            f"no spot name (e.g. {example}) matches a new_x, new_y pair of the spot table",
            where=counts_where,
            fix=f"use the spot table of the same section ({spots_where})",
        )
    if not ok.all():
        checks.warn(f"{counts_where}: {int((~ok).sum())} of {len(ok)} spots match no new_x, new_y of "
                    f"{spots_where} ({checks._examples(counts.index[~ok])}); they are dropped")
    out = counts[ok].copy()
    out.index = sel.index[idx[ok]]
    checks.check_unique(out.index, what="spots matching one new_x, new_y", where=counts_where)
    return out


def read_labels(path: Path, keys: pd.Index) -> pd.Categorical:
    """Cluster labels (columns x, y, label) joined on the grid position; NaN where unlabelled."""
    fix = "give a tab-separated table with columns x, y, label"
    df = _read_table(path, "labels", fix)
    missing = [c for c in ("x", "y", "label") if c not in df.columns]
    if missing:
        raise InputError(f"columns missing: {', '.join(missing)}", where=str(path), fix=fix)
    x, y = pd.to_numeric(df["x"], errors="coerce"), pd.to_numeric(df["y"], errors="coerce")
    if x.isna().any() or y.isna().any() or not (np.mod(x, 1) == 0).all() or not (np.mod(y, 1) == 0).all():
        raise InputError("columns x, y must be integer grid positions", where=str(path), fix=fix)
    labels = pd.Series(df["label"].astype(str).to_numpy(), index=_grid_keys(x, y))
    labels[df["label"].isna().to_numpy()] = np.nan
    checks.check_unique(labels.index, what="grid positions (x, y)", where=str(path))
    return pd.Categorical(labels.reindex(keys).to_numpy())


def spot_diameter_from_pitch(xy: np.ndarray, *, where: str) -> float:
    """Half the median nearest-neighbour distance: ST spots are 100 um wide, 200 um apart."""
    if len(xy) < 2:
        raise InputError(
            "fewer than 2 spots: cannot measure the spot spacing",
            where=where,
            fix="give a section with several spots",
        )
    d = spot_pitch(xy)
    if not d > 0:
        raise InputError("spots share the same pixel position", where=where, fix="check pixel_x, pixel_y")
    return 0.5 * d


def read_legacy_st(
    counts: str | os.PathLike,
    spots: str | os.PathLike,
    image: str | os.PathLike,
    *,
    library_id: str,
    labels: str | os.PathLike | None = None,
    require_raw: bool = False,
    check_alignment: bool = True,
) -> ad.AnnData:
    """Read a legacy ST section: counts TSV, spot table (TSV/CSV) and the full-resolution H&E image.

    Counts and spot table are joined on the grid position (x, y); only selected spots are kept
    (and spots with zero counts dropped, with a warning). ``array_row = y``, ``array_col = x``
    (a hexagonal lattice is brought to Visium's doubled columns). The image must fit the
    positions: selected spots are scored against the spots off tissue (listed with
    selected = 0, and the lattice positions the table leaves out; ``read.alignment``).

    Parameters
    ----------
    counts : str or path
        Counts table, spots (``XxY`` ids) x genes, tab-separated (may be gzipped).
    spots : str or path
        The spot detector's table: x, y, pixel_x, pixel_y, selected.
    image : str or path
        The full-resolution H&E the pixel coordinates refer to.
    library_id : str
        The key under ``uns['spatial']``.
    labels : str or path, optional
        A table of spot labels, which becomes ``obs['annotation']``.
    require_raw : bool
        Refuse counts that are not whole numbers.
    check_alignment : bool
        False reads a misfitting image with a warning instead of an ``InputError``.

    Returns
    -------
    AnnData
        The section AnnData every reader returns (:func:`histosge.read.read_section` lists its
        keys; raw counts), and:

        - ``uns['histosge']``: ``grid`` 'square', 'checkerboard' or 'hex', ``spot_diameter_um``
          100 (legacy ST), ``dropped`` (spots left out on reading, by reason: 'not in the spot
          table', 'not selected (selected = 0)', 'selected but without counts', 'zero counts').
        - ``obs['annotation']`` (categorical, when ``labels`` is given).
        - ``uns['spatial'][library_id]['images']['hires']``: the image downsampled to a
          longest side of 2000 px, so ``sc.pl.spatial`` can draw it; the full image is
          referenced as ``metadata['source_image_path']``.

    Raises
    ------
    InputError
        Unreadable or inconsistent tables, no selected spot, an image the spots do not fit.
    """
    counts, spots, image = Path(counts), Path(spots), Path(image)
    df = read_counts(counts)
    sel = read_selection(spots)
    if not np.all(np.mod(df.attrs["grid_xy"], 1) == 0):
        df = _match_fractional(df, sel, counts_where=str(counts), spots_where=str(spots))
    chosen = sel[sel["selected"] == 1]
    if chosen.empty:
        raise InputError(
            f"no spot is selected (column selected is 0 for all {len(sel)} rows)",
            where=str(spots),
            fix="mark spots under tissue with selected = 1 (the ST spot detector output)",
        )
    matched = checks.match_ids(df.index, sel.index, counts_where=str(counts), pos_where=str(spots))
    keep = matched[matched.isin(chosen.index)]
    dropped = {"not in the spot table": int(len(df.index) - len(matched)),
               "not selected (selected = 0)": int(len(matched) - len(keep)),
               "selected but without counts": int((~chosen.index.isin(df.index)).sum())}
    if len(keep) == 0:
        raise InputError(
            "none of the counted spots is selected (under tissue)",
            where=str(spots),
            fix=f"use the selection file of the same section as {counts}",
        )
    pos = chosen.loc[keep]
    X = sp.csr_matrix(df.loc[keep].to_numpy())
    raw = checks.check_counts(X, where=str(counts), require_raw=require_raw)
    xy = pos[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    checks.check_finite_coords(xy, where=str(spots))
    sel_xy = sel[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    checks.check_finite_coords(sel_xy, where=str(spots))
    rows_all, cols_all, grid = detect_lattice(sel["y"].to_numpy(), sel["x"].to_numpy(), sel_xy, where=str(spots))
    at = sel.index.get_indexer(keep)
    rows, cols = rows_all[at], cols_all[at]

    src = ImageSource(image)
    checks.check_in_image(xy, src.width, src.height, where=str(spots), image=image.name)
    diameter = spot_diameter_from_pitch(xy if len(xy) >= 2 else sel_xy, where=str(spots))
    hires, scalef = src.thumbnail(HIRES_MAX_SIDE)
    src.close()
    checks.check_not_blank(hires, where=str(image), path=image)
    alignment = _alignment(sel, rows_all, cols_all, grid, sel_xy, xy, X, hires, scalef, diameter,
                           where=str(spots), image=image.name, enforce=check_alignment)
    if alignment["status"].startswith("not scored"):  # the coarse check still sees gross errors
        checks.check_on_tissue(hires, xy * scalef, diameter * scalef / 2, where=str(spots), image=image.name,
                               enforce=check_alignment)

    adata = ad.AnnData(
        X=sp.csr_matrix(X, dtype=np.float32),
        obs=pd.DataFrame(
            {"array_row": rows.astype(np.float64), "array_col": cols.astype(np.float64)},
            index=pd.Index(keep.astype(str)),
        ),
        var=pd.DataFrame(index=df.columns),
    )
    adata.obsm[keys.SPATIAL] = xy
    if labels is not None:
        adata.obs["annotation"] = read_labels(Path(labels), adata.obs_names)
    adata.uns[keys.SPATIAL] = {
        library_id: {
            "images": {"hires": hires},
            "scalefactors": {"spot_diameter_fullres": diameter, "tissue_hires_scalef": scalef},
            "metadata": {"source_image_path": str(image.resolve())},
        }
    }
    return checks.finish_section(adata, where=str(counts), grid=grid, library_id=library_id,
                                 raw_counts=raw, spot_diameter_um=LEGACY_SPOT_UM, alignment=alignment, dropped=dropped)


def _alignment(sel, rows_all, cols_all, grid, sel_xy, xy, X, hires, scalef, diameter, *, where, image, enforce):
    """Selected spots against the off-tissue ones: listed with selected = 0, and the lattice
    positions inside the listed spots' bounding box that the table leaves out."""
    from .alignment import lattice_off_spots

    unselected = sel_xy[sel["selected"].to_numpy() != 1]
    implied = lattice_off_spots(rows_all, cols_all, sel_xy, grid, margin=0)
    xy_off = np.vstack([unselected, implied])
    totals = np.asarray(X.sum(axis=1)).ravel()
    return checks.check_alignment(
        hires, xy * scalef, xy_off * scalef, radius=diameter * scalef / 2, pitch=spot_pitch(sel_xy) * scalef,
        where=where, image=image, totals=totals, enforce=enforce, scale=scalef,
        off_source="selected = 0 in the spot table, and lattice positions it leaves out",
    )


def her2st_sections(data_dir: str | os.PathLike) -> list[str]:
    """Section names (``B4``, ``C2``, ...) that have a count table under ``<data_dir>/ST-cnts``."""
    cnts = Path(data_dir) / "ST-cnts"
    return sorted(p.name[: -len(".tsv.gz")] for p in cnts.glob("*.tsv.gz")) if cnts.is_dir() else []


def read_her2st(data_dir: str | os.PathLike, section: str, *, require_raw: bool = False,
                check_alignment: bool = True) -> ad.AnnData:
    """Read her2st section ``section`` (e.g. ``"C2"``) from the upstream folder layout.

    Parameters
    ----------
    data_dir : str or path
        The her2st folder (``ST-cnts/``, ``ST-spotfiles/``, ``ST-imgs/``, ``ST-cluster/``).
    section : str
        The section name, e.g. ``"C2"``.
    require_raw, check_alignment : bool
        As :func:`read_legacy_st`.

    Returns
    -------
    AnnData
        The section as :func:`read_legacy_st` returns it, with ``library_id`` the section name
        and ``obs['annotation']`` from the cluster labels when the folder has them.

    Raises
    ------
    InputError
        An unknown section, not exactly one image in its image folder, or any error of
        :func:`read_legacy_st`.
    """
    root = Path(data_dir)
    known = her2st_sections(root)
    if section not in known:
        raise InputError(
            f"no her2st section {section!r}",
            where=str(root / "ST-cnts"),
            fix=f"choose one of: {', '.join(known)}"
            if known
            else "point data_dir at the her2st folder (with ST-cnts/)",
        )
    img_dir = root / "ST-imgs" / section[0] / section
    jpgs = sorted(
        p for p in img_dir.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".tif", ".tiff", ".png")
    )
    if len(jpgs) != 1:
        raise InputError(
            f"expected one H&E image, found {len(jpgs)}",
            where=str(img_dir),
            fix="put exactly one image of the section in this folder",
        )
    lbl = root / "ST-cluster" / "lbl" / f"{section}-cluster-annotation.tsv.gz"
    return read_legacy_st(
        root / "ST-cnts" / f"{section}.tsv.gz",
        root / "ST-spotfiles" / f"{section}_selection.tsv",
        jpgs[0],
        library_id=section,
        labels=lbl if lbl.exists() else None,
        require_raw=require_raw,
        check_alignment=check_alignment,
    )
