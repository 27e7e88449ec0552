"""superres / recover end to end on real sections (small ones; DLPFC runs in bench/)."""

import warnings

import numpy as np
import pytest

import histosge
from histosge.errors import InputError


@pytest.fixture(scope="module")
def c2(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return histosge.read_section("her2st:C2", data_dir=data_dir)


FAST = dict(epochs=3, n_top_genes=200)


def test_superres_legacy_st_geometry_and_output(c2, tmp_path):
    out = histosge.superres(c2, progress=False, cache_dir=str(tmp_path), **FAST)
    info = out.uns["histosge"]
    measured = out[out.obs["spot_type"] == "measured"]
    generated = out[out.obs["spot_type"] == "generated"]
    assert measured.n_obs == c2.n_obs and info["n_generated"] == generated.n_obs
    assert 2.5 < out.n_obs / c2.n_obs <= 4.0  # square grid: up to 3 new spots per spot, fewer at edges
    # generated spots sit between measured ones, never on them, and inside the tissue's bounding box
    keys_m = set(zip(measured.obs.array_row, measured.obs.array_col, strict=True))
    keys_g = list(zip(generated.obs.array_row, generated.obs.array_col, strict=True))
    assert not keys_m & set(keys_g) and len(set(keys_g)) == len(keys_g)
    xy_m, xy_g = measured.obsm["spatial"], generated.obsm["spatial"]
    assert (xy_g.min(0) >= xy_m.min(0) - 1).all() and (xy_g.max(0) <= xy_m.max(0) + 1).all()
    # measured spots keep their measured log1p values; predictions are finite and non-negative
    assert np.isfinite(out.X).all() and (out.X >= 0).all() and out.n_vars == 200
    lib = info["library_id"]
    assert "scalefactors" in out.uns["spatial"][lib]


def test_superres_at_9x_fills_edges_and_cells_at_thirds(c2, tmp_path):
    out = histosge.superres(c2, factor=9, progress=False, cache_dir=str(tmp_path), **FAST)
    info = out.uns["histosge"]
    generated = out[out.obs["spot_type"] == "generated"]
    assert info["factor"] == 9 and info["n_generated"] == generated.n_obs
    assert 6 < out.n_obs / c2.n_obs <= 9  # up to 8 new spots per measured one, fewer at the tissue edge
    thirds = np.round(3 * np.asarray(generated.obs.array_row) % 3)
    assert set(thirds) == {0, 1, 2}  # on the grid rows, a third and two thirds of the way
    keys_g = list(zip(generated.obs.array_row, generated.obs.array_col, strict=True))
    assert len(set(keys_g)) == len(keys_g)
    xy_m, xy_g = out.obsm["spatial"][: c2.n_obs], generated.obsm["spatial"]
    assert (xy_g.min(0) >= xy_m.min(0) - 1).all() and (xy_g.max(0) <= xy_m.max(0) + 1).all()
    assert np.isfinite(out.X).all() and (out.X >= 0).all()


def test_superres_output_writes_and_plots(c2, tmp_path):
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    from histosge import plot
    from histosge._atomic import write_h5ad

    out = histosge.superres(c2, progress=False, cache_dir=str(tmp_path), **FAST)
    path = write_h5ad(out, tmp_path / "c2.h5ad")
    back = ad.read_h5ad(path)
    assert back.n_obs == out.n_obs and list(back.obs["spot_type"].cat.categories) == ["measured", "generated"]
    sc.pl.spatial(back, color=back.var_names[0], img_key="hires", show=False)
    genes = plot.gene_maps(back, tmp_path / "m.png", genes=["ERBB2"] if "ERBB2" in back.var_names else None)
    assert (tmp_path / "m.png").stat().st_size > 10_000 and 1 <= len(genes) <= 4
    assert not list(tmp_path.glob("*.part"))


def test_recover_scores_held_out_only(c2, tmp_path):
    rec = histosge.recover(c2, holdout=0.5, seed=1, progress=False, cache_dir=str(tmp_path), **FAST)
    info = rec.uns["histosge"]
    test = (rec.obs["split"] == "held-out").to_numpy()
    assert info["n_test"] == test.sum() and info["n_train"] == (~test).sum()
    from histosge.evaluate import score

    expected = score(np.asarray(rec.X)[test], rec.layers["predicted"][test])
    assert np.isclose(info["metrics"]["pcc"], expected["pcc"])
    assert info["metrics_scope"] == "held-out spots only"
    # the same call twice: identical predictions (seeded)
    again = histosge.recover(c2, holdout=0.5, seed=1, progress=False, cache_dir=str(tmp_path), **FAST)
    assert np.array_equal(again.layers["predicted"], rec.layers["predicted"])


def test_recover_paper_method_and_bad_options(c2, tmp_path):
    rec = histosge.recover(c2, method="histosge-paper", progress=False, cache_dir=str(tmp_path), **FAST)
    assert np.isfinite(rec.uns["histosge"]["metrics"]["pcc"])
    with pytest.raises(InputError, match="--method"):
        histosge.recover(c2, method="nope", progress=False)
    with pytest.raises(InputError, match="--holdout"):
        histosge.recover(c2, holdout=1.0, progress=False)


def test_superres_on_h5ad_without_raw_counts(data_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crop = histosge.read_section("visium_mouse_brain_crop", data_dir=data_dir)
        out = histosge.superres(crop, progress=False, cache_dir=str(tmp_path), **FAST)
    assert out.uns["histosge"]["hvg_flavour"] in ("seurat", "all")
    assert out.uns["histosge"]["n_generated"] > 0
