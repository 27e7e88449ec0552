"""Outputs on disk (histosge.storage via write_output): each array once, compressed, predictions at
the stated precision, features only when asked; read back by plain anndata."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from histosge._atomic import write_output
from histosge.storage import QUANTUM, quantize


def _superres_like(n_meas=60, n_gen=140, genes=50, seed=0):
    """An output shaped like superres': X = measured for measured rows, predicted for generated
    rows; layers['predicted'] = the model everywhere; features in obsm."""
    rng = np.random.default_rng(seed)
    pred = rng.gamma(2.0, 0.6, size=(n_meas + n_gen, genes)).astype(np.float32)
    meas = np.where(rng.random((n_meas, genes)) < 0.8, 0, rng.gamma(2.0, 0.8, size=(n_meas, genes))).astype(np.float32)
    x = np.vstack([meas, pred[n_meas:]])
    obs = pd.DataFrame({"spot_type": pd.Categorical(["measured"] * n_meas + ["generated"] * n_gen)},
                       index=[f"s{i}" for i in range(n_meas + n_gen)])
    a = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(genes)]))
    a.layers["predicted"] = pred
    a.obsm["spatial"] = rng.random((a.n_obs, 2)) * 1000
    a.obsm["features"] = rng.random((a.n_obs, 93)).astype(np.float32)
    a.uns["histosge"] = {"task": "superres"}
    return a


def test_predictions_are_rounded_stored_once_and_read_back_by_anndata(tmp_path):
    a = _superres_like()
    path = write_output(a, tmp_path / "out.h5ad")
    b = ad.read_h5ad(path)
    assert np.array_equal(b.X, quantize(a.X)) and np.array_equal(b.layers["predicted"], quantize(a.layers["predicted"]))
    assert np.abs(b.layers["predicted"] - a.layers["predicted"]).max() <= QUANTUM / 2
    assert b.X.dtype == np.float32 and b.obs.equals(a.obs)
    assert np.array_equal(b.obsm["spatial"], a.obsm["spatial"]) and "features" not in b.obsm
    info = b.uns["histosge"]["storage"]
    assert "2^-10" in info["precision"] and "not stored" in info["features"]
    assert "140 of 200 rows are X's rows" in info["linked_layers"]["predicted"]
    with h5py.File(path) as f:
        assert f["layers/predicted"].is_virtual and not f["X"].is_virtual
        assert f["X"].compression == "gzip" and f["X"].shuffle
        assert f["uns/histosge/storage/rows_predicted"].shape == (60, 50)  # only the rows that differ
    # written again by plain anndata, the layer is a normal array with the same values
    b.write_h5ad(tmp_path / "again.h5ad")
    assert np.array_equal(ad.read_h5ad(tmp_path / "again.h5ad").layers["predicted"], b.layers["predicted"])


def test_linking_and_rounding_make_the_file_smaller_than_each_alone(tmp_path):
    a = _superres_like(n_meas=300, n_gen=700, genes=200)
    a.write_h5ad(tmp_path / "plain.h5ad")
    lossless = write_output(a, tmp_path / "lossless.h5ad", lossless=True).stat().st_size
    default = write_output(a, tmp_path / "default.h5ad").stat().st_size
    plain = (tmp_path / "plain.h5ad").stat().st_size
    assert default < 0.7 * lossless < 0.7 * plain


def test_lossless_keeps_every_bit_and_features_on_request(tmp_path):
    a = _superres_like()
    b = ad.read_h5ad(write_output(a, tmp_path / "out.h5ad", lossless=True, features=True))
    assert np.array_equal(b.X, a.X) and np.array_equal(b.layers["predicted"], a.layers["predicted"])
    assert np.array_equal(b.obsm["features"], a.obsm["features"])
    assert b.uns["histosge"]["storage"]["precision"].startswith("exact")


def test_a_layer_equal_to_x_everywhere_is_one_dataset(tmp_path):
    a = _superres_like()
    a.layers["predicted"] = a.X.copy()
    path = write_output(a, tmp_path / "out.h5ad")
    with h5py.File(path) as f:
        assert f["layers/predicted"].id == f["X"].id  # a hard link: one dataset, two names
    assert np.array_equal(ad.read_h5ad(path).layers["predicted"], quantize(a.X))


def test_an_anndata_that_is_not_ours_is_written_whole_and_exact(tmp_path):
    a = _superres_like()
    del a.uns["histosge"]
    b = ad.read_h5ad(write_output(a, tmp_path / "out.h5ad"))
    assert np.array_equal(b.X, a.X) and "features" in b.obsm and "histosge" not in b.uns


def test_zarr_outputs_are_rounded_and_whole(tmp_path):
    a = _superres_like()
    b = ad.read_zarr(write_output(a, tmp_path / "out.zarr"))
    assert np.array_equal(b.layers["predicted"], quantize(a.layers["predicted"])) and "features" not in b.obsm


def test_quantize_leaves_non_finite_values_alone():
    x = np.array([[0.0, 1.2345678, np.nan, np.inf, -0.0001]], np.float32)
    q = quantize(x)
    assert np.isnan(q[0, 2]) and np.isinf(q[0, 3]) and q[0, 1] * 1024 == round(q[0, 1] * 1024)
    assert np.nanmax(np.abs(q - x)[np.isfinite(x)]) <= QUANTUM / 2
