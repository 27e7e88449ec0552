"""The cohort run on Ray: CPU tasks read the slides, actors holding the model predict them.

Ray core (tasks and actors), not Ray Data: the unit of work, of failure, of resumption and of
output is the slide, and a slide's prediction needs all of its spots at once (an image-mode
model looks at each spot's ring of neighbours). docs/SCALING.md has the reasoning.

- ``prepare`` runs as a Ray task (``work.prepare``: fingerprint, tissue, lattice). It reserves
  one CPU when the workers hold GPUs; on CPU-only clusters it reserves none, and at most one per
  worker runs ahead, so it never waits for a core the workers hold.
- ``_Worker`` actors (``workers`` of them, ``gpus_per_worker`` GPUs and ``cpus_per_worker``
  CPUs each) load the model once from its bytes (shipped through the object store, checked
  against the driver's SHA-256), then ``work.finish`` each slide handed to them: patches read
  by the actor's own CPUs (DataLoader workers on CUDA), encoded on its device, predicted, and
  the output and the record written to ``--out-dir`` by the actor.
- A worker that dies (killed, out of memory, node lost) is replaced by a new actor and its
  slide tried again, ``retries`` times; then the slide is recorded as failed by the driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections import deque

from ..errors import HistosgeError, InputError
from . import manifest
from .work import Context, Job, Prepared, finish, prepare, worker_id

RAY_EXTRA = 'pip install "histosge[ray]"'
_ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+)$")


def import_ray():
    """The ``ray`` module, or one line naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs the ray package, which is not installed", where="--ray",
                         fix=f"{RAY_EXTRA} (or pip install ray), or run without --ray") from None
    return ray


def is_address(text: str) -> bool:
    """``auto``, ``local``, ``host:port`` or ``ray://host:port``."""
    return bool(_ADDRESS.match(str(text)))


def meant_as_address(text: str) -> bool:
    """A word after ``--ray`` that is no file and no slide but holds a colon: an address typed
    wrong (``head:63x79``, ``'not a host:abc'``), refused by ``check_address``."""
    from pathlib import Path

    from .slides import LIST_SUFFIXES, SLIDE_SUFFIXES

    text = str(text)
    return ":" in text and not text.lower().endswith(SLIDE_SUFFIXES + LIST_SUFFIXES) and not Path(text).exists()


#: Seconds to wait for a Ray address to accept a connection before giving up.
CONNECT_TIMEOUT_S = 5.0


def check_address(ray_arg) -> str | None:
    """The address a run will join (``_address``), checked before anything is written or Ray is
    imported: a malformed one, or a host:port where nothing accepts a connection within
    ``CONNECT_TIMEOUT_S``, is one line (Ray itself would retry for minutes)."""
    import socket

    address = _address(ray_arg)
    if address is None or address == "auto":
        return address
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    where = f"--ray {address}" if isinstance(ray_arg, str) and ray_arg not in ("", "local") else "RAY_ADDRESS"
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (getattr(err, "strerror", None) or str(err))
        raise InputError(f"nothing answers at {host}:{port} ({reason})", where=where,
                         fix="check the address and that the Ray head is running there (ray status on the head "
                             "node), or --ray alone for a local instance") from None
    return address


def _address(ray_arg) -> str | None:
    """What ``ray.init`` is given: an explicit address, else ``RAY_ADDRESS``, else a new local
    instance (never a cluster this machine happens to run)."""
    if isinstance(ray_arg, str) and ray_arg not in ("", "local"):
        if not is_address(ray_arg):
            raise InputError(f"{ray_arg!r} is not a Ray address", where="--ray",
                             fix="give host:port, ray://host:port or auto, or --ray alone for a local instance")
        return ray_arg
    if ray_arg == "local":
        return None
    env = os.environ.get("RAY_ADDRESS", "").strip()
    return env or None


def _start(ray, address: str | None) -> bool:
    """Connect (or start); True when this call started Ray and must stop it."""
    if ray.is_initialized():
        return False
    try:
        if address is None:
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        first = " ".join(str(err).split())[:300]
        raise InputError(f"cannot start or reach Ray ({first})", where=f"--ray {address or ''}".strip(),
                         fix="check the address (ray status on the head node), or --ray alone for a local "
                             "instance") from None
    return True


