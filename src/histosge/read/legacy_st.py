"""Read a legacy Spatial Transcriptomics section (the her2st layout) into the section AnnData.

Legacy ST has no Space Ranger output: a spots x genes count table whose rows are ``<x>x<y>``
grid ids, a spot-selection table giving each grid spot's pixel position in the full-resolution
H&E JPEG and whether it lies under tissue, and the JPEG itself. Spots are 100 um wide and
200 um apart, so the spot diameter in pixels is half the spot pitch, measured as the median
nearest-neighbour distance between spot centres.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from ..geometry import spot_pitch
from . import checks
from .image import ImageSource

SELECTION_COLUMNS = ("x", "y", "pixel_x", "pixel_y", "selected")
HIRES_MAX_SIDE = 2000
_SPOT_ID = re.compile(r"^\s*(-?\d+)x(-?\d+)\s*$")


def _read_table(path: Path, what: str, fix: str, **kwargs) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{what} file not found", where=str(path), fix=fix)
    try:
        return pd.read_csv(path, sep="\t", **kwargs)
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


def read_counts(path: Path) -> pd.DataFrame:
    """Spots x genes counts; spot ids normalised to ``<x>x<y>`` with integer x, y."""
    fix = "give the ST count table: one row per spot named <x>x<y>, one column per gene, tab-separated"
    df = _read_table(path, "counts", fix, index_col=0, low_memory=False)  # wide table: 2x faster
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise InputError(
            f"counts table is empty ({df.shape[0]} spots x {df.shape[1]} genes)", where=str(path), fix=fix
        )
    ids = df.index.astype(str)
    parsed = [_SPOT_ID.match(i) for i in ids]
    bad = [i for i, m in zip(ids, parsed, strict=True) if m is None]
    if bad:
        raise InputError(f"spot ids are not <x>x<y>: {checks._examples(bad)}", where=str(path), fix=fix)
    types = pd.api.types
    non_numeric = [c for c, t in df.dtypes.items() if not types.is_numeric_dtype(t) or types.is_bool_dtype(t)]
    if non_numeric:
        raise InputError(
            f"non-numeric counts in gene columns {checks._examples(non_numeric)}", where=str(path), fix=fix
        )
    df.index = pd.Index([f"{int(m.group(1))}x{int(m.group(2))}" for m in parsed])
    df.columns = ad.utils.make_index_unique(pd.Index(df.columns.astype(str)))
    checks.check_unique(df.index, what="spot ids", where=str(path))
    return df


def read_selection(path: Path) -> pd.DataFrame:
    """The spot-selection table indexed by ``<x>x<y>``."""
    fix = "give the ST spot-selection table: tab-separated, header x, y, pixel_x, pixel_y, selected"
    df = _read_table(path, "spot selection", fix)
    missing = [c for c in SELECTION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"columns missing: {', '.join(missing)} (found {', '.join(map(str, df.columns))})",
            where=str(path),
            fix=fix,
        )
    for col in SELECTION_COLUMNS:
        num = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(num.to_numpy(np.float64, na_value=np.nan))
        if bad.any():
            raise InputError(
                f"column {col} has missing or non-numeric values in {int(bad.sum())} rows",
                where=str(path),
                fix=fix,
            )
        df[col] = num.astype(np.float64)
    if not np.all(np.mod(df[["x", "y"]].to_numpy(), 1) == 0):
        raise InputError("grid columns x, y hold non-integers", where=str(path), fix=fix)
    df.index = _grid_keys(df["x"], df["y"])
    checks.check_unique(df.index, what="grid positions (x, y)", where=str(path))
    return df


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
) -> ad.AnnData:
    """Read a legacy ST section: counts TSV, spot-selection TSV and the full-resolution H&E JPEG.

    Counts and selection are joined on the grid position (x, y); only selected spots are kept.
    ``obsm['spatial']`` is (pixel_x, pixel_y) in the JPEG; ``array_row = y``, ``array_col = x``.
    The JPEG is downsampled into ``images['hires']`` (longest side 2000 px) so ``sc.pl.spatial``
    can draw it, and referenced in full as ``metadata['source_image_path']``.
    """
    counts, spots, image = Path(counts), Path(spots), Path(image)
    df = read_counts(counts)
    sel = read_selection(spots)
    chosen = sel[sel["selected"] == 1]
    if chosen.empty:
        raise InputError(
            f"no spot is selected (column selected is 0 for all {len(sel)} rows)",
            where=str(spots),
            fix="mark spots under tissue with selected = 1 (the ST spot detector output)",
        )
    keep = checks.match_ids(df.index, sel.index, counts_where=str(counts), pos_where=str(spots))
    keep = keep[keep.isin(chosen.index)]
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

    src = ImageSource(image)
    checks.check_in_image(xy, src.width, src.height, where=str(spots), image=image.name)
    diameter = spot_diameter_from_pitch(
        xy if len(xy) >= 2 else chosen[["pixel_x", "pixel_y"]].to_numpy(), where=str(spots)
    )
    hires, scalef = src.thumbnail(HIRES_MAX_SIDE)
    src.close()
    checks.check_on_tissue(hires, xy * scalef, diameter * scalef / 2, where=str(spots), image=image.name)

    adata = ad.AnnData(
        X=sp.csr_matrix(X, dtype=np.float32),
        obs=pd.DataFrame(
            {"array_row": pos["y"].to_numpy(np.float64), "array_col": pos["x"].to_numpy(np.float64)},
            index=pd.Index(keep.astype(str)),
        ),
        var=pd.DataFrame(index=df.columns),
    )
    adata.obsm["spatial"] = xy
    if labels is not None:
        adata.obs["annotation"] = read_labels(Path(labels), adata.obs_names)
    adata.uns["spatial"] = {
        library_id: {
            "images": {"hires": hires},
            "scalefactors": {"spot_diameter_fullres": diameter, "tissue_hires_scalef": scalef},
            "metadata": {"source_image_path": str(image.resolve())},
        }
    }
    adata.uns["histosge"] = {
        "grid": "square",
        "library_id": library_id,
        "source": str(counts),
        "raw_counts": raw,
    }
    adata = checks.drop_empty_spots(adata, where=str(counts))
    checks.check_section(adata, where=str(counts))
    return adata


def her2st_sections(data_dir: str | os.PathLike) -> list[str]:
    """Section names (``B4``, ``C2``, ...) that have a count table under ``<data_dir>/ST-cnts``."""
    cnts = Path(data_dir) / "ST-cnts"
    return sorted(p.name[: -len(".tsv.gz")] for p in cnts.glob("*.tsv.gz")) if cnts.is_dir() else []


def read_her2st(data_dir: str | os.PathLike, section: str, *, require_raw: bool = False) -> ad.AnnData:
    """Read her2st section ``section`` (e.g. ``"C2"``) from the upstream folder layout."""
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
    )
