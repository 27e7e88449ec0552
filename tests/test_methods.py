"""The methods registry: what it holds, the one door in (``create_method`` / ``create_model``),
saving any method without pickle, and the errors a user can cause with ``--method``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

import histosge
from histosge import methods
from histosge.benchmark import methods as bench_methods
from histosge.cli import app
from histosge.errors import InputError
from histosge.model import HisToSGE


@pytest.fixture(scope="module")
def c2(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return histosge.read_section("her2st:C2", data_dir=data_dir)


def test_the_registry_holds_the_benchmark_lists_it_replaced():
    """The lists the benchmark used to spell out by hand, now read from the specs."""
    assert tuple(methods.list_methods()) == bench_methods.ALL_METHODS == (
        "mean", "knn", "ridge", "stnet", "histogene", "stage", "thitogene", "deepspace", "histosge",
        "histosge-paper", "histosge-image", "ridge+pooled", "stnet+pooled", "histosge+prior")
    assert bench_methods.DEFAULT_METHODS == ("mean", "knn", "ridge", "stnet", "histogene", "histosge",
                                             "ridge+pooled", "stnet+pooled", "histosge+prior")
    assert bench_methods.NEEDS_TARGET_EXPRESSION == frozenset({"knn", "stage"})
    assert bench_methods.WITH_OTHER_SECTIONS == ("ridge+pooled", "stnet+pooled", "histosge+prior")
    assert bench_methods.QUICK_EPOCHS == {"stnet": 15, "histogene": 15, "histosge": 10, "histosge-paper": 10,
                                          "histosge-image": 10, "stage": 20, "thitogene": 3, "deepspace": 3,
                                          "stnet+pooled": 15, "histosge+prior": 10}


def test_registration_mistakes_are_programming_errors():
    with pytest.raises(TypeError, match="unknown spec field"):
        methods.register_method("x", quick=3)
    with pytest.raises(ValueError, match="registered twice"):
        methods.register_method("ridge")(type("Again", (methods.Method,), {}))


def test_unknown_names_and_parameters_are_one_line_errors():
    with pytest.raises(InputError, match="unknown method 'lasso'.*use one of mean, knn"):
        methods.create_method("lasso")
    with pytest.raises(InputError, match="has no parameter 'n_pc'.*n_pcs"):
        methods.create_method("ridge", n_pc=3)
    with pytest.raises(InputError, match="--epochs: method 'ridge' has no epochs"):
        methods.create_model("ridge", epochs=3)


@pytest.mark.parametrize("method, needle", [
    ("ridge+pooled", r"--method: method 'ridge\+pooled' reads the other sections.*use one of mean, knn, ridge"),
    ("histosge+prior", "--method.*use --method histosge --prior MODEL"),
    ("magic", "--method: unknown method 'magic'"),
])
def test_a_method_that_cannot_run_on_a_section_is_refused_before_any_work(c2, method, needle):
    with pytest.raises(InputError, match=needle):
        histosge.recover(c2, method=method, progress=False)


def test_options_a_method_does_not_take(c2):
    with pytest.raises(InputError, match="--prior: method 'histosge-paper' \\(paper mode\\) takes no prior"):
        histosge.superres(c2, method="histosge-paper", prior="x.histosge", progress=False)
    with pytest.raises(InputError, match="--prior: method 'ridge' \\(image mode\\) takes no prior"):
        histosge.recover(c2, method="ridge", prior="x.histosge", progress=False)
    with pytest.raises(InputError, match="--mode: method 'ridge' has no modes"):
        methods.create_model("ridge", mode="image")
    assert isinstance(methods.create_model("histosge", mode="image"), HisToSGE)


SMALL = {"stnet": {"epochs": 2}, "histogene": {"epochs": 1}, "stage": {"epochs": 2}, "deepspace": {"epochs": 1}}


@pytest.mark.parametrize("name", ["mean", "knn", "ridge", "stnet", "histogene", "stage", "deepspace"])
def test_any_method_saves_and_loads_to_the_same_predictions(c2, tmp_path, name):
    model = methods.create_model(name, n_top_genes=40, **SMALL.get(name, {}))
    model.fit(c2, cache_dir=tmp_path, progress=False)
    before = model.predict(c2, cache_dir=tmp_path, progress=False)
    path = tmp_path / f"{name}.histosge"
    sha = model.save(path)
    loaded = methods.load_model(path)
    after = loaded.predict(c2, cache_dir=tmp_path, progress=False)
    assert loaded.file_sha256_ == sha and loaded.genes_ == model.genes_
    assert after.uns["histosge"]["method"] == name and np.array_equal(after.X, before.X)
    assert before.shape == (c2.n_obs, 40) and np.isfinite(before.X).all()
    with pytest.raises(InputError, match="holds a .* model, not a HisToSGE one"):
        HisToSGE.load(path)


def test_a_method_reading_measured_spots_predicts_another_section_only_with_them(c2, data_dir):
    knn = methods.create_model("knn", n_top_genes=30).fit(c2, progress=False)
    c3 = histosge.read_section("her2st:C3", data_dir=data_dir)
    elsewhere = c3.copy()
    elsewhere.obsm["spatial"] = c3.obsm["spatial"] + 1e5  # spots far from the training section
    with pytest.raises(InputError, match="outside the section method 'knn' was fitted on"):
        knn.predict(elsewhere, progress=False)
    out = knn.predict(c3, context=c3, progress=False)
    assert out.n_obs == c3.n_obs and np.isfinite(out.X).all()


def _run(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_recover_with_a_baseline_and_a_refused_one(data_dir, tmp_path):
    out = tmp_path / "knn.h5ad"
    res = _run("recover", "her2st:C2", "--data-dir", data_dir, "-o", out, "--method", "knn", "--n-top-genes", "50",
               "--quiet")
    assert res.exit_code == 0, res.output
    assert "knn" in res.output and "none (the method reads no image)" in res.output and out.exists()
    res = _run("superres", "her2st:C2", "--data-dir", data_dir, "-o", tmp_path / "x.h5ad", "--method",
               "stnet+pooled", "--quiet")
    assert res.exit_code == 2 and "--method" in res.output and "use one of" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.h5ad").exists()


def test_cli_train_and_predict_a_baseline(data_dir, tmp_path):
    model = tmp_path / "ridge.histosge"
    res = _run("train", "her2st:C2", "-o", model, "--method", "ridge", "--n-top-genes", "50", "--data-dir", data_dir,
               "--cache-dir", tmp_path / "cache", "--quiet")
    assert res.exit_code == 0, res.output
    assert "ridge (image mode)" in res.output and model.exists()
    out = tmp_path / "c3.h5ad"
    res = _run("predict", model, "her2st:C3", "-o", out, "--data-dir", data_dir, "--cache-dir", tmp_path / "cache",
               "--quiet")
    assert res.exit_code == 0, res.output
    res = _run("train", "her2st:C2", "-o", tmp_path / "m.histosge", "--method", "ridge", "--mode", "image",
               "--data-dir", data_dir, "--quiet")
    assert res.exit_code == 2 and "--mode" in res.output and not (tmp_path / "m.histosge").exists()


def test_cli_lists_the_methods():
    res = _run("methods")
    assert res.exit_code == 0, res.output
    for name in methods.list_methods():
        assert name in res.output
