"""``predict_cohort``: one saved model, many slides, one output each, resumable; locally or on Ray."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import options as _options
from ..errors import InputError, OutputError
from . import manifest
from .slides import resolve_slides
from .work import Context, Job, fingerprint, finish, output_path, prepare

#: The manifest is rewritten at most this often while a run goes on (and always at its end).
MANIFEST_EVERY_S = 5.0
OUTCOMES = ("computed", "skipped", "reused", "failed")


@dataclass
class CohortResult:
    """What a cohort run did, slide by slide (what ``predict_cohort`` returns).

    Attributes
    ----------
    out_dir : Path
        The output folder.
    manifest : Path
        ``out_dir/manifest.csv``.
    slides : list of str
        The slides of this run, by output name.
    outcomes : dict of str to str
        Per slide of this run: ``computed`` (predicted now), ``skipped`` (already done here with
        the same model and bytes), ``reused`` (the output of an identical slide under another
        name, copied) or ``failed`` (``records[name]['error']``).
    records : dict of str to dict
        Each slide's manifest row.
    seconds : float
        Wall time of the run.
    backend : str
        ``"local"`` or ``"ray"``.
    timings : dict
        Ray only: where the time went.
    """

    out_dir: Path
    manifest: Path
    slides: list[str]
    outcomes: dict[str, str]
    records: dict[str, dict]
    seconds: float
    backend: str
    timings: dict = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for v in self.outcomes.values() if v == outcome)

    @property
    def failed(self) -> list[str]:
        return [s for s in self.slides if self.outcomes.get(s) == "failed"]


def _check_options(mpp, pitch_um, batch_size, factor, workers, gpus_per_worker, cpus_per_worker, retries) -> None:
    from ..read.slide import check_mpp

    _options.check("batch_size", batch_size)
    if factor is not None:
        _options.check("factor", factor)
    if mpp is not None:
        check_mpp(mpp, where="--mpp")
    if pitch_um is not None and not (isinstance(pitch_um, (int, float)) and pitch_um > 0):
        raise InputError(f"spot pitch {pitch_um!r} um is not positive", where="--pitch-um", fix="e.g. --pitch-um 100")
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise InputError(f"must be a whole number >= 1, got {workers!r}", where="--workers", fix="e.g. --workers 4")
    for flag, value in (("--gpus-per-worker", gpus_per_worker), ("--cpus-per-worker", cpus_per_worker)):
        if not (isinstance(value, (int, float)) and value >= 0) or value != value:
            raise InputError(f"must be a number >= 0, got {value!r}", where=flag, fix=f"e.g. {flag} 1")
    if not (isinstance(retries, int) and retries >= 0):
        raise InputError(f"must be a whole number >= 0, got {retries!r}", where="--retries", fix="e.g. --retries 1")


class _Reporter:
    """The bar over slides, a line per slide, and the manifest rewritten every few seconds."""

    def __init__(self, total: int, out_dir: Path, records: dict[str, dict], progress: bool):
        from .._progress import _is_terminal
        from .._progress import progress as bar

        self.total, self.out_dir, self.records = total, out_dir, records
        self.progress = progress
        self.terminal = progress and _is_terminal(sys.stderr)
        self.bar = bar(total=total, desc="slides", unit="slide", disable=not progress) if total else None
        self.n = 0
        self._last_manifest = 0.0

    def line(self, text: str) -> None:
        if not self.progress:
            return
        if self.terminal and self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            try:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def result(self, name: str, outcome: str, rec: dict) -> None:
        self.records[name] = rec
        self.n += 1
        head = f"[{self.n}/{self.total}] {name}:"
        if outcome == "failed":
            self.line(f"{head} failed: {rec.get('error')}")
        elif outcome == "skipped":
            self.line(f"{head} already done with this model (skipped)")
        elif outcome == "reused":
            self.line(f"{head} same bytes as {rec.get('reused_from')}: its output copied")
        else:
            peak = f", peak {rec['peak_memory_mb']:.0f} MB" if isinstance(rec.get("peak_memory_mb"), float) else ""
            self.line(f"{head} {rec['spots']} spots in {rec['seconds']:.1f} s{peak} -> {rec['output']} "
                      f"({int(rec['output_bytes']) / 1e6:.1f} MB)")
        if self.bar is not None:
            self.bar.update(1)
        now = time.monotonic()
        if now - self._last_manifest >= MANIFEST_EVERY_S:
            self._last_manifest = now
            with contextlib.suppress(OSError):  # the run's end writes it again, and says if it cannot
                manifest.write_manifest(self.out_dir, self.records, running="running")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def predict_cohort(model_path: str | os.PathLike, slides, out_dir: str | os.PathLike, *, mpp: float | None = None,
                   factor: int | None = None, pitch_um: float | None = None, features: bool = False,
                   lossless: bool = False, cache_dir: str | None = None, batch_size: int = 64,
                   device: str | None = None, ray: bool | str | None = None, workers: int | None = None,
                   gpus_per_worker: float = 0, cpus_per_worker: float = 1, retries: int = 1,
                   progress: bool = True) -> CohortResult:
    """Predict every slide of ``slides`` with one saved image-mode model, resumably.

    Many slides, one model: each slide's prediction (as ``histosge predict MODEL SLIDE``:
    virtual spots at the model's pitch, ``factor`` times denser, or ``pitch_um`` apart) goes to
    ``out_dir/<slide>.h5ad``, written atomically and laid out by ``histosge.storage``; each
    slide's row goes to ``out_dir/manifest.csv`` (``cohort.manifest.COLUMNS``).

    Rerun with the same arguments to resume: slides already done here with this model file and
    identical bytes are skipped (each slide's bytes are read and their SHA-256 compared on every
    rerun, never trusted from the file's size and time), failed or interrupted ones are done
    again. A slide that fails (unreadable, no tissue, no pixel size
    ...) is recorded as failed and the others go on.

    Parameters
    ----------
    model_path : str or path
        The image-mode model file (``HisToSGE.save``).
    slides : str or path or list of them
        Slide files, folders of slides, ``.txt``/``.csv`` lists (``cohort.slides``).
    out_dir : str or path
        The output folder (created; bound to this model file and these settings).
    mpp : float, optional
        Micrometres per pixel for slides that do not record it.
    factor : int, optional
        4, 9 or 16: virtual spots that many times denser than the training pitch.
    pitch_um : float, optional
        The virtual spots' pitch in micrometres instead of ``factor``.
    features : bool
        Also store each spot's image features (``obsm['features']``) in the outputs.
    lossless : bool
        Store predictions as float32 instead of rounded to 2^-10 (``histosge.storage``).
    cache_dir : str, optional
        The feature cache.
    batch_size : int
        Patches encoded at once.
    device : str, optional
        Where the model predicts (``cpu``, ``cuda``...).
    ray : bool or str, optional
        None/False runs here, one slide after the other. True (or ``"local"``) starts a local
        Ray instance for the run (unless this process already called ``ray.init``; honours
        ``RAY_ADDRESS``); an address (``host:port``, ``ray://host:port``, ``auto``) joins a
        cluster.
    workers : int, optional
        Ray actors that load the model once each and predict (default: as many as the
        cluster's CPUs, or GPUs, allow); slides are read and laid out by CPU tasks.
    gpus_per_worker, cpus_per_worker : float
        Resources each Ray worker takes.
    retries : int
        Times a slide whose Ray worker died is tried again on a fresh worker.
    progress : bool
        A bar over slides and a line per slide on stderr.

    Returns
    -------
    CohortResult
        ``outcomes`` per slide (computed, skipped, reused, failed), ``records`` (the manifest
        rows), the manifest's path, seconds and backend. Files written: ``out_dir/<slide>.h5ad``
        (the AnnData of :func:`histosge.predict` for a slide) and ``out_dir/manifest.csv``.

    Raises
    ------
    InputError
        Before any work (one line each): a bad option, nothing to predict, missing files, two
        slides with one output name, a bad model file, a model that is not image-mode, and a
        folder whose outputs come from another model file or other settings.
    OutputError
        An output folder that is a file or not writable.
    """
    from ..methods import load_model
    from ..provenance import file_sha256
    from ..tasks import bytes_per_spot, slide_pitch

    t_start = time.perf_counter()
    _check_options(mpp, pitch_um, batch_size, factor, workers, gpus_per_worker, cpus_per_worker, retries)
    use_ray = ray not in (None, False)
    if use_ray:
        from .on_ray import check_address, import_ray

        check_address(ray)
        import_ray()
    device = _options.check("device", device)
    jobs_all = resolve_slides(slides)
    model_path = Path(model_path)
    model = load_model(model_path, device=device)
    check_model(model, model_path)
    manifest.check_no_input_overwritten(out_dir, jobs_all, [model_path, *_lists(slides)])
    out_dir = manifest.check_out_dir(out_dir)
    model_bytes = model_path.read_bytes() if use_ray else None
    if model_bytes is not None:
        import hashlib

        if hashlib.sha256(model_bytes).hexdigest() != model.file_sha256_:
            raise InputError("the model file changed while it was being read", where=str(model_path),
                             fix="rerun once the file is no longer being written")
    sha = model.file_sha256_ or file_sha256(model_path)
    pitch = slide_pitch(model, model_path, factor=factor, pitch_um=pitch_um)
    settings = {"pitch_um": round(float(pitch), 6), "mpp": mpp, "features": bool(features), "lossless": bool(lossless)}
    with manifest.Lock(out_dir):
        records = manifest.read_records(out_dir)
        manifest.bind(out_dir, model_sha256=sha, model_path=str(model_path), settings=settings, records=records)
        ctx = Context(out_dir=str(out_dir), model_sha256=sha, settings=settings, pitch_um=float(pitch),
                      spot_diameter_um=float(model.spot_diameter_um_), mpp=mpp, features=bool(features),
                      lossless=bool(lossless), cache_dir=cache_dir, batch_size=int(batch_size),
                      bytes_per_spot=bytes_per_spot(model))
        outcomes: dict[str, str] = {}
        todo: list[Job] = []
        for s in jobs_all:
            rec = records.get(s.name)
            done = rec is not None and rec.get("status") == "done" and _intact(out_dir, rec)
            if done:
                ctx.reuse.setdefault(rec["slide_sha256"], s.name)
            if done and rec.get("path") == str(s.path) and rec.get("slide_sha256") == _sha256(s.path):
                outcomes[s.name] = "skipped"  # the same bytes, read again: never trusted from size and time
            else:
                todo.append(Job(name=s.name, path=str(s.path), previous=rec if done else None))
        for name, rec in records.items():  # finished outputs of slides not in this run can be reused too
            if rec.get("status") == "done" and _intact(out_dir, rec):
                ctx.reuse.setdefault(rec["slide_sha256"], name)
        reporter = _Reporter(len(jobs_all), out_dir, records, progress)
        for name, outcome in outcomes.items():
            reporter.result(name, outcome, records[name])
        timings: dict = {}

        def on_result(job: Job, outcome: str, rec: dict) -> None:
            outcomes[job.name] = outcome
            reporter.result(job.name, outcome, rec)

        ended = False
        try:
            if todo and use_ray:
                from .on_ray import run_on_ray

                timings = run_on_ray(todo, ctx, model_bytes, address=ray, workers=workers,
                                     gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                                     retries=retries, device=device, on_result=on_result)
            elif todo:
                _run_local(model, todo, ctx, on_result, inner=reporter.terminal)
            ended = True
        finally:
            reporter.close()
            records = manifest.read_records(out_dir)  # the workers' records are the truth
            try:
                path = manifest.write_manifest(out_dir, records)
            except OSError as err:
                if ended:  # else the error that ended the run says what happened; the records stay
                    raise OutputError(f"cannot write {manifest.MANIFEST} ({err.strerror or err}); every slide's "
                                      f"record is kept in {manifest.STATE}/records", where=str(out_dir),
                                      fix="free space (or make the folder writable) and rerun the same command: "
                                          "it rewrites the manifest") from None
    names = [s.name for s in jobs_all]
    return CohortResult(out_dir=out_dir, manifest=path, slides=names, outcomes=outcomes,
                        records={n: records[n] for n in names if n in records}, seconds=time.perf_counter() - t_start,
                        backend="ray" if use_ray else "local", timings=timings)


def check_model(model, model_path: Path) -> None:
    """A cohort predicts slides, images alone: a model that reads measured spots cannot."""
    if model.mode != "image":
        raise InputError(f"a {model.mode}-mode model predicts only a section with measured spots (its own, or a "
                         "context), and a cohort is slides: images alone", where=str(model_path),
                         fix="train an image-mode model for slides: histosge train SECTIONS --mode image")


def _lists(slides) -> list[Path]:
    """The .txt/.csv slide lists among what the user gave (inputs an output must never replace)."""
    items = [slides] if isinstance(slides, (str, os.PathLike)) else list(slides or [])
    return [Path(i).expanduser() for i in items if str(i).lower().endswith((".txt", ".csv"))]


def _intact(out_dir: Path, rec: dict) -> bool:
    out = out_dir / str(rec.get("output") or "")
    try:
        return bool(rec.get("output")) and out.is_file() and out.stat().st_size == int(rec.get("output_bytes"))
    except (OSError, ValueError, TypeError):
        return False


def _sha256(path) -> str | None:
    try:
        return fingerprint(path)[0]
    except OSError:
        return None


def _run_local(model, jobs: list[Job], ctx: Context, on_result, *, inner: bool) -> None:
    """One slide after the other in this process (the per-slide bar only on a terminal: in a log,
    the line per slide and the bar over slides are enough)."""
    for job in jobs:
        prep = prepare(job, ctx)
        if isinstance(prep, dict):
            on_result(job, prep["outcome"], prep["record"])
            continue
        rec = finish(model, prep, ctx, progress=inner)
        on_result(job, "computed" if rec["status"] == "done" else "failed", rec)


__all__ = ["CohortResult", "predict_cohort", "output_path"]
