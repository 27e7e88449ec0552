"""bench/paper_comparison.py: STAGATE results computed one per process are folded into the
benchmark's own records only when the refit reproduces them (the twin check)."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def pc(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("paper_comparison", BENCH / "paper_comparison.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ONE", tmp_path / "one")
    (tmp_path / "one").mkdir()
    return module


def _rec(method, seed=0, **kw):
    return {"dataset": "dlpfc", "section": "151673", "protocol": "R", "seed": seed, "method": method,
            "pcc": 0.1, "pcc_top50": 0.4, "mse": 0.4, "mae": 0.3, "ari": 0.2, **kw}


def _one(pc, method, **kw):
    rec = {**_rec(method), "ari_stagate": 0.33, "stagate_seconds": 5.0, **kw}
    (pc.ONE / f"151673_R_0_{method}.json").write_text(json.dumps(rec))


def test_fold_sets_stagate_on_the_twin_and_measured_on_every_record_of_the_split(pc):
    records = [_rec("knn"), _rec("ridge"), _rec("knn", seed=1)]
    _one(pc, "knn")
    _one(pc, "measured", ari_stagate=0.5)
    assert pc.fold_one(records) == []
    assert records[0]["ari_stagate"] == 0.33 and "ari_stagate" not in records[1]
    assert records[0]["ari_measured_stagate"] == records[1]["ari_measured_stagate"] == 0.5
    assert "ari_measured_stagate" not in records[2]  # another seed


def test_fold_reports_a_refit_that_does_not_reproduce_and_a_missing_twin(pc):
    records = [_rec("knn")]
    _one(pc, "knn", pcc=0.11)
    _one(pc, "stnet")
    problems = pc.fold_one(records)
    assert any("pcc" in p for p in problems) and any("no benchmark record" in p for p in problems)


def test_check_twins_compares_records_measured_twice(pc, tmp_path):
    for name, pcc in (("a", 0.1), ("b", 0.1), ("c", 0.2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps([_rec("knn", pcc=pcc)]))
    assert pc.check_twins([tmp_path / "a", tmp_path / "b"]) == []
    assert len(pc.check_twins([tmp_path / "a", tmp_path / "c"])) == 1


def _dlpfc(method, seed, ari, stagate=None):
    r = {"dataset": "dlpfc", "section": "151673", "protocol": "R", "method": method, "seed": seed,
         "labels": "manual annotation", "ari": ari, "ari_measured": 0.4 + seed / 100}
    if stagate is not None:
        r["ari_stagate"] = stagate
        r["ari_measured_stagate"] = 0.5
    return r


def test_comparison_table_averages_sections_and_seeds_and_says_not_run(pc):
    recs = [_dlpfc("knn", s, 0.3, 0.4 if s == 0 else None) for s in range(2)]
    recs += [{**_dlpfc("knn", 0, 0.5), "section": "151676"}]
    recs += [_dlpfc("histosge", s, 0.2) for s in range(2)]
    for r, pcc in zip(recs, (0.1, 0.2, 0.3, 0.05, 0.05), strict=True):
        r["pcc"] = pcc
    lines = pc.comparison_table(recs, ("histosge", "knn", "stage"))
    assert lines[0].startswith("| method | R pcc | R ARI k-means | R ARI STAGATE | G pcc |")
    assert "| knn | **0.200** | **0.367** | **0.400** | not run | not run | not run |" in lines
    assert "| histosge | 0.050 | 0.200 | not run | not run | not run | not run |" in lines
    assert "| stage | not run | not run | not run | not run | not run | not run |" in lines
    assert lines[2].startswith("| (measured expression) | - | 0.404 | 0.500 |")


def test_full_estimate_is_each_method_at_its_published_epochs_from_the_measured_cost(pc, tmp_path):
    def rec(section, method, per_epoch, fixed=0.0):
        run = {"seconds_per_epoch": per_epoch, "seconds_fixed": fixed}
        return {"section": section, "method": method,
                "runs": {"cores" if method in ("stagate", "stmask") else "new_cores_stop_rule": run}}

    methods = {m for kw in pc.FULL_PLAN.values() for m in kw["methods"]}
    records = [rec("dlpfc/151673", m, 1.0) for m in methods] + [rec("her2st/C2", m, 0.1) for m in methods]
    records.append(rec("dlpfc/151673", "stagate", 0.5, fixed=10.0))
    records.append(rec("dlpfc/151673", "stmask", 0.2))
    cost = tmp_path / "cost.json"
    cost.write_text(json.dumps({"meta": {"date": "d", "cores": 2}, "records": records}))
    lines = pc.estimate(cost)
    e = pc.MAX_EPOCHS
    dlpfc = sum(e[m] for m in pc.FULL_PLAN["dlpfc"]["methods"]) * 1.5 * 2  # R (x1) + G (x0.5), two sections
    assert lines[0] == f"dlpfc: {dlpfc / 3600:.2f} h at most"
    her2st = sum(e[m] for m in pc.BASELINES) * 0.1 * 1.5 * 4
    assert lines[1] == f"her2st: {her2st / 3600:.2f} h at most"
    slow = sum(e[m] for m in ("stage", "thitogene")) * 1.5 * 2
    assert lines[2] == f"dlpfc_stage_thitogene: {slow / 3600:.2f} h at most"
    n = 2 * (1 + 5 + 2)  # R and G of a section: the measured expression, five methods, STAGE and THItoGene
    assert lines[3] == (f"full-domains stagate (dlpfc/151673, dlpfc/151676): {2 * n} clusterings, "
                        f"{2 * n * (10 + 500) / 3600:.2f} h")
    assert lines[4] == f"full-domains stmask (dlpfc/151673): {n} clusterings, {n * 100 / 3600:.2f} h"


def test_full_domains_clusters_a_shared_task_measured_once_and_only_the_protocols_asked(pc, tmp_path, monkeypatch):
    import numpy as np

    from histosge.benchmark import domains as D
    from histosge.benchmark import predictions as PR

    monkeypatch.setattr(pc, "FULL", tmp_path / "full")
    calls = []

    def fake(clusterer, expression, xy, k, seed=0, **kw):
        calls.append((clusterer, float(expression.sum())))
        return np.arange(len(expression)) % k

    monkeypatch.setattr(D, "cluster", fake)
    rng = np.random.default_rng(0)
    y = rng.random((12, 3)).astype(np.float32)
    labels = np.array(["L1", "L2", "L3"] * 4, dtype=object)
    for part, method in (("a", "histosge"), ("b", "stage")):
        for protocol in ("R", "G"):
            PR.save(pc.FULL / "parts" / part, PR.Saved(
                "dlpfc/151673", protocol, 0, ["g1", "g2", "g3"], y, np.arange(8), np.arange(8, 12),
                rng.random((12, 2)), labels, {method: np.zeros((4, 3), np.float32)}))
    written = pc.full_domains(["dlpfc/151673"], threads=1, clusterers=("stagate",), protocols=("R",))
    names = sorted(p.relative_to(pc.FULL / "parts").as_posix() for p in written)
    assert names == ["a/domains/stagate_dlpfc_151673_R_histosge.json", "a/domains/stagate_dlpfc_151673_R_measured.json",
                     "b/domains/stagate_dlpfc_151673_R_stage.json"]
    assert len(calls) == 3
    one = json.loads((pc.FULL / "parts" / "b" / "domains" / "stagate_dlpfc_151673_R_stage.json").read_text())
    assert (one["method"], one["protocol"], one["section"]) == ("stage", "R", "dlpfc/151673")
    assert pc.full_domains(["dlpfc/151673"], threads=1, clusterers=("stagate",), protocols=("R",)) == []
    found = pc.clusterer_spread("stagate", "dlpfc/151673", "R", "stage", [1, 2], threads=1)
    assert [r["seed"] for r in found] == [0, 1, 2] and len(calls) == 5
    assert sorted(p.name for p in (pc.FULL / "spread").iterdir()) == [
        "stagate_dlpfc_151673_R_stage_seed1.json", "stagate_dlpfc_151673_R_stage_seed2.json"]
    assert len(pc.clusterer_spread("stagate", "dlpfc/151673", "R", "stage", [1, 2], threads=1)) == 3
    assert len(calls) == 5  # done: read back, not clustered again
    only = pc.full_domains(["dlpfc/151673"], threads=1, clusterers=("stmask",), protocols=("G",),
                           methods=["stage", "histosge", "measured"])
    assert [p.name for p in only] == ["stmask_dlpfc_151673_G_histosge.json", "stmask_dlpfc_151673_G_measured.json",
                                      "stmask_dlpfc_151673_G_stage.json"]
