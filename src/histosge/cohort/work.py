"""One slide of a cohort: the same two steps locally and on Ray, so both give the same output.

``prepare(job, ctx)`` (CPU): fingerprint the slide's bytes, skip it if an identical slide was
already predicted here, else open it, find the tissue and lay the lattice of virtual spots
(``read.slide.read_slide``). ``finish(model, prepared, ctx)``: encode the spots' patches,
predict, write ``OUT/<slide>.h5ad`` atomically, then the slide's record. A slide that cannot be
read or predicted ends as a ``failed`` record with its error line; the run goes on.

Each step measures the peak resident memory of its process while it handled the slide
(``/proc/self/clear_refs`` resets the high-water mark; without it, the process's lifetime peak).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HistosgeError, OutputError
from . import manifest

#: Bytes read at a time while fingerprinting a slide.
HASH_BLOCK = 1 << 22


@dataclass
class Context:
    """What every worker needs besides the model: where outputs go and how slides are predicted."""

    out_dir: str
    model_sha256: str
    settings: dict  # recorded; decides the outputs together with the model and the slide
    pitch_um: float
    spot_diameter_um: float
    mpp: float | None = None
    features: bool = False
    lossless: bool = False
    cache_dir: str | None = None
    batch_size: int = 64
    #: memory each spot's prediction takes (a lattice that cannot fit is refused before it is laid)
    bytes_per_spot: float = 0.0
    #: slide SHA-256 -> name of a finished output here made from identical bytes
    reuse: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    """One slide to handle; ``previous``: its finished record when the driver found it under another
    path or with other bytes (``prepare`` hashes the bytes and skips the slide if they are the
    recorded ones)."""

    name: str
    path: str
    attempt: int = 1
    previous: dict | None = None


@dataclass
class Prepared:
    """A slide read and laid out, waiting for its prediction."""

    record: dict
    slide: object  # AnnData of virtual spots (no expression)
    seconds: float
    peak_mb: float | None


def output_path(out_dir: str | os.PathLike, name: str) -> Path:
    return Path(out_dir) / f"{name}.h5ad"


def _companions(path: Path) -> list[Path]:
    """Files besides ``path`` that hold the slide's pixels (MRXS: the folder of the same name)."""
    if path.suffix.lower() != ".mrxs":
        return []
    folder = path.with_suffix("")
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def fingerprint(path: str | os.PathLike) -> tuple[str, int]:
    """SHA-256 of the slide's bytes (MRXS: with its companion files, by relative name) and their
    total size. Names and times play no part: a renamed or copied slide has the same one."""
    path = Path(path)
    files = [path, *_companions(path)]
    h = hashlib.sha256()
    total = 0
    for i, p in enumerate(files):
        if i:
            h.update(b"\x00" + str(p.relative_to(path.parent)).encode() + b"\x00")
        with open(p, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(HASH_BLOCK), b""):
                h.update(block)
                total += len(block)
    return h.hexdigest(), total


class PeakMemory:
    """Peak resident memory (MB) of this process between ``__enter__`` and ``__exit__``."""

    def __init__(self):
        self.reset = False
        self.peak_mb: float | None = None

    def __enter__(self) -> PeakMemory:
        with contextlib.suppress(OSError):
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current resident size
            self.reset = True
        return self

    def __exit__(self, *exc) -> None:
        self.peak_mb = peak_rss_mb()


