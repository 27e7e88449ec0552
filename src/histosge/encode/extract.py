"""``extract``: spot patches -> encoder -> ``(n, dim)`` float32 features, cached on disk per spot.

Patches are cut by :mod:`histosge.patches` (side = ``patch_scale`` x spot diameter, in the image's
own pixels) from the pyramid level nearest the encoder's input size when the patch is shrunk
anyway (``patches.read_level``), in an order that walks the image block by block so that
neighbouring patches share decoded tiles. Batches are read ahead of the encoder: on a CPU by one
reader thread that also preprocesses them (decoding and resizing overlap encoding; no worker
processes), on CUDA by DataLoader workers that decode and crop uint8 patches while the GPU
preprocesses and encodes. On CUDA the forward pass runs under bf16/fp16 autocast with
channels_last inputs for conv nets.

Memory is bounded by the batch (plus the image's tile cache, ``read.tiff.TILE_CACHE_BYTES``),
never the whole slide, except for JPEG/PNG images, which can only be decoded whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .._progress import progress as progress_bar
from .base import Encoder, PatchGeometry
from .cache import DEFAULT_CHUNK, FeatureStore, code_fingerprint, resolve_cache_dir, source_fingerprint, store_key

DEFAULT_PATCH_SCALE = 2.0
DEFAULT_BATCH_SIZE = 64
#: Batches read ahead of the encoder by the reader thread.
PREFETCH = 2


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_num_workers(device: torch.device) -> int:
    """CPU runs: 0 (one reader thread instead: 2-core machines gain nothing from processes). CUDA: feed the GPU."""
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


#: Batches between two returns of freed memory to the system (``_trim_heap``).
TRIM_EVERY = 4
_libc = None


def _trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``; elsewhere nothing).

    Batches, tiles and blocks of many sizes are allocated and freed by three or four threads, each
    with its own glibc arena, and glibc keeps what they free: on a 9k x 9k slide the resident size
    grew by 1.1 GB over 16,900 spots without this, 0.23 GB with it.
    """
    global _libc
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _libc = False


def die_with_parent(parent_pid: int, *_args) -> None:
    """Worker initialiser: this process is killed when the process that started it dies, even by
    ``kill -9`` or the OOM killer (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; elsewhere nothing).
    Ctrl-C is the parent's to handle, so workers ignore SIGINT (no traceback from each)."""
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def autocast(encoder: Encoder):
    """The encoder's autocast on CUDA (bfloat16, float16), else nothing: how ``encode_patches`` runs it."""
    dev = encoder.device
    if dev.type == "cuda" and encoder.precision in (torch.bfloat16, torch.float16):
        return torch.autocast("cuda", dtype=encoder.precision)
    return contextlib.nullcontext()


def _prepare(encoder: Encoder, batch) -> torch.Tensor:
    """uint8 ``(b, H, W, 3)`` -> the encoder's input on its device (resized, normalised)."""
    dev = encoder.device
    x = torch.as_tensor(batch).to(dev, non_blocking=True)
    x = encoder.preprocess(x)
    if dev.type == "cuda" and encoder.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _takes_geometry(encoder: Encoder) -> bool:
    """Whether the encoder's ``forward`` takes ``geometry=`` (a :class:`PatchGeometry`)."""
    import inspect

    try:
        return "geometry" in inspect.signature(encoder.forward).parameters
    except (TypeError, ValueError):
        return False


def _forward(encoder: Encoder, x: torch.Tensor) -> np.ndarray:
    with autocast(encoder):
        geometry = getattr(encoder, "geometry", None)
        y = encoder(x, geometry=geometry) if geometry is not None and _takes_geometry(encoder) else encoder(x)
    return y.float().cpu().numpy()


def encode_patches(encoder: Encoder, batch: torch.Tensor) -> np.ndarray:
    """uint8 ``(b, H, W, 3)`` -> float32 ``(b, dim)`` numpy, on the encoder's device."""
    return _forward(encoder, _prepare(encoder, batch))


