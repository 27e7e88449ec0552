"""Output paths are checked before any work and written atomically; no input is ever destroyed."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from histosge._atomic import (
    atomic_path,
    check_output,
    current_umask,
    remove_stale_parts,
    write_output,
)
from histosge.errors import OutputError
from histosge.read.resolve import input_paths


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _small() -> ad.AnnData:
    return ad.AnnData(X=np.arange(12, dtype=np.float32).reshape(4, 3))


@pytest.fixture
def section(make_spaceranger):
    return make_spaceranger()


def test_output_is_the_input_h5ad(tmp_path):
    inp = tmp_path / "in.h5ad"
    _small().write_h5ad(inp)
    before = _digest(inp)
    with pytest.raises(OutputError, match="the output is the input"):
        check_output(inp, inputs=[inp])
    link = tmp_path / "link.h5ad"
    link.symlink_to(inp)
    with pytest.raises(OutputError, match="the output is the input"):
        check_output(link, inputs=[inp])
    hard = tmp_path / "hard.h5ad"
    os.link(inp, hard)
    with pytest.raises(OutputError, match="the output is the input"):
        check_output(hard, inputs=[inp])
    assert _digest(inp) == before


def test_output_inside_the_space_ranger_folder(section):
    h5 = section / "filtered_feature_bc_matrix.h5"
    before = _digest(h5)
    inputs = input_paths(str(section))
    assert section in inputs
    with pytest.raises(OutputError, match="inside the input folder"):
        check_output(h5, inputs=inputs)
    # the counts file named as the source: its folder is an input too
    with pytest.raises(OutputError, match="the output is the input"):
        check_output(h5, inputs=input_paths(str(h5)))
    # a hard link to the counts file, outside the folder, is the same inode
    hard = section.parent / "copy.h5ad"
    os.link(h5, hard)
    with pytest.raises(OutputError, match="hard link"):
        check_output(hard, inputs=inputs)
    # a new file in the input folder destroys nothing and is allowed
    assert check_output(section / "new.h5ad", inputs=inputs) == section / "new.h5ad"
    assert _digest(h5) == before


def test_dataset_names_resolve_to_their_folders(data_dir):
    assert input_paths("her2st:C2", data_dir=data_dir) == [data_dir / "her2st"]
    assert input_paths("dlpfc:151673", data_dir=data_dir) == [data_dir / "dlpfc" / "151673"]


def test_device_node_folder_and_file_parent(tmp_path):
    with pytest.raises(OutputError, match="device"):
        check_output("/dev/null", suffixes=None)
    link = tmp_path / "null.h5ad"
    link.symlink_to("/dev/null")
    with pytest.raises(OutputError, match="device"):
        check_output(link)
    fifo = tmp_path / "pipe.h5ad"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        check_output(fifo)
    folder = tmp_path / "dir.h5ad"
    folder.mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_output(folder)
    afile = tmp_path / "plain"
    afile.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output(afile / "x.h5ad")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output(afile / "deeper" / "x.h5ad")
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "missing" / "x.h5ad")
    assert afile.read_text() == "x" and stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("name", ["x.txt", "x", "x.h5", "x.csv"])
def test_suffix_must_be_h5ad_or_zarr(tmp_path, name):
    with pytest.raises(OutputError, match=r"must end in \.h5ad or \.zarr"):
        check_output(tmp_path / name)


def test_zarr_is_a_real_zarr_store(tmp_path):
    a = _small()
    out = write_output(a, tmp_path / "x.zarr")
    assert out.is_dir() and any((out / f).exists() for f in (".zgroup", "zarr.json"))
    np.testing.assert_array_equal(ad.read_zarr(out).X, a.X)
    b = _small()
    b.X += 1
    write_output(b, out)  # replaces the old store
    np.testing.assert_array_equal(ad.read_zarr(out).X, b.X)
    assert [p.name for p in tmp_path.iterdir()] == ["x.zarr"]
    other = tmp_path / "other.zarr"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a zarr store"):
        check_output(other)
    with pytest.raises(OutputError, match="regular file has this name"):
        (tmp_path / "f.zarr").write_text("x")
        check_output(tmp_path / "f.zarr")


def test_folder_outputs_such_as_a_saved_model(tmp_path):
    """``folder_marker``: a folder output may replace only an empty folder or an earlier one of its kind."""
    model = tmp_path / "model"
    assert check_output(model, suffixes=None, folder_marker="model.json") == model
    model.mkdir()
    check_output(model, suffixes=None, folder_marker="model.json")  # empty: fine
    (model / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds other files"):
        check_output(model, suffixes=None, folder_marker="model.json")
    (model / "model.json").write_text("{}")
    check_output(model, suffixes=None, folder_marker="model.json")  # an earlier model
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="regular file has this name"):
        check_output(tmp_path / "file", suffixes=None, folder_marker="model.json")
    with atomic_path(model, folder=True) as tmp:
        (tmp / "model.json").write_text('{"new": 1}')
    assert sorted(p.name for p in model.iterdir()) == ["model.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "model"]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_outputs_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        h5 = write_output(_small(), tmp_path / "x.h5ad")
        zr = write_output(_small(), tmp_path / "x.zarr")
    finally:
        os.umask(old)
    assert stat.S_IMODE(h5.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(zr.stat().st_mode) == 0o777 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_a_writer_that_replaces_its_file_still_follows_the_umask(tmp_path, mask):
    """safetensors (model files) replaces the file it is given with a 0600 one."""
    from safetensors.numpy import save_file

    old = os.umask(mask)
    try:
        with atomic_path(tmp_path / "m.histosge") as tmp:
            save_file({"a": np.zeros(3)}, str(tmp))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.histosge").stat().st_mode) == 0o666 & ~mask


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_parts_of_a_killed_run_are_removed(tmp_path):
    from histosge._atomic import _HOST

    out = tmp_path / "x.h5ad"
    stale = tmp_path / f".x.h5ad.{_HOST}-{_dead_pid()}-abcd1234.part"
    stale.write_bytes(b"half" * 1000)
    stale_dir = tmp_path / f".x.h5ad.{_HOST}-{_dead_pid()}-00000000.part"
    stale_dir.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        busy = tmp_path / f".x.h5ad.{_HOST}-{live.pid}-ffff0000.part"  # another run still writing
        busy.write_bytes(b"x")
        other = tmp_path / f".y.h5ad.{_HOST}-{_dead_pid()}-abcd1234.part"  # another output's
        other.write_bytes(b"x")
        check_output(out)
        assert not stale.exists() and not stale_dir.exists()
        assert busy.exists() and other.exists()
    finally:
        live.kill()
        live.wait()
    assert remove_stale_parts(out) == [busy]


def test_kill_9_leaves_a_part_that_the_next_run_removes(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, anndata as ad, numpy as np
        from histosge._atomic import atomic_path
        with atomic_path({str(tmp_path / 'x.h5ad')!r}) as tmp:
            tmp.write_bytes(b"half-written")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL
    parts = list(tmp_path.glob(".x.h5ad.*.part"))
    assert len(parts) == 1 and not (tmp_path / "x.h5ad").exists()
    write_output(_small(), tmp_path / "x.h5ad")
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5ad"]


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def full(self, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", full)
    with pytest.raises(OutputError, match="no space left") as err:
        write_output(_small(), tmp_path / "x.h5ad")
    assert "\n" not in err.value.message and err.value.fix
    assert list(tmp_path.iterdir()) == []


def test_file_size_limit_is_a_full_disk(tmp_path):
    """A real write failure (RLIMIT_FSIZE makes writes fail with EFBIG) in a child process."""
    script = textwrap.dedent(f"""
        import resource, signal, sys, numpy as np, anndata as ad
        from histosge._atomic import write_output
        from histosge.errors import OutputError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        a = ad.AnnData(X=np.random.default_rng(0).random((400, 500)).astype(np.float32))
        try:
            write_output(a, {str(tmp_path / 'big.h5ad')!r})
        except OutputError as e:
            print(e.message)
            sys.exit(2)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "no space left" in res.stdout and res.stdout.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_interrupt_inside_the_writer_removes_the_temporary(tmp_path, monkeypatch):
    def interrupted(self, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ad.AnnData, "write_h5ad", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_output(_small(), tmp_path / "x.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_an_existing_output_on_failure(tmp_path):
    out = tmp_path / "r.json"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError("boom")
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


KINDS = ("none", "file", "dir", "input-symlink", "input-hardlink", "device-symlink", "fifo", "parent-is-file")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), suffix=st.sampled_from([".h5ad", ".zarr", ".h5", ".txt", ""]),
       name=st.text(alphabet="abcXYZ_-", min_size=1, max_size=8))
def test_no_output_path_destroys_an_input(tmp_path, kind, suffix, name):
    """Whatever the output path is, check_output + write_output either refuse it or write it,
    and the input is unchanged afterwards."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        inp = root / "input.h5ad"
        _small().write_h5ad(inp)
        before = _digest(inp)
        out = root / f"{name}{suffix}"
        if kind == "file":
            out.write_text("old")
        elif kind == "dir":
            out.mkdir()
        elif kind == "input-symlink":
            out.symlink_to(inp)
        elif kind == "input-hardlink":
            os.link(inp, out)
        elif kind == "device-symlink":
            out.symlink_to("/dev/null")
        elif kind == "fifo":
            os.mkfifo(out)
        elif kind == "parent-is-file":
            out.write_text("old")
            out = out / "x.h5ad"
        try:
            path = check_output(out, inputs=[inp])
        except OutputError as err:
            assert err.where and err.fix and "\n" not in err.message
        else:
            assert kind in ("none", "file") and suffix in (".h5ad", ".zarr")
            write_output(_small(), path)
            assert path.exists()
        assert _digest(inp) == before
        assert not list(root.glob(".*.part"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
