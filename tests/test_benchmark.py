"""The benchmark: protocol splits, baselines, the report, and a quick run on real data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from histosge import geometry
from histosge.benchmark import methods, protocols, report, results, run
from histosge.errors import InputError
from histosge.methods import create_method, histogene
from histosge.model import Spots


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models on a shared 2-core machine: one torch thread is much faster than two."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# -- protocols ---------------------------------------------------------------------------------
def _hex_grid(n_rows: int = 12, n_cols: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rc = [(r, c) for r in range(n_rows) for c in range(n_cols) if (r + c) % 2 == 0]
    return np.array([r for r, _ in rc], float), np.array([c for _, c in rc], float)


def _square_grid(n_rows: int = 9, n_cols: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rc = [(r, c) for r in range(n_rows) for c in range(n_cols)]
    return np.array([r for r, _ in rc], float), np.array([c for _, c in rc], float)


@pytest.mark.parametrize("n, seed", [(100, 0), (101, 3), (3639, 7)])
def test_r_halves_are_disjoint_and_complete(n, seed):
    split = protocols.split_r(n, seed)
    assert split.protocol == "R"
    assert len(np.intersect1d(split.train, split.test)) == 0
    assert np.array_equal(np.sort(np.concatenate([split.train, split.test])), np.arange(n))
    assert abs(len(split.test) - n / 2) <= 1
    again = protocols.split_r(n, seed)
    assert np.array_equal(split.test, again.test)
    assert not np.array_equal(split.test, protocols.split_r(n, seed + 1).test)


@pytest.mark.parametrize("grid, maker", [("hex", _hex_grid), ("square", _square_grid)])
def test_g_test_spots_are_exactly_the_coarse_lattice_midpoints(grid, maker):
    rows, cols = maker()
    split = protocols.split_g(rows, cols, grid)
    lattice = geometry.coarse_lattice_mask(rows, cols, grid)
    assert np.array_equal(split.train, np.flatnonzero(lattice))
    mids = geometry.midpoints(rows[lattice], cols[lattice], grid, spacing=2)
    expected = {(float(r), float(c)) for r, c in zip(mids["array_row"], mids["array_col"], strict=True)}
    got = {(rows[i], cols[i]) for i in split.test}
    assert got == expected  # every midpoint is a measured spot here, and nothing else is scored
    assert len(np.intersect1d(split.train, split.test)) == 0
    # about 4x generation: 3 midpoints per lattice spot on either grid, fewer at the edges
    assert 1.5 * len(split.train) < len(split.test) < 3 * len(split.train)


def test_cross_groups_pair_sections_of_the_same_tissue():
    names = ["dlpfc/151673", "dlpfc/151676", "her2st/B4", "her2st/C2", "her2st/C3", "her2st/C4"]
    groups = protocols.cross_groups(names)
    assert groups["dlpfc/151673"] == ["dlpfc/151676"] and groups["dlpfc/151676"] == ["dlpfc/151673"]
    assert groups["her2st/C3"] == ["her2st/C2", "her2st/C4"]
    assert "her2st/B4" not in groups  # the only section of its patient


def _counts(n: int, genes: list[str], seed: int) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.5, 2.0, size=len(genes)) * rng.gamma(2.0, 1.0, size=(n, 1))
    a = ad.AnnData(X=sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
    a.var_names = genes
    a.obs_names = [f"s{i}" for i in range(n)]
    return a


def test_cross_section_genes_use_training_counts_and_only_the_target_gene_list():
    genes = [f"g{i}" for i in range(300)]
    train = [_counts(80, genes, 0), _counts(90, genes[:250], 1)]
    target = _counts(70, genes[10:], 2)
    picked, _ = protocols.cross_section_genes(train, target, n_genes=50)
    assert len(picked) == 50 and set(picked) <= set(genes[10:250])
    other = target.copy()
    other.X = sp.csr_matrix(np.random.default_rng(9).poisson(5, size=other.shape).astype(np.float32))
    assert protocols.cross_section_genes(train, other, n_genes=50)[0] == picked  # target counts unused


# -- baselines -----------------------------------------------------------------------------------
def _synthetic(n: int = 240, d: int = 12, g: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, g)).astype(np.float32)
    y = np.maximum(x @ w * 0.3 + 2 + 0.1 * rng.normal(size=(n, g)), 0).astype(np.float32)
    rows, cols = _square_grid(12, 20)
    rows, cols = rows[:n], cols[:n]
    return x, y, rows, cols, np.column_stack([cols * 10.0, rows * 10.0])


def test_ridge_recovers_a_linear_signal_and_mean_is_flat():
    x, y, *_ = _synthetic()
    spots = Spots(x, *_synthetic()[2:])
    ridge = create_method("ridge").fit(spots.subset(np.arange(160)), y[:160])
    pred = ridge.predict(spots.subset(np.arange(160, 240)))
    r = [np.corrcoef(pred[:, j], y[160:, j])[0, 1] for j in range(y.shape[1])]
    assert np.mean(r) > 0.8 and ridge.info["n_pcs"] == 12
    flat = create_method("mean").fit(spots.subset(np.arange(160)), y[:160]).predict(spots.subset(np.arange(5)))
    assert flat.shape == (5, y.shape[1]) and np.allclose(flat, y[:160].mean(0))


@pytest.mark.parametrize("method", [m for m in methods.ALL_METHODS if m not in methods.WITH_OTHER_SECTIONS])
def test_methods_predict_query_shape_finite_and_deterministic(method):
    x, y, rows, cols, xy = _synthetic()
    train = Spots(x[:160], rows[:160], cols[:160], xy[:160])
    query = Spots(x, rows, cols, xy)
    task = methods.Task(train, y[:160], query, seed=1, quick=True)
    a, _ = methods.predict(method, task)
    b, _ = methods.predict(method, task)
    assert a.shape == (len(query), y.shape[1]) and np.isfinite(a).all()
    assert np.array_equal(a, b)


def test_histogene_runs_one_sequence_per_section():
    x, y, rows, cols, xy = _synthetic()
    groups = np.repeat([0, 1], 120)
    train, query = Spots(x, rows, cols, xy), Spots(x[:30], rows[:30], cols[:30], xy[:30])
    m = create_method("histogene", steps=3, max_tokens=50, dim=32, depth=1, heads=4)
    pred = m.fit(train, y, groups=groups, query=query).predict(query)
    assert pred.shape == (30, y.shape[1]) and m.info["steps_run"] == 3
    assert len(histogene.tiles(xy, 50)) == 5


def test_x_admits_only_methods_that_do_not_read_target_expression():
    assert not methods.valid_for("knn", "X")
    for m in ("mean", "ridge", "stnet", "histogene", "histosge", "histosge-paper"):
        assert methods.valid_for(m, "X") and methods.valid_for(m, "R")
    assert set(methods.DEFAULT_METHODS) <= set(methods.ALL_METHODS)
    for m in methods.WITH_OTHER_SECTIONS:  # other sections' data: protocols R+ and G+ only
        assert methods.valid_for(m, "R+") and methods.valid_for(m, "G+")
        assert not any(methods.valid_for(m, p) for p in ("R", "G", "X", "G9", "G16"))


def test_report_tables_from_records(tmp_path):
    recs = []
    for seed in (0, 1):
        for m in ("mean", "knn"):
            recs.append(
                {
                    "dataset": "dlpfc",
                    "section": "151673",
                    "protocol": "R",
                    "method": m,
                    "seed": seed,
                    "n_train": 10,
                    "n_test": 10,
                    "n_genes": 5,
                    "pcc": 0.1 * seed,
                    "pcc_top50": 0.2,
                    "mse": 0.3,
                    "mae": 0.4,
                    "ari": 0.5,
                    "ari_measured": 0.6,
                    "fit_seconds": 1.0,
                    "pcc_all_spots_inflated": 0.7,
                    "pcc_top50_all_spots_inflated": 0.8,
                }
            )
    results.write(tmp_path, recs)
    (tmp_path / "run.json").write_text(json.dumps({"encoder": "x", "seeds": [0, 1]}))
    files = report.render(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert files == [tmp_path / "report.md"]
    assert "Wall time: not recorded (the run did not finish)" in text
    assert "0.050 ± 0.071" in text and "INFLATED" in text and "| knn |" in text.replace("151673 | knn", "| knn")


def test_merge_combines_parts(tmp_path):
    rec = {
        "dataset": "her2st",
        "section": "C2",
        "protocol": "G",
        "method": "knn",
        "seed": 0,
        "n_train": 10,
        "n_test": 20,
        "n_genes": 5,
        "pcc": 0.1,
        "pcc_top50": 0.2,
        "mse": 0.3,
        "mae": 0.4,
        "ari": None,
        "fit_seconds": 1.0,
    }
    for i, section in enumerate(("C2", "C3")):
        part = tmp_path / f"p{i}"
        part.mkdir()
        (part / "results.json").write_text(json.dumps([{**rec, "section": section}]))
        meta = {
            "encoder": "e",
            "seeds": [0],
            "seconds_total": 5.0,
            "seconds_features": 1.0,
            "sections": [f"her2st/{section}"],
            "protocols": ["G"],
        }
        (part / "run.json").write_text(json.dumps(meta))
    (tmp_path / "p1" / "results.json").write_text(json.dumps([{**rec, "section": "C3"}, {**rec, "pcc": 0.9}]))
    results.combine([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all")
    report.render(tmp_path / "all")
    merged = results.load_records(tmp_path / "all")
    assert [r["section"] for r in merged] == ["C2", "C3"]  # C2 measured twice: the first part's record
    assert merged[0] == rec  # as written: no field gained, none turned into NaN
    text = (tmp_path / "all" / "report.md").read_text()
    assert "| C3 | knn |" in text and "p1" in text and "(`results.combine`)" in text


def test_run_rejects_unknown_options(tmp_path):
    with pytest.raises(InputError, match="protocol"):
        run(tmp_path, tmp_path / "out", sections="her2st/C2", protocols="R,Q")
    with pytest.raises(InputError, match="method"):
        run(tmp_path, tmp_path / "out", sections="her2st/C2", methods="knn,magic")


# -- end to end ---------------------------------------------------------------------------------
@pytest.fixture
def synthetic_data(tmp_path, make_spaceranger, make_legacy_st) -> Path:
    """A data folder laid out like the shared one: two small Visium sections, two legacy-ST ones."""
    (tmp_path / "dlpfc").mkdir()
    for i in (1, 2):
        make_spaceranger(f"s{i}", seed=i, n_rows=10, n_cols=12).rename(tmp_path / "dlpfc" / f"s{i}")
    make_legacy_st("C2", seed=3, n_x=10, n_y=9)
    make_legacy_st("C3", seed=4, n_x=10, n_y=9)
    return tmp_path


def test_run_on_synthetic_sections_covers_every_protocol_and_method(synthetic_data, tmp_path):
    out = tmp_path / "out"
    res = run(
        synthetic_data,
        out,
        sections="dlpfc/s1,dlpfc/s2,her2st:C2,her2st:C3",
        protocols="R,G,X",
        methods=",".join(methods.DEFAULT_METHODS),
        quick=True,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    names = {"dlpfc:s1", "dlpfc:s2", "her2st:C2", "her2st:C3"}  # given with either spelling, named with ":"
    assert {f"{r['dataset']}:{r['section']}" for r in res.records} == names
    for r in res.records:
        assert all(math.isfinite(r[k]) for k in ("pcc", "pcc_top50", "mse", "mae")), r
        assert r["ari"] is None or math.isfinite(r["ari"])
    x = [r for r in res.records if r["protocol"] == "X"]
    assert {r["method"] for r in x} == {m for m in methods.DEFAULT_METHODS if methods.valid_for(m, "X")}
    assert {tuple(r["train_sections"]) for r in x if r["section"] == "C2"} == {("C3",)}
    assert all(r["ari"] is not None for r in res.records if r["dataset"] == "dlpfc")
    for (name, _, _), split in res.splits.items():
        assert name in names and len(np.intersect1d(split.train, split.test)) == 0
    assert results.load_records(out) == json.loads(json.dumps(res.records))
    text = (out / "report.md").read_text()
    assert "INFLATED" in text and "### X:" in text and "no saved predictions" not in text
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert any(p.startswith("markers_dlpfc") for p in pngs) and any(p.startswith("domains_dlpfc") for p in pngs)
    assert all((out / p).stat().st_size < 300_000 for p in pngs)
    # the report is drawn from the folder's files alone: again, the same text and the same figures
    saved = sorted(p.name for p in (out / "predictions").glob("*.npz"))
    assert "dlpfc_s1_R_0.npz" in saved and "her2st_C2_X_0.npz" in saved
    (out / "report.md").unlink()
    for p in pngs:
        (out / p).unlink()
    assert report.render(out)[0].read_text() == text and sorted(p.name for p in out.glob("*.png")) == pngs
    shutil.rmtree(out / "predictions")  # not committed (large): the report reads the same without them
    assert report.render(out)[0].read_text() == text


def test_denser_generation_protocols_score_their_lattices_and_skip_small_sections(tmp_path, make_spaceranger,
                                                                                  make_legacy_st):
    (tmp_path / "dlpfc").mkdir()
    make_spaceranger("big", seed=1, n_rows=30, n_cols=40).rename(tmp_path / "dlpfc" / "big")
    make_legacy_st("C2", seed=3, n_x=10, n_y=9)  # 90 spots: 10 at 9x, fewer than MIN_TRAIN_SPOTS
    res = run(tmp_path, tmp_path / "out", sections="dlpfc/big,her2st:C2", protocols="G9,G16", methods="knn,histosge",
              seeds="0", quick=True, cache_dir=tmp_path / "cache", progress=False)
    assert {(r["section"], r["protocol"]) for r in res.records} == {("big", "G9"), ("big", "G16")}
    for (_, protocol, _), split in res.splits.items():
        factor = protocols.GENERATION[protocol]
        assert len(split.train) >= protocols.MIN_TRAIN_SPOTS
        # each lattice spot brings up to factor - 1 scored spots, fewer at the edges
        assert 0.4 * (factor - 1) * len(split.train) < len(split.test) < (factor - 1) * len(split.train)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "### G9:" in text and "### G16:" in text


QUICK = {"sections": "her2st/C2", "protocols": "R,G", "quick": True, "progress": False}


def _same(a: list[dict], b: list[dict]) -> bool:
    """Records equal apart from timings; floats to 1e-4 relative (histogene's CPU training is not
    bit-reproducible across runs: scores differ by ~1e-6 relative; every other method is bit for bit)."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b, strict=True):
        if ra.keys() != rb.keys():
            return False
        for k in ra:
            va, vb = ra[k], rb[k]
            if k == "fit_seconds":
                continue
            if isinstance(va, float) and isinstance(vb, float):
                if not math.isclose(va, vb, rel_tol=1e-4, abs_tol=1e-7):
                    return False
            elif va != vb:
                return False
    return True


