"""benchmark.results: records appended line by line, read back (legacy lists too), merged and aggregated."""

import json
import math

import numpy as np

from histosge.benchmark import results


def _rec(method, seed=0, pcc=0.1, **kw):
    return {"dataset": "her2st", "section": "C2", "protocol": "R", "seed": seed, "method": method, "pcc": pcc, **kw}


def test_append_then_load_keeps_every_record_and_a_line_cut_by_a_kill_is_dropped(tmp_path):
    results.write(tmp_path, [])
    for r in (_rec("knn"), _rec("ridge", ari=None), _rec("knn", seed=1, pcc=np.float32(0.25))):
        results.append(tmp_path, r)
    assert [r["method"] for r in results.load_records(tmp_path)] == ["knn", "ridge", "knn"]
    assert results.load_records(tmp_path)[1]["ari"] is None and results.load_records(tmp_path)[2]["pcc"] == 0.25
    with open(tmp_path / results.RESULTS, "a") as fh:
        fh.write('{"dataset": "her2st", "sec')  # killed mid-line
    assert len(results.load_records(tmp_path)) == 3


def test_a_legacy_results_json_is_read_when_there_is_no_jsonl(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps([_rec("knn"), _rec("ridge")]))
    assert results.path_of(tmp_path).name == "results.json"
    assert list(results.load(tmp_path)["method"]) == ["knn", "ridge"]
    results.write(tmp_path, [_rec("mean")])
    assert list(results.load(tmp_path)["method"]) == ["mean"]  # the run's own file wins


def test_merge_keeps_the_first_record_of_each_key_and_tells_cohorts_apart():
    a = results.frame([_rec("knn", pcc=0.1), _rec("knn", protocol="R+", prior_from="same patient")])
    b = results.frame([_rec("knn", pcc=0.9), _rec("knn", protocol="R+", prior_from="other patients"),
                       _rec("ridge")])
    merged = results.merge([a, b])
    assert list(merged.index) == [0, 1, 3, 4]  # positions in the concatenation: b's knn R was measured twice
    assert merged.loc[0, "pcc"] == 0.1


def test_aggregate_is_mean_sd_and_count_of_the_finite_values_over_seeds():
    recs = [_rec("knn", seed=s, pcc=p, ari=a) for s, p, a in ((0, 0.1, 0.3), (1, 0.3, None), (2, 0.2, math.inf))]
    agg = results.aggregate(results.frame(recs), ["method"], ["pcc", "ari", "mse"]).loc["knn"]
    assert math.isclose(agg[("pcc", "mean")], 0.2) and math.isclose(agg[("pcc", "std")], 0.1)
    assert agg[("ari", "count")] == 1 and agg[("ari", "mean")] == 0.3  # None and inf do not count
    assert agg[("mse", "count")] == 0  # a metric no record has


def test_method_order_is_the_suites_then_unknown_names_sorted():
    assert results.method_order(["zeta", "histosge", "knn", "alpha", "knn"]) == ["knn", "histosge", "alpha", "zeta"]


def test_combine_takes_each_record_and_prediction_file_from_the_first_part_that_has_it(tmp_path):
    for name, pcc in (("p0", 0.1), ("p1", 0.9)):
        part = tmp_path / name
        part.mkdir()
        results.write(part, [_rec("knn", pcc=pcc)])
        (part / "predictions").mkdir()
        (part / "predictions" / "her2st_C2_R_0.npz").write_text(name)
        (part / "run.json").write_text(json.dumps({"seeds": [0], "seconds_total": 1.0, "seconds_features": 0.0,
                                                   "sections": ["her2st/C2"], "protocols": ["R"],
                                                   "predictions": "predictions"}))
    results.combine([tmp_path / "p0", tmp_path / "p1"], tmp_path / "all")
    assert [r["pcc"] for r in results.load_records(tmp_path / "all")] == [0.1]
    assert (tmp_path / "all" / "predictions" / "her2st_C2_R_0.npz").read_text() == "p0"
    meta = json.loads((tmp_path / "all" / "run.json").read_text())
    assert meta["predictions"] == "predictions" and [p["out"] for p in meta["parts"]] == [
        str(tmp_path / "p0"), str(tmp_path / "p1")]
