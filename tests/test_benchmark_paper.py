"""The paper's comparison (issue 18): STAGE, THItoGene and DeepSpaCE as baselines, STAGATE domains."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from histosge.benchmark import domains as D
from histosge.benchmark import methods, report_domains, run
from histosge.benchmark.runner import deterministic as _deterministic
from histosge.errors import InputError
from histosge.evaluate import pearson_per_gene
from histosge.methods import create_method, deepspace, get_spec, stage, thitogene
from histosge.model import Spots


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _grid(n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    rc = [(r, c) for r in range(n_rows) for c in range(n_cols)]
    return np.array([r for r, _ in rc], float), np.array([c for _, c in rc], float)


def _image_signal(n_rows=12, n_cols=20, d=12, g=20, seed=0):
    """Expression driven by the spot's features (what an image method can learn)."""
    rng = np.random.default_rng(seed)
    rows, cols = _grid(n_rows, n_cols)
    x = rng.normal(size=(len(rows), d)).astype(np.float32)
    w = rng.normal(size=(d, g)).astype(np.float32)
    y = np.maximum(x @ w * 0.3 + 2 + 0.1 * rng.normal(size=(len(rows), g)), 0).astype(np.float32)
    return Spots(x, rows, cols, np.column_stack([cols * 10.0, rows * 10.0])), y


def _smooth_image_signal(n_rows=12, n_cols=20, d=8, g=20, seed=0):
    """Features that vary smoothly over the section, expression a function of them: THItoGene's graph
    attention reads a spot's four nearest neighbours (not the spot itself), so the signal must be
    shared by neighbours, as it is in tissue."""
    rng = np.random.default_rng(seed)
    rows, cols = _grid(n_rows, n_cols)
    freq = rng.uniform(0.15, 0.5, size=(2, d))
    phase = rng.uniform(0, 2 * np.pi, size=d)
    x = np.sin(cols[:, None] * freq[0] + phase) + np.cos(rows[:, None] * freq[1] + phase)
    x = (x + 0.05 * rng.normal(size=x.shape)).astype(np.float32)
    w = rng.normal(size=(d, g)).astype(np.float32)
    y = (x @ w * 0.3 + 2).astype(np.float32)
    return Spots(x, rows, cols, np.column_stack([cols * 10.0, rows * 10.0])), y


def _spatial_signal(n_rows=14, n_cols=20, g=12, seed=0):
    """Expression a smooth function of the position, features pure noise (what STAGE can learn)."""
    rng = np.random.default_rng(seed)
    rows, cols = _grid(n_rows, n_cols)
    phase = rng.uniform(0, 2 * np.pi, size=g)
    y = 1.5 + np.sin(cols[:, None] / 4.0 + phase) + np.cos(rows[:, None] / 5.0 + phase)
    x = rng.normal(size=(len(rows), 5)).astype(np.float32)
    return Spots(x, rows, cols, np.column_stack([cols * 10.0, rows * 10.0])), y.astype(np.float32)


def _subset(s: Spots, idx) -> Spots:
    return Spots(s.features[idx], s.rows[idx], s.cols[idx], s.xy[idx])


def _halves(n: int, seed: int = 0):
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def _pcc(y, pred) -> float:
    return float(np.nanmean(pearson_per_gene(y, pred)))


SMALL_THITOGENE = {"caps": 4, "route_dim": 16, "heads": 4, "gat_heads": 2, "gat_hidden": 32, "gat_out": 32,
                   "dim": 32}


def fit_predict(name: str, train: Spots, y, query: Spots, *, train_groups=None, **params):
    """(predictions at ``query``, info): registered method ``name`` fitted on ``train``, as the
    benchmark runs it (a method whose fit reads the query's positions gets them)."""
    m = create_method(name, **params)
    seen = {"query": query} if m.spec.fit_takes_query else {}
    return m.fit(train, y, groups=train_groups, **seen).predict(query), m.info


def _fit(method: str, train: Spots, y, query: Spots, seed: int):
    if method == "stage":
        return fit_predict("stage", train, y, query, grid="square", seed=seed, epochs=15)
    if method == "thitogene":
        return fit_predict("thitogene", train, y, query, seed=seed, epochs=3, depth=1, arch=SMALL_THITOGENE)
    return fit_predict("deepspace", train, y, query, seed=seed, epochs=3, hidden=64)