def test_quick_run_on_real_data_is_held_out_and_deterministic(data_dir, tmp_path):
    res = run(data_dir, tmp_path / "a", **QUICK)
    recs = results.load_records(tmp_path / "a")
    assert recs == json.loads(json.dumps(res.records))
    assert {(r["protocol"], r["method"]) for r in recs} == {
        (p, m) for p in "RG" for m in methods.DEFAULT_METHODS if methods.valid_for(m, p)}
    for r in recs:
        for key in (
            "dataset",
            "section",
            "protocol",
            "method",
            "seed",
            "n_train",
            "n_test",
            "pcc",
            "pcc_top50",
            "mse",
            "mae",
            "ari",
            "fit_seconds",
            "encoder",
        ):
            assert key in r, key
        for key in ("pcc", "pcc_top50", "mse", "mae", "ari"):
            assert math.isfinite(r[key]), (r["method"], key)
    n_spots = recs[0]["n_train"] + recs[0]["n_test"]
    for (section, protocol, _seed), split in res.splits.items():
        assert section == "her2st:C2"
        assert len(split.test) and len(np.intersect1d(split.train, split.test)) == 0
        assert split.test.max() < n_spots or protocol == "G"
        if protocol == "R":
            assert np.array_equal(np.sort(np.concatenate([split.train, split.test])), np.arange(n_spots))
    r_recs = [r for r in recs if r["protocol"] == "R"]
    knn = next(r for r in r_recs if r["method"] == "knn")
    assert knn["pcc_all_spots_inflated"] > knn["pcc"]  # training spots are memorised: inflation
    assert (tmp_path / "a" / "report.md").exists()

    again = run(data_dir, tmp_path / "b", **QUICK)
    assert _same(again.records, res.records)

    def untimed(recs):
        return [{**r, "fit_seconds": 0.0} for r in recs if r["method"] != "histogene"]

    assert untimed(again.records) == untimed(res.records)  # bit for bit


