"""docs/EXTENDING.md, done: each example of docs/examples/ (a method, an encoder, a reader, a
dataset) is one file that registers itself on import, and then works through the public
commands. Each test registers into copies of the registries, so nothing leaks into other tests."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import histosge
from histosge import datasets
from histosge.cli import app
from histosge.encode import _registry as encoder_registry
from histosge.methods import _registry as method_registry
from histosge.model import Spots
from histosge.read import resolve

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"
DOC = Path(__file__).parents[1] / "docs" / "EXTENDING.md"
FILES = ("linear_method.py", "rgb_moments_encoder.py", "h5ad_gz_reader.py", "mousebrain_dataset.py")


@pytest.fixture(autouse=True)
def fresh_registries():
    """Registries as they are now; whatever a test registers is gone after it (the same objects
    are restored in place: other modules hold references to them)."""
    held = [method_registry._REGISTRY, encoder_registry._REGISTRY, datasets._REGISTRY]
    saved = [dict(r) for r in held]
    readers = list(resolve.READERS)
    yield
    for registry, before in zip(held, saved, strict=True):
        registry.clear()
        registry.update(before)
    resolve.READERS[:] = readers


def load(name: str):
    """Import an example file as a fresh module (what `import my_method` does): it registers itself."""
    spec = importlib.util.spec_from_file_location(f"histosge_example_{name[:-3]}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def c2(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return histosge.read_section("her2st:C2", data_dir=data_dir)


def test_the_page_shows_each_example_as_it_is():
    doc = DOC.read_text()
    for name in FILES:
        assert (EXAMPLES / name).read_text() in doc, f"docs/EXTENDING.md does not show docs/examples/{name} verbatim"


def test_a_method_is_one_file(c2, data_dir, tmp_path):
    from histosge import methods
    from histosge.benchmark import methods as bench_methods

    load("linear_method.py")
    assert methods.list_methods()[-1] == "linear" and "linear" in bench_methods.ALL_METHODS
    rec = histosge.recover(c2, method="linear", progress=False, cache_dir=str(tmp_path), n_top_genes=100)
    assert np.isfinite(rec.layers["predicted"]).all() and rec.uns["histosge"]["metrics"]["pcc"] > 0.02
    # the benchmark runs it
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 4)) + 3).astype(np.float32)
    grid = Spots(x, np.zeros(60), np.arange(60.0), np.c_[np.arange(60.0), np.zeros(60)])
    pred, info = bench_methods.predict("linear", bench_methods.Task(grid.subset(np.arange(40)), y[:40], grid))
    assert pred.shape == (60, 4) and info == {"alpha": 10.0} and np.abs(pred[40:] - y[40:]).mean() < 0.5
    # saved and loaded through the CLI, then listed
    model = tmp_path / "linear.histosge"
    res = cli("train", "her2st:C2", "-o", model, "--method", "linear", "--n-top-genes", "50", "--data-dir", data_dir,
              "--cache-dir", tmp_path / "cache", "--quiet")
    assert res.exit_code == 0, res.output
    res = cli("predict", model, "her2st:C3", "-o", tmp_path / "c3.h5ad", "--data-dir", data_dir, "--cache-dir",
              tmp_path / "cache", "--quiet")
    assert res.exit_code == 0, res.output
    assert "linear" in cli("methods").output


def test_an_encoder_is_one_file(c2, tmp_path):
    from histosge import encode

    load("rgb_moments_encoder.py")
    assert "rgb-moments" in [e["name"] for e in encode.list_encoders() if e["available"]]
    rec = histosge.recover(c2, method="ridge", encoder="rgb-moments", progress=False, cache_dir=str(tmp_path),
                           n_top_genes=100)
    assert rec.obsm["features"].shape == (c2.n_obs, 6) and rec.uns["histosge"]["features"]["encoder"] == "rgb-moments"
    assert np.isfinite(rec.layers["predicted"]).all()


def test_a_reader_is_one_file(data_dir, tmp_path):
    load("h5ad_gz_reader.py")
    packed = tmp_path / "crop.h5ad.gz"
    with open(data_dir / "visium_mouse_brain_crop" / "test_data.h5ad", "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        section = histosge.read_section(packed)
    assert section.n_obs == 49 and section.uns["histosge"]["source"] == str(packed)
    res = cli("recover", packed, "-o", tmp_path / "out.h5ad", "--method", "knn", "--n-top-genes", "50", "--quiet")
    assert res.exit_code == 0, res.output


def test_a_dataset_is_one_file(data_dir, tmp_path):
    load("mousebrain_dataset.py")
    assert "mousebrain:crop" in resolve.known_sections(data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        section = histosge.read_section("mousebrain:crop", data_dir=data_dir)
    assert section.n_obs == 49
    res = cli("recover", "mousebrain:crop", "--data-dir", data_dir, "-o", tmp_path / "out.h5ad", "--method", "mean",
              "--n-top-genes", "50", "--quiet")
    assert res.exit_code == 0, res.output


def test_a_registered_dataset_runs_in_bench_end_to_end(data_dir, tmp_path):
    """A dataset registered as this page says is found, grouped, read, benchmarked and reported by
    ``histosge bench`` with nothing else to add: the example's mouse-brain crop, protocol R."""
    from histosge.benchmark import protocols, run
    from histosge.benchmark.sections import discover

    load("mousebrain_dataset.py")
    assert "mousebrain:crop" in discover(data_dir)
    res = run(data_dir, tmp_path / "b", sections=["mousebrain:crop"], protocols="R", methods="mean,ridge",
              encoder="he-stats", quick=True, cache_dir=tmp_path / "cache", progress=False)
    assert [(r["dataset"], r["section"], r["method"]) for r in res.records] == [
        ("mousebrain", "crop", "mean"), ("mousebrain", "crop", "ridge")]
    assert all(np.isfinite(r["pcc"]) for r in res.records)
    assert "mousebrain" in (tmp_path / "b" / "report.md").read_text()
    # the dataset's tissue groups, not its name, decide which sections train protocol X and R+
    datasets.register_dataset(datasets.Dataset("organs", lambda root: [], lambda root, s, **k: None,
                                               lambda root, s: [], tissue_group=lambda s: s[0]))
    names = ["organs/a1", "organs/a2", "organs/b1", "mousebrain/crop"]
    assert protocols.cross_groups(names) == {"organs/a1": ["organs/a2"], "organs/a2": ["organs/a1"]}
    assert protocols.prior_sources(names)["organs/b1"] == [("other patients", ["organs/a1", "organs/a2"])]
