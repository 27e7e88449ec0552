"""Cohorts, run here (no Ray): one output per slide, the manifest, resuming by content, failed slides
isolated, every bad input one line before any work (issue 19). Ray: tests/test_cohort_ray.py."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from cohort_fixtures import model_file, same_output, synthetic_slides, write_ome
from typer.testing import CliRunner

from histosge import tasks
from histosge.cli import app, ray_option_value
from histosge.cohort import COLUMNS, predict_cohort, read_manifest, resolve_slides
from histosge.errors import InputError, OutputError
from histosge.storage import quantize

runner = CliRunner()


def cli(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def model(make_legacy_st, tmp_path_factory):
    return model_file(make_legacy_st, tmp_path_factory)


@pytest.fixture
def slides(model, tmp_path):
    return synthetic_slides(tmp_path / "slides", model)


def _run(model, inputs, out, **kw):
    kw.setdefault("cache_dir", str(Path(out).parent / "cache"))
    return predict_cohort(model, inputs, out, progress=False, **kw)


def test_one_output_per_slide_and_a_manifest(model, slides, tmp_path):
    out = tmp_path / "out"
    res = _run(model, [tmp_path / "slides"], out)
    assert res.outcomes == {"slide0": "computed", "slide1": "computed", "slide2": "computed"}
    table = read_manifest(out)
    assert tuple(table.columns) == COLUMNS and list(table["slide"]) == ["slide0", "slide1", "slide2"]
    assert (table["status"] == "done").all() and (table["spots"] > 10).all() and (table["error"] == "").all()
    assert (table["peak_memory_mb"] > 0).all() and (table["seconds"] > 0).all()
    assert table["model_sha256"].nunique() == 1 and len(table["model_sha256"][0]) == 64
    for row, path in zip(table.itertuples(), slides, strict=True):
        assert row.output == f"{row.slide}.h5ad" and (out / row.output).stat().st_size == row.output_bytes
        assert row.slide_bytes == path.stat().st_size and row.path == str(path.resolve())
        # the same prediction as `histosge predict MODEL SLIDE -o`, stored by the same rule
        got = ad.read_h5ad(out / row.output)
        want = tasks.predict(str(model), path, cache_dir=str(tmp_path / "cache"), progress=False)
        assert np.array_equal(got.X, quantize(want.X)) and got.obs.equals(want.obs)
        assert got.uns["histosge"]["cohort"]["slide_sha256"] == row.slide_sha256
        assert "features" not in got.obsm
    assert sorted(p.name for p in out.iterdir()) == [".histosge", "manifest.csv", "slide0.h5ad", "slide1.h5ad",
                                                     "slide2.h5ad"]


def test_lists_folders_and_files_name_the_same_slides(model, slides, tmp_path):
    (tmp_path / "list.txt").write_text(f"# cohort\n{slides[0]}\n\nslides/{slides[1].name}\n")
    (tmp_path / "list.csv").write_text(f"path,name\n{slides[2]},third\n")
    got = resolve_slides([tmp_path / "list.txt", tmp_path / "list.csv", slides[0]])
    assert [(s.name, s.path) for s in got] == [("slide0", slides[0].resolve()), ("slide1", slides[1].resolve()),
                                               ("third", slides[2].resolve())]
    assert [s.name for s in resolve_slides([tmp_path / "slides"])] == ["slide0", "slide1", "slide2"]


def test_a_rerun_skips_what_is_done_and_retries_what_failed(model, slides, tmp_path):
    bad = tmp_path / "slides" / "broken.svs"
    bad.write_bytes(b"")  # an empty file: recorded as failed, the others go on
    out = tmp_path / "out"
    res = _run(model, [tmp_path / "slides"], out)
    assert res.outcomes["broken"] == "failed" and res.count("computed") == 3
    error = read_manifest(out).set_index("slide").loc["broken", "error"]
    assert "broken.svs" in error and "\n" not in error
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5ad")}

    res = _run(model, [tmp_path / "slides"], out)  # nothing finished is done again; the failure is retried
    assert res.outcomes == {"broken": "failed", "slide0": "skipped", "slide1": "skipped", "slide2": "skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5ad")} == stamps

    shutil.copyfile(slides[0], bad.with_name("copy_of_0.ome.tif"))  # same bytes, new name: output copied
    bad.unlink()
    os.utime(slides[1], ns=(time.time_ns(), time.time_ns()))  # touched, same bytes: compared, skipped
    write_ome(slides[2], np.full((480, 600, 3), 245, np.uint8), 1.0)  # new bytes, same name: done again
    res = _run(model, [tmp_path / "slides"], out)
    assert res.outcomes == {"copy_of_0": "reused", "slide0": "skipped", "slide1": "skipped", "slide2": "failed"}
    assert (out / "copy_of_0.h5ad").read_bytes() == (out / "slide0.h5ad").read_bytes()
    table = read_manifest(out).set_index("slide")
    assert "no tissue" in table.loc["slide2", "error"] and table.loc["broken", "status"] == "failed"
    assert table.loc["copy_of_0", "slide_sha256"] == table.loc["slide0", "slide_sha256"]
    assert res.records["copy_of_0"]["reused_from"] == "slide0" and table.loc["copy_of_0", "error"] == ""


def test_bad_inputs_are_one_line_before_any_work(model, slides, tmp_path):
    out = tmp_path / "out"
    cases = [
        ([], out, InputError, "no slides given"),
        ([tmp_path / "nope.svs", tmp_path / "gone.tif"], out, InputError, "2 slides not found: .*nope.svs"),
        ([slides[0], tmp_path / "other" / "slide0.tif"], out, InputError, "not found"),
        ([tmp_path / "model.txt"], out, InputError, "not found"),
    ]
    (tmp_path / "other").mkdir()
    shutil.copyfile(slides[0], tmp_path / "other" / "slide0.ome.tif")
    cases += [
        ([slides[0], tmp_path / "other" / "slide0.ome.tif"], out, InputError, "same output slide0.h5ad"),
        ([tmp_path / "empty_folder"], out, InputError, "holds no slide"),
        ([slides[0]], slides[1], OutputError, "is a file"),
        ([slides[0]], Path("/sys/histosge-cohort-test"), OutputError, "cannot write"),
        ([slides[0]], slides[1] / "sub", OutputError, "cannot write"),
    ]
    (tmp_path / "empty_folder").mkdir()
    for inputs, where, kind, match in cases:
        with pytest.raises(kind, match=match) as err:
            _run(model, inputs, where)
        assert "\n" not in err.value.message and err.value.fix
    assert not out.exists()  # nothing was written for any of them
    (tmp_path / "empty.csv").write_text("path,name\n")
    with pytest.raises(InputError, match="list is empty"):
        _run(model, [tmp_path / "empty.csv"], out)
    with pytest.raises(InputError, match="not a slide image"):
        _run(model, [model], out)


def test_a_model_that_changed_between_runs_is_refused(make_legacy_st, tmp_path_factory, model, slides, tmp_path):
    out = tmp_path / "out"
    mine = tmp_path / "m.histosge"
    shutil.copyfile(model, mine)
    _run(mine, [slides[0]], out)
    shutil.copyfile(model_file(make_legacy_st, tmp_path_factory, seed=1), mine)  # retrained under the same name
    with pytest.raises(OutputError, match="model file changed between runs") as err:
        _run(mine, [slides[0], slides[1]], out)
    assert "new --out-dir" in err.value.fix
    assert list(read_manifest(out)["slide"]) == ["slide0"]  # not mixed in
    with pytest.raises(OutputError, match=r"other settings \(pitch_um"):
        _run(model, [slides[0]], out, factor=4)


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(model, slides, tmp_path):
    from histosge.cohort.manifest import Lock, check_out_dir

    out = check_out_dir(tmp_path / "out")
    with Lock(out), pytest.raises(OutputError, match="another histosge run is writing"):
        _run(model, [slides[0]], out)


def test_in_a_log_one_line_per_slide_and_progress_at_most_every_few_seconds(model, slides, tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOSGE_PROGRESS_INTERVAL", "3600")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    predict_cohort(model, [tmp_path / "slides"], tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    lines = err.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["[1/3] slide0", "[2/3] slide1", "[3/3] slide2", "slides"]
    assert "spots in" in lines[0] and lines[-1].startswith("slides: 3 slides in")


def test_cli_cohort_and_single_forms(model, slides, tmp_path):
    out = tmp_path / "out"
    res = cli("predict", model, tmp_path / "slides", "--out-dir", out, "--cache-dir", tmp_path / "cache", "--quiet")
    assert res.exit_code == 0, res.output
    assert "3 computed" in res.output and len(list(out.glob("*.h5ad"))) == 3
    res = cli("predict", model, slides[0], "-o", tmp_path / "one.h5ad", "--cache-dir", tmp_path / "cache", "--quiet",
              "--keep-features", "--lossless")
    assert res.exit_code == 0, res.output
    one = ad.read_h5ad(tmp_path / "one.h5ad")
    assert "features" in one.obsm and one.uns["histosge"]["storage"]["precision"].startswith("exact")
    bad = slides[0].with_name("zz_broken.svs")
    bad.write_bytes(b"II*\x00garbage")
    res = cli("predict", model, tmp_path / "slides", "--out-dir", out, "--cache-dir", tmp_path / "cache", "--quiet")
    assert res.exit_code == 1 and "1 failed" in res.output and "3 skipped" in res.output


@pytest.mark.parametrize("args, match", [
    (["--out-dir", "{out}"], "no slides given|Missing argument"),
    (["{s0}", "{s1}", "-o", "{tmp}/x.h5ad"], "-o writes one output, but 2 inputs"),
    (["{s0}"], "no output given"),
    (["{s0}", "-o", "{tmp}/x.h5ad", "--ray"], "--ray runs a cohort"),
    (["{s0}", "--out-dir", "{out}", "--plot", "G0"], "--plot does not go with --out-dir"),
    (["{s0}", "--out-dir", "{s1}"], "is a file"),
    (["{tmp}/missing.svs", "--out-dir", "{out}"], "not found"),
    (["{s0}", "--out-dir", "{out}", "--workers", "0"], "--workers"),
    (["{s0}", "--out-dir", "{out}", "--gpus-per-worker", "-1"], "--gpus-per-worker"),
    (["{s0}", "--out-dir", "{out}", "--ray", "not an address!"], "not found|the ray package"),
])
def test_cli_bad_input_exits_2_with_one_line(model, slides, tmp_path, args, match):
    fill = {"out": tmp_path / "out", "s0": slides[0], "s1": slides[1], "tmp": tmp_path}
    res = cli("predict", model, *[a.format(**fill) for a in args])
    assert res.exit_code == 2, res.output
    import re

    assert re.search(match, res.output), res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.h5ad").exists()


def test_ray_missing_names_the_extra(model, slides, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    res = cli("predict", model, slides[0], "--out-dir", tmp_path / "out", "--ray")
    assert res.exit_code == 2 and 'pip install "histosge[ray]"' in res.output
    assert res.output.count("\n") <= 2 and not (tmp_path / "out").exists()


def test_ray_takes_an_optional_address():
    assert ray_option_value(["p", "m", "s", "--ray"]) == ["p", "m", "s", "--ray="]
    assert ray_option_value(["p", "--ray", "--out-dir", "o"]) == ["p", "--ray=", "--out-dir", "o"]
    assert ray_option_value(["p", "--ray", "slides/", "m"]) == ["p", "--ray=", "slides/", "m"]
    assert ray_option_value(["p", "--ray", "10.0.0.1:6379", "s"]) == ["p", "--ray", "10.0.0.1:6379", "s"]
    assert ray_option_value(["p", "--ray", "ray://head:10001"]) == ["p", "--ray", "ray://head:10001"]
    assert ray_option_value(["p", "--ray", "auto"]) == ["p", "--ray", "auto"]


def test_an_interrupted_run_resumes_without_redoing_finished_slides(model, slides, tmp_path):
    """SIGTERM to `histosge predict ... --out-dir` after its first slide: exit 130, the finished
    slide kept and recorded; the rerun skips it and does the rest; outputs equal an uninterrupted run."""
    more = synthetic_slides(tmp_path / "slides", model, n=5, size=(900, 720))
    out, ref = tmp_path / "out", tmp_path / "ref"
    cache = tmp_path / "cache"
    _run(model, [tmp_path / "slides"], ref, lossless=True, cache_dir=str(tmp_path / "ref-cache"))
    cmd = [sys.executable, "-c", "from histosge.cli import main; main()", "predict", str(model),
           str(tmp_path / "slides"), "--out-dir", str(out), "--lossless", "--cache-dir", str(cache), "--quiet"]
    env = {**os.environ, "HISTOSGE_PROGRESS_INTERVAL": "3600"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    records = out / ".histosge" / "records"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if records.is_dir() and any('"status": "done"' in p.read_text() for p in records.glob("*.json")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "slides finished so far are kept" in stderr
    table = read_manifest(out).set_index("slide")
    finished = sorted(table.index[table["status"] == "done"])
    assert 1 <= len(finished) < len(more)
    assert not list(out.glob(".*.part"))  # no half-written output left under any name
    stamps = {s: (out / f"{s}.h5ad").stat().st_mtime_ns for s in finished}
    res = _run(model, [tmp_path / "slides"], out, lossless=True, cache_dir=str(cache))
    assert sorted(s for s, o in res.outcomes.items() if o == "skipped") == finished
    assert all(o in ("skipped", "computed") for o in res.outcomes.values())
    assert {s: (out / f"{s}.h5ad").stat().st_mtime_ns for s in finished} == stamps
    for s in res.slides:
        same_output(out / f"{s}.h5ad", ref / f"{s}.h5ad")


def test_scripts_can_read_the_manifest(model, slides, tmp_path):
    _run(model, [slides[0]], tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert table.loc[0, "status"] == "done" and table.loc[0, "output"] == "slide0.h5ad"
    script = textwrap.dedent(f"""
        import pandas as pd
        t = pd.read_csv({str(tmp_path / 'out' / 'manifest.csv')!r})
        print(int(t['spots'].sum()))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert int(res.stdout) == int(table["spots"].sum())


