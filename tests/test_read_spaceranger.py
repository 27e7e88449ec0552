"""read_spaceranger on synthetic folders (v1/v2 positions, image variants) and the real DLPFC sections."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from histosge.read import image_for, read_spaceranger
from histosge.read.checks import check_section

matplotlib.use("Agg")


def _check_convention(a):
    check_section(a)
    assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32
    assert a.obs["array_row"].dtype == np.float64 and a.obs["array_col"].dtype == np.float64
    assert a.obsm["spatial"].shape == (a.n_obs, 2)
    assert a.var_names.is_unique and a.obs_names.is_unique


@pytest.mark.parametrize("positions", ["v1", "v2"])
def test_reads_lowres_only_folder(make_spaceranger, positions):
    folder = make_spaceranger(positions=positions)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean section reads without warnings
        a = read_spaceranger(folder)
    _check_convention(a)
    assert a.n_obs == 77 and a.n_vars == 12  # 80 grid spots, 3 off tissue
    assert (a.obs["in_tissue"] == 1).all()
    assert "ACTB-1" in a.var_names and "ACTB" in a.var_names  # duplicate symbols made unique
    lib = a.uns["histosge"]["library_id"]
    assert lib == "sec" and a.uns["histosge"]["grid"] == "hex" and a.uns["histosge"]["raw_counts"]
    assert set(a.uns["spatial"][lib]["images"]) == {"lowres"}
    assert a.uns["spatial"][lib]["images"]["lowres"].dtype == np.uint8
    assert isinstance(a.obs["annotation"].dtype, pd.CategoricalDtype)
    assert a.obs["annotation"].isna().sum() == 1 and set(a.obs["annotation"].dropna()) == {"L1", "WM"}


def test_spatial_is_x_col_y_row(make_spaceranger):
    folder = make_spaceranger()
    pos = pd.read_csv(folder / "spatial" / "tissue_positions_list.csv", header=None, index_col=0)
    a = read_spaceranger(folder)
    bc = a.obs_names[5]
    np.testing.assert_array_equal(a.obsm["spatial"][5], [pos.loc[bc, 5], pos.loc[bc, 4]])
    assert a.obs["array_row"].iloc[5] == pos.loc[bc, 2] and a.obs["array_col"].iloc[5] == pos.loc[bc, 3]


def test_hires_and_full_resolution_image(make_spaceranger):
    folder = make_spaceranger(hires=True, fullres="full.tif")
    a = read_spaceranger(folder, image=folder / "full.tif", library_id="custom")
    entry = a.uns["spatial"]["custom"]
    assert set(entry["images"]) == {"hires", "lowres"}
    assert entry["images"]["hires"].shape[2] == 3  # RGBA png converted to RGB
    assert entry["metadata"]["source_image_path"].endswith("full.tif")
    src, scale = image_for(a)
    assert src.kind == "tiff" and scale == 1.0
    src, scale = image_for(_without_source(a))
    assert scale == 0.5  # hires preferred over lowres


def _without_source(a):
    b = a.copy()
    b.uns["spatial"]["custom"]["metadata"] = {}
    return b


def test_full_resolution_image_only(make_spaceranger):
    folder = make_spaceranger(lowres=False, fullres="full.jpg")
    a = read_spaceranger(folder, image=folder / "full.jpg")
    hires = a.uns["spatial"]["sec"]["images"]["hires"]  # a drawable copy of the full-res image
    assert hires.shape[2] == 3 and a.uns["spatial"]["sec"]["scalefactors"]["tissue_hires_scalef"] == 1.0
    src, scale = image_for(a)
    assert src.path.name == "full.jpg" and scale == 1.0


def test_outs_subfolder_is_found(make_spaceranger, tmp_path):
    folder = make_spaceranger("run")
    (tmp_path / "run_parent").mkdir()
    folder.rename(tmp_path / "run_parent" / "outs")
    assert read_spaceranger(tmp_path / "run_parent").n_obs == 77


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::PendingDeprecationWarning")
def test_scanpy_spatial_plot_runs(make_spaceranger):
    import matplotlib.pyplot as plt
    import scanpy as sc

    a = read_spaceranger(make_spaceranger())
    sc.pl.spatial(a, img_key="lowres", color="annotation", show=False)
    plt.close("all")


# -- real data -----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::PendingDeprecationWarning")
@pytest.mark.parametrize("section, n_spots", [("151673", 3639), ("151676", 3460)])
def test_dlpfc(data_dir, section, n_spots):
    import matplotlib.pyplot as plt
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = read_spaceranger(data_dir / "dlpfc" / section)
    _check_convention(a)
    assert a.shape == (n_spots, 7319)
    assert a.uns["histosge"]["library_id"] == section and a.uns["histosge"]["raw_counts"]
    entry = a.uns["spatial"][section]
    assert set(entry["images"]) == {"lowres"}
    low = entry["images"]["lowres"]
    assert low.shape == (600, 600, 3)
    xy = a.obsm["spatial"] * entry["scalefactors"]["tissue_lowres_scalef"]
    assert (xy >= 0).all() and (xy < 600).all()
    ann = a.obs["annotation"]
    assert set(ann.dropna()) == {"L1", "L2", "L3", "L4", "L5", "L6", "WM"}
    assert ann.notna().mean() > 0.98
    assert np.allclose(a.X.data, np.round(a.X.data))
    src, scale = image_for(a)
    assert src.width == 600 and scale == entry["scalefactors"]["tissue_lowres_scalef"]
    sc.pl.spatial(a, img_key="lowres", color="annotation", show=False)
    plt.close("all")