def test_a_run_stopped_before_its_first_record_still_renders(tmp_path):
    results.write(tmp_path, [])
    (tmp_path / "run.json").write_text(json.dumps({"encoder": "x", "seeds": [0]}))
    text = report.render(tmp_path)[0].read_text()
    assert "Wall time: not recorded (the run did not finish)" in text and "## Summary" in text


def test_quick_lists_only_the_methods_it_runs(tmp_path, make_legacy_st, capsys):
    make_legacy_st("C2", seed=3, n_x=10, n_y=9)
    out = tmp_path / "out"
    run(tmp_path, out, methods="mean,ridge+pooled,stnet+pooled", quick=True, cache_dir=tmp_path / "cache",
        progress=True)  # --quick: one section, protocols R and G: the pooled methods need R+ or G+
    log = capsys.readouterr().out
    head = next(line for line in log.splitlines() if line.startswith("bench: 1 sections"))
    assert "methods mean, seeds" in head and "ridge+pooled" not in head
    assert "not run under R,G: ridge+pooled, stnet+pooled" in log
    meta = json.loads((out / "run.json").read_text())
    assert meta["methods"] == ["mean"] and meta["methods_not_run"] == ["ridge+pooled", "stnet+pooled"]


def test_bench_cli_takes_a_cache_dir(tmp_path, make_legacy_st):
    from typer.testing import CliRunner

    from histosge.cli import app

    make_legacy_st("C2", seed=3, n_x=10, n_y=9)
    cache = tmp_path / "features"
    res = CliRunner().invoke(app, ["bench", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--quick",
                                   "--methods", "ridge", "--protocols", "R", "--cache-dir", str(cache)])
    assert res.exit_code == 0, res.output
    assert any(p.is_file() for p in cache.rglob("*"))  # the features went where --cache-dir says


