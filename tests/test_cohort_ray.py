"""Cohorts on a local Ray cluster (``ray.init(num_cpus=2)``): the same outputs as the local run, bit
for bit; a worker killed mid-slide loses nothing and a rerun redoes nothing (issue 19)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from cohort_fixtures import crops_of_shipped_slide, model_file, same_output, synthetic_slides

from histosge.cohort import predict_cohort, read_manifest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'histosge[ray]')")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture
def model(make_legacy_st, tmp_path_factory):
    return model_file(make_legacy_st, tmp_path_factory)


def _both(model, slides, tmp_path, **kw):
    """The cohort run here and on Ray (each with its own feature cache), lossless."""
    local = predict_cohort(model, slides, tmp_path / "local", lossless=True, cache_dir=str(tmp_path / "c1"),
                           progress=False, **kw)
    on_ray = predict_cohort(model, slides, tmp_path / "ray", lossless=True, cache_dir=str(tmp_path / "c2"),
                            progress=False, ray=True, workers=2, **kw)
    return local, on_ray


def test_ray_equals_local_on_crops_of_the_shipped_slide(cluster, model, data_dir, tmp_path):
    slides = crops_of_shipped_slide(data_dir, tmp_path / "slides", n=3)
    local, on_ray = _both(model, slides, tmp_path)
    assert on_ray.backend == "ray" and on_ray.timings["workers"] == 2
    assert set(local.outcomes.values()) == set(on_ray.outcomes.values()) == {"computed"}
    workers = {r["worker"] for r in on_ray.records.values()}
    assert len(workers) == 2 and all(not w.endswith(f":{os.getpid()}") for w in workers)  # predicted by actors
    for s in local.slides:
        same_output(tmp_path / "local" / f"{s}.h5ad", tmp_path / "ray" / f"{s}.h5ad")
    a, b = read_manifest(tmp_path / "local"), read_manifest(tmp_path / "ray")
    cols = ["slide", "status", "spots", "model_sha256", "output", "slide_sha256", "slide_bytes", "settings"]
    assert a[cols].equals(b[cols])
    rerun = predict_cohort(model, slides, tmp_path / "ray", lossless=True, progress=False, ray=True)
    assert set(rerun.outcomes.values()) == {"skipped"} and "workers" not in rerun.timings  # Ray had nothing to do


def test_ray_equals_local_on_synthetic_slides_with_a_bad_one(cluster, model, tmp_path):
    synthetic_slides(tmp_path / "slides", model, n=3)
    bad = tmp_path / "slides" / "unreadable.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 64)
    local, on_ray = _both(model, [tmp_path / "slides"], tmp_path, factor=4)
    assert local.outcomes == on_ray.outcomes and on_ray.outcomes["unreadable"] == "failed"
    assert on_ray.records["unreadable"]["error"] == local.records["unreadable"]["error"]
    for s in ("slide0", "slide1", "slide2"):
        same_output(tmp_path / "local" / f"{s}.h5ad", tmp_path / "ray" / f"{s}.h5ad")


def test_a_killed_worker_loses_nothing_and_a_rerun_redoes_nothing(cluster, model, tmp_path):
    """SIGKILL to the actor predicting a slide: a new worker takes the slide (attempt 2), every other
    slide is done once; the rerun skips all; outputs equal the run nobody disturbed."""
    slides = synthetic_slides(tmp_path / "slides", model, n=3, size=(800, 640))
    kw = {"factor": 9, "lossless": True, "progress": False}
    predict_cohort(model, slides, tmp_path / "ref", cache_dir=str(tmp_path / "c1"), **kw)
    out = tmp_path / "out"
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(res=predict_cohort(
        model, slides, out, cache_dir=str(tmp_path / "c2"), ray=True, workers=2, **kw)))
    run.start()
    records = out / ".histosge" / "records"
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and run.is_alive() and time.monotonic() < deadline:
        for p in sorted(records.glob("*.json")) if records.is_dir() else []:
            try:
                rec = json.loads(p.read_text())
            except ValueError:
                continue  # being replaced
            if rec.get("status") == "running" and rec.get("stage") == "predicting":
                pid = int(rec["worker"].rsplit(":", 1)[1])
                assert pid != os.getpid()
                os.kill(pid, signal.SIGKILL)  # an actor of the cluster this test started
                killed = rec["slide"]
                break
        time.sleep(0.02)
    run.join(timeout=600)
    assert killed is not None, "no slide was caught while being predicted"
    res = result["res"]
    assert set(res.outcomes.values()) == {"computed"}
    assert res.records[killed]["attempts"] == 2 and res.records[killed]["worker"] != rec["worker"]
    assert all(r["attempts"] == 1 for name, r in res.records.items() if name != killed)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5ad")}
    rerun = predict_cohort(model, slides, out, cache_dir=str(tmp_path / "c2"), ray=True, **kw)
    assert set(rerun.outcomes.values()) == {"skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5ad")} == stamps
    for s in res.slides:
        same_output(out / f"{s}.h5ad", tmp_path / "ref" / f"{s}.h5ad")


def test_not_enough_gpus_is_one_line_before_any_slide(cluster, model, tmp_path):
    from histosge.errors import InputError

    slides = synthetic_slides(tmp_path / "slides", model, n=1)
    with pytest.raises(InputError, match="has 0 GPUs") as err:
        predict_cohort(model, slides, tmp_path / "out", ray=True, gpus_per_worker=1, progress=False)
    assert "\n" not in err.value.message
    assert not list((tmp_path / "out").glob("*.h5ad"))
