"""Lattices other than Visium hex and her2st square: detection, generation, and STUtility-style input.

A checkerboard (spots only where x + y is even, neighbours on the diagonals) is a square lattice
rotated by 45 degrees; ``geometry`` generates on it through that rotation. STUtility-style files
(counts with genes as rows and ``XxY`` spot columns, a comma-separated spot table whose columns
come in another order, a JPEG) are read by ``read_legacy_st`` as they are.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import tissue_image
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from histosge import geometry
from histosge.errors import InputError
from histosge.read import read_h5ad, read_legacy_st
from histosge.read.checks import InputWarning


def checkerboard(n: int = 16, parity: int = 0):
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    keep = (r + c) % 2 == parity
    return r[keep].astype(float), c[keep].astype(float)


# -- detection ------------------------------------------------------------------------------------
def _px(rows, cols, step_x=100.0, step_y=100.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[cols * step_x, rows * step_y] + rng.normal(0, noise, (len(rows), 2))


@pytest.mark.parametrize("parity", [0, 1])
def test_detects_checkerboard(parity):
    r, c = checkerboard(parity=parity)
    rows, cols, grid = geometry.detect_lattice(r, c, _px(r, c, noise=3))
    assert grid == "checkerboard" and np.array_equal(rows, r) and np.array_equal(cols, c)


def test_detects_square_and_rectangular():
    r, c = np.meshgrid(np.arange(12), np.arange(15), indexing="ij")
    r, c = r.ravel(), c.ravel()
    assert geometry.detect_lattice(r, c, _px(r, c, 120, 130, noise=5))[2] == "square"


def _hex_doubled(n_rows=10, n_cols=12):
    rows, cols = [], []
    for a in range(n_rows):
        for b in range(a % 2, 2 * n_cols, 2):
            rows.append(a)
            cols.append(b)
    rows, cols = np.array(rows, float), np.array(cols, float)
    return rows, cols, np.c_[cols * 50.0, rows * 100 * np.sqrt(3) / 2]


def test_detects_hex_in_every_coordinate_convention():
    rows, cols, xy = _hex_doubled()
    r, c, g = geometry.detect_lattice(rows, cols, xy)
    assert g == "hex" and np.array_equal(r, rows) and np.array_equal(c, cols)
    r, c, g = geometry.detect_lattice(cols, rows, xy)  # doubled rows instead of columns
    assert g == "hex" and np.array_equal(r, rows) and np.array_equal(c, cols)
    q, rr = np.meshgrid(np.arange(12), np.arange(10))
    q, rr = q.ravel().astype(float), rr.ravel().astype(float)
    axial = np.c_[100 * (q + rr / 2), 100 * np.sqrt(3) / 2 * rr]
    r, c, g = geometry.detect_lattice(rr, q, axial)
    assert g == "hex" and np.all((r + c) % 2 == 0)
    for sign in (1, -1):  # offset rows, odd rows shifted right or left by half a step
        offset = np.c_[100 * (q + sign * 0.5 * (rr % 2)), 100 * np.sqrt(3) / 2 * rr]
        r, c, g = geometry.detect_lattice(rr, q, offset)
        assert g == "hex" and np.all((r + c) % 2 == 0)
        # the converted grid maps affinely onto the pixels
        coef = geometry.fit_array_to_pixel(r, c, offset)
        assert np.abs(geometry.array_to_pixel(coef, r, c) - offset).max() < 1e-6


def test_positions_off_any_lattice():
    rng = np.random.default_rng(0)
    r, c = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    r, c = r.ravel().astype(float), c.ravel().astype(float)
    with pytest.raises(InputError, match="do not fit a square, checkerboard or hexagonal lattice"):
        geometry.detect_lattice(r, c, rng.uniform(0, 1000, (len(r), 2)))


def test_fractional_grid_positions_are_never_truncated():
    r, c = checkerboard()
    with pytest.raises(InputError, match="non-integer grid positions"):
        geometry.dense_points(r + 0.02, c, "square")
    with pytest.raises(InputError, match="non-integer grid positions"):
        geometry.coarse_lattice_mask(r, c - 0.5, "hex")


# -- generation on a checkerboard -----------------------------------------------------------------
def _rotate(r, c):
    """Checkerboard (r, c), r + c even -> square lattice (u, v)."""
    return (c + r) / 2, (c - r) / 2


@pytest.mark.parametrize("factor", [4, 9, 16])
def test_checkerboard_generation_is_the_rotated_square_one(factor):
    r, c = checkerboard(14)
    rng = np.random.default_rng(factor)
    keep = rng.random(len(r)) < 0.9
    r, c = r[keep], c[keep]
    got = geometry.dense_points(r, c, "checkerboard", factor)
    u, v = _rotate(r, c)
    ref = geometry.dense_points(u, v, "square", factor)
    assert len(got) == len(ref) > 0
    gu, gv = _rotate(got["array_row"].to_numpy(), got["array_col"].to_numpy())
    np.testing.assert_allclose(gu, ref["array_row"])
    np.testing.assert_allclose(gv, ref["array_col"])
    assert list(got["parents"]) == list(ref["parents"]) and list(got["weights"]) == list(ref["weights"])
    # 4x: midpoints between diagonal neighbours and the centres of full cells (new x + y odd spots)
    if factor == 4:
        full = geometry.dense_points(*checkerboard(6), "checkerboard", 4)
        pts = set(zip(full["array_row"], full["array_col"], strict=True))
        assert (0.5, 0.5) in pts and (1.0, 2.0) in pts and (1.0, 1.0) not in pts


@settings(max_examples=30, deadline=None)
@given(n=st.integers(8, 20), parity=st.integers(0, 1), factor=st.sampled_from([4, 9, 16]),
       drop=st.floats(0, 0.3), seed=st.integers(0, 1000))
def test_checkerboard_generation_split_recovers_measured_spots(n, parity, factor, drop, seed):
    """Protocol G on a checkerboard: the coarse lattice's generated points are measured spots."""
    r, c = checkerboard(n, parity)
    keep = np.random.default_rng(seed).random(len(r)) >= drop
    r, c = r[keep], c[keep]
    train, test = geometry.generation_split(r, c, "checkerboard", factor)
    assert len(np.intersect1d(train, test)) == 0
    assert geometry.coarse_lattice_mask(r, c, "checkerboard", factor)[train].all()
    pts = geometry.dense_points(r[train], c[train], "checkerboard", factor, spacing=geometry.steps_of(factor))
    on_lattice = {(a, b) for a, b in zip(r, c, strict=True)}
    assert {(a, b) for a, b in zip(r[test], c[test], strict=True)} <= on_lattice
    assert len(test) == len({k for k in zip(pts["array_row"], pts["array_col"], strict=True) if k in on_lattice})


