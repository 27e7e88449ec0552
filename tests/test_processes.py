"""Encoding leaves no process behind: he-stats has no worker processes (a script without a
``__main__`` guard runs once), and patch-reading workers die with their parent, even on kill -9."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids += [int(entry), *_children(int(entry))]
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # zombies are gone, only unreaped
    except OSError:
        return False


ENCODE = """
import sys, numpy as np
from histosge import encode
from histosge.read.image import ImageSource
rng = np.random.default_rng(0)
img = rng.integers(0, 255, (3000, 3000, 3), dtype=np.uint8)
xy = rng.uniform(50, 2950, (200000, 2))
print("start", flush=True)
encode.extract(ImageSource(img), xy, 1.0, 60.0, encoder="he-stats", batch_size=16, cache_dir=False,
               progress=False, num_workers=int(sys.argv[1]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_mid_encoding_leaves_no_process(tmp_path, workers):
    script = tmp_path / "encode.py"
    script.write_text(ENCODE)
    proc = subprocess.Popen([sys.executable, str(script), str(workers)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "start", proc.stderr.read()
        deadline = time.time() + 120
        kids: list[int] = []
        while time.time() < deadline:  # mid-encoding: the workers (if any) are up and busy
            kids = _children(proc.pid)
            if len(kids) >= workers:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        time.sleep(2.0)
        kids = _children(proc.pid)
        assert proc.poll() is None
        if workers == 0:
            assert kids == []  # threads only: nothing to outlive the run
        else:
            assert len(kids) >= workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone_by = time.time() + 5
        while time.time() < gone_by and any(_alive(k) for k in kids):
            time.sleep(0.1)
        assert not [k for k in kids if _alive(k)], "workers outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _readme_snippet() -> str:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    snippet = next(b for b in blocks if "histosge.read_section" in b and "superres" in b)
    return snippet


def test_readme_snippet_saved_as_a_script_runs_once(data_dir, tmp_path):
    """The README's Python example, saved as a file with no ``if __name__ == "__main__":`` guard
    (issue 15): its top-level code must run once, not once per worker process."""
    snippet = _readme_snippet()
    assert "__main__" not in snippet
    snippet = snippet.replace('"dlpfc:151673"', '"her2st:C2"')  # a small real section
    snippet = re.sub(r'color="[^"]+"', "color=hd.var_names[0]", snippet)  # a gene C2 has
    snippet = re.sub(r'img_key="[^"]+",\s*', "", snippet)  # its one image (legacy ST: no lowres)
    counter = tmp_path / "runs.txt"
    script = tmp_path / "readme_example.py"
    script.write_text(textwrap.dedent(f"""
        with open({str(counter)!r}, "a") as _fh:
            _fh.write("run\\n")
        import matplotlib
        matplotlib.use("Agg")
    """) + snippet)
    env = {**os.environ, "HISTOSGE_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg",
           "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert counter.read_text().splitlines() == ["run"]