# -- each baseline ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["stage", "thitogene", "deepspace"])
def test_new_baselines_predict_the_query_shape_and_depend_only_on_the_seed(method):
    spots, y = _image_signal()
    tr, te = _halves(len(y))
    a, _ = _fit(method, _subset(spots, tr), y[tr], _subset(spots, te), seed=3)
    b, _ = _fit(method, _subset(spots, tr), y[tr], _subset(spots, te), seed=3)
    c, _ = _fit(method, _subset(spots, tr), y[tr], _subset(spots, te), seed=4)
    assert a.shape == (len(te), y.shape[1]) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_deepspace_learns_an_image_signal_on_held_out_spots():
    spots, y = _image_signal()
    tr, te = _halves(len(y))
    pred, info = fit_predict("deepspace", _subset(spots, tr), y[tr], _subset(spots, te), seed=0)
    assert _pcc(y[te], pred) > 0.6, info
    assert 1 <= info["best_epoch"] <= info["epochs_run"] <= deepspace.EPOCHS
    # predictions come back on the log1p scale (the network fits min-max scaled targets)
    assert abs(float(pred.mean()) - float(y[te].mean())) < 0.5


def test_deepspace_stops_when_the_validation_loss_stops_falling():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = rng.normal(size=(200, 5)).astype(np.float32)  # nothing to learn
    flat = Spots(x, np.zeros(200), np.zeros(200), np.zeros((200, 2)))
    _, info = fit_predict("deepspace", flat, y, _subset(flat, np.arange(3)), seed=0, hidden=64, lr=1e-2)
    assert info["epochs_run"] < deepspace.EPOCHS


def test_deepspace_validates_on_one_fifth_of_the_training_spots():
    train, val = deepspace.validation_fold(103, seed=0)
    assert len(val) in (20, 21) and len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 103
    with pytest.raises(ValueError):
        deepspace.validation_fold(4, seed=0)


def test_stage_decodes_a_smooth_spatial_signal_at_held_out_coordinates():
    spots, y = _spatial_signal()
    tr, te = _halves(len(y), seed=1)
    pred, info = fit_predict("stage", _subset(spots, tr), y[tr], _subset(spots, te), grid="square", seed=0,
                             epochs=400)
    assert _pcc(y[te], pred) > 0.6, info
    assert info["coord_scale"] == spots.cols[tr].max()


def test_stage_coordinate_scale_and_batches():
    assert stage.coord_scale_for("hex", np.array([[5.0, 3.0]])) == 77.0
    assert stage.coord_scale_for("square", np.array([[5.0, 31.0]])) == 31.0
    sizes = [len(b) for b in stage.batches(np.arange(1025), 512)]
    assert sizes == [512, 513]  # a lone last spot joins the batch before (BatchNorm)
    assert [len(b) for b in stage.batches(np.arange(700), 512)] == [512, 188]


def test_stage_never_sees_features():
    spots, y = _spatial_signal()
    tr, te = _halves(len(y))
    shuffled = Spots(spots.features[::-1].copy(), spots.rows, spots.cols, spots.xy)
    a, _ = fit_predict("stage", _subset(spots, tr), y[tr], _subset(spots, te), seed=0, epochs=5)
    b, _ = fit_predict("stage", _subset(shuffled, tr), y[tr], _subset(shuffled, te), seed=0, epochs=5)
    assert np.array_equal(a, b)


def test_thitogene_learns_an_image_signal_with_a_small_network():
    spots, y = _smooth_image_signal()
    tr, te = _halves(len(y))
    pred, info = fit_predict("thitogene", _subset(spots, tr), y[tr], _subset(spots, te), seed=0, epochs=150,
                             lr=1e-3, depth=1, arch=SMALL_THITOGENE)
    assert _pcc(y[te], pred) > 0.5
    assert info["steps_run"] == 150


def test_thitogene_takes_one_step_per_training_section_and_epoch():
    spots, y = _image_signal()
    groups = (np.arange(len(y)) >= 120).astype(int)
    _, info = fit_predict("thitogene", spots, y, _subset(spots, np.arange(10)), train_groups=groups, seed=0,
                          epochs=2, depth=1, arch=SMALL_THITOGENE)
    assert info["steps_run"] == 4


