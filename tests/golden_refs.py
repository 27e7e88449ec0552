"""Golden references per CPU family, for the tests that pin numbers (tests/golden/).

torch's and BLAS's kernels round the last bits differently on different CPUs (AVX2, AVX-512,
AVX-512 with AMX ...), and a network trained for a few epochs carries a last-bit difference far
(up to 0.8 after 15 epochs). So a golden is a set of references: ``<name>.npz``, made by the
reference commit on the CPU it was first made on, plus ``<name>.<tag>.npz`` files holding the
outputs the *same reference commit* gives on other CPUs. A result passes when it matches one of
them, as strictly as the test asks: on every CPU family with a reference, the test is exactly as
strict as before; on a new family it fails until someone records that family's reference.

Recording (only ever with the reference commit's code, never with the code under test)::

    git worktree add /tmp/ref <reference commit>; cp tests/golden_refs.py tests/test_*_golden.py /tmp/ref/tests/
    cd /tmp/ref && HISTOSGE_GOLDEN_RECORD=<tag> PYTHONPATH=/tmp/ref/src python -m pytest tests/test_*_golden.py
    cp /tmp/ref/tests/golden/*.<tag>.npz <repo>/tests/golden/

The tag names the CPU (``cpu_tag()``: vendor, AVX-512 / AMX flags); the file also records the
commit and the CPU's model name.
"""

from __future__ import annotations

import atexit
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

_RECORD = os.environ.get("HISTOSGE_GOLDEN_RECORD")
_recorded: dict[Path, dict[str, np.ndarray]] = {}


def cpu_tag() -> str:
    """A short name for the CPU family's rounding: vendor plus the vector extensions kernels pick."""
    flags, vendor = set(), platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
    except OSError:
        pass
    isa = "amx" if "amx_tile" in flags else "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "base"
    return f"{'intel' if 'Intel' in vendor else 'amd' if 'AMD' in vendor else vendor.lower()}-{isa}"


def references(path: Path) -> list[dict[str, np.ndarray]]:
    """The golden ``path`` and every CPU family's alternate of it (``<stem>.<tag>.npz``)."""
    out = []
    for p in [path, *sorted(path.parent.glob(f"{path.stem}.*.npz"))]:
        with np.load(p, allow_pickle=False) as z:
            out.append({k: z[k] for k in z.files})
    return out


def check(got, path: Path, refs: list[dict[str, np.ndarray]], key: str, *, atol: float = 0.0) -> None:
    """``got`` equals reference ``key`` of one CPU family's golden (bit for bit, or within ``atol``).
    In recording mode it is recorded instead."""
    got = np.asarray(got)
    if _RECORD:
        _recorded.setdefault(path, {})[key] = got.copy()
        return
    diffs = []
    for ref in refs:
        if key not in ref:
            continue
        want = ref[key]
        if got.shape != want.shape:
            diffs.append(f"shape {got.shape} vs {want.shape}")
            continue
        diff = float(np.abs(got.astype(np.float64) - want).max()) if got.size else 0.0
        if (np.array_equal(got, want) and got.dtype == want.dtype) or (atol and diff <= atol):
            return
        diffs.append(f"{str(ref.get('cpu', 'first'))}: max abs difference {diff:.3g}")
    raise AssertionError(f"{key}: matches no reference ({'; '.join(diffs)}); this CPU is {cpu_tag()}")


def _flush() -> None:
    if not _RECORD:
        return
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    for path, arrays in _recorded.items():
        out = path.with_name(f"{path.stem}.{_RECORD}.npz")
        np.savez_compressed(out, cpu=np.array(f"{_RECORD} ({model}; reference commit {commit})"), **arrays)


atexit.register(_flush)
