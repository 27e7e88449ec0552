"""read_legacy_st / read_her2st on a synthetic her2st layout and the real B4, C2, C3, C4 sections."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from histosge.read import image_for, read_her2st, read_legacy_st
from histosge.read.checks import InputWarning, check_section

matplotlib.use("Agg")


def test_synthetic_section(make_legacy_st):
    root = make_legacy_st()
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)  # a clean section reads without repairs
        a = read_her2st(root, "A1")
    check_section(a)
    # 56 grid spots, 2 not selected, 1 selected but without counts
    assert a.shape == (53, 9)
    assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32
    meta = dict(a.uns["histosge"])
    alignment = meta.pop("alignment")
    assert meta == {
        "grid": "square",
        "library_id": "A1",
        "source": str(root / "ST-cnts" / "A1.tsv.gz"),
        "raw_counts": True,
        "spot_diameter_um": 100.0,
        # counted on reading, for the summaries (the fixture's 2 unselected and 1 uncounted spots)
        "dropped": {"not in the spot table": 0, "not selected (selected = 0)": 2, "selected but without counts": 1,
                    "zero counts": 0},
    }
    # a full rectangle of spots: no off-tissue spot to compare against, so no score (and no refusal)
    assert alignment["status"].startswith("not scored") and alignment["n_off"] == 2
    sel = pd.read_csv(root / "ST-spotfiles" / "A1_selection.tsv", sep="\t")
    sel.index = [f"{x}x{y}" for x, y in zip(sel.x, sel.y, strict=True)]
    np.testing.assert_allclose(a.obsm["spatial"], sel.loc[a.obs_names, ["pixel_x", "pixel_y"]].to_numpy())
    np.testing.assert_array_equal(a.obs["array_row"], sel.loc[a.obs_names, "y"])
    np.testing.assert_array_equal(a.obs["array_col"], sel.loc[a.obs_names, "x"])
    # pitch ~120 px in the fixture -> diameter ~60 px
    entry = a.uns["spatial"]["A1"]
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(60, rel=0.03)
    assert entry["metadata"]["source_image_path"].endswith("HE_A1.jpg")
    hires = entry["images"]["hires"]
    assert hires.dtype == np.uint8 and max(hires.shape[:2]) <= 2000
    # labels: last 5 grid spots unlabelled; labels joined on (x, y)
    ann = a.obs["annotation"]
    assert isinstance(ann.dtype, pd.CategoricalDtype)
    expected = ((a.obs["array_col"] + a.obs["array_row"]) % 3).astype(int).astype(str)
    labelled = ann.notna()
    assert (ann[labelled].astype(str) == expected[labelled]).all()


def test_without_labels(make_legacy_st):
    root = make_legacy_st(labels=False)
    a = read_her2st(root, "A1")
    assert "annotation" not in a.obs


def test_direct_call_matches_convenience(make_legacy_st):
    root = make_legacy_st()
    a = read_legacy_st(
        root / "ST-cnts" / "A1.tsv.gz",
        root / "ST-spotfiles" / "A1_selection.tsv",
        next((root / "ST-imgs" / "A" / "A1").glob("*.jpg")),
        library_id="mine",
    )
    assert a.uns["histosge"]["library_id"] == "mine" and "annotation" not in a.obs
    assert a.n_obs == 53


def test_image_for_uses_full_resolution_jpeg(make_legacy_st):
    a = read_her2st(make_legacy_st(), "A1")
    src, scale = image_for(a)
    assert scale == 1.0 and src.path.suffix == ".jpg"


# -- real data -----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::PendingDeprecationWarning")
@pytest.mark.parametrize(
    "section, n_spots, n_genes",
    [("B4", 283, 15289), ("C2", 187, 15706), ("C3", 180, 15821), ("C4", 184, 15842)],
)
def test_her2st(data_dir, section, n_spots, n_genes):
    import matplotlib.pyplot as plt
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        a = read_her2st(data_dir / "her2st", section)
    check_section(a)
    assert a.shape == (n_spots, n_genes)
    assert a.uns["histosge"]["grid"] == "square" and a.uns["histosge"]["raw_counts"]
    entry = a.uns["spatial"][section]
    # ~200 um pitch at ~0.63-0.75 um/px: spot diameter ~130-140 px
    assert 100 < entry["scalefactors"]["spot_diameter_fullres"] < 170
    hires = entry["images"]["hires"]
    assert max(hires.shape[:2]) == 2000
    xy = a.obsm["spatial"] * entry["scalefactors"]["tissue_hires_scalef"]
    assert (xy >= 0).all() and (xy[:, 0] < hires.shape[1]).all() and (xy[:, 1] < hires.shape[0]).all()
    assert a.obs["annotation"].notna().mean() > 0.75
    sc.pl.spatial(a, img_key="hires", color="annotation", show=False)
    plt.close("all")