def test_generated_points_land_between_measured_spots():
    r, c = checkerboard(12)
    xy = _px(r, c, 120, 120)
    pts = geometry.dense_points(r, c, "checkerboard", 4)
    gen, rms = geometry.place_generated(r, c, xy, pts)
    assert rms < 1e-6
    d = np.linalg.norm(gen[:, None, :] - xy[None, :, :], axis=2).min(axis=1)
    # midpoints sit half a diagonal step from their parents, cell centres one axis step
    assert d.min() == pytest.approx(120 * np.sqrt(2) / 2) and d.max() == pytest.approx(120)
    assert len(gen) > 2 * len(r)


# -- STUtility-style legacy ST input -------------------------------------------------------------
def stutility_section(folder: Path, *, n: int = 16, fractional: bool = False, seed: int = 0) -> dict:
    """Checkerboard section in STUtility's layout: genes x spots counts, CSV spot table, JPEG."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = checkerboard(n)
    x, y = x + 2, y + 3
    px, py = 100 + (x - 2) * 90 + rng.normal(0, 1, len(x)), 120 + (y - 3) * 90 + rng.normal(0, 1, len(x))
    inside = (x - 2 - n / 2) ** 2 + (y - 3 - n / 2) ** 2 < (n / 2.6) ** 2  # a disc of tissue
    inside &= ~((x > 2 + n * 0.6) & (y < 3 + n * 0.4))  # with a bite out of it
    new_x, new_y = x + rng.uniform(-0.1, 0.1, len(x)), y + rng.uniform(-0.1, 0.1, len(x))
    spots = pd.DataFrame({"pixel_y": py.round(2), "new_x": new_x.round(3), "x": x.astype(int),
                          "selected": inside.astype(int), "y": y.astype(int), "pixel_x": px.round(2),
                          "new_y": new_y.round(3)})
    spots.to_csv(folder / "alignment_table.csv", index=False)
    names = [f"{a:.3f}x{b:.3f}" for a, b in zip(new_x, new_y, strict=True)] if fractional else \
        [f"{a}x{b}" for a, b in zip(x.astype(int), y.astype(int), strict=True)]
    counts = pd.DataFrame(rng.poisson(4, (len(x), 30)) + 1, index=names, columns=[f"Gene{i}" for i in range(30)])
    counts = counts[inside]
    with gzip.open(folder / "counts.tsv.gz", "wt") as f:
        counts.T.to_csv(f, sep="\t")  # genes as rows, spots as columns
    img = tissue_image(int(px.max() + 150), int(py.max() + 150), np.c_[px, py][inside], radius=55, seed=seed)
    Image.fromarray(img).save(folder / "he.jpg", quality=92)
    return {"counts": folder / "counts.tsv.gz", "spots": folder / "alignment_table.csv", "image": folder / "he.jpg",
            "n_selected": int(inside.sum()), "x": x, "y": y, "inside": inside}


def test_stutility_layout_reads_as_a_checkerboard(tmp_path):
    s = stutility_section(tmp_path / "mob")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        a = read_legacy_st(s["counts"], s["spots"], s["image"], library_id="mob")
    meta = a.uns["histosge"]
    assert meta["grid"] == "checkerboard" and meta["spot_diameter_um"] == 100.0
    assert a.n_obs == s["n_selected"] and a.n_vars == 30
    parity = (a.obs["array_row"] + a.obs["array_col"]) % 2
    assert parity.nunique() == 1
    assert meta["alignment"]["status"] == "ok", meta["alignment"]
    # superres geometry works on it: midpoints exist and fall between measured spots
    pts = geometry.dense_points(a.obs["array_row"], a.obs["array_col"], meta["grid"], 4)
    gen, _ = geometry.place_generated(a.obs["array_row"].to_numpy(), a.obs["array_col"].to_numpy(),
                                      a.obsm["spatial"], pts)
    assert len(pts) > a.n_obs
    assert np.isfinite(gen).all()


def test_stutility_fractional_names_match_new_x_new_y(tmp_path):
    whole = read_legacy_st(**{k: v for k, v in stutility_section(tmp_path / "a").items()
                              if k in ("counts", "spots", "image")}, library_id="a")
    s = stutility_section(tmp_path / "b", fractional=True)
    frac = read_legacy_st(s["counts"], s["spots"], s["image"], library_id="b")
    assert frac.obs_names.equals(whole.obs_names)
    np.testing.assert_array_equal(frac.obs["array_row"], whole.obs["array_row"])
    np.testing.assert_array_equal(frac.X.toarray(), whole.X.toarray())
    spots = pd.read_csv(s["spots"]).drop(columns=["new_x", "new_y"])
    spots.to_csv(s["spots"], index=False)
    with pytest.raises(InputError, match="fractional grid positions") as err:
        read_legacy_st(s["counts"], s["spots"], s["image"], library_id="b")
    assert "new_x" in err.value.fix


def test_selection_with_fractional_x_y_is_refused(tmp_path):
    s = stutility_section(tmp_path / "c")
    spots = pd.read_csv(s["spots"])
    spots["x"] = spots["new_x"]
    spots.to_csv(s["spots"], index=False)
    with pytest.raises(InputError, match="x, y hold non-integers"):
        read_legacy_st(s["counts"], s["spots"], s["image"], library_id="c")


def test_checkerboard_h5ad_names_the_missing_field(tmp_path):
    """Building an .h5ad by hand: the grid is taken as given, and the one missing field is named."""
    s = stutility_section(tmp_path / "d")
    a = read_legacy_st(s["counts"], s["spots"], s["image"], library_id="d")
    b = ad.AnnData(X=a.X, obs=a.obs[["array_row", "array_col"]].copy(), var=pd.DataFrame(index=a.var_names))
    b.obsm["spatial"] = a.obsm["spatial"]
    entry = a.uns["spatial"]["d"]
    b.uns["spatial"] = {"d": {"images": {"hires": entry["images"]["hires"]},
                              "scalefactors": {"tissue_hires_scalef": entry["scalefactors"]["tissue_hires_scalef"]}}}
    path = tmp_path / "d.h5ad"
    b.write_h5ad(path)
    with pytest.warns(InputWarning, match=r"uns\['spatial'\]\['d'\]\['scalefactors'\]\['spot_diameter_fullres'\] "
                                          r"is missing"):
        c = read_h5ad(path)
    meta = c.uns["histosge"]
    assert meta["grid"] == "checkerboard" and meta["spot_diameter_um"] == 100.0
    assert "assumed from the checkerboard grid" in meta["spot_diameter_um_source"]
    assert c.uns["spatial"]["d"]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(
        entry["scalefactors"]["spot_diameter_fullres"], rel=0.05)
    # without array_row/array_col the checkerboard is derived from the pixels
    b.obs = b.obs.drop(columns=["array_row", "array_col"])
    b.uns["spatial"]["d"]["scalefactors"]["spot_diameter_fullres"] = entry["scalefactors"]["spot_diameter_fullres"]
    b.uns["histosge"] = {"spot_diameter_um": 100.0}
    b.write_h5ad(path)
    c = read_h5ad(path)
    assert c.uns["histosge"]["grid"] == "checkerboard"
    assert c.uns["histosge"]["spot_diameter_um_source"] == "uns['histosge']['spot_diameter_um'] of the file"


def test_fractional_array_row_in_h5ad(make_spaceranger, tmp_path):
    from histosge.read import read_spaceranger

    a = read_spaceranger(make_spaceranger())
    a.obs["array_row"] = a.obs["array_row"] + 0.25
    a.write_h5ad(tmp_path / "f.h5ad")
    with pytest.raises(InputError, match=r"obs\['array_row'\] holds non-integer grid positions"):
        read_h5ad(tmp_path / "f.h5ad")


def test_spot_diameter_um_in_every_reader(make_spaceranger, make_legacy_st, tmp_path):
    from histosge.read import read_her2st, read_spaceranger

    assert read_spaceranger(make_spaceranger()).uns["histosge"]["spot_diameter_um"] == 55.0
    assert read_her2st(make_legacy_st(), "A1").uns["histosge"]["spot_diameter_um"] == 100.0


def test_normalised_but_not_logged_h5ad(make_spaceranger, tmp_path):
    """Half-done preprocessing (normalize_total without log1p) used to crash HVG selection."""
    import scanpy as sc

    from histosge.genes import log_normalize, select_hvgs
    from histosge.read import read_spaceranger

    a = read_spaceranger(make_spaceranger(n_rows=10, n_cols=12))
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    b.write_h5ad(tmp_path / "norm.h5ad")
    with pytest.warns(InputWarning, match="normalised but not log-transformed"):
        c = read_h5ad(tmp_path / "norm.h5ad")
    assert c.uns["histosge"]["raw_counts"] is False
    assert "log1p" in c.uns["histosge"]["x_transform"]
    genes, flavour = select_hvgs(c, 5)
    assert len(genes) == 5 and flavour == "seurat"
    # the values are the log1p-normalised expression the model would have made from the raw counts
    np.testing.assert_allclose(log_normalize(c, genes), log_normalize(a, genes), rtol=1e-5, atol=1e-5)
    sc.pp.log1p(b)  # already logged: left alone
    b.write_h5ad(tmp_path / "log.h5ad")
    d = read_h5ad(tmp_path / "log.h5ad")
    assert "x_transform" not in d.uns["histosge"]
