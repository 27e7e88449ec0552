"""Shared fixtures: the real data folder, and small synthetic sections in every input layout.

The synthetic builders write files exactly as Space Ranger / the her2st repository lay them
out, small enough that a reader test takes milliseconds; tests that need broken input build a
good section and then damage one file.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

# -- real data ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder from HISTOSGE_DATA; skips the test when it is not there."""
    value = os.environ.get("HISTOSGE_DATA")
    if not value or not Path(value).is_dir():
        pytest.skip("HISTOSGE_DATA not set: real-data tests need ../shared/data")
    return Path(value)


# -- synthetic images -----------------------------------------------------------------------------
TISSUE = (200, 90, 160)  # pink-purple, like eosin/haematoxylin
BACKGROUND = (242, 240, 238)


def tissue_image(width: int, height: int, xy: np.ndarray, radius: float, seed: int = 0) -> np.ndarray:
    """An H&E-like RGB image: background everywhere, textured tissue discs under the spots."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    mask = np.zeros((height, width), dtype=bool)
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = dx**2 + dy**2 <= radius**2
    for x, y in np.round(xy).astype(int):
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, height), max(x - r, 0), min(x + r + 1, width)
        if y1 > y0 and x1 > x0:
            mask[y0:y1, x0:x1] |= disc[y0 - (y - r) : y1 - (y - r), x0 - (x - r) : x1 - (x - r)]
    noise = rng.integers(-20, 20, size=(int(mask.sum()), 3))
    img[mask] = np.clip(np.array(TISSUE) + noise, 0, 255)
    return img


def hex_grid(n_rows: int, n_cols: int, pitch: float, origin: tuple[float, float]):
    """Visium-like hexagonal grid: (array_row, array_col, pxl_x, pxl_y)."""
    rows, cols, xs, ys = [], [], [], []
    for r in range(n_rows):
        for c in range(r % 2, 2 * n_cols, 2):
            rows.append(r)
            cols.append(c)
            xs.append(origin[0] + c * pitch / 2)
            ys.append(origin[1] + r * pitch * np.sqrt(3) / 2)
    return np.array(rows), np.array(cols), np.array(xs), np.array(ys)


def write_10x_h5(path: Path, counts: np.ndarray, barcodes, genes, library_id: str = "lib") -> None:
    """A Space Ranger v3-layout filtered_feature_bc_matrix.h5 from a dense spots x genes array."""
    import scipy.sparse as sp

    m = sp.csc_matrix(np.asarray(counts).T)  # genes x spots, CSC as Space Ranger writes
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"] = m.data.astype(np.int32)
        g["indices"] = m.indices.astype(np.int64)
        g["indptr"] = m.indptr.astype(np.int64)
        g["shape"] = np.array(m.shape, dtype=np.int32)
        g["barcodes"] = np.array([b.encode() for b in barcodes])
        feats = g.create_group("features")
        feats["name"] = np.array([x.encode() for x in genes])
        feats["id"] = np.array([f"ENSG{i:08d}".encode() for i in range(len(genes))])
        feats["feature_type"] = np.array([b"Gene Expression"] * len(genes))
        feats["genome"] = np.array([b"GRCh38"] * len(genes))
        f.attrs["library_ids"] = np.array([library_id.encode()])


GENES = [
    "GAPDH",
    "ACTB",
    "MT-CO1",
    "KRT19",
    "ERBB2",
    "CD74",
    "COL1A1",
    "MBP",
    "PLP1",
    "SNAP25",
    "ACTB",
    "XIST",
]


@pytest.fixture
def make_spaceranger(tmp_path):
    """Factory: a small Space Ranger folder (hex grid, lowres PNG, optional hires/truth/full-res)."""

    def make(
        name: str = "sec",
        *,
        positions: str = "v1",
        lowres: bool = True,
        hires: bool = False,
        fullres: str | None = None,
        truth: bool = True,
        n_rows: int = 8,
        n_cols: int = 10,
        seed: int = 0,
    ) -> Path:
        rng = np.random.default_rng(seed)
        folder = tmp_path / name
        spatial = folder / "spatial"
        spatial.mkdir(parents=True)
        rows, cols, xs, ys = hex_grid(n_rows, n_cols, pitch=100.0, origin=(300.0, 300.0))
        n = len(rows)
        barcodes = [f"AAAC{i:06d}-1" for i in range(n)]
        in_tissue = np.ones(n, dtype=int)
        in_tissue[:3] = 0  # a few spots off tissue, still listed (as Space Ranger does)
        # counts: in-tissue spots only (the filtered matrix), plus no spot beyond positions
        counted = [i for i in range(n) if in_tissue[i]]
        counts = rng.poisson(3.0, size=(len(counted), len(GENES)))
        counts[:, 0] += 1  # no all-zero spot
        write_10x_h5(
            folder / "filtered_feature_bc_matrix.h5", counts, [barcodes[i] for i in counted], GENES, name
        )
        pos = pd.DataFrame(
            {
                "barcode": barcodes,
                "in_tissue": in_tissue,
                "array_row": rows,
                "array_col": cols,
                "pxl_row_in_fullres": np.round(ys).astype(int),
                "pxl_col_in_fullres": np.round(xs).astype(int),
            }
        )
        # two extra slide spots without counts (as a real positions list has thousands)
        pos = pd.concat([pos, pos.iloc[:2].assign(barcode=["TTTT000001-1", "TTTT000002-1"], in_tissue=0)])
        if positions == "v1":
            pos.to_csv(spatial / "tissue_positions_list.csv", header=False, index=False)
        else:
            pos.to_csv(spatial / "tissue_positions.csv", header=True, index=False)
        width, height = int(xs.max() + 300), int(ys.max() + 300)
        full = tissue_image(width, height, np.c_[xs, ys], radius=60)
        sf = {"spot_diameter_fullres": 55.0, "fiducial_diameter_fullres": 80.0}
        if lowres:
            sf["tissue_lowres_scalef"] = 0.25
            Image.fromarray(full).resize((round(width * 0.25), round(height * 0.25))).save(
                spatial / "tissue_lowres_image.png"
            )
        if hires:
            sf["tissue_hires_scalef"] = 0.5
            Image.fromarray(full).convert("RGBA").resize((round(width * 0.5), round(height * 0.5))).save(
                spatial / "tissue_hires_image.png"
            )
        (spatial / "scalefactors_json.json").write_text(json.dumps(sf))
        if fullres:
            Image.fromarray(full).save(folder / fullres)
        if truth:
            layers = np.where(np.array(rows)[counted] < n_rows // 2, "L1", "WM")
            lines = [f"{barcodes[i]}\t{lab}" for i, lab in zip(counted[1:], layers[1:], strict=True)]
            (folder / f"{name}_truth.txt").write_text("\n".join(lines) + "\n")
        return folder

    return make


@pytest.fixture
def make_legacy_st(tmp_path):
    """Factory: a small her2st-layout section; returns the her2st root folder (ST-cnts, ...)."""

    def make(section: str = "A1", *, n_x: int = 8, n_y: int = 7, seed: int = 0, labels: bool = True) -> Path:
        rng = np.random.default_rng(seed)
        root = tmp_path / "her2st"
        for sub in ("ST-cnts", "ST-spotfiles", f"ST-imgs/{section[0]}/{section}", "ST-cluster/lbl"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        gx, gy = np.meshgrid(np.arange(3, 3 + n_x), np.arange(4, 4 + n_y))
        gx, gy = gx.ravel(), gy.ravel()
        px = 150.0 + (gx - 3) * 120.0 + rng.normal(0, 1.5, gx.size)
        py = 180.0 + (gy - 4) * 121.0 + rng.normal(0, 1.5, gy.size)
        selected = np.ones(gx.size, dtype=int)
        selected[-2:] = 0
        sel = pd.DataFrame(
            {
                "x": gx,
                "y": gy,
                "new_x": gx + 0.01,
                "new_y": gy - 0.01,
                "pixel_x": px.round(2),
                "pixel_y": py.round(2),
                "selected": selected,
            }
        )
        sel.to_csv(root / "ST-spotfiles" / f"{section}_selection.tsv", sep="\t", index=False)
        ids = [f"{x}x{y}" for x, y in zip(gx, gy, strict=True)]
        counts = pd.DataFrame(
            rng.poisson(2.0, size=(gx.size, 9)) + np.eye(gx.size, 9, dtype=int),
            index=ids,
            columns=[f"G{i}" for i in range(9)],
        )
        counts.iloc[:, 0] += 1
        counts = counts.iloc[1:]  # one selected grid spot has no counts (as in B4)
        with gzip.open(root / "ST-cnts" / f"{section}.tsv.gz", "wt") as f:
            counts.to_csv(f, sep="\t")
        width, height = int(px.max() + 200), int(py.max() + 250)
        img = tissue_image(width, height, np.c_[px, py], radius=70, seed=seed)
        Image.fromarray(img).save(root / "ST-imgs" / section[0] / section / f"HE_{section}.jpg", quality=90)
        if labels:
            lab = pd.DataFrame(
                {"x": gx, "y": gy, "label": (gx + gy) % 3},
                index=[f"{a:.2f}x{b:.2f}" for a, b in zip(px, py, strict=True)],
            ).iloc[:-5]
            with gzip.open(root / "ST-cluster" / "lbl" / f"{section}-cluster-annotation.tsv.gz", "wt") as f:
                lab.to_csv(f, sep="\t")
        return root

    return make