class _Worker:
    """One actor: the model, loaded once, predicting slide after slide."""

    def __init__(self, model_bytes: bytes, model_sha256: str, ctx: Context, device: str | None, threads: int):
        import tempfile

        import torch

        from ..methods import load_model

        os.environ["HISTOSGE_THREADS"] = str(threads)  # he-stats threads: this worker's share of the node
        torch.set_num_threads(threads)
        self.ctx = ctx
        with tempfile.TemporaryDirectory(prefix="histosge-model-") as tmp:
            path = os.path.join(tmp, "model.histosge")
            with open(path, "wb") as fh:
                fh.write(model_bytes)
            self.model = load_model(path, device=device)
        if self.model.file_sha256_ != model_sha256:  # pragma: no cover - the object store corrupted it
            raise RuntimeError("the model bytes changed on their way to the worker")
        self.started = time.time()

    def info(self) -> dict:
        from .work import peak_rss_mb

        return {"worker": worker_id(), "pid": os.getpid(), "peak_rss_mb": peak_rss_mb()}

    def finish(self, prepared: Prepared, attempt: int) -> tuple[dict, float]:
        t0 = time.perf_counter()
        prepared.record["attempts"] = attempt
        rec = finish(self.model, prepared, self.ctx, progress=False)
        return rec, time.perf_counter() - t0


def _prepare_task(job: Job, ctx: Context):
    """(summary for the driver, the prepared slide for a worker): the slide's pixels-derived data
    goes from the reading task to the worker without passing through the driver."""
    t0 = time.perf_counter()
    out = prepare(job, ctx)
    if isinstance(out, dict):
        return {**out, "seconds": time.perf_counter() - t0}, None
    return {"outcome": "prepared", "seconds": time.perf_counter() - t0}, out


def _resources(ray, workers, gpus_per_worker, cpus_per_worker, n_jobs) -> int:
    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    if gpus_per_worker > gpus:
        raise InputError(f"the Ray cluster has {gpus:g} GPUs; --gpus-per-worker {gpus_per_worker:g} needs at least "
                         f"{gpus_per_worker:g}", where="--gpus-per-worker",
                         fix="drop --gpus-per-worker (CPU workers), or add GPU nodes to the cluster")
    if cpus_per_worker > cpus:
        raise InputError(f"the Ray cluster has {cpus:g} CPUs; --cpus-per-worker {cpus_per_worker:g} asks more",
                         where="--cpus-per-worker", fix=f"e.g. --cpus-per-worker {max(1, int(cpus)):d}")
    if workers is None:
        fit = gpus / gpus_per_worker if gpus_per_worker else cpus / max(cpus_per_worker, 1e-9)
        workers = max(1, int(fit))
    return max(1, min(int(workers), n_jobs))


