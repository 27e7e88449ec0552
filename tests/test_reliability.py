"""Per-gene reliability (issue 25): cv_pcc is in Pearson units and calibrated, learnt at training,
carried in the model file and written into every output."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file
from scipy.stats import spearmanr
from typer.testing import CliRunner

import histosge
from histosge.cli import app
from histosge.model import HisToSGE
from histosge.model.reliability import RELIABLE_PCC, Reliability, estimate, gene_table

SMALL = {"epochs": 2, "dim": 32, "mlp_dim": 32}


def _folds(rho, n_per_fold=150, k=3, seed=0):
    """Out-of-fold predictions whose true per-gene Pearson is ``rho``, shrunk like a ridge's: the
    prediction's spread grows with how much of the gene it captures."""
    rng = np.random.default_rng(seed)
    n = n_per_fold * k
    y = rng.normal(size=(n, len(rho)))
    noise = rng.normal(size=(n, len(rho)))
    pred = rho * (rho * y + np.sqrt(1 - rho**2) * noise)
    return y, pred, np.repeat(np.arange(k), n_per_fold)


def test_the_estimate_is_calibrated_and_beats_its_fold_mean():
    rho = np.random.default_rng(1).uniform(0.0, 0.7, 600)
    y, pred, folds = _folds(rho)
    rel = estimate(y, pred, folds, scope="synthetic")
    assert abs(rel.cv_pcc.mean() - rho.mean()) < 0.02  # in Pearson units, unbiased
    err, err_raw = np.abs(rel.cv_pcc - rho).mean(), np.abs(rel.raw_pcc - rho).mean()
    assert err < 0.8 * err_raw  # shrinking toward genes of the same spread removes fold noise
    assert spearmanr(rel.cv_pcc, rho).correlation > spearmanr(rel.raw_pcc, rho).correlation
    assert 0 < rel.shrinkage < 1 and rel.n_folds == 3
    flagged = rel.reliable
    assert np.median(rho[flagged]) >= RELIABLE_PCC and np.median(rho[flagged]) > 2 * np.median(rho[~flagged])


def test_genes_too_sparse_to_learn_are_never_reliable():
    rho = np.full(20, 0.6)
    y, pred, folds = _folds(rho)
    sparse = np.zeros(20, bool)
    sparse[3] = True
    rel = estimate(y, pred, folds, scope="synthetic", sparse=sparse)
    assert rel.cv_pcc[3] >= RELIABLE_PCC and not rel.reliable[3] and rel.reliable[2]


def test_round_trip_through_json_and_a_wrong_length():
    rel = estimate(*_folds(np.linspace(0, 0.6, 30)), scope="synthetic")
    back = Reliability.from_json(json.loads(json.dumps(rel.to_json())), 30)
    assert np.allclose(back.cv_pcc, rel.cv_pcc, atol=1e-4) and (back.reliable == rel.reliable).all()
    with pytest.raises(ValueError, match="reliability lists 30 genes, the model 31"):
        Reliability.from_json(rel.to_json(), 31)


