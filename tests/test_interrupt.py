"""Interrupted runs leave nothing half-written, and a rerun reuses the feature cache."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _chunks(cache: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in cache.rglob("*") if p.is_file()}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_training_then_rerun_reuses_cache(data_dir, tmp_path, sig):
    out = tmp_path / "rec.h5ad"
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "histosge.cli", "recover", "her2st:C2", "--data-dir", str(data_dir), "-o", str(out),
           "--cache-dir", str(cache), "--n-top-genes", "100"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    # A shell that starts jobs in the background hands them SIGINT ignored, and Python then never
    # raises KeyboardInterrupt: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen(cmd + ["--method", "histosge-paper", "--epochs", "100000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not any(p.suffix == ".npy" for p in cache.rglob("*")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    time.sleep(3)  # now in training
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    before = _chunks(cache)
    assert before

    res = subprocess.run(cmd + ["--epochs", "2", "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert out.exists()
    assert _chunks(cache) == before, "the rerun recomputed cached features"
