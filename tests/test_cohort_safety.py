"""Cohorts that must not go wrong quietly (issue 27): no output replaces an input, a resume compares
the slide's bytes, a full disk ends the run in one line, a model that cannot predict slides and an
unreachable or malformed Ray address are refused before anything is written."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import time
import warnings

import anndata as ad
import numpy as np
import pytest
from cohort_fixtures import model_file, synthetic_slides, tissue, write_ome
from typer.testing import CliRunner

from histosge.cli import app, ray_option_value
from histosge.cohort import predict_cohort, read_manifest
from histosge.errors import InputError, OutputError


def cli(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def model(make_legacy_st, tmp_path_factory):
    return model_file(make_legacy_st, tmp_path_factory)


@pytest.fixture
def slides(model, tmp_path):
    return synthetic_slides(tmp_path / "slides", model, n=2)


def _run(model, inputs, out, **kw):
    kw.setdefault("cache_dir", str(out.parent / "cache"))
    return predict_cohort(model, inputs, out, progress=False, **kw)


def test_the_out_dir_never_replaces_an_input(model, slides, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    listed = out / "manifest.csv"  # the user's slide list, where the manifest would go
    listed.write_text("path\n" + "\n".join(str(s) for s in slides) + "\n")
    my_model = out / "slide0.h5ad"  # the model, named like an output
    shutil.copyfile(model, my_model)
    hidden = out / ".histosge" / "list.txt"
    hidden.parent.mkdir()
    hidden.write_text(f"{slides[0]}\n")
    cases = [(model, [listed], "manifest.csv would replace the input"),
             (my_model, [slides[0]], "slide0.h5ad would replace the input"),
             (model, [hidden], "would replace the input")]
    before = {p: p.read_bytes() for p in (listed, my_model, hidden)}
    for m, inputs, match in cases:
        with pytest.raises(OutputError, match=match) as err:
            _run(m, inputs, out)
        assert "\n" not in err.value.message and "another --out-dir" in err.value.fix
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in out.rglob("*")) == [".histosge", "list.txt", "manifest.csv", "slide0.h5ad"]
    res = cli("predict", model, listed, "--out-dir", out)  # the reported command line
    assert res.exit_code == 2 and "would replace the input" in res.output and listed.read_bytes() == before[listed]


def test_an_out_dir_that_is_a_link_to_the_slides_folder_is_that_folder(model, slides, tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "slides")
    (tmp_path / "slides" / "manifest.csv").write_text(f"path\n{slides[0]}\n")
    with pytest.raises(OutputError, match="manifest.csv would replace the input"):
        _run(model, [tmp_path / "slides" / "manifest.csv"], tmp_path / "out")
    # a link named like an output is replaced by the output (written atomically), never written through
    out = tmp_path / "out2"
    out.mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text(f"{slides[0]}\n")
    (out / "manifest.csv").symlink_to(lst)
    _run(model, [lst], out)
    assert lst.read_text() == f"{slides[0]}\n" and not (out / "manifest.csv").is_symlink()


def test_a_slide_rewritten_with_the_same_size_and_time_is_predicted_again(model, slides, tmp_path):
    out = tmp_path / "out"
    first = _run(model, slides, out, lossless=True)
    assert set(first.outcomes.values()) == {"computed"}
    st = slides[1].stat()
    img = tissue(600, 480, seed=99)  # another tissue, the same dimensions: the same file size
    write_ome(slides[1], img, 1.0 / 1.0 * _mpp(slides[0]))
    assert slides[1].stat().st_size == st.st_size
    os.utime(slides[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert slides[1].stat().st_mtime_ns == st.st_mtime_ns
    res = _run(model, slides, out, lossless=True)
    assert res.outcomes == {"slide0": "skipped", "slide1": "computed"}
    fresh = _run(model, [slides[1]], tmp_path / "fresh", lossless=True)
    assert fresh.outcomes == {"slide1": "computed"}
    a, b = ad.read_h5ad(out / "slide1.h5ad"), ad.read_h5ad(tmp_path / "fresh" / "slide1.h5ad")
    assert np.array_equal(a.X, b.X)


def _mpp(path):
    from histosge.read.image import ImageSource

    src = ImageSource(path)
    try:
        return src.mpp
    finally:
        src.close()


@pytest.mark.parametrize("records_fail", [True, False], ids=["records fail too", "room for records"])
def test_a_full_disk_ends_the_run_in_one_line_and_the_rerun_resumes(model, slides, tmp_path, monkeypatch,
                                                                    records_fail):
    import histosge._atomic as atomic
    from histosge.cohort import manifest

    out = tmp_path / "out"
    _run(model, [slides[0]], out)
    full = {"now": False}
    real_output, real_write = atomic.write_output, manifest.write_bytes

    def write_output(adata, path, **k):  # the disk fills while the output is written
        full["now"] = True
        with atomic.atomic_path(path):
            raise OSError(errno.ENOSPC, "No space left on device")

    def write_atomic(path, data):
        if full["now"] and records_fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(atomic, "write_output", write_output)
    monkeypatch.setattr(manifest, "write_bytes", write_atomic)
    with pytest.raises(OutputError, match="no space left on the device while handling slide slide1") as err:
        _run(model, slides, out)
    assert "\n" not in err.value.message and "rerun the same command" in err.value.fix
    res = cli("predict", model, *slides, "--out-dir", out, "--cache-dir", tmp_path / "cache", "--quiet")
    assert res.exit_code == 2 and "no space left" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    full["now"] = False
    monkeypatch.setattr(atomic, "write_output", real_output)
    res = _run(model, slides, out)
    assert res.outcomes == {"slide0": "skipped", "slide1": "computed"}
    table = read_manifest(out)
    assert list(table["status"]) == ["done", "done"]


def test_a_neighbours_mode_model_is_named_as_what_a_cohort_cannot_use(two_section_neighbours_model, slides,
                                                                      tmp_path):
    with pytest.raises(InputError, match="a neighbours-mode model predicts only a section with measured spots") \
            as err:
        _run(two_section_neighbours_model, slides, tmp_path / "out")
    assert str(two_section_neighbours_model) in err.value.message and "image alone" not in err.value.message
    assert "--mode image" in err.value.fix and not (tmp_path / "out").exists()


@pytest.fixture
def two_section_neighbours_model(make_legacy_st, tmp_path):
    import histosge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = histosge.read_section("her2st:A1", data_dir=make_legacy_st("A1", seed=0).parent)
    model = histosge.HisToSGE("neighbours", n_top_genes=6, network={"epochs": 2, "dim": 32, "mlp_dim": 32})
    model.fit(a, cache_dir=str(tmp_path / "c"), progress=False)
    model.save(tmp_path / "nb.histosge")
    return tmp_path / "nb.histosge"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_fails_within_seconds_in_one_line(model, slides, tmp_path):
    port = _closed_port()
    t0 = time.monotonic()
    res = cli("predict", model, *slides, "--out-dir", tmp_path / "out", "--ray", f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30
    assert res.exit_code == 2 and f"nothing answers at 127.0.0.1:{port}" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="nothing answers"):
        _run(model, slides, tmp_path / "out", ray=f"ray://127.0.0.1:{port}")
    assert not (tmp_path / "out").exists()


def test_a_malformed_ray_address_is_refused_as_an_address_not_read_as_a_slide(model, slides, tmp_path):
    assert ray_option_value(["p", "--ray", "not a host:abc", "s"]) == ["p", "--ray", "not a host:abc", "s"]
    assert ray_option_value(["p", "--ray", str(slides[0])]) == ["p", "--ray=", str(slides[0])]
    res = cli("predict", model, *slides, "--out-dir", tmp_path / "out", "--ray", "not a host:abc")
    assert res.exit_code == 2 and "'not a host:abc' is not a Ray address" in res.output, res.output
    assert "not found" not in res.output and not (tmp_path / "out").exists()
