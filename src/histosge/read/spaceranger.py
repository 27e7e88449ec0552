"""Read a Space Ranger (10x Visium) output folder into the section AnnData.

Unlike ``scanpy.read_visium`` this does not insist on ``tissue_hires_image.png``: many public
uploads (the DLPFC sections among them) ship only the low-res image. Whatever images exist are
loaded into ``uns['spatial']``; a full-resolution H&E given as ``image=`` is only referenced
(plus, when there is no Space Ranger hires image, a <= 2000 px copy of it as 'hires').
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import keys
from ..errors import InputError
from . import checks
from .image import ImageSource
from .pixels import load_rgb

COUNTS_FILE = "filtered_feature_bc_matrix.h5"
POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv")  # Space Ranger >=2.0, 1.x
POSITION_COLUMNS = [
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
]
IMAGE_FILES = {"hires": "tissue_hires_image.png", "lowres": "tissue_lowres_image.png"}
VISIUM_SPOT_UM = 55.0  # Visium spot diameter; spots are 100 um apart
_FIX_H5 = "give the filtered_feature_bc_matrix.h5 that Space Ranger wrote (re-copy it if it was cut short)"


def _decode(arr) -> np.ndarray:
    return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in arr], dtype=object)


def read_10x_h5(path: Path) -> tuple[sp.csr_matrix, pd.Index, pd.DataFrame, str | None]:
    """Counts (spots x genes, CSR), barcodes, gene table and the library id from a 10x .h5.

    Reads the matrix with h5py instead of scanpy so that a truncated or malformed file is
    reported as an InputError naming the file, not as an HDF5/IndexError traceback.
    """
    where = str(path)
    if not path.exists():
        raise InputError(
            "counts file not found", where=where, fix=f"put Space Ranger's {COUNTS_FILE} in the folder"
        )
    try:
        with h5py.File(path, "r") as f:
            if "matrix" in f:  # Space Ranger >= 3 / Cell Ranger >= 3 layout
                g = f["matrix"]
                feats = g["features"]
                names, ids = _decode(feats["name"][:]), _decode(feats["id"][:])
                ftype = _decode(feats["feature_type"][:]) if "feature_type" in feats else None
            else:  # Cell Ranger 2 layout: one group per genome
                groups = [k for k in f if isinstance(f[k], h5py.Group)]
                if not groups:
                    raise KeyError("matrix")
                g = f[groups[0]]
                names, ids, ftype = _decode(g["gene_names"][:]), _decode(g["genes"][:]), None
            data, indices, indptr = g["data"][:], g["indices"][:], g["indptr"][:]
            shape = tuple(int(s) for s in g["shape"][:])
            barcodes = _decode(g["barcodes"][:])
            libs = f.attrs.get("library_ids")
            library_id = (
                _decode(np.atleast_1d(libs))[0] if libs is not None and len(np.atleast_1d(libs)) else None
            )
    except KeyError as err:
        raise InputError(f"not a 10x count matrix (missing {err})", where=where, fix=_FIX_H5) from None
    except (OSError, ValueError, TypeError) as err:
        raise InputError(f"cannot read HDF5 file ({err})", where=where, fix=_FIX_H5) from None

    n_genes, n_spots = shape if len(shape) == 2 else (-1, -1)
    consistent = (
        len(shape) == 2
        and len(barcodes) == n_spots
        and len(names) == n_genes
        and len(ids) == n_genes
        and len(indptr) == n_spots + 1
        and len(data) == len(indices)
        and (len(indptr) == 0 or (indptr[0] == 0 and indptr[-1] == len(data)))
        and bool(np.all(np.diff(indptr) >= 0))
        and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < n_genes))
    )
    if not consistent:
        raise InputError(
            f"inconsistent matrix (shape {shape}, {len(barcodes)} barcodes, {len(names)} genes, "
            f"{len(indptr)} indptr, {len(data)} values)",
            where=where,
            fix=_FIX_H5,
        )
    X = sp.csc_matrix((data, indices, indptr), shape=(n_genes, n_spots)).T.tocsr()
    var = pd.DataFrame({"gene_ids": ids, "feature_types": ftype if ftype is not None else "Gene Expression"})
    var.index = ad.utils.make_index_unique(pd.Index(names, name=None))
    if ftype is not None:
        keep = ftype == "Gene Expression"
        if keep.any() and not keep.all():  # drop antibody/CRISPR features, keep genes
            X, var = X[:, keep], var[keep]
    return X, pd.Index(barcodes), var, library_id


def _read_positions_file(path: Path) -> pd.DataFrame:
    """One positions file, columns by header name when it has a header (Space Ranger >= 2)."""
    fix = "give Space Ranger's tissue positions file unchanged"
    try:
        first = path.read_text(errors="replace").split("\n", 1)[0]
        header = 0 if "barcode" in first.lower() else None
        df = pd.read_csv(path, header=header, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(
            f"cannot parse positions ({err})", where=str(path), fix="give a comma-separated file"
        ) from None
    if header is not None:  # columns by name: any order, extra columns ignored
        df.columns = [str(c).strip().lower() for c in df.columns]
        missing = [c for c in POSITION_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(
                f"positions header lacks {', '.join(missing)} (has {', '.join(df.columns)})",
                where=str(path),
                fix=f"name the columns {', '.join(POSITION_COLUMNS)}",
            )
        df = df[POSITION_COLUMNS].copy()
    elif df.shape[1] != 6:
        raise InputError(
            f"positions have {df.shape[1]} columns, expected 6 ({', '.join(POSITION_COLUMNS)})",
            where=str(path),
            fix=fix,
        )
    else:
        df.columns = POSITION_COLUMNS
    for col in POSITION_COLUMNS[1:]:
        num = pd.to_numeric(df[col].str.strip(), errors="coerce")
        if num.isna().any():
            row = int(np.argmax(num.isna().to_numpy()))
            raise InputError(
                f"column {col} has non-numeric value {df[col].iloc[row]!r} (row {row + 1})",
                where=str(path),
                fix="every row needs barcode, in_tissue, array_row, array_col, pxl_row, pxl_col as numbers",
            )
        df[col] = num.astype(np.float64)
    for col in ("in_tissue", "array_row", "array_col"):
        bad = df[col].to_numpy() != np.round(df[col].to_numpy())
        if bad.any():
            raise InputError(
                f"column {col} holds non-integer values (e.g. {df[col].to_numpy()[bad][0]:g})",
                where=str(path),
                fix="in_tissue is 0 or 1 and array_row/array_col are whole grid indices",
            )
    df["barcode"] = df["barcode"].str.strip()
    checks.check_unique(df["barcode"], what="barcodes", where=str(path))
    return df.set_index("barcode")


def read_positions(spatial: Path) -> tuple[pd.DataFrame, Path]:
    """Spot positions from ``tissue_positions.csv`` (header) or ``tissue_positions_list.csv`` (none).

    Every spot of the slide is listed, with ``in_tissue`` 0 or 1. When both files are present
    they must agree (a stale copy of one beside the other is an error naming both).
    """
    found = [spatial / n for n in POSITION_FILES if (spatial / n).exists()]
    if not found:
        raise InputError(
            f"no {' or '.join(POSITION_FILES)} in the spatial folder",
            where=str(spatial),
            fix="copy Space Ranger's spatial/ folder next to the counts",
        )
    tables = [_read_positions_file(p) for p in found]
    if len(tables) == 2:
        a, b = tables
        same = a.index.sort_values().equals(b.index.sort_values())
        diff = pd.Index([])
        if same:
            b = b.loc[a.index]
            delta = (a[POSITION_COLUMNS[1:4]] != b[POSITION_COLUMNS[1:4]]).any(axis=1) | (
                (a[POSITION_COLUMNS[4:]] - b[POSITION_COLUMNS[4:]]).abs() > 0.5
            ).any(axis=1)
            diff = a.index[delta.to_numpy()]
        if not same or len(diff):
            what = (f"{len(diff)} of {len(a)} spots differ (e.g. {diff[0]})" if same else
                    f"they list different barcodes ({len(a)} and {len(b)} spots, "
                    f"{len(a.index.symmetric_difference(b.index))} not in both)")
            raise InputError(
                f"two positions files disagree: {found[0].name} and {found[1].name}: {what}",
                where=str(spatial),
                fix="keep the one Space Ranger wrote with these counts (>= 2.0: tissue_positions.csv, "
                "1.x: tissue_positions_list.csv) and remove the other",
            )
    return tables[0], found[0]


def read_scalefactors(spatial: Path) -> dict:
    path = spatial / "scalefactors_json.json"
    fix = "copy scalefactors_json.json from Space Ranger's spatial/ folder"
    if not path.exists():
        raise InputError("scale factors file not found", where=str(path), fix=fix)
    try:
        sf = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"not valid JSON ({err})", where=str(path), fix=fix) from None
    if not isinstance(sf, dict):
        raise InputError("expected a JSON object of scale factors", where=str(path), fix=fix)
    for key, val in sf.items():
        if not isinstance(val, (int, float)) or isinstance(val, bool) or not np.isfinite(val) or val <= 0:
            raise InputError(
                f"scale factor {key} = {val!r} is not a positive number", where=str(path), fix=fix
            )
    if "spot_diameter_fullres" not in sf:
        raise InputError("spot_diameter_fullres missing", where=str(path), fix=fix)
    return {k: float(v) for k, v in sf.items()}


def read_truth(path: Path, barcodes: pd.Index) -> pd.Categorical:
    """Labels from a ``barcode<TAB>label`` file (DLPFC layers), NaN for spots it does not list."""
    try:
        df = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(
            f"cannot parse labels ({err})", where=str(path), fix="give barcode<TAB>label lines"
        ) from None
    if df.shape[1] != 2:
        raise InputError(
            f"labels have {df.shape[1]} columns, expected 2 (barcode, label)",
            where=str(path),
            fix="give barcode<TAB>label lines without a header",
        )
    checks.check_unique(df[0], what="barcodes", where=str(path))
    labels = df.set_index(0)[1].replace("", np.nan)
    return pd.Categorical(labels.reindex(barcodes).to_numpy())


def _find_truth(folder: Path, library_id: str) -> Path | None:
    for name in (f"{library_id}_truth.txt", f"{folder.name}_truth.txt"):
        if (folder / name).exists():
            return folder / name
    found = sorted(folder.glob("*_truth.txt"))
    return found[0] if len(found) == 1 else None


def _alignment(positions: pd.DataFrame, pos: pd.DataFrame, X, img, scale, name, diameter, *, where: str,
               enforce: bool) -> dict:
    """Alignment record: in-tissue spots against the off-tissue spots the positions file lists
    (or, when it lists none, the lattice positions it leaves out), in ``img`` pixels."""
    from ..geometry import spot_pitch
    from .alignment import MIN_SPOTS, lattice_off_spots

    cols = ["pxl_col_in_fullres", "pxl_row_in_fullres"]
    xy_on = pos[cols].to_numpy(np.float64)
    off = positions[positions["in_tissue"].to_numpy() != 1]
    xy_off, source = off[cols].to_numpy(np.float64), "in_tissue = 0 in the positions file"
    if len(off) < MIN_SPOTS:  # a positions file trimmed to the tissue: the array's other positions
        every = positions[cols].to_numpy(np.float64)
        implied = lattice_off_spots(positions["array_row"].to_numpy(), positions["array_col"].to_numpy(),
                                    every, "hex", margin=0)
        xy_off = np.vstack([xy_off, implied])
        source += ", and lattice positions it leaves out"
    totals = np.asarray(X.sum(axis=1)).ravel()
    return checks.check_alignment(
        img, xy_on * scale, xy_off * scale, radius=diameter * scale / 2, pitch=spot_pitch(xy_on) * scale,
        where=where, image=name, off_source=source, totals=totals, enforce=enforce, scale=scale,
    )


def read_spaceranger(
    path: str | os.PathLike,
    *,
    image: str | os.PathLike | None = None,
    library_id: str | None = None,
    require_raw: bool = False,
    check_alignment: bool = True,
) -> ad.AnnData:
    """Read a Space Ranger folder (``filtered_feature_bc_matrix.h5`` + ``spatial/``).

    Keeps in-tissue spots present in the counts (and drops spots with zero counts, with a
    warning). ``<id>_truth.txt`` (barcode TAB label), when present, becomes
    ``obs['annotation']``. The image the features will come from (``image``, else the hires or
    lowres PNG) must fit the positions: all ~5,000 listed spots are scored, in-tissue against
    off-tissue (``read.alignment``), so a flipped, rotated, shifted, rescaled or foreign image
    is refused before any model sees it.

    Parameters
    ----------
    path : str or path
        The Space Ranger output folder (or its parent holding ``outs/``).
    image : str or path, optional
        The full-resolution H&E the positions were measured on: checked against the
        positions and referenced in ``metadata['source_image_path']``, not loaded.
    library_id : str, optional
        The key under ``uns['spatial']``; default the one in the .h5, else the folder name.
    require_raw, check_alignment : bool
        As :func:`histosge.read.read_legacy_st`: refuse counts that are not whole numbers
        (normalised data); False reads a misfitting image with a warning.

    Returns
    -------
    AnnData
        The section AnnData every reader returns (:func:`histosge.read.read_section` lists its
        keys; raw counts), and:

        - ``uns['histosge']``: ``grid`` 'hex', ``spot_diameter_um`` 55 (Visium), ``dropped``
          (counted spots left out on reading, by reason: 'without a position', 'off tissue
          (in_tissue = 0)', 'zero counts').
        - ``obs['in_tissue']`` (1), ``obs['annotation']`` (categorical, when a truth file exists);
          ``var['gene_ids']``, ``var['feature_types']`` (non-gene features dropped).
        - ``scalefactors``: every entry of ``scalefactors_json.json`` (``fiducial_diameter_fullres``
          ...), plus ``tissue_hires_scalef`` when the hires copy is made from ``image``.

    Raises
    ------
    InputError
        A missing folder, .h5 or ``spatial/``; unreadable or inconsistent counts, positions or
        scale factors; no spot under tissue; no image; an image that does not fit the positions.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(
            "Space Ranger folder not found", where=str(folder), fix="give the folder holding the .h5"
        )
    if not (folder / COUNTS_FILE).exists() and (folder / "outs" / COUNTS_FILE).exists():
        folder = folder / "outs"
    h5 = folder / COUNTS_FILE
    spatial = folder / "spatial"
    X, barcodes, var, h5_lib = read_10x_h5(h5)
    checks.check_unique(barcodes, what="barcodes", where=str(h5))
    if not spatial.is_dir():
        raise InputError(
            "no spatial/ folder", where=str(folder), fix="copy Space Ranger's spatial/ folder next to the .h5"
        )
    positions, pos_path = read_positions(spatial)
    sf = read_scalefactors(spatial)
    library_id = str(library_id or h5_lib or folder.name)

    keep = checks.match_ids(barcodes, positions.index, counts_where=str(h5), pos_where=str(pos_path))
    pos = positions.loc[keep]
    in_tissue = pos["in_tissue"].to_numpy() == 1
    dropped = {"without a position": int(len(barcodes) - len(keep)),
               "off tissue (in_tissue = 0)": int((~in_tissue).sum())}
    if not in_tissue.any():
        raise InputError(
            "none of the counted spots is marked in_tissue = 1",
            where=str(pos_path),
            fix="use the positions file of this section (column 2 marks spots under tissue)",
        )
    pos = pos[in_tissue]
    X = X[barcodes.get_indexer(pos.index)]
    raw = checks.check_counts(X, where=str(h5), require_raw=require_raw)

    adata = ad.AnnData(
        X=sp.csr_matrix(X, dtype=np.float32),
        obs=pd.DataFrame(
            {
                "in_tissue": pos["in_tissue"].astype(np.int64).to_numpy(),
                "array_row": pos["array_row"].to_numpy(np.float64),
                "array_col": pos["array_col"].to_numpy(np.float64),
            },
            index=pd.Index(pos.index.astype(str), name=None),
        ),
        var=var,
    )
    xy = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
    checks.check_finite_coords(xy, where=str(pos_path))
    checks.check_spot_diameter(sf["spot_diameter_fullres"], xy, where=str(spatial / "scalefactors_json.json"))
    adata.obsm[keys.SPATIAL] = xy

    images = {}
    diameter = sf["spot_diameter_fullres"]
    for key, name in IMAGE_FILES.items():
        file = spatial / name
        if not file.exists():
            continue
        scalef = sf.get(f"tissue_{key}_scalef")
        if scalef is None:
            raise InputError(
                f"{name} is present but tissue_{key}_scalef is missing",
                where=str(spatial / "scalefactors_json.json"),
                fix="use the scalefactors_json.json written with these images",
            )
        arr = load_rgb(file)
        checks.check_not_blank(arr, where=str(file), path=file)
        checks.check_in_image(xy * scalef, arr.shape[1], arr.shape[0], where=str(pos_path), image=name)
        images[key] = arr
    metadata = {}
    # the alignment is scored on the image the features will come from: --image, else hires/lowres
    align_img, align_scale, align_name = None, None, None
    for key in ("hires", "lowres"):
        if key in images and align_img is None:
            align_img, align_scale, align_name = images[key], sf[f"tissue_{key}_scalef"], IMAGE_FILES[key]
    if image is not None:
        src = ImageSource(image)
        checks.check_in_image(xy, src.width, src.height, where=str(pos_path), image=str(image))
        thumb, scale = src.thumbnail(2000)
        src.close()
        checks.check_not_blank(thumb, where=str(image), path=image)
        if "hires" not in images:  # a drawable copy for sc.pl.spatial, as the other readers make
            images["hires"], sf["tissue_hires_scalef"] = thumb, scale
        align_img, align_scale, align_name = thumb, scale, str(image)
        metadata["source_image_path"] = str(Path(image).resolve())
    if not images and image is None:
        raise InputError(
            "no image: neither tissue_hires_image.png nor tissue_lowres_image.png, and no --image",
            where=str(spatial),
            fix="pass the full-resolution H&E with --image",
        )
    alignment = _alignment(positions, pos, X, align_img, align_scale, align_name, diameter,
                           where=str(pos_path), enforce=check_alignment)
    for key, arr in images.items():  # the coarse on-tissue check for images the score did not see
        if arr is not align_img or alignment["status"].startswith("not scored"):
            scalef = sf[f"tissue_{key}_scalef"]
            checks.check_on_tissue(arr, xy * scalef, diameter * scalef / 2, where=str(pos_path),
                                   image=IMAGE_FILES[key] if image is None or key != "hires" else str(image),
                                   enforce=check_alignment)
    adata.uns[keys.SPATIAL] = {library_id: {"images": images, "scalefactors": sf, "metadata": metadata}}
    truth = _find_truth(folder, library_id)
    if truth is not None:
        adata.obs["annotation"] = read_truth(truth, adata.obs_names)
    return checks.finish_section(adata, where=str(folder), counts=str(h5), grid="hex", library_id=library_id,
                                 raw_counts=raw, spot_diameter_um=VISIUM_SPOT_UM,
                                 alignment=alignment, dropped=dropped)