def run_on_ray(jobs: list[Job], ctx: Context, model_bytes: bytes, *, address, workers, gpus_per_worker: float,
               cpus_per_worker: float, retries: int, device: str | None, on_result) -> dict:
    """Handle ``jobs`` on Ray; ``on_result(job, outcome, record)`` as each slide ends. Returns
    timings: Ray start, workers ready, and per slide the time Ray spent outside our steps."""
    ray = import_ray()
    t0 = time.perf_counter()
    started = _start(ray, _address(address))
    timings: dict = {"ray_start_s": round(time.perf_counter() - t0, 2), "slides": {}}
    actors: list = []
    pending: dict = {}
    try:
        n = _resources(ray, workers, gpus_per_worker, cpus_per_worker, len(jobs))
        threads = max(1, int(cpus_per_worker))
        dev = device or ("cuda" if gpus_per_worker else "cpu")
        Worker = ray.remote(_Worker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0)
        prepare_cpus = 1 if gpus_per_worker else 0
        prepare_remote = ray.remote(_prepare_task).options(num_cpus=prepare_cpus, max_retries=retries, num_returns=2)
        model_ref = ray.put(model_bytes)
        ctx_ref = ray.put(ctx)

        def new_actor():
            return Worker.remote(model_ref, ctx.model_sha256, ctx_ref, dev, threads)

        t_actors = time.perf_counter()
        actors = [new_actor() for _ in range(n)]
        try:
            ray.get([a.info.remote() for a in actors])  # the model is loaded everywhere before the clock starts
        except ray.exceptions.RayError as err:
            raise InputError(f"the Ray workers could not start ({_first(err)})", where="--ray",
                             fix="check that every node has this histosge installed (pip install \"histosge[ray]\") "
                                 "and the devices asked for (--gpus-per-worker, --device)") from None
        timings.update(workers=n, workers_ready_s=round(time.perf_counter() - t_actors, 2))
        queue = deque(jobs)
        ready: deque = deque()  # (job, prepared ref, submitted at, prepare seconds)
        idle = deque(actors)
        reading = 0
        lookahead = n if not gpus_per_worker else 2 * n
        while queue or ready or pending:
            while queue and reading + len(ready) < lookahead:
                job = queue.popleft()
                summary, prepared = prepare_remote.remote(job, ctx_ref)
                pending[summary] = ("prepare", job, time.perf_counter(), prepared)
                reading += 1
            while ready and idle:
                job, prep, t_sub, t_prep = ready.popleft()
                actor = idle.popleft()
                ref = actor.finish.remote(prep, job.attempt)
                pending[ref] = ("finish", job, time.perf_counter(), (actor, prep, t_prep))
            if not pending:
                continue
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            kind, job, t_sub, extra = pending.pop(ref)
            wall = time.perf_counter() - t_sub
            if kind == "prepare":
                reading -= 1
                try:
                    summary = ray.get(ref)
                except ray.exceptions.RayError as err:
                    if isinstance(getattr(err, "cause", None), HistosgeError):  # a full disk ends the run
                        raise err.cause from None
                    on_result(job, "failed", _driver_fail(ctx, job, f"the reading task failed: {_first(err)}"))
                    continue
                timings["slides"].setdefault(job.name, {})["prepare_overhead_s"] = round(wall - summary["seconds"], 3)
                if summary["outcome"] == "prepared":
                    ready.append((job, extra, time.perf_counter(), summary["seconds"]))
                else:
                    on_result(job, summary["outcome"], summary["record"])
                continue
            actor, prep, t_prep = extra
            try:
                rec, secs = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
                replacement = new_actor()
                actors[actors.index(actor)] = replacement
                idle.append(replacement)
                if job.attempt <= retries:
                    job.attempt += 1
                    ready.appendleft((job, prep, time.perf_counter(), t_prep))
                else:
                    on_result(job, "failed", _driver_fail(
                        ctx, job, f"the worker process died ({job.attempt} attempt{'s' if job.attempt > 1 else ''}): "
                                  f"{_first(err)}"))
                continue
            except ray.exceptions.RayError as err:
                if isinstance(getattr(err, "cause", None), HistosgeError):  # a full disk ends the run
                    raise err.cause from None
                idle.append(actor)
                on_result(job, "failed", _driver_fail(ctx, job, f"the worker failed: {_first(err)}"))
                continue
            idle.append(actor)
            timings["slides"].setdefault(job.name, {})["finish_overhead_s"] = round(wall - secs, 3)
            on_result(job, "computed" if rec["status"] == "done" else "failed", rec)
        timings["worker_info"] = ray.get([a.info.remote() for a in actors])
    finally:
        for ref in list(pending):
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        for a in actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
        if started:
            ray.shutdown()
    return timings


def _first(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__


def _driver_fail(ctx: Context, job: Job, error: str) -> dict:
    """The record of a slide whose worker could not write one (it died)."""
    from pathlib import Path

    from .work import new_record

    rec = manifest.read_records(Path(ctx.out_dir)).get(job.name) or new_record(job, ctx)
    rec.update(status="failed", error=error, attempts=job.attempt, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    manifest.write_record(Path(ctx.out_dir), rec)
    return rec