def test_which_ray_a_run_joins(monkeypatch):
    from histosge.cohort.on_ray import _address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert _address(True) is None and _address("") is None  # a new local instance
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert _address(True) == "ray://head:10001"  # honoured when no address is given
    assert _address("local") is None  # --ray local: a local instance even then
    assert _address("10.1.2.3:6379") == "10.1.2.3:6379" and _address("auto") == "auto"
    with pytest.raises(InputError, match="not a Ray address"):
        _address("head node")


def test_predictions_do_not_depend_on_the_blas_thread_count(model, slides, tmp_path, monkeypatch):
    """Ray workers run with one BLAS thread, the local run with one per core: OpenBLAS sums in
    another order with another thread count, so the model predicts with one thread everywhere
    (measured: 6 of 837,000 rounded values of a 1000-gene model differed before)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from histosge.model import HisToSGE

    m = HisToSGE.load(model)
    seen = []
    method = type(m.method_)  # the fitted method's class, whose prediction the model calls
    original = method.predict_novelty

    def spy(self, *a, **k):
        seen.append([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"])
        return original(self, *a, **k)

    monkeypatch.setattr(method, "predict_novelty", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        a = tasks.predict(m, slides[0], cache_dir=str(tmp_path / "cache"), progress=False)
    with threadpool_limits(limits=1, user_api="blas"):
        b = tasks.predict(m, slides[0], cache_dir=str(tmp_path / "cache"), progress=False)
    assert seen and all(n == [1] * len(n) for n in seen)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.obs["novelty"], b.obs["novelty"])