def peak_rss_mb() -> float | None:
    """VmHWM of this process (MB), else ``ru_maxrss``."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    with contextlib.suppress(ImportError):
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return None  # pragma: no cover


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _peak(*values: float | None) -> float | str:
    """The largest of the peaks measured (MB), or '' when none was."""
    known = [v for v in values if v is not None]
    return max(known) if known else ""


def _error_line(err: BaseException) -> str:
    if isinstance(err, HistosgeError):
        return err.message
    text = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {text}"[:500]


def disk_full(err: BaseException) -> bool:
    """No space (or quota) left where outputs go, raised as such or as the ``OutputError`` of an
    atomic write: every slide after this one would fail the same way."""
    from .._atomic import _disk_full

    return isinstance(err, Exception) and _disk_full(err)


@contextlib.contextmanager
def stop_when_disk_full(ctx: Context, name: str):
    """A full disk ends the run in one line (not one failed record per slide, which could not be
    written either): the slide being written stays unfinished, so the same command resumes."""
    try:
        yield
    except Exception as err:
        if not disk_full(err):
            raise
        raise OutputError(f"no space left on the device while handling slide {name}; the slides finished so far are "
                          "kept", where=str(ctx.out_dir),
                          fix="free space (or give another --out-dir) and rerun the same command to resume") from None


def new_record(job: Job, ctx: Context) -> dict:
    return {"slide": job.name, "status": "running", "path": job.path, "model_sha256": ctx.model_sha256,
            "settings": json.dumps(ctx.settings, sort_keys=True), "worker": worker_id(), "started": _now(),
            "stage": "reading",
            "attempts": job.attempt, "spots": "", "seconds": "", "peak_memory_mb": "", "error": "", "output": "",
            "output_bytes": "", "slide_sha256": "", "slide_bytes": "", "finished": ""}


def _fail(rec: dict, ctx: Context, err: BaseException | str, seconds: float, peak: float | None) -> dict:
    rec.pop("stage", None)
    rec.update(status="failed", error=err if isinstance(err, str) else _error_line(err), seconds=round(seconds, 2),
               peak_memory_mb=_peak(peak), finished=_now())
    manifest.write_record(Path(ctx.out_dir), rec)
    return rec


def _output_intact(ctx: Context, rec: dict) -> bool:
    out = Path(ctx.out_dir) / str(rec.get("output") or "")
    with contextlib.suppress(OSError, ValueError, TypeError):
        return bool(rec.get("output")) and out.is_file() and out.stat().st_size == int(rec.get("output_bytes"))
    return False


def prepare(job: Job, ctx: Context) -> Prepared | dict:
    """Step 1 (CPU): the slide's virtual spots, or its final record (skipped, reused or failed).

    A returned dict carries ``outcome``: ``skipped`` (the same bytes were predicted here under
    this name), ``reused`` (under another name: that output is copied), ``failed``."""
    with stop_when_disk_full(ctx, job.name):
        return _prepare(job, ctx)


def _prepare(job: Job, ctx: Context) -> Prepared | dict:
    from ..read.slide import read_slide

    t0 = time.perf_counter()
    rec = new_record(job, ctx)
    out_dir = Path(ctx.out_dir)
    manifest.write_record(out_dir, rec)
    with PeakMemory() as mem:
        try:
            sha, size = fingerprint(job.path)
            rec.update(slide_sha256=sha, slide_bytes=size)
            prev = job.previous
            if prev and prev.get("slide_sha256") == sha and _output_intact(ctx, prev):
                done = {**prev, "path": job.path}
                manifest.write_record(out_dir, done)
                return {"outcome": "skipped", "record": done}
            source = ctx.reuse.get(sha)
            if source and source != job.name and output_path(ctx.out_dir, source).is_file():
                return {"outcome": "reused", "record": _copy_output(job, ctx, rec, source, t0)}
            slide = read_slide(job.path, pitch_um=ctx.pitch_um, spot_diameter_um=ctx.spot_diameter_um, mpp=ctx.mpp,
                               bytes_per_spot=ctx.bytes_per_spot)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # noqa: BLE001 - one bad slide must not end the cohort
            if disk_full(err):
                raise
            mem.__exit__()
            return {"outcome": "failed", "record": _fail(rec, ctx, err, time.perf_counter() - t0, mem.peak_mb)}
    return Prepared(record=rec, slide=slide, seconds=time.perf_counter() - t0, peak_mb=mem.peak_mb)


def _copy_output(job: Job, ctx: Context, rec: dict, source: str, t0: float) -> dict:
    """The output of an identical slide under another name, copied to this slide's name."""
    from .._atomic import atomic_path

    src, dst = output_path(ctx.out_dir, source), output_path(ctx.out_dir, job.name)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    prev = manifest.read_records(Path(ctx.out_dir)).get(source, {})
    rec.pop("stage", None)
    rec.update(status="done", spots=prev.get("spots", ""), seconds=round(time.perf_counter() - t0, 2),
               output=dst.name, output_bytes=dst.stat().st_size, error="", reused_from=source, finished=_now())
    manifest.write_record(Path(ctx.out_dir), rec)
    return rec


def finish(model, prep: Prepared, ctx: Context, *, progress: bool = False) -> dict:
    """Step 2: encode, predict and write the slide's output, then its record (returned)."""
    with stop_when_disk_full(ctx, prep.record["slide"]):
        return _finish(model, prep, ctx, progress=progress)


def _finish(model, prep: Prepared, ctx: Context, *, progress: bool) -> dict:
    from .. import keys
    from .._atomic import write_output
    from ..tasks import predict_slide

    rec = prep.record
    rec.update(worker=worker_id(), stage="predicting")  # where the prediction runs
    manifest.write_record(Path(ctx.out_dir), rec)
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        try:
            out = predict_slide(model, prep.slide, rec["path"], ctx.pitch_um, cache_dir=ctx.cache_dir,
                                batch_size=ctx.batch_size, progress=progress)
            info = out.uns[keys.HISTOSGE]
            info["seconds"] = prep.seconds + time.perf_counter() - t0
            info["cohort"] = {"slide": rec["slide"], "slide_sha256": rec["slide_sha256"],
                              "settings": json.dumps(ctx.settings, sort_keys=True)}
            path = output_path(ctx.out_dir, rec["slide"])
            write_output(out, path, features=ctx.features, lossless=ctx.lossless)
            n_spots = int(out.n_obs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # noqa: BLE001 - one bad slide must not end the cohort
            if disk_full(err):
                raise
            mem.__exit__()
            seconds = prep.seconds + time.perf_counter() - t0
            return _fail(rec, ctx, err, seconds, _peak(prep.peak_mb, mem.peak_mb) or None)
    seconds = time.perf_counter() - t0
    rec.pop("stage", None)
    rec.update(status="done", spots=n_spots, seconds=round(prep.seconds + seconds, 2),
               peak_memory_mb=_peak(prep.peak_mb, mem.peak_mb), output=path.name, output_bytes=path.stat().st_size,
               error="", finished=_now(), seconds_read=round(prep.seconds, 2), seconds_predict=round(seconds, 2))
    manifest.write_record(Path(ctx.out_dir), rec)
    return rec
