"""Errors a user can cause, each carrying the file or option at fault and the fix.

The CLI prints ``str(err)`` as one line and exits non-zero; the Python API raises the
exception so notebooks can catch it. Anything that is *not* a HistosgeError is a bug in
histosge and is allowed to show a traceback.
"""

from __future__ import annotations


class HistosgeError(Exception):
    """A problem with the user's input or environment, with what to do about it."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        head = f"{self.where}: {self.what}" if self.where else self.what
        return f"{head} -> {self.fix}" if self.fix else head


class InputError(HistosgeError, ValueError):
    """The data given (counts, positions, image, AnnData) cannot be used as it is. Also a
    ``ValueError``, so code written for scanpy-style errors catches it."""


class EncoderError(HistosgeError, RuntimeError):
    """An image encoder cannot be built or its weights cannot be had (also a ``RuntimeError``)."""


class OutputError(HistosgeError):
    """The output path cannot be written."""


def broken_link(path) -> str | None:
    """What is wrong with ``path`` when it is a symbolic link that cannot be followed (one that
    loops, or points at nothing), else None: said as that, not as a file that is missing or a
    name that is unknown."""
    import os

    path = os.fspath(path)
    if not os.path.islink(path):
        return None
    chain, seen, here = [path], {os.path.abspath(path)}, path
    while os.path.islink(here) and len(chain) < 40:
        target = os.readlink(here)
        here = os.path.join(os.path.dirname(here), target)
        if os.path.abspath(here) in seen:
            return f"a symbolic link that loops ({' -> '.join([*chain, target])})"
        seen.add(os.path.abspath(here))
        chain.append(target)
    if os.path.exists(here):
        return None
    if len(chain) >= 40:
        return "a symbolic link that loops (too many levels)"
    return f"a symbolic link to {here}, which does not exist"
