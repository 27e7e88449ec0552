"""read_h5ad: counts lookup, image validation, grid derivation, and the squidpy mouse-brain crop."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest
import scanpy as sc

from histosge.errors import InputError
from histosge.read import image_for, read_h5ad, read_her2st, read_spaceranger
from histosge.read.checks import InputWarning, check_section
from histosge.read.h5ad import grid_from_pixels

matplotlib.use("Agg")


def _grid_matches(derived_row, derived_col, row, col):
    """Same grid up to a shift of origin."""
    dr, dc = np.asarray(derived_row) - np.asarray(row), np.asarray(derived_col) - np.asarray(col)
    return np.ptp(dr) == 0 and np.ptp(dc) == 0


def test_roundtrip_prefers_counts_layer(make_spaceranger, tmp_path):
    a = read_spaceranger(make_spaceranger())
    a.layers["counts"] = a.X.copy()
    a.X = a.X.log1p()
    a.uns["log1p"] = {"base": None}
    a.write_h5ad(tmp_path / "s.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        b = read_h5ad(tmp_path / "s.h5ad")
    check_section(b)
    assert b.uns["histosge"]["raw_counts"] is True
    np.testing.assert_array_equal(b.X.toarray(), a.layers["counts"].toarray())
    np.testing.assert_array_equal(b.obs["array_row"], a.obs["array_row"])
    assert b.uns["histosge"]["grid"] == "hex" and set(b.uns["spatial"]["sec"]["images"]) == {"lowres"}
    assert "log1p" not in b.uns and "annotation" in b.obs


def test_log_data_is_flagged_not_raw(make_spaceranger, tmp_path):
    a = read_spaceranger(make_spaceranger())
    a.X = a.X.log1p()
    a.write_h5ad(tmp_path / "s.h5ad")
    with pytest.warns(InputWarning, match="raw_counts"):
        b = read_h5ad(tmp_path / "s.h5ad")
    assert b.uns["histosge"]["raw_counts"] is False
    with pytest.raises(InputError, match="raw counts are required"):
        read_h5ad(tmp_path / "s.h5ad", require_raw=True)


def test_hex_grid_derived_from_pixels(make_spaceranger, tmp_path):
    a = read_spaceranger(make_spaceranger(n_rows=12, n_cols=14))
    row, col, grid, pitch = grid_from_pixels(a.obsm["spatial"], where="test")
    assert grid == "hex" and pitch == pytest.approx(100, abs=1)
    assert _grid_matches(row, col, a.obs["array_row"], a.obs["array_col"])
    assert ((row + col) % 2 == 0).all()
    del a.obs["array_row"], a.obs["array_col"]
    a.write_h5ad(tmp_path / "nogrid.h5ad")
    b = read_h5ad(tmp_path / "nogrid.h5ad")
    assert b.uns["histosge"]["grid"] == "hex"
    np.testing.assert_array_equal(b.obs["array_row"], row)


def test_square_grid_derived_from_pixels(make_legacy_st):
    a = read_her2st(make_legacy_st(), "A1")
    row, col, grid, pitch = grid_from_pixels(a.obsm["spatial"], where="test")
    assert grid == "square" and pitch == pytest.approx(120, rel=0.03)
    assert _grid_matches(row, col, a.obs["array_row"], a.obs["array_col"])


def test_rotated_grid_is_input_error():
    g = np.stack(np.meshgrid(np.arange(6.0), np.arange(6.0)), -1).reshape(-1, 2) * 100
    theta = np.radians(30)
    rot = g @ np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]).T
    with pytest.raises(InputError, match="regular axis-aligned grid"):
        grid_from_pixels(rot + 1000, where="test")


def test_junk_uns_image_dropped_and_full_image_used(make_spaceranger, tmp_path):
    folder = make_spaceranger(fullres="full.png")
    a = read_spaceranger(folder)
    a.uns["spatial"]["sec"]["images"]["hires"] = np.random.default_rng(0).normal(size=(50, 50, 3))
    a.uns["spatial"]["sec"]["scalefactors"]["tissue_hires_scalef"] = 0.1
    a.write_h5ad(tmp_path / "s.h5ad")
    with pytest.warns(InputWarning, match="not a usable image"):
        b = read_h5ad(tmp_path / "s.h5ad", image=folder / "full.png")
    entry = b.uns["spatial"]["sec"]
    assert entry["images"]["hires"].dtype == np.uint8  # rebuilt from the full-resolution image
    assert entry["scalefactors"]["tissue_hires_scalef"] == 1.0  # image smaller than 2000 px
    src, scale = image_for(b)
    assert src.path.name == "full.png" and scale == 1.0


def test_uns_image_for_another_scale_is_dropped(make_spaceranger, tmp_path):
    a = read_spaceranger(make_spaceranger())
    a.uns["spatial"]["sec"]["scalefactors"]["tissue_lowres_scalef"] = 1.0  # full-res coords on lowres
    a.write_h5ad(tmp_path / "s.h5ad")
    with pytest.warns(InputWarning, match="fall outside"), pytest.raises(InputError, match="no usable image"):
        read_h5ad(tmp_path / "s.h5ad")


# -- real data -----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::PendingDeprecationWarning")
def test_mouse_brain_crop(data_dir):
    import matplotlib.pyplot as plt

    folder = data_dir / "visium_mouse_brain_crop"
    with pytest.warns(InputWarning) as record:
        a = read_h5ad(folder / "test_data.h5ad", image=folder / "test_img.jpg", annotation_key="leiden")
    messages = " ".join(str(w.message) for w in record)
    assert "raw_counts" in messages and "'hires'] is not a usable image" in messages
    check_section(a)
    assert a.shape == (49, 1999)
    meta = a.uns["histosge"]
    assert (
        meta["raw_counts"] is False and meta["grid"] == "hex" and meta["library_id"] == "V1_Adult_Mouse_Brain"
    )
    rows, cols = a.obs["array_row"].to_numpy(), a.obs["array_col"].to_numpy()
    assert ((rows + cols) % 2 == 0).all() and rows.min() == 0
    entry = a.uns["spatial"]["V1_Adult_Mouse_Brain"]
    assert entry["images"]["hires"].shape == (1717, 950, 3)  # the JPEG itself (under 2000 px)
    assert entry["images"]["lowres"].shape == (88, 49, 3)  # the stored lowres fits the spots: kept
    src, scale = image_for(a)
    assert (src.width, src.height, scale) == (950, 1717, 1.0)
    assert a.obs["annotation"].nunique() > 3
    sc.pl.spatial(a, img_key="hires", color="annotation", show=False)
    plt.close("all")
