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
