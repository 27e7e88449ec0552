"""Disk cache of spot features, in chunks, so repeated and interrupted runs skip finished work.

Layout: ``<cache_dir>/<key[:2]>/<key>/`` holds ``meta.json`` (what the key was made of, for people)
and, per chunk of ``chunk_size`` spots, ``chunk_00000.npy`` plus ``chunk_00000.json`` with its row
count, dim and SHA-256. Both are written to a temporary file and renamed, the ``.npy`` first, so a
chunk counts as done only once its checksum file exists; a chunk whose bytes no longer match is
recomputed.

The key hashes everything that decides the features: the image content (file size, mtime and
sampled blocks, or the bytes of an in-memory image), the spot centres, the scale, the patch side,
and the encoder (name, input size, normalisation, weights identity).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

KEY_VERSION = "histosge-features/1"
DEFAULT_CHUNK = 256
_SAMPLE_BLOCKS = 16
_BLOCK = 1 << 16


def default_cache_dir() -> Path:
    env = os.environ.get("HISTOSGE_CACHE")
    if env:
        return Path(env).expanduser() / "features"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "histosge" / "features"


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
    arr = getattr(source, "_array", None)
    if isinstance(arr, np.ndarray):
        return array_fingerprint(arr)
    if isinstance(source, np.ndarray):
        return array_fingerprint(source)
    raise TypeError(f"cannot fingerprint image source {source!r}; pass cache_dir=False to skip the cache")


def feature_key(parts: dict[str, Any], centers: np.ndarray) -> str:
    h = hashlib.sha256(KEY_VERSION.encode())
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(np.asarray(centers, np.float64)).tobytes())
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


class FeatureCache:
    """Chunked store of an ``(n, dim)`` float32 feature matrix under one key."""

    def __init__(
        self,
        root: str | os.PathLike,
        key: str,
        *,
        n: int,
        dim: int,
        chunk_size: int = DEFAULT_CHUNK,
        meta: dict[str, Any] | None = None,
    ):
        self.key = key
        self.n = int(n)
        self.dim = int(dim)
        self.chunk_size = int(chunk_size)
        self.folder = Path(root).expanduser() / key[:2] / key
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            info = {"key": key, "n": self.n, "dim": self.dim, "chunk_size": self.chunk_size, **(meta or {})}
            _atomic_write_bytes(meta_path, json.dumps(info, indent=1, default=str).encode())

    @property
    def n_chunks(self) -> int:
        return (self.n + self.chunk_size - 1) // self.chunk_size

    def rows(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min(self.n, (chunk + 1) * self.chunk_size))

    def _paths(self, chunk: int) -> tuple[Path, Path]:
        stem = f"chunk_{chunk:05d}"
        return self.folder / f"{stem}.npy", self.folder / f"{stem}.json"

    def load(self, chunk: int) -> np.ndarray | None:
        """The chunk's features, or None when absent, incomplete or corrupt (then recompute it)."""
        npy, info_path = self._paths(chunk)
        if not (npy.is_file() and info_path.is_file()):
            return None
        try:
            info = json.loads(info_path.read_text())
            data = npy.read_bytes()
            if hashlib.sha256(data).hexdigest() != info.get("sha256"):
                return None
            import io

            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, json.JSONDecodeError):
            return None
        expected = (len(self.rows(chunk)), self.dim)
        if arr.shape != expected or arr.dtype != np.float32:
            return None
        return arr

    def save(self, chunk: int, arr: np.ndarray) -> None:
        expected = (len(self.rows(chunk)), self.dim)
        if arr.shape != expected:
            raise ValueError(f"chunk {chunk}: shape {arr.shape}, expected {expected}")
        npy, info_path = self._paths(chunk)
        data = _npy_bytes(arr)
        _atomic_write_bytes(npy, data)
        info = {"rows": expected[0], "dim": self.dim, "sha256": hashlib.sha256(data).hexdigest()}
        _atomic_write_bytes(info_path, json.dumps(info).encode())