def test_resume_keeps_finished_tasks_and_refits_the_rest(tmp_path, make_legacy_st, capsys):
    """An interrupted run goes on where it stopped: finished tasks are not fitted again, a task
    left half done is refitted whole, and the result is the run's own records."""
    make_legacy_st("C2", seed=3, n_x=10, n_y=9)
    make_legacy_st("C3", seed=4, n_x=10, n_y=9)
    out = tmp_path / "out"
    kw = {"sections": "her2st/C2,her2st/C3", "methods": "mean,knn,ridge", "protocols": "R",
          "cache_dir": tmp_path / "cache", "report": False}
    whole = run(tmp_path, out, progress=False, **kw).records
    assert len(whole) == 6
    lines = (out / results.RESULTS).read_text().splitlines()
    (out / results.RESULTS).write_text("\n".join(lines[:4]) + "\n")  # C2 R, and C3 R begun
    meta = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "seconds_total"}))
    again = run(tmp_path, out, progress=True, resume=True, **kw).records
    assert "resuming: 3 records kept, 1 tasks to run" in capsys.readouterr().out
    key = lambda r: (r["section"], r["protocol"], r["method"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, whole))
    strip = lambda r: {k: v for k, v in r.items() if k != "fit_seconds"}  # noqa: E731
    assert sorted(map(json.dumps, map(strip, again))) == sorted(map(json.dumps, map(strip, whole)))
    assert len(results.load_records(out / results.RESULTS)) == 6
    with pytest.raises(InputError, match="other settings .*methods"):
        run(tmp_path, out, progress=False, resume=True, **{**kw, "methods": "mean"})
