"""``extract``: spot patches -> encoder -> ``(n, dim)`` float32 features, cached on disk.

Patches are cut by :mod:`histosge.patches` (side = ``patch_scale`` x spot diameter, in the image's
own pixels), batched through a torch DataLoader as uint8 and preprocessed on the encoder's device
(so on a GPU the CPU only decodes and crops). On CUDA the forward pass runs under bf16/fp16
autocast with channels_last inputs for conv nets.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .base import Encoder
from .cache import DEFAULT_CHUNK, FeatureCache, default_cache_dir, feature_key, source_fingerprint

DEFAULT_PATCH_SCALE = 2.0
DEFAULT_BATCH_SIZE = 64


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_num_workers(device: torch.device) -> int:
    """CPU runs: 0 (2-core machines: workers only steal cores from the model). CUDA: feed the GPU."""
    if device.type != "cuda":
        return 0
    return max(1, min(8, _cpu_count() - 1))


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _autocast(encoder: Encoder):
    dev = encoder.device
    if dev.type == "cuda" and encoder.precision in (torch.bfloat16, torch.float16):
        return torch.autocast("cuda", dtype=encoder.precision)
    return contextlib.nullcontext()


def _collate(items: list[Any]) -> torch.Tensor:
    arrs = [np.asarray(it[0] if isinstance(it, (tuple, list)) else it) for it in items]
    return torch.from_numpy(np.stack(arrs))


def encode_patches(encoder: Encoder, batch: torch.Tensor) -> np.ndarray:
    """uint8 ``(b, H, W, 3)`` -> float32 ``(b, dim)`` numpy, on the encoder's device."""
    dev = encoder.device
    x = batch.to(dev, non_blocking=True)
    x = encoder.preprocess(x)
    if dev.type == "cuda" and encoder.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(encoder):
        y = encoder(x)
    return y.float().cpu().numpy()


def _patch_dataset(source, centers_fullres: np.ndarray, scale: float, side: int, input_size: int):
    """uint8 patches at their native side; patches far larger than the encoder's input are shrunk
    on the CPU first (less to move), the rest are resized by ``encoder.preprocess``."""
    from ..patches import PatchDataset

    out_size = input_size if side > 2 * input_size else None
    return PatchDataset(source, centers_fullres, scale, side, out_size, resample="bicubic")


def extract(
    source,
    centers_fullres,
    scale: float,
    spot_diameter_fullres: float,
    *,
    encoder: Encoder | str,
    patch_scale: float = DEFAULT_PATCH_SCALE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache_dir: str | os.PathLike | None | bool = None,
    num_workers: int | None = None,
    progress: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
) -> np.ndarray:
    """Features ``(n, encoder.dim)`` float32 of the patches centred on ``centers_fullres``.

    ``source``: a :class:`histosge.read.image.ImageSource`; ``centers_fullres``: ``(n, 2)`` (x, y)
    in full-resolution pixels; ``scale`` maps them onto ``source``'s pixels. ``cache_dir``: None
    for the default (``$HISTOSGE_CACHE/features`` or ``~/.cache/histosge/features``), a folder, or
    False to disable the cache. Finished chunks of ``chunk_size`` spots are written as they
    complete, so an interrupted run resumes where it stopped.
    """
    from ..patches import patch_side_px

    if isinstance(encoder, str):
        from ._api import create

        encoder = create(encoder)
    centers = np.asarray(centers_fullres, dtype=np.float64).reshape(-1, 2)
    n, dim = len(centers), int(encoder.dim)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    side = int(patch_side_px(spot_diameter_fullres, scale, patch_scale))

    cache = None
    if cache_dir is not False:
        parts = {
            "image": source_fingerprint(source),
            "scale": repr(float(scale)),
            "side_px": side,
            "encoder": encoder.name,
            "input_size": encoder.input_size,
            "mean": encoder.mean,
            "std": encoder.std,
            "interpolation": encoder.interpolation,
            "weights": encoder.weights_id,
        }
        root = default_cache_dir() if cache_dir in (None, True) else cache_dir
        cache = FeatureCache(
            root, feature_key(parts, centers), n=n, dim=dim, chunk_size=chunk_size, meta=parts
        )

    out = np.empty((n, dim), np.float32)
    chunk = chunk_size if cache is None else cache.chunk_size
    n_chunks = (n + chunk - 1) // chunk
    todo: list[int] = []
    for ci in range(n_chunks):
        arr = cache.load(ci) if cache is not None else None
        if arr is None:
            todo.append(ci)
        else:
            out[ci * chunk : ci * chunk + len(arr)] = arr
    if not todo:
        return out

    idx = np.concatenate([np.arange(ci * chunk, min(n, (ci + 1) * chunk)) for ci in todo])
    dev = encoder.device
    workers = default_num_workers(dev) if num_workers is None else int(num_workers)
    loader = torch.utils.data.DataLoader(
        _patch_dataset(source, centers[idx], float(scale), side, encoder.input_size),
        batch_size=max(1, int(batch_size)),
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
    )
    threads = max(1, _cpu_count() - workers) if dev.type == "cpu" else torch.get_num_threads()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(idx), desc=f"encode {encoder.name}", unit="spot", disable=not progress, leave=False)
    pending = list(todo)  # chunks still to finish, in the loader's order
    buf: list[np.ndarray] = []
    filled = 0
    try:
        with _threads(threads), torch.inference_mode():
            for batch in loader:
                buf.append(encode_patches(encoder, batch))
                filled += len(batch)
                bar.update(len(batch))
                while pending and filled >= len(range(pending[0] * chunk, min(n, (pending[0] + 1) * chunk))):
                    ci = pending.pop(0)
                    rows = min(n, (ci + 1) * chunk) - ci * chunk
                    got = np.concatenate(buf) if len(buf) > 1 else buf[0]
                    block, rest = got[:rows], got[rows:]
                    buf, filled = ([rest] if len(rest) else []), len(rest)
                    out[ci * chunk : ci * chunk + rows] = block
                    if cache is not None:
                        cache.save(ci, block)
    finally:
        bar.close()
        encoder.release()
    if pending:
        raise RuntimeError(f"patch loader ended early: chunks {pending} not computed")
    return out
