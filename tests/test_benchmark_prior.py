"""Protocols R+ and G+ (a section with a cohort): which sections a prior and the pooled baselines
read, what they are fitted on, and the report's cohort scoreboard."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from histosge.benchmark import methods, protocols, run
from histosge.benchmark.runner import fit_prior
from histosge.benchmark.sections import load
from histosge.model import Spots
from histosge.provenance import spot_hashes


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_prior_sources_keep_patients_apart_and_never_name_the_section():
    names = ["dlpfc/151673", "dlpfc/151676", "her2st/B4", "her2st/C2", "her2st/C3", "her2st/C4"]
    src = protocols.prior_sources(names)
    assert src["dlpfc/151673"] == [("same patient", ["dlpfc/151676"])]
    assert src["her2st/B4"] == [("other patients", ["her2st/C2", "her2st/C3", "her2st/C4"])]
    assert src["her2st/C3"] == [("same patient", ["her2st/C2", "her2st/C4"]), ("other patients", ["her2st/B4"])]
    for target, scopes in src.items():
        for _, sections in scopes:
            assert target not in sections and all(s.split("/")[0] == target.split("/")[0] for s in sections)
    assert protocols.prior_sources(["her2st/B4"]) == {}  # nothing else: no cohort


def test_pooled_baselines_read_the_other_sections_on_the_genes_they_measure():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = np.maximum(x @ rng.normal(size=(8, 5)) + 3, 0).astype(np.float32)
    xy = rng.uniform(0, 100, size=(300, 2))
    spots = Spots(x, np.zeros(300), np.zeros(300), xy)
    covered = np.array([True, True, True, False, True])
    cohort = methods.Cohort(features=x[100:], y=y[100:][:, covered], covered=covered, prior=None, section=None,
                            section_features=x[:100], train_index=np.arange(50), genes=list("abcde"))
    task = methods.Task(spots.subset(np.arange(50)), y[:50], spots.subset(np.arange(100)), cohort=cohort)
    pooled, info = methods.predict("ridge+pooled", task)
    alone, _ = methods.predict("ridge", methods.Task(task.train, task.y_train, task.query))
    gene3, _ = methods.predict("ridge", methods.Task(task.train, task.y_train[:, [3]], task.query))
    assert info["n_pooled"] == 200 and pooled.shape == (100, 5)
    assert np.array_equal(pooled[:, 3], gene3.reshape(-1))  # not measured by every other section: this one alone
    held = y[50:100][:, covered]
    assert ((pooled[50:, covered] - held) ** 2).mean() < ((alone[50:, covered] - held) ** 2).mean()  # 250 spots > 50
    with pytest.raises(ValueError, match="other sections"):
        methods.predict("histosge+prior", methods.Task(task.train, task.y_train, task.query))


@pytest.fixture
def cohort_data(tmp_path, make_spaceranger, make_legacy_st):
    """Two small Visium sections (one patient) and three legacy-ST ones of two patients."""
    (tmp_path / "dlpfc").mkdir()
    for i in (1, 2):
        make_spaceranger(f"s{i}", seed=i, n_rows=10, n_cols=12).rename(tmp_path / "dlpfc" / f"s{i}")
    make_legacy_st("C2", seed=3, n_x=10, n_y=9)
    make_legacy_st("C3", seed=4, n_x=10, n_y=9)
    make_legacy_st("B1", seed=5, n_x=9, n_y=9)
    return tmp_path


def test_r_plus_and_g_plus_on_synthetic_sections(cohort_data, tmp_path):
    out = tmp_path / "out"
    names = "dlpfc/s1,dlpfc/s2,her2st/B1,her2st/C2,her2st/C3"
    wanted = ("mean", "knn", "ridge", "histosge", "ridge+pooled", "stnet+pooled", "histosge+prior")
    res = run(cohort_data, out, sections=names, protocols="R+,G+", methods=",".join(wanted), seeds="0",
              quick=True, cache_dir=tmp_path / "cache", progress=False)
    rows = {(r["section"], r["protocol"], r["prior_from"], tuple(r["prior_sections"])) for r in res.records}
    for p in ("R+", "G+"):
        assert {(s, f, srcs) for s, q, f, srcs in rows if q == p} == {
            ("s1", "same patient", ("s2",)), ("s2", "same patient", ("s1",)),
            ("B1", "other patients", ("C2", "C3")),
            ("C2", "same patient", ("C3",)), ("C2", "other patients", ("B1",)),
            ("C3", "same patient", ("C2",)), ("C3", "other patients", ("B1",)),
        }
    by = {}
    for r in res.records:
        assert all(math.isfinite(r[k]) for k in ("pcc", "pcc_top50", "mse", "mae")), r
        by.setdefault((r["section"], r["protocol"], r["prior_from"]), {})[r["method"]] = r
    for key, recs in by.items():
        assert set(recs) == set(wanted), key
        assert recs["histosge+prior"]["prior_fit_seconds"] > 0 and "prior_stack_weight" in recs["histosge+prior"]
    for p in ("R+", "G+"):  # a section's methods that read it alone score the same in both its cohorts
        same, other = by[("C2", p, "same patient")], by[("C2", p, "other patients")]
        assert same["knn"]["pcc"] == other["knn"]["pcc"] and same["histosge"]["mse"] == other["histosge"]["mse"]
        size = {sec: by[(sec, "R+", scope)]["knn"]["n_train"] + by[(sec, "R+", scope)]["knn"]["n_test"]
                for sec, scope in (("C3", "same patient"), ("B1", "other patients"))}
        assert same["ridge+pooled"]["n_pooled"] == size["C3"] and other["ridge+pooled"]["n_pooled"] == size["B1"]
    for (_name, protocol, seed), split in res.splits.items():  # the splits of R
        n = len(split.train) + len(split.test)
        base = protocols.split_r(n, seed) if protocol == "R+" else None
        assert len(np.intersect1d(split.train, split.test)) == 0
        if base is not None:
            assert np.array_equal(split.test, base.test)
    text = (out / "report.md").read_text()
    assert "| C2 (same patient: C3) | knn |" in text and "With a cohort" not in text  # boards: bench/
    assert "### R+:" in text and "### G+:" in text


def test_the_benchmark_prior_never_saw_the_section(cohort_data, tmp_path):
    secs = load(["her2st/B1", "her2st/C2", "her2st/C3"], cohort_data, cache_dir=tmp_path / "cache", progress=False)
    genes = [f"G{i}" for i in range(6)]
    prior, seconds = fit_prior([secs["her2st/C2"], secs["her2st/C3"]], genes, seed=0, quick=True)
    assert prior.file_sha256_ and seconds > 0 and prior.mode == "image" and prior.genes_ == genes
    assert not np.isin(spot_hashes(secs["her2st/B1"].adata), prior.spot_hashes_).any()
    assert np.isin(spot_hashes(secs["her2st/C2"].adata), prior.spot_hashes_).all()