def test_thitogene_graph_links_each_spot_to_its_four_nearest_others():
    rows, cols = _grid(5, 6)
    dst, src = thitogene.knn_edges(np.column_stack([cols, rows]))
    assert len(dst) == len(src) == 4 * 30
    assert not np.any(dst.numpy() == src.numpy())
    d = np.hypot(cols[dst] - cols[src], rows[dst] - rows[src]).reshape(30, 4)
    interior = (rows > 0) & (rows < 4) & (cols > 0) & (cols < 5)
    assert np.all(d[interior] == 1.0)  # inside the grid: the four adjacent spots
    assert d.max() <= 2.0  # a corner reaches two steps, never across the grid
    dst, src = thitogene.knn_edges(np.array([[0.0, 0.0], [1.0, 0.0]]))  # fewer spots than k
    assert len(dst) == 8 and set(src.numpy()[dst.numpy() == 0]) == {1}


def test_graph_attention_averages_each_spots_own_neighbours():
    """Softmax over each spot's neighbours: equal neighbour values come back unchanged (the
    authors' code normalised along the other axis, which would scale them)."""
    torch.manual_seed(0)
    layer = thitogene.GraphAttention(6, 4, dropout=0.0, slope=0.01, concat=False).eval()
    rows, cols = _grid(4, 4)
    dst, src = thitogene.knn_edges(np.column_stack([cols, rows]))
    h = torch.randn(1, 6).repeat(16, 1)
    h[0] += 5.0  # spot 0 differs; spots that do not have it as a neighbour must give back W h
    out = layer(h, dst, src)
    expected = h[1] @ layer.W
    untouched = [i for i in range(16) if 0 not in src.numpy()[dst.numpy() == i]]
    assert untouched and torch.allclose(out[untouched], expected.expand(len(untouched), -1), atol=1e-5)


def test_capsule_routing_squashes_to_unit_ball():
    routing = thitogene.CapsuleRouting(16, 8, 5, 12)
    u = thitogene.squash(torch.randn(7, 16, 8) * 3)
    out = routing(u)
    assert out.shape == (7, 5, 12) and (out.norm(dim=-1) < 1).all()


def test_registered_with_their_protocols():
    for m in ("stage", "thitogene", "deepspace"):
        assert m in methods.ALL_METHODS and m in methods.QUICK_EPOCHS
        assert methods.valid_for(m, "R") and methods.valid_for(m, "G")
    assert not methods.valid_for("stage", "X")  # no image: it needs measured spots of the target
    assert methods.valid_for("thitogene", "X") and methods.valid_for("deepspace", "X")


@pytest.fixture
def one_dlpfc(tmp_path, make_spaceranger):
    (tmp_path / "dlpfc").mkdir()
    make_spaceranger("s1", seed=1, n_rows=10, n_cols=12).rename(tmp_path / "dlpfc" / "s1")
    make_spaceranger("s2", seed=2, n_rows=10, n_cols=12).rename(tmp_path / "dlpfc" / "s2")
    return tmp_path


def test_benchmark_hands_the_new_baselines_training_spots_only(one_dlpfc, tmp_path, monkeypatch):
    """Held-out only: what each method trains on is exactly the protocol's training spots."""
    seen = []
    for name in ("stage", "thitogene", "deepspace"):
        cls = get_spec(name).cls
        original = cls.fit

        def spy(self, train, y_train, *a, _original=original, _name=name, query=None, **kw):
            seen.append([_name, len(train), len(y_train), None])
            return _original(self, train, y_train, *a, **({"query": query} if query is not None else {}), **kw)

        def spy_predict(self, query, *a, _original=cls.predict, **kw):
            seen[-1][3] = len(query)
            return _original(self, query, *a, **kw)

        monkeypatch.setattr(cls, "fit", spy)
        monkeypatch.setattr(cls, "predict", spy_predict)
    res = run(one_dlpfc, tmp_path / "out", sections="dlpfc/s1,dlpfc/s2", protocols="R,G,X",
              methods="stage,thitogene,deepspace", quick=True, cache_dir=tmp_path / "cache", progress=False)
    by = {(r["section"], r["protocol"], r["method"]): r for r in res.records}
    assert ("s1", "X", "stage") not in by and ("s1", "X", "thitogene") in by
    assert len(seen) == len(res.records)
    for (name, n_train, n_y, n_query), rec in zip(seen, res.records, strict=True):
        assert name == rec["method"] and n_train == n_y == rec["n_train"]
        if rec["protocol"] != "X":
            split = res.splits[(f"dlpfc:{rec['section']}", rec["protocol"], 0)]
            assert n_query == len(split.train) + len(split.test) and len(np.intersect1d(split.train, split.test)) == 0
        assert all(math.isfinite(rec[k]) for k in ("pcc", "mse", "ari"))


