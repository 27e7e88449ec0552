"""``he-stats``: hand-crafted H&E features that need no weights and run fast on a CPU.

The features themselves (what they are and why) are in :mod:`histosge._hestats`. On a machine with
several cores, batches are split across worker processes (``HISTOSGE_WORKERS`` sets how many;
1 turns them off): the features are a pure function of each patch, so results are identical.
"""

from __future__ import annotations

import atexit
import os

import numpy as np
import torch

from .._hestats import DIM, FEATURE_NAMES, INPUT_SIZE, VERSION, _ignore_sigint, features_batch, he_features
from ..errors import EncoderError
from ._registry import EncoderSpec, register_encoder
from .base import Encoder

__all__ = ["DIM", "FEATURE_NAMES", "HEStatsEncoder", "he_features", "worker_count"]

#: Below this many patches a batch is computed in the calling process.
MIN_PARALLEL_BATCH = 8

_pool = None
_pool_size = 0


def worker_count() -> int:
    """Worker processes for he-stats: ``$HISTOSGE_WORKERS``, else one per available core."""
    env = os.environ.get("HISTOSGE_WORKERS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise EncoderError(
                f"HISTOSGE_WORKERS={env!r} is not a whole number", where="he-stats", fix="e.g. HISTOSGE_WORKERS=2"
            ) from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _context():
    """Workers forked from a fork server that imported only ``histosge._hestats``.

    Not plain fork (unsafe once torch has started threads). Workers import the feature code
    and, as multiprocessing does, the parent's main module (the CLI's is light): 80 MB peak each
    in bench/bench_superres.py, where workers that imported ``histosge.encode`` (hence torch)
    took about half a gigabyte each.
    """
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["histosge._hestats"])
        return ctx
    return mp.get_context("spawn")  # pragma: no cover - Windows


def _get_pool(n: int):
    """The process pool, started on the first large batch and kept until ``release`` (end of an extraction)."""
    global _pool, _pool_size
    if _pool is None or _pool_size != n:
        from concurrent.futures import ProcessPoolExecutor

        _shutdown()
        _pool = ProcessPoolExecutor(max_workers=n, mp_context=_context(), initializer=_ignore_sigint)
        _pool_size = n
    return _pool


def _shutdown(wait: bool = False) -> None:
    """Stop the worker processes (``wait``: until they have exited, e.g. to read their peak memory)."""
    global _pool, _pool_size
    if _pool is not None:
        _pool.shutdown(wait=wait, cancel_futures=True)
    _pool, _pool_size = None, 0


atexit.register(_shutdown)


def compute(patches: np.ndarray) -> np.ndarray:
    """``features_batch`` split over ``worker_count()`` processes when the batch is large enough."""
    n_workers = min(worker_count(), max(1, len(patches) // MIN_PARALLEL_BATCH))
    if n_workers <= 1:
        return features_batch(patches)
    try:
        pool = _get_pool(worker_count())
        parts = np.array_split(np.asarray(patches, np.float32), n_workers)
        return np.concatenate(list(pool.map(features_batch, parts)))
    except (OSError, RuntimeError):  # no processes here (sandbox, broken pool): same numbers, one core
        _shutdown()
        return features_batch(patches)


class HEStatsEncoder(Encoder):
    """Hand-crafted features; ``preprocess`` gives [0, 1] RGB (mean 0, std 1), ``forward`` numpy."""

    def release(self) -> None:
        """Stop the worker processes once an extraction is over: none holds memory while the model
        trains or is left to join at exit."""
        _shutdown(wait=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 crosses to the workers; features_batch casts to float64 as the serial path does
        arr = x.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return torch.from_numpy(compute(arr)).to(x.device)


@register_encoder(
    name="he-stats",
    dim=DIM,
    input_size=INPUT_SIZE,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    interpolation="bilinear",
    licence="MIT (part of histosge; no weights)",
    hub_id=None,
    architecture="colour moments + rgb2hed stain statistics + LBP + GLCM, spot disc and ring",
    offline=True,
    hub_files=(),
    description=f"hand-crafted H&E colour, stain and texture statistics, {DIM}-d, CPU only",
)
def _build_he_stats(
    spec: EncoderSpec, weights: str | None, device: torch.device, arch_overrides: dict | None
):
    if weights is not None and str(weights) != "random":
        raise EncoderError(
            "takes no weights (its features are computed, not learned)",
            where=spec.name,
            fix="drop --weights, or choose a learned encoder",
        )
    return HEStatsEncoder(spec, None, weights_id=VERSION)
