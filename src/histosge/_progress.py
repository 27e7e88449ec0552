"""One progress helper for every loop the package reports on (encoding, training, benchmarks).

On a terminal it is a normal tqdm bar. When the stream is not a terminal (a log file, a pipe,
a batch job's output) a redrawn bar would become thousands of lines, so it prints at most one
plain line every ``HISTOSGE_PROGRESS_INTERVAL`` seconds (default 10) and one final line::

    encode he-stats: 5120/14201 spots (36%), 412 spots/s, 12 s elapsed, ~22 s left
    encode he-stats: 14201 spots in 35 s (405 spots/s)

>>> from histosge._progress import progress
>>> for epoch in progress(range(300), desc="training", unit="epoch"):
...     ...
>>> bar = progress(total=n, desc="encode he-stats", unit="spot"); bar.update(64); bar.close()
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

DEFAULT_INTERVAL = 10.0


def _interval() -> float:
    value = os.environ.get("HISTOSGE_PROGRESS_INTERVAL", "").strip()
    try:
        return max(0.0, float(value)) if value else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def rate_text(n: float, elapsed: float, unit: str) -> str:
    """A rate as people read it: ``412 spots/s`` at one or more per second, ``4.1 s/slide`` below
    (never ``0 slide/s``)."""
    if elapsed <= 0 or n <= 0:
        return f"0 {unit}/s"
    rate = n / elapsed
    if rate >= 1:
        return f"{rate:.0f} {unit}/s"
    per = elapsed / n
    return f"{per:.1f} s/{unit}" if per < 90 else f"{_seconds(per)}/{unit}"


def early_stop(bar: Any, within: int | None) -> None:
    """Tell ``bar`` the loop stops within ``within`` more steps unless it improves (early stopping),
    so its time left is not only the time to the last step; None: no early stop in sight."""
    bar.stop_within = None if within is None else max(0, int(within))
    if not isinstance(bar, LogProgress) and within is not None and hasattr(bar, "set_postfix_str"):
        postfix = getattr(bar, "postfix", "") or ""
        bar.set_postfix_str(", ".join(x for x in (postfix, f"stops in <= {within} unless better") if x))


def _seconds(s: float) -> str:
    s = round(max(0.0, s))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class LogProgress:
    """The tqdm calls the package uses (iterate, ``update``, ``set_postfix``, ``close``), written
    as plain lines at most every ``interval`` seconds plus a final one."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        file: TextIO | None = None,
        interval: float | None = None,
        clock=time.monotonic,
    ):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = file
        self.interval = _interval() if interval is None else float(interval)
        self.n = 0
        self.postfix = ""
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._closed = False
        self.lines = 0  # lines written so far
        self.stop_within: int | None = None  # early stopping: steps left at most unless it improves

    # -- what tqdm offers ----------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                self.update(1)  # counted when handed out: a loop left early counts its last item
                yield item
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self._status(now))

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw in a log."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        elapsed = self._clock() - self._start
        if self.n or self.total:
            rate = f" ({rate_text(self.n, elapsed, self.unit)})" if elapsed > 0 and self.n else ""
            tail = f", {self.postfix}" if self.postfix else ""
            self._write(f"{self.desc}: {self.n} {self.unit}s in {_seconds(elapsed)}{rate}{tail}")

    # -- lines ---------------------------------------------------------------------------------
    def _status(self, now: float) -> str:
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total} {self.unit}s" if self.total else f"{self.n} {self.unit}s"
        parts = [f"{self.desc}: {done}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(rate_text(self.n, elapsed, self.unit))
        parts.append(f"{_seconds(elapsed)} elapsed")
        if self.total and rate > 0:
            last = max(0, self.total - self.n)
            if self.stop_within is not None and self.stop_within < last:
                parts.append(f"~{_seconds(self.stop_within / rate)} left if it stops early (no better result in "
                             f"{self.stop_within} {self.unit}s), ~{_seconds(last / rate)} at most")
            else:
                parts.append(f"~{_seconds(last / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _write(self, line: str) -> None:
        stream = self.file or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed pipe must not end the run
            return
        self.lines += 1


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    leave: bool = False,
    file: TextIO | None = None,
):
    """A progress bar for ``iterable`` (or ``total`` steps, advanced with ``update``).

    A tqdm bar when ``file`` (default stderr) is a terminal, else :class:`LogProgress`;
    ``disable=True`` gives a silent tqdm, so callers never need two code paths.
    """
    stream = file or sys.stderr
    if disable or _is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=file)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, file=file)