@pytest.fixture
def sections(make_legacy_st):
    make_legacy_st("A2", seed=1, n_x=9)
    root = make_legacy_st("A1", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [histosge.read_section(f"her2st:{s}", data_dir=root.parent) for s in ("A1", "A2")]


@pytest.mark.parametrize("mode", ["neighbours", "image", "paper"])
def test_every_mode_estimates_and_carries_it_to_the_file_and_outputs(mode, sections, tmp_path):
    fit_on = sections if mode == "image" else sections[0]
    model = HisToSGE(mode, n_top_genes=6, network=SMALL).fit(fit_on, cache_dir=str(tmp_path / "c"), progress=False)
    rel = model.reliability_
    assert rel is not None and rel.cv_pcc.shape == (6,) and np.isfinite(rel.cv_pcc).all()
    assert {"neighbours": "leave-one-out", "image": "training sections", "paper": "random folds"}[mode] in rel.scope
    path = tmp_path / "m.histosge"
    model.save(path)
    back = HisToSGE.load(path)
    assert np.allclose(back.reliability_.cv_pcc, rel.cv_pcc, atol=1e-4)
    out = back.predict(sections[1] if mode == "image" else sections[0], cache_dir=str(tmp_path / "c"),
                       progress=False)
    assert np.allclose(out.var["cv_pcc"], rel.cv_pcc, atol=1e-4)
    assert (out.var["reliable"].to_numpy() == rel.reliable).all()


def test_the_estimate_changes_no_prediction(sections, tmp_path):
    kw = dict(n_top_genes=6, network=SMALL)
    on = HisToSGE("neighbours", **kw).fit(sections[0], cache_dir=str(tmp_path / "c"), progress=False)
    off = HisToSGE("neighbours", reliability=False, **kw).fit(sections[0], cache_dir=str(tmp_path / "c"),
                                                              progress=False)
    a = on.predict(sections[0], cache_dir=str(tmp_path / "c"), progress=False)
    b = off.predict(sections[0], cache_dir=str(tmp_path / "c"), progress=False)
    assert np.array_equal(np.asarray(a.X), np.asarray(b.X))
    assert off.reliability_ is None and b.var["cv_pcc"].isna().all() and not b.var["reliable"].any()
    assert b.uns["histosge"]["reliability"] == {"estimated": False, "why": "not estimated (reliability=False)",
                                                "rule": a.uns["histosge"]["reliability"]["rule"]}


def test_a_baseline_estimates_by_refitting(sections, tmp_path):
    from histosge import methods

    model = methods.create_model("ridge", n_top_genes=5).fit(sections, cache_dir=str(tmp_path / "c"),
                                                            progress=False)
    assert model.reliability_.n_folds == 2 and "training sections" in model.reliability_.scope
    model.save(tmp_path / "r.histosge")
    back = methods.load_model(tmp_path / "r.histosge")
    assert np.allclose(back.reliability_.cv_pcc, model.reliability_.cv_pcc, atol=1e-4)
    assert "cv_pcc" in gene_table(back)


def test_an_older_model_file_loads_and_says_it_has_no_estimate(sections, tmp_path):
    path = tmp_path / "m.histosge"
    HisToSGE("image", n_top_genes=6, network=SMALL).fit(sections, cache_dir=str(tmp_path / "c"),
                                                        progress=False).save(path)
    with safe_open(str(path), "np") as fh:  # as histosge 0.2.0 wrote it: schema 2, n_genes, no reliability
        meta = json.loads(fh.metadata()["histosge"])
        arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    meta["schema_version"] = 2
    meta.pop("reliability")
    params = meta["hyperparameters"]
    for key in ("genes", "all_genes", "reliability"):
        params.pop(key)
    params["n_genes"] = params.pop("n_top_genes")
    save_file(arrays, str(path), metadata={"histosge": json.dumps(meta)})
    old = HisToSGE.load(path)
    assert old.reliability_ is None and "predates per-gene reliability (schema 2" in old.reliability_note_
    assert old.n_top_genes == 6
    out = old.predict(sections[1], cache_dir=str(tmp_path / "c"), progress=False)
    assert out.var["cv_pcc"].isna().all() and "predates" in out.uns["histosge"]["reliability"]["why"]
    res = CliRunner().invoke(app, ["genes", str(path)])
    assert res.exit_code == 0 and "predates per-gene reliability" in " ".join(res.output.split())


def test_genes_command_ranks_by_cv_pcc(sections, tmp_path):
    path = tmp_path / "m.histosge"
    model = HisToSGE("image", genes=["G8"], n_top_genes=4, network=SMALL).fit(
        sections, cache_dir=str(tmp_path / "c"), progress=False)
    model.save(path)
    res = CliRunner().invoke(app, ["genes", str(path), "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)["genes"]
    cv = [g["cv_pcc"] for g in listed]
    assert cv == sorted(cv, reverse=True) and len(listed) == len(model.genes_)
    assert [g["gene"] for g in listed if g["named"]] == ["G8"]
    res = CliRunner().invoke(app, ["genes", str(path), "--top", "2"])
    assert res.exit_code == 0 and f"{len(model.genes_) - 2} more" in res.output
    res = CliRunner().invoke(app, ["genes", str(tmp_path / "nope.histosge")])
    assert res.exit_code == 2 and "model file not found" in res.output
