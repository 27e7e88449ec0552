"""Disk cache of spot features, looked up per spot, so any later run reuses every spot already
encoded (``recover`` after ``superres`` on the same section encodes nothing), and an interrupted
run resumes where it stopped.

A *store* holds the features of one image under one way of cutting and encoding patches; its
key hashes the image content (file size, mtime and sampled blocks, or the bytes of an in-memory
image), the scale, the patch side, the pyramid level read, and the encoder (name, input size,
normalisation, weights identity). The spot centres are *not* in the key: inside a store each
spot is found by its exact full-resolution centre (x, y as float64).

Layout: ``<cache_dir>/<key[:2]>/<key>/`` holds ``meta.json`` (what the key was made of, for
people) and chunks of up to ``chunk_size`` spots, each three files named by the hash of its
centres: ``<id>.xy.npy`` (centres), ``<id>.npy`` (features, float32) and ``<id>.json`` (row
count, dim and the SHA-256 of both). Every file is written to a temporary ``.part`` file and
renamed, the JSON last, so a chunk counts only once its checksums exist; a chunk whose bytes no
longer match is dropped and its spots are encoded again.

The cache never costs a run: a default cache folder (or HOME) that cannot be written gives one
warning and the run goes on without it; a write that fails mid-run (disk full, folder removed)
gives one warning and the run finishes uncached. An explicit ``cache_dir`` that is a file or
cannot be written is refused up front (:func:`check_cache_dir`), before any work. Files follow
the umask; ``.part`` files left by killed runs are removed when a store is opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import pid_alive, write_bytes
from ..errors import OutputError

KEY_VERSION = "histosge-features/2"
DEFAULT_CHUNK = 256
_SAMPLE_BLOCKS = 16
_BLOCK = 1 << 16
#: A ``.part`` file whose writer is not running, or older than this (seconds), is removed.
STALE_PART_SECONDS = 3600.0


class CacheWarning(UserWarning):
    """The feature cache could not be used or written; the run went on without it."""


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, CacheWarning, stacklevel=3)


def default_cache_dir() -> Path:
    """``$HISTOSGE_CACHE/features``, else ``$XDG_CACHE_HOME`` or ``~/.cache``, then ``histosge/features``."""
    env = os.environ.get("HISTOSGE_CACHE")
    if env:
        return Path(env).expanduser() / "features"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "histosge" / "features"


def _probe_writable(folder: Path) -> None:
    """Create and remove a file in ``folder`` (permission bits do not stop root; a read-only or
    full file system does)."""
    probe = folder / f".write-probe.{os.getpid()}.{secrets.token_hex(4)}.part"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    os.unlink(probe)


def _open_root(root: Path) -> None:
    """Make ``root`` and check a file can be written there; OSError (or RuntimeError) if not."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} is a file")
    root.mkdir(parents=True, exist_ok=True)
    _probe_writable(root)


def check_cache_dir(path: str | os.PathLike) -> Path:
    """An explicit cache folder (``--cache-dir``): created if needed and writable, else
    ``OutputError`` (one line naming the folder and the fix). Call it before any work."""
    root = Path(path).expanduser()
    fix = "give a writable folder with --cache-dir (or leave it out for the default cache)"
    if root.exists() and not root.is_dir():
        raise OutputError("the feature cache folder is a file", where=str(root), fix=fix)
    try:
        _open_root(root)
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputError(f"cannot write the feature cache folder ({reason})", where=str(root), fix=fix) from None
    return root


def resolve_cache_dir(cache_dir: str | os.PathLike | None | bool) -> Path | None:
    """The cache root to use: None when the cache is off (``False``) or when the default one
    cannot be written (one ``CacheWarning``); an explicit folder is checked (``OutputError``)."""
    if cache_dir is False:
        return None
    if cache_dir not in (None, True):
        return check_cache_dir(cache_dir)
    fix = "-> set HISTOSGE_CACHE to a writable folder, or pass --cache-dir"
    try:
        root = default_cache_dir()
    except (RuntimeError, KeyError) as err:  # Path.home() without HOME or a passwd entry
        _warn_once("home", f"~/.cache/histosge: no home folder ({err}); running without the feature cache {fix}")
        return None
    try:
        _open_root(root)
    except OSError as err:
        reason = err.strerror or str(err)
        _warn_once(f"root:{root}", f"{root}: the feature cache cannot be written ({reason}); running without it {fix}")
        return None
    return root