# -- STAGATE --------------------------------------------------------------------------------------
def test_stagate_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "STAGATE_pyG", None)
    reason = D.stagate_missing()
    assert reason and 'pip install "histosge[domains]"' in reason
    with pytest.raises(RuntimeError, match="histosge\\[domains\\]"):
        D.stagate(np.zeros((5, 3)), np.zeros((5, 2)), 2)


def test_benchmark_skips_stagate_with_its_reason_when_the_extra_is_missing(one_dlpfc, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "STAGATE_pyG", None)
    out = tmp_path / "out"
    res = run(one_dlpfc, out, sections="dlpfc/s1", protocols="R", methods="knn", quick=True,
              domains="kmeans,stagate", cache_dir=tmp_path / "cache", progress=False)
    assert all("ari_stagate" not in r and "ari_measured_stagate" not in r for r in res.records)
    meta = json.loads((out / "run.json").read_text())
    assert meta["domains"] == ["kmeans"] and "histosge[domains]" in meta["stagate_skipped"]
    text = (out / "report.md").read_text()
    assert "STAGATE was skipped" in text and 'pip install "histosge[domains]"' in text
    assert "| dlpfc/s1 | R | knn | 1 |" in text and text.count("| not run |") == 2  # measured + knn


def test_unknown_clusterer_is_a_one_line_input_error(tmp_path):
    with pytest.raises(InputError, match="domain"):
        run(tmp_path, tmp_path / "o", sections="dlpfc/x", domains="kmeans,louvain", progress=False)


