"""Output safety: check an output path before any work, then write it atomically.

``check_output(path, inputs=[...])`` is the first thing every command calls: the output must
not be (or replace a file inside) one of the inputs, must be a regular file or nothing (never
a device, pipe or folder), must end in a suffix we can write (``.h5ad``, or ``.zarr`` written
as a real zarr store), and its folder must exist and accept a new file. It also removes
``.part`` files of the same output that a killed run left behind.

``write_output(adata, path)`` then writes to a temporary ``.part`` beside the target (laid out
as ``histosge.storage`` says: each array once, compressed) and
renames it onto the name the user asked for, so an interrupted run (Ctrl-C, SIGTERM, a crash,
a full disk) never leaves a half-written file under that name. Files and folders are created
with the permissions the umask allows (``mkstemp`` would make them 0600). A disk that fills
up mid-write becomes one ``OutputError`` line and the temporary file is removed.

Interrupts: the CLI's SIGTERM/SIGINT handler calls ``request_stop()`` before raising
``KeyboardInterrupt``. The rename that publishes an output checks that flag with the signals
blocked, so a termination request that a library swallowed (caught and ignored the
``KeyboardInterrupt``) still ends the run before anything is published.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import OutputError

#: What ``write_output`` can write: an HDF5 AnnData or a zarr store (a folder).
OUTPUT_SUFFIXES = (".h5ad", ".zarr")
#: Leftover ``.part`` files of another machine (shared folders) are removed only after this long.
FOREIGN_PART_AGE_S = 24 * 3600

_STOP = threading.Event()
_COMMITTED: set[str] = set()
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DISK_FULL_TEXT = ("no space left", "disk quota", "file too large", "errno = 28", "errno = 27", "errno = 122")


# -- interrupts ----------------------------------------------------------------------------------
def request_stop() -> None:
    """Record that the process was asked to terminate (called by the CLI's signal handler)."""
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


def was_committed(path: str | os.PathLike) -> bool:
    """True once ``path`` was published (renamed into place) by this process."""
    return os.path.abspath(path) in _COMMITTED


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back (they are delivered afterwards) for a check-then-rename."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - platforms without sigmask
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


# -- permissions ---------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # pragma: no cover - no /proc
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


# -- temporary names and stale leftovers ---------------------------------------------------------
def _part_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.part")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a writer whose ``.part`` file is not stale)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's live process
        return True
    return True


def write_bytes(path: str | os.PathLike, data: bytes, *, part: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically: a ``.part`` file beside it (mode from the umask;
    ``part``: its name, for a store that cleans its own leftovers by name), fsync, rename. An
    interrupted write leaves no ``.part`` behind. For small files of a store (the feature cache,
    a cohort's manifest); an output the user named goes through ``atomic_path``."""
    path = Path(path)
    tmp = part or _part_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_stale_parts(path: str | os.PathLike) -> list[Path]:
    """Remove ``.part`` leftovers of ``path`` whose writer is gone; return what was removed.

    A part file made on this machine is stale when the process id in its name no longer runs
    (a run killed with ``kill -9`` or by the OOM killer); one from another machine (a shared
    folder) or in the old ``mkstemp`` naming only after ``FOREIGN_PART_AGE_S``.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    removed: list[Path] = []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-)?[^/]*\.part$")
    try:
        candidates = list(parent.iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in candidates:
        m = pattern.match(p.name)
        if m is None:
            continue
        try:
            age = now - p.lstat().st_mtime
        except OSError:
            continue
        if m["pid"] is not None and m["host"] == _HOST:
            stale = int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"]))
        else:
            stale = age > FOREIGN_PART_AGE_S
        if not stale:
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


# -- checks --------------------------------------------------------------------------------------
def _check_parent(path: Path, option: str) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    # the first component that exists decides: a regular file there means "not a folder"
    probe = parent
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():  # a dangling link
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(
            f"{probe} is a file, not a folder, so the output cannot be written below it",
            where=str(path),
            fix=f"choose another {option} path (or move that file away)",
        )
    if not parent.is_dir():
        raise OutputError(
            "output folder does not exist", where=str(parent), fix=f"create it or choose another {option} path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError("output folder is not writable", where=str(parent), fix=f"choose another {option} path")
    return parent


def _same(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


def _inside(child: Path, folder: Path) -> bool:
    try:
        child.relative_to(folder)
    except ValueError:
        return False
    return True


def _check_not_input(path: Path, inputs: Iterable, option: str) -> None:
    real = Path(os.path.realpath(path))
    exists = path.exists()
    for item in inputs:
        if item is None:
            continue
        inp = Path(item)
        if not inp.exists():
            continue
        inp_real = Path(os.path.realpath(inp))
        if real == inp_real or (exists and _same(path, inp)):
            raise OutputError(
                f"the output is the input {inp}: writing it would destroy the input",
                where=option,
                fix="choose a new output file name",
            )
        if inp.is_dir() and _inside(real, inp_real) and (exists or path.is_symlink()):
            raise OutputError(
                f"the output would replace {real.relative_to(inp_real)} inside the input folder {inp}",
                where=option,
                fix="choose a new output file name (or write outside the input folder)",
            )
        if exists and inp.is_dir():  # a hard link to a file of the input folder: same inode
            st = path.stat()
            if st.st_nlink > 1:
                for f in inp.rglob("*"):
                    if f.is_file() and _same(f, path):
                        raise OutputError(
                            f"the output is a hard link to {f} of the input: writing it would destroy it",
                            where=option,
                            fix="choose a new output file name",
                        )


def check_output(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    suffixes: tuple[str, ...] | None = OUTPUT_SUFFIXES,
    option: str = "-o",
    folder_marker: str | None = None,
) -> Path:
    """Fail in one line, before any work, if ``path`` cannot or must not be written; return it.

    ``inputs`` are the files and folders the run reads (a Space Ranger folder, an .h5ad, an
    image): the output may not be one of them (same real path or same inode, symlinks and
    hard links included), nor replace a file inside an input folder. The output must be a
    regular file or not exist (a ``.zarr`` output: a folder that is a zarr store, or nothing);
    ``suffixes`` lists the endings accepted (None: any). Its folder must exist and be writable.
    Stale ``.part`` leftovers of the same output are removed (``remove_stale_parts``).

    ``folder_marker`` makes the output a folder (a saved model, say): it may exist only empty or
    as an earlier output of the same kind, recognised by the file ``folder_marker`` in it; write
    it with ``atomic_path(path, folder=True)``.
    """
    path = Path(path).expanduser()
    name = path.name
    if name in ("", ".", ".."):
        raise OutputError("output path names a folder", where=str(path), fix=f"give a file name to {option}")
    _check_not_input(path, inputs, option)
    suffix = path.suffix.lower()
    if path.exists() or path.is_symlink():
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = None  # a dangling symlink: the rename replaces the link itself
        if mode is not None:
            if stat.S_ISDIR(mode):
                if folder_marker is not None:
                    if any(path.iterdir()) and not (path / folder_marker).exists():
                        raise OutputError(
                            f"output folder exists and holds other files (no {folder_marker}); it would be "
                            "replaced",
                            where=str(path),
                            fix=f"choose a new {option} name or remove the folder yourself",
                        )
                elif suffix != ".zarr" or (suffixes is not None and suffix not in suffixes):
                    raise OutputError("output path is a folder", where=str(path), fix="give a file name")
                elif not _is_zarr_store(path):
                    raise OutputError(
                        "output folder exists and is not a zarr store; it would be replaced",
                        where=str(path),
                        fix="choose a new .zarr name or remove the folder yourself",
                    )
            elif not stat.S_ISREG(mode):
                kind = "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
                raise OutputError(
                    f"output path is {kind} (a pipe, socket or device node is never replaced)",
                    where=str(path),
                    fix="give a regular file name",
                )
            elif suffix == ".zarr" or folder_marker is not None:
                raise OutputError(
                    "the output is a folder, but a regular file has this name",
                    where=str(path),
                    fix="choose another name or remove that file yourself",
                )
    if suffixes is not None and suffix not in suffixes:
        raise OutputError(
            f"output must end in {' or '.join(suffixes)}, not {suffix or 'nothing'!r}",
            where=str(path),
            fix=f"e.g. {option} {path.stem or 'result'}{suffixes[0]}",
        )
    parent = _check_parent(path, option)
    remove_stale_parts(path)
    try:  # a probe catches what os.access cannot see (read-only mounts, full inode tables)
        probe = _part_name(path)
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(
            f"cannot create a file in the output folder ({err.strerror or err})",
            where=str(parent),
            fix=f"choose another {option} path",
        ) from None
    return path


def check_writable(path: str | os.PathLike) -> Path:
    """``check_output`` for a file of any suffix that is no input (reports, JSON, PNG)."""
    return check_output(path, suffixes=None)


def _is_zarr_store(path: Path) -> bool:
    return any((path / f).exists() for f in (".zgroup", ".zattrs", "zarr.json", ".zarray"))


# -- writing -------------------------------------------------------------------------------------
def _disk_full(err: BaseException) -> bool:
    seen = 0
    e: BaseException | None = err
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return True
        if any(t in str(e).lower() for t in _DISK_FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _remove(p: Path) -> None:
    with contextlib.suppress(OSError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _publish(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path`` unless a stop was requested (signals held during the check)."""
    with _signals_blocked():
        if _STOP.is_set():
            raise KeyboardInterrupt
        if tmp.is_dir() and path.is_dir():  # a directory cannot replace a non-empty one in one step
            old = _part_name(path)
            os.replace(path, old)
            os.replace(tmp, path)
            _COMMITTED.add(os.path.abspath(path))
            _remove(old)
        else:
            os.replace(tmp, path)
            _COMMITTED.add(os.path.abspath(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    ``folder=True`` makes the temporary a folder (zarr stores). The temporary is created with
    the permissions the umask allows. A full disk becomes an ``OutputError``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        _check_parent(path, "-o")
    remove_stale_parts(path)
    tmp = _part_name(path)
    try:
        if folder:
            os.mkdir(tmp, 0o777)
        else:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as err:
        if _disk_full(err):
            raise OutputError("no space left on the device", where=str(path.parent),
                              fix="free some space or choose another -o path") from None
        raise OutputError(f"cannot create a file here ({err.strerror or err})", where=str(path.parent),
                          fix="choose another -o path") from None
    try:
        yield tmp
        if not folder and tmp.is_file():
            # some writers (safetensors) replace the file they are given with a 0600 one
            os.chmod(tmp, 0o666 & ~current_umask())
        _publish(tmp, path)
    except BaseException as err:
        with _signals_blocked():  # a second Ctrl-C must not leave the temporary behind
            _remove(tmp)
        if isinstance(err, Exception) and _disk_full(err):
            raise OutputError(
                "no space left on the device while writing; nothing was written",
                where=str(path),
                fix="free some space (or choose another -o path) and rerun",
            ) from None
        raise


def write_output(adata, path: str | os.PathLike, *, features: bool = False, lossless: bool = False) -> Path:
    """Write an AnnData atomically as ``.h5ad`` (HDF5) or ``.zarr`` (a zarr store), by suffix.

    The layout is ``histosge.storage``'s: each array once, compressed, X and layers of a histosge
    output rounded to multiples of 2^-10 unless ``lossless``, ``obsm['features']`` left out
    unless ``features``.
    """
    from . import storage

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        import warnings

        with atomic_path(path, folder=True) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Writing zarr v2 data", category=UserWarning)
            storage.write_zarr(adata, tmp, features=features, lossless=lossless)
    elif suffix == ".h5ad":
        with atomic_path(path) as tmp:
            storage.write_h5ad(adata, tmp, features=features, lossless=lossless)
    else:
        raise OutputError(f"cannot write {suffix or 'a file without suffix'!r}", where=str(path),
                          fix="end the output name in .h5ad or .zarr")
    return path


def write_h5ad(adata, path: str | os.PathLike) -> Path:
    """Write an AnnData atomically as .h5ad (anndata itself writes in place)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)