# -- fingerprints ------------------------------------------------------------------------------------
def file_fingerprint(path: str | os.PathLike) -> str:
    """Size, mtime and the SHA-256 of a few blocks spread over the file (fast on 1 GB slides)."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}|{st.st_mtime_ns}".encode())
    with open(path, "rb") as fh:
        if st.st_size <= _SAMPLE_BLOCKS * _BLOCK:
            h.update(fh.read())
        else:
            for i in range(_SAMPLE_BLOCKS):
                fh.seek((st.st_size - _BLOCK) * i // (_SAMPLE_BLOCKS - 1))
                h.update(fh.read(_BLOCK))
    return f"file:{path.resolve()}|{h.hexdigest()}"


def array_fingerprint(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}".encode())
    h.update(memoryview(arr).cast("B"))
    return f"array:{h.hexdigest()}"


def source_fingerprint(source: Any) -> str:
    """What identifies an ImageSource's pixels (file or in-memory array)."""
    fn = getattr(source, "fingerprint", None)
    if callable(fn):
        return str(fn())
    path = getattr(source, "path", None)
    if path is not None:
        return file_fingerprint(path)
    arr = getattr(source, "array", None)
    if isinstance(arr, np.ndarray):
        return array_fingerprint(arr)
    if isinstance(source, np.ndarray):
        return array_fingerprint(source)
    raise TypeError(f"cannot fingerprint image source {source!r}; pass cache_dir=False to skip the cache")


def code_fingerprint(encoder) -> str | None:
    """SHA-256 of an encoder's code: its builder and its class (``forward``, ``preprocess`` and all),
    for encoders registered from outside histosge (``spec.code`` is not 'builtin'), whose
    ``weights_id`` need not change when their code does. None when the source cannot be read (an
    encoder defined in a notebook cell or with exec): its features are then not cached.
    """
    import inspect

    spec = getattr(encoder, "spec", None)
    parts = []
    for obj in (getattr(spec, "builder", None), type(encoder)):
        if obj is None or isinstance(obj, str):
            continue
        for cls in (inspect.getmro(obj) if inspect.isclass(obj) else (obj,)):
            if getattr(cls, "__module__", "").startswith(("histosge.", "torch.")) or cls is object:
                continue  # histosge's own base classes are versioned with histosge
            try:
                parts.append(inspect.getsource(cls))
            except (OSError, TypeError):
                return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest() if parts else None


def store_key(parts: dict[str, Any]) -> str:
    """The store of everything that decides a spot's features except its centre."""
    h = hashlib.sha256(KEY_VERSION.encode())
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()


# -- files ---------------------------------------------------------------------------------------------
def _write_atomic(path: Path, data: bytes) -> None:
    """``_atomic.write_bytes`` with the cache's ``.part`` names (``clean_stale_parts`` reads the pid)."""
    write_bytes(path, data, part=path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def _npy_bytes(arr: np.ndarray, dtype) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=dtype), allow_pickle=False)
    return buf.getvalue()