def _banded_section(seed: int = 0):
    """A hex-like grid with three horizontal bands, each with its own expression profile."""
    rng = np.random.default_rng(seed)
    rows, cols = _grid(15, 16)
    band = np.minimum(rows // 5, 2).astype(int)
    profiles = rng.gamma(2.0, 1.0, size=(3, 30))
    y = np.log1p(rng.poisson(profiles[band] * 3)).astype(np.float32)
    labels = np.array([f"L{b}" for b in band], dtype=object)
    return y, np.column_stack([cols * 100.0, rows * 100.0]), labels


def test_stagate_is_deterministic_and_finds_planted_domains():
    pytest.importorskip("STAGATE_pyG")
    y, xy, labels = _banded_section()
    with _deterministic(1):
        a = D.stagate(y, xy, 3, seed=0, n_epochs=150)
        b = D.stagate(y, xy, 3, seed=0, n_epochs=150)
    assert np.array_equal(a, b)
    assert D.ari(labels, a) == D.ari(labels, b) > 0.5


def test_leiden_finds_k_planted_domains_at_the_searched_resolution_and_is_repeatable():
    pytest.importorskip("igraph")
    y, _, labels = _banded_section(2)
    a, b = D.leiden(y, 3, seed=0), D.leiden(y, 3, seed=0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 3
    assert D.ari(labels, a) > 0.5
    assert len(np.unique(D.leiden(y, 6, seed=0))) == 6  # a finer resolution for more domains


def test_benchmark_with_leiden_records_its_ari_and_draws_the_ari_chart(one_dlpfc, tmp_path):
    pytest.importorskip("igraph")
    from histosge.benchmark.figures import ari_chart

    res = run(one_dlpfc, tmp_path / "a", sections="dlpfc/s1", protocols="R", methods="mean,knn", quick=True,
              domains="kmeans,leiden", cache_dir=tmp_path / "cache", progress=False)
    for r in res.records:
        assert math.isfinite(r["ari_leiden"]) and math.isfinite(r["ari_measured_leiden"]) and "ari_stagate" not in r
    text = (tmp_path / "a" / "report.md").read_text()
    assert "| section | protocol | method | seeds | ARI k-means | ARI Leiden | ARI STAGATE |" in text
    assert "## Spatial domains: k-means, Leiden and STAGATE" in text and "Leiden: `ari_leiden`" in text
    assert ari_chart(res.records, tmp_path / "chart.png", protocols=("R",))
    assert (tmp_path / "chart.png").stat().st_size > 1000
    assert not ari_chart([{**r, "labels": None} for r in res.records], tmp_path / "none.png")


def test_stmask_is_deterministic_and_finds_planted_domains():
    pytest.importorskip("torch_geometric")
    from histosge.benchmark import stmask

    y, xy, labels = _banded_section(3)
    with _deterministic(1):
        a = D.cluster("stmask", y, xy, 3, seed=0, quick=True)
        b = stmask.cluster(y, xy, 3, seed=0, epochs=D.QUICK_EPOCHS)
    assert np.array_equal(a, b) and len(np.unique(a)) == 3
    assert D.ari(labels, a) > 0.5
    assert stmask.embedding(y, xy, 0, epochs=2).shape == (len(y), stmask.SETTINGS["latent"])


def test_kmeans_domains_match_evaluate_domains_ari():
    from histosge.evaluate import domains_ari

    y, _, labels = _banded_section(1)
    labels[:4] = None  # unlabelled spots are clustered but not scored
    assert D.ari(labels, D.kmeans(y, 3, seed=2)) == domains_ari(y, labels, seed=2)


def test_benchmark_with_stagate_reports_both_clusterers_and_is_repeatable(one_dlpfc, tmp_path):
    pytest.importorskip("STAGATE_pyG")
    kw = {"sections": "dlpfc/s1", "protocols": "R", "methods": "mean,knn", "quick": True,
          "domains": "kmeans,stagate", "cache_dir": tmp_path / "cache", "progress": False}
    a = run(one_dlpfc, tmp_path / "a", **kw)
    b = run(one_dlpfc, tmp_path / "b", **kw)
    for r in a.records:
        assert math.isfinite(r["ari_stagate"]) and math.isfinite(r["ari_measured_stagate"])
    assert [r["ari_stagate"] for r in a.records] == [r["ari_stagate"] for r in b.records]
    assert next(r for r in a.records if r["method"] == "mean")["ari"] is not None
    text = (tmp_path / "a" / "report.md").read_text()
    assert "## Spatial domains: k-means and STAGATE" in text and "| dlpfc/s1 | R | knn | 1 |" in text
    assert (tmp_path / "a" / "figure5_dlpfc_s1_R.png").exists()
    assert "then Leiden and STAGATE where they ran" in text


# -- report ---------------------------------------------------------------------------------------
def _rec(method, seed, ari, stagate=None, protocol="R"):
    r = {"dataset": "dlpfc", "section": "151673", "protocol": protocol, "method": method, "seed": seed,
         "labels": "manual annotation", "ari": ari, "ari_measured": 0.4 + seed / 100}
    if stagate is not None:
        r["ari_stagate"] = stagate
        r["ari_measured_stagate"] = 0.5
    return r


def test_domain_table_puts_clusterers_side_by_side_and_names_missing_seeds():
    recs = [_rec("knn", s, 0.3 + s / 100, 0.35 if s == 0 else None) for s in range(3)]
    recs += [_rec("histosge", s, 0.28) for s in range(3)]
    recs.append({**_rec("knn", 0, 0.2), "dataset": "her2st", "labels": "expression clusters (her2st)"})
    lines = report_domains.table(recs)
    assert lines[0] == "| section | protocol | method | seeds | ARI k-means | ARI STAGATE |"
    assert "| dlpfc/151673 | R | (measured expression) | 3 | 0.410 ± 0.010 | 0.500 (1 of 3 seeds) |" in lines
    assert "| dlpfc/151673 | R | knn | 3 | 0.310 ± 0.010 | 0.350 (1 of 3 seeds) |" in lines
    assert "| dlpfc/151673 | R | histosge | 3 | 0.280 ± 0.000 | not run |" in lines
    assert not any("her2st" in line for line in lines)
    assert "opt-in" in report_domains.stagate_note([_rec("knn", 0, 0.3)], {})
    assert report_domains.stagate_note(recs, {}) == ""
    merged = {"parts": [{"stagate_skipped": "no package"}, {}]}
    assert "no package" in report_domains.stagate_note(recs, merged)


def test_bench_help_lists_all_five_baselines_of_the_paper():
    from typer.testing import CliRunner

    from histosge.cli import app

    text = CliRunner().invoke(app, ["bench", "--help"], terminal_width=200).output
    flat = " ".join(text.split())
    for m in ("stage", "thitogene", "histogene", "deepspace", "stnet"):
        assert m in flat, m
    assert "--domains" in flat and 'pip install "histosge[domains]"' in flat  # not eaten as rich markup
