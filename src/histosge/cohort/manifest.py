"""The output folder of a cohort run: one record per slide, the manifest, and what ties them to a model.

Layout of ``OUT``::

    OUT/<slide>.h5ad               one output per slide, written atomically
    OUT/manifest.csv               one row per slide (COLUMNS), rewritten atomically
    OUT/.histosge/cohort.json      the model (SHA-256) and settings every output here was made with
    OUT/.histosge/records/<slide>.json   the record of each slide, written by whoever handled it
    OUT/.histosge/lock             held while a run writes here

The per-slide records are the truth; ``manifest.csv`` is their table, rewritten by the run
every few seconds and at its end. A worker writes its slide's record (atomically) right after
publishing the output, so a run killed at any moment leaves records that match the outputs:
the next run skips what was finished and does the rest.

One folder holds the outputs of one model with one set of settings. A rerun with another model
file (a different SHA-256), or with other spot settings, is refused before any work: their
outputs would otherwise sit in one manifest side by side.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import time
from pathlib import Path

from .._atomic import write_bytes
from ..errors import OutputError

MANIFEST = "manifest.csv"
STATE = ".histosge"
#: Columns of manifest.csv, in order.
COLUMNS = ("slide", "status", "spots", "seconds", "peak_memory_mb", "error", "model_sha256", "output", "output_bytes",
           "slide_sha256", "slide_bytes", "path", "settings", "worker", "finished")
#: A record's status: finished, failed (``error`` says why), or being handled (or interrupted).
STATUSES = ("done", "failed", "running")
FORMAT = "histosge-cohort/1"


def record_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / STATE / "records" / f"{name}.json"


def write_record(out_dir: Path, record: dict) -> None:
    """Write one slide's record atomically (by the process that handled the slide)."""
    write_bytes(record_path(out_dir, record["slide"]), json.dumps(record, sort_keys=True).encode())


def read_records(out_dir: Path) -> dict[str, dict]:
    """Every record in ``out_dir``, by slide name (unreadable ones are skipped: redone)."""
    folder = Path(out_dir) / STATE / "records"
    out: dict[str, dict] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            rec = json.loads(p.read_text())
            if isinstance(rec, dict) and rec.get("slide") == p.stem and rec.get("status") in STATUSES:
                out[rec["slide"]] = rec
    return out


def manifest_rows(records: dict[str, dict], *, running: str = "interrupted") -> list[dict]:
    """Rows of the manifest, sorted by slide; a record still ``running`` when the run ended
    shows as ``running`` (``interrupted`` after the run)."""
    rows = []
    for name in sorted(records):
        rec = records[name]
        row = {c: rec.get(c, "") for c in COLUMNS}
        if row["status"] == "running":
            row["status"] = running
        row["error"] = " ".join(str(row["error"] or "").split())  # one line, always
        rows.append({k: ("" if v is None else v) for k, v in row.items()})
    return rows


def write_manifest(out_dir: Path, records: dict[str, dict], *, running: str = "interrupted") -> Path:
    """Rewrite ``OUT/manifest.csv`` from the records, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(manifest_rows(records, running=running))
    path = Path(out_dir) / MANIFEST
    write_bytes(path, buf.getvalue().encode())
    return path


def read_manifest(out_dir: str | os.PathLike):
    """``OUT/manifest.csv`` as a pandas DataFrame (one row per slide)."""
    import pandas as pd

    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        from ..errors import InputError

        raise InputError("no manifest here", where=str(path), fix="give the --out-dir of a cohort run")
    return pd.read_csv(path, keep_default_na=False, dtype={"error": str, "slide": str})


def check_no_input_overwritten(out_dir: str | os.PathLike, slides, inputs) -> None:
    """Refuse, before anything is written, an output folder where an output would replace an input:
    ``manifest.csv``, a slide's ``<name>.h5ad`` or anything under ``.histosge/`` that is a slide,
    a slide list or the model (``inputs``), whatever its name. Paths are compared resolved (links
    followed) and without case (a case-insensitive file system would make them one file)."""
    out = Path(out_dir).expanduser().resolve()
    outputs = {_key(out / MANIFEST): MANIFEST} | {_key(out / f"{s.name}.h5ad"): f"{s.name}.h5ad" for s in slides}
    state = _key(out / STATE)
    for what, path in [*(("the slide", s.path) for s in slides), *(("the input", p) for p in inputs)]:
        key = _key(Path(path).expanduser().resolve())
        clash = outputs.get(key) or (f"{STATE}/..." if key == state or key.startswith(state + os.sep) else None)
        if clash:
            raise OutputError(f"the output {clash} would replace {what} {path}", where=str(out),
                              fix="choose another --out-dir (outputs never replace an input)")


def _key(path: Path) -> str:
    return os.path.normcase(str(path)).lower()


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The output folder, created if absent, or one ``OutputError`` before any work: a file in
    its place, a folder that cannot be created or written."""
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError("--out-dir is a file, not a folder", where=str(path),
                          fix="give a folder (it is created if it does not exist)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / STATE / "records").mkdir(parents=True, exist_ok=True)
        probe = path / STATE / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"cannot write in the output folder ({err.strerror or err})", where=str(path),
                          fix="choose another --out-dir, or make this one writable") from None
    return path


class Lock:
    """``OUT/.histosge/lock``, held (``fcntl.flock``) while a run writes in ``OUT``: a second run on
    the same folder is refused instead of racing the first."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / STATE / "lock"
        self._fh = None

    def __enter__(self) -> Lock:
        import fcntl

        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the run
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise OutputError(f"another histosge run is writing in this folder ({holder})",
                              where=str(self.path.parent.parent),
                              fix="wait for it to end, or choose another --out-dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            import fcntl

            with contextlib.suppress(OSError):
                self._fh.seek(0)
                self._fh.truncate()
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _short(sha: str) -> str:
    return str(sha)[:12]


def bind(out_dir: Path, *, model_sha256: str, model_path: str, settings: dict, records: dict[str, dict]) -> dict:
    """Tie ``out_dir`` to this model and these settings, or refuse: a folder whose outputs were made
    by another model file, or with other settings, is never mixed with new ones. Returns the
    binding (``cohort.json``), written on first use."""
    path = Path(out_dir) / STATE / "cohort.json"
    bound = None
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            bound = json.loads(path.read_text())
    others = sorted({r.get("model_sha256") for r in records.values() if r.get("model_sha256")} - {model_sha256})
    old_sha = (bound or {}).get("model_sha256") or (others[0] if others else None)
    if old_sha and old_sha != model_sha256:
        old_path = (bound or {}).get("model_path", "an earlier model")
        raise OutputError(
            f"the outputs here were made by model {_short(old_sha)} ({old_path}); {model_path} is "
            f"{_short(model_sha256)}: the model file changed between runs", where=str(out_dir),
            fix="predict into a new --out-dir (outputs of two models are never mixed in one manifest)")
    if bound and bound.get("settings") != settings:
        old = bound.get("settings") or {}
        diff = ", ".join(f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(old) | set(settings))
                         if old.get(k) != settings.get(k))
        raise OutputError(f"the outputs here were made with other settings ({diff})", where=str(out_dir),
                          fix="rerun with the same options, or predict into a new --out-dir")
    binding = bound or {"format": FORMAT, "model_sha256": model_sha256, "model_path": model_path,
                        "settings": settings, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if bound is None:
        write_bytes(path, json.dumps(binding, indent=1, sort_keys=True).encode())
    return binding
