"""Write outputs atomically: to a temporary file beside the target, then rename.

An interrupted run (Ctrl-C, kill, crash) therefore never leaves a half-written file
under the name the user asked for.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before hours of work, if ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise OutputError(
            "output folder does not exist", where=str(parent), fix="create it or choose another -o path"
        )
    if not os.access(parent, os.W_OK):
        raise OutputError("output folder is not writable", where=str(parent), fix="choose another -o path")
    if path.is_dir():
        raise OutputError("output path is a folder", where=str(path), fix="give a file name")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``path``, on failure delete it."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_h5ad(adata, path: str | os.PathLike) -> Path:
    """Write an AnnData atomically (anndata itself writes in place)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)