class PatchBatches(torch.utils.data.Dataset):
    """Batch ``k`` of patches (uint8 ``(b, s, s, 3)``) around ``centers_fullres[k*b:(k+1)*b]``.

    ``side_px``: level-0 pixels of ``source``; ``level``: where they are read; patches whose side
    at that level is more than twice ``input_size`` are shrunk to it on the CPU (less to move;
    bicubic), the rest are resized by the encoder's ``preprocess``.
    """

    def __init__(self, source, centers_fullres, scale: float, side_px: int, input_size: int, *,
                 level: int = 0, batch_size: int = DEFAULT_BATCH_SIZE):
        from ..patches import level_geometry

        self.source = source
        self.centers = np.asarray(centers_fullres, np.float64).reshape(-1, 2)
        self.scale = float(scale)
        self.side_px = int(side_px)
        self.level = int(level)
        self.batch_size = max(1, int(batch_size))
        _, level_side = level_geometry(source, self.scale, self.side_px, self.level)
        self.out_size = int(input_size) if level_side > 2 * int(input_size) else None

    def __len__(self) -> int:
        return -(-len(self.centers) // self.batch_size)

    def __getitem__(self, k: int) -> np.ndarray:
        from ..patches import crop_patches

        part = self.centers[k * self.batch_size : (k + 1) * self.batch_size]
        return crop_patches(self.source, part, self.scale, self.side_px, self.out_size, resample="bicubic",
                            level=self.level)


def _read_ahead(batches: PatchBatches, prepare=None, depth: int = PREFETCH) -> Iterator:
    """The batches in order, each read (and passed through ``prepare``, e.g. the encoder's CPU
    preprocessing) by one background thread while the caller encodes the previous ones: image
    decoding, resizing and torch release the GIL, so this overlaps with the encoder."""

    def load(k: int):
        batch = batches[k]
        if prepare is None:
            return batch
        with torch.inference_mode():
            return prepare(batch)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="histosge-read") as pool:
        pending: deque = deque()
        try:
            for k in range(len(batches)):
                pending.append(pool.submit(load, k))
                if len(pending) > depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def spatial_order(source, centers_fullres: np.ndarray, scale: float, side_px: int, level: int) -> np.ndarray:
    """Indices of the centres block by block over the image (rows of ``patches.BLOCK``-pixel blocks,
    then x, y inside a block), so that consecutive patches share decoded tiles."""
    from ..patches import BLOCK, level_geometry, patch_origins

    s, side = level_geometry(source, scale, side_px, level)
    origins = patch_origins(centers_fullres, s, side)
    blocks = origins // BLOCK
    return np.lexsort((origins[:, 1], origins[:, 0], blocks[:, 0], blocks[:, 1]))


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
    level: int | None = None,
    mpp: float | None = None,
    spot_diameter_um: float | None = None,
) -> np.ndarray:
    """Image features of the patches centred on given spots, cached on disk and resumable.

    Spots already in the cache (same image, scale, patch side, level and encoder, same centre)
    are not encoded again; new ones are saved every ``chunk_size`` spots, so an interrupted run
    resumes where it stopped.

    Parameters
    ----------
    source : ImageSource
        The image (:class:`histosge.read.image.ImageSource`).
    centers_fullres : array-like
        ``(n, 2)`` spot centres (x, y) in full-resolution pixels.
    scale : float
        Maps full-resolution pixels onto ``source``'s level-0 pixels.
    spot_diameter_fullres : float
        Spot diameter in full-resolution pixels.
    encoder : Encoder or str
        An encoder from :func:`create`, or its name.
    patch_scale : float
        Patch side in spot diameters.
    batch_size : int
        Patches per forward pass.
    cache_dir : str or path or bool, optional
        None for the default (``$HISTOSGE_CACHE/features`` or ``~/.cache/histosge/features``;
        not writable: a warning and no cache), a folder (checked first: ``OutputError`` if it
        cannot be used), or False to disable the cache.
    num_workers : int, optional
        DataLoader worker processes reading patches (default: none on a CPU, where one reader
        thread reads ahead; up to 8 on CUDA); they die with the calling process.
    progress : bool
        A progress bar on a terminal, a line every few seconds in a log.
    chunk_size : int
        Spots encoded between two saves to the cache.
    level : int, optional
        The pyramid level to read (None: ``patches.read_level``, the coarsest one at least as
        fine as the encoder's input).
    mpp : float, optional
        Micrometres per full-resolution pixel, for the encoder's :class:`PatchGeometry`.
    spot_diameter_um : float, optional
        The spot diameter in micrometres (the spot the patch is centred on; default the
        ``spot_diameter_fullres`` given), for the encoder's :class:`PatchGeometry`.

    Returns
    -------
    ndarray
        ``(n, encoder.dim)`` float32 features, in the order of ``centers_fullres``.

    Raises
    ------
    OutputError
        A ``cache_dir`` that cannot be used.
    EncoderError
        An encoder name that cannot be built.
    """
    from ..patches import patch_side_px, read_level

    if isinstance(encoder, str):
        from ._api import create

        encoder = create(encoder)
    centers = np.asarray(centers_fullres, dtype=np.float64).reshape(-1, 2)
    n, dim = len(centers), int(encoder.dim)
    side = int(patch_side_px(spot_diameter_fullres, scale, patch_scale))
    level = read_level(source, side, encoder.input_size) if level is None else int(level)
    root = resolve_cache_dir(cache_dir)  # an unusable explicit folder fails here, before any work
    if n == 0:
        return np.zeros((0, dim), np.float32)

    um_px = float(mpp) / float(scale) if mpp else None  # micrometres per pixel of source's level 0
    spot_px = (float(spot_diameter_um) / um_px if spot_diameter_um and um_px
               else float(spot_diameter_fullres) * float(scale))
    encoder.geometry = PatchGeometry(
        patch_px=side, input_size=int(encoder.input_size), spot_diameter_px=spot_px, um_per_px=um_px,
        patch_um=side * um_px if um_px else None, spot_diameter_um=spot_diameter_um or (spot_px * um_px if um_px
                                                                                         else None),
        um_per_input_px=side * um_px / encoder.input_size if um_px else None)
    store = None
    code = None
    if root is not None and getattr(getattr(encoder, "spec", None), "code", "builtin") != "builtin":
        code = code_fingerprint(encoder)  # an encoder from outside: its features are keyed on its code
        if code is None:
            import warnings

            warnings.warn(f"encoder {encoder.name!r}: its code cannot be read (defined in a notebook or with exec), "
                          "so its features are not cached (a change to its forward would go unseen)", stacklevel=2)
            root = None
    if root is not None:
        parts = {
            "image": source_fingerprint(source),
            "scale": repr(float(scale)),
            "side_px": side,
            "level": level,
            "level_downsample": repr(float(source.level_downsamples[level])) if level else "1.0",
            "encoder": encoder.name,
            "input_size": encoder.input_size,
            "mean": encoder.mean,
            "std": encoder.std,
            "interpolation": encoder.interpolation,
            "weights": encoder.weights_id,
        }
        if code is not None:
            parts["code"] = code
        if _takes_geometry(encoder):  # it may read micrometres: they decide its features too
            parts["geometry"] = dataclasses.asdict(encoder.geometry)
        store = FeatureStore(root, store_key(parts), dim=dim, meta=parts)

    if store is not None:
        found, out = store.lookup(centers)
    else:
        found, out = np.zeros(n, bool), np.empty((n, dim), np.float32)
    todo = np.flatnonzero(~found)
    if not len(todo):
        return out
    # each distinct centre once, in an order that walks the image
    _, first, inverse = np.unique(centers[todo, 0] + 1j * centers[todo, 1], return_index=True, return_inverse=True)
    uniq = centers[todo[first]]
    order = spatial_order(source, uniq, float(scale), side, level)
    uniq = uniq[order]
    rank = np.empty(len(order), np.intp)
    rank[order] = np.arange(len(order))
    feats_u = np.empty((len(uniq), dim), np.float32)

    dev = encoder.device
    workers = default_num_workers(dev) if num_workers is None else int(num_workers)
    batches = PatchBatches(source, uniq, float(scale), side, encoder.input_size, level=level, batch_size=batch_size)
    prepared = workers == 0 and dev.type == "cpu"  # the reader thread preprocesses too
    if workers > 0:
        loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers,
                                             pin_memory=dev.type == "cuda", persistent_workers=False,
                                             worker_init_fn=functools.partial(die_with_parent, os.getpid()))
    else:
        loader = _read_ahead(batches, functools.partial(_prepare, encoder) if prepared else None)
    own = getattr(encoder, "torch_threads", None)
    threads = (own or max(1, _cpu_count() - workers)) if dev.type == "cpu" else torch.get_num_threads()
    bar = progress_bar(total=len(uniq), desc=f"encode {encoder.name}", unit="spot", disable=not progress)
    done = saved = n_batches = 0
    try:
        with _threads(threads), torch.inference_mode():
            for batch in loader:
                x = batch if prepared else _prepare(encoder, batch)
                feats_u[done : done + len(batch)] = _forward(encoder, x)
                done += len(batch)
                n_batches += 1
                if n_batches % TRIM_EVERY == 0 and _libc is not False:
                    _trim_heap()
                bar.update(len(batch))
                while store is not None and done - saved >= chunk_size:
                    store.save(uniq[saved : saved + chunk_size], feats_u[saved : saved + chunk_size])
                    saved += chunk_size
    finally:
        if store is not None and done > saved:  # what was encoded before an interruption is kept
            store.save(uniq[saved:done], feats_u[saved:done])
        bar.close()
        encoder.release()
        if hasattr(loader, "close"):
            loader.close()
    if done != len(uniq):
        raise RuntimeError(f"patch loader ended early: {done} of {len(uniq)} spots encoded")
    out[todo] = feats_u[rank[inverse.reshape(-1)]]
    return out