def clean_stale_parts(folder: Path, max_age: float = STALE_PART_SECONDS) -> int:
    """Remove ``.part`` files in ``folder`` whose writing process is gone (the pid is in the name)
    or that are older than ``max_age`` seconds; returns how many were removed."""
    removed = 0
    now = time.time()
    try:
        entries = list(folder.glob(".*.part"))
    except OSError:
        return 0
    for part in entries:
        fields = part.name.rsplit(".", 3)  # .<name>.<pid>.<random>.part
        try:
            pid = int(fields[-3]) if len(fields) == 4 else -1
        except ValueError:
            pid = -1
        try:
            old = now - part.stat().st_mtime > max_age
            if old or pid <= 0 or (pid != os.getpid() and not pid_alive(pid)):
                part.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def _keys(xy: np.ndarray) -> np.ndarray:
    """One complex number per centre (x + iy): exact float64 equality, sortable."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    return xy[:, 0] + 1j * xy[:, 1]


class FeatureStore:
    """Features of spots under one store key, found by exact spot centre.

    ``lookup(centres)`` -> (found mask, features); ``save(centres, features)`` adds a chunk.
    Write failures turn the store read-only for the rest of the run (one ``CacheWarning``).
    """

    def __init__(self, root: str | os.PathLike, key: str, *, dim: int, meta: dict[str, Any] | None = None):
        self.key = key
        self.dim = int(dim)
        self.folder = Path(root).expanduser() / key[:2] / key
        self.writable = True
        self.saved_spots = 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            clean_stale_parts(self.folder)
            meta_path = self.folder / "meta.json"
            if not meta_path.exists():
                info = {"key": key, "dim": self.dim, "key_version": KEY_VERSION, **(meta or {})}
                _write_atomic(meta_path, json.dumps(info, indent=1, default=str).encode())
        except OSError as err:
            self._write_failed(err)

    def _write_failed(self, err: OSError) -> None:
        self.writable = False
        reason = err.strerror or str(err)
        _warn_once(
            f"write:{self.folder}",
            f"{self.folder}: cannot write the feature cache ({reason}); the run goes on without "
            "caching what is left -> free disk space or choose another --cache-dir",
        )

    def _chunks(self) -> list[str]:
        try:
            return sorted(p.name[: -len(".json")] for p in self.folder.glob("*.json") if p.name != "meta.json")
        except OSError:
            return []

    def _read_chunk(self, chunk: str, what: str) -> np.ndarray | None:
        """Centres (``what='xy'``) or features of a chunk, checked against its JSON; None if broken."""
        try:
            info = json.loads((self.folder / f"{chunk}.json").read_text())
            path = self.folder / (f"{chunk}.xy.npy" if what == "xy" else f"{chunk}.npy")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != info.get("sha256_xy" if what == "xy" else "sha256"):
                return None
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, json.JSONDecodeError, AttributeError):
            return None
        rows = info.get("rows")
        expected = (rows, 2) if what == "xy" else (rows, self.dim)
        dtype = np.float64 if what == "xy" else np.float32
        if arr.shape != expected or arr.dtype != dtype or info.get("dim") != self.dim:
            return None
        return arr

    def _drop(self, chunk: str) -> None:
        """Remove a chunk that failed its checksum (its spots are encoded again)."""
        for suffix in (".json", ".npy", ".xy.npy"):
            with contextlib.suppress(OSError):
                (self.folder / f"{chunk}{suffix}").unlink()

    def lookup(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, features)``: which of ``centers`` (n, 2) the store holds, and their features
        (rows of spots not found are undefined)."""
        want = _keys(centers)
        uniq, inverse = np.unique(want, return_inverse=True)
        got = np.zeros(len(uniq), bool)
        feats_u = np.empty((len(uniq), self.dim), np.float32)
        for chunk in self._chunks() if len(uniq) else ():
            xy = self._read_chunk(chunk, "xy")
            if xy is None:
                self._drop(chunk)
                continue
            have = _keys(xy)
            pos = np.minimum(np.searchsorted(uniq, have), len(uniq) - 1)
            hit = uniq[pos] == have
            if not hit.any():
                continue
            feats = self._read_chunk(chunk, "features")
            if feats is None:
                self._drop(chunk)
                continue
            got[pos[hit]] = True
            feats_u[pos[hit]] = feats[hit]
        inverse = inverse.reshape(-1)
        return got[inverse], feats_u[inverse]

    def save(self, centers: np.ndarray, features: np.ndarray) -> bool:
        """Add a chunk; False (and one warning, then silence) when it cannot be written."""
        if not self.writable:
            return False
        xy = np.ascontiguousarray(centers, np.float64).reshape(-1, 2)
        feats = np.ascontiguousarray(features, np.float32)
        if feats.shape != (len(xy), self.dim):
            raise ValueError(f"features {feats.shape} for {len(xy)} centres of dim {self.dim}")
        xy_bytes, f_bytes = _npy_bytes(xy, np.float64), _npy_bytes(feats, np.float32)
        chunk = hashlib.sha256(xy_bytes).hexdigest()[:32]
        info = {
            "rows": len(xy),
            "dim": self.dim,
            "sha256_xy": hashlib.sha256(xy_bytes).hexdigest(),
            "sha256": hashlib.sha256(f_bytes).hexdigest(),
        }
        try:
            _write_atomic(self.folder / f"{chunk}.xy.npy", xy_bytes)
            _write_atomic(self.folder / f"{chunk}.npy", f_bytes)
            _write_atomic(self.folder / f"{chunk}.json", json.dumps(info).encode())
        except OSError as err:
            self._write_failed(err)
            return False
        self.saved_spots += len(xy)
        return True
