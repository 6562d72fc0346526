"""Progress of long work: a tqdm bar on a terminal, plain milestone lines anywhere else (nohup, CI, ``| tee``).

``progress(total, desc=..., unit=...)`` returns an object with tqdm's ``update(n)``, ``set_postfix(dict)`` and
``close()``. When the stream (stderr) is a terminal it is a tqdm bar; otherwise it writes one line per milestone,
at most every ``PLAIN_FRACTION`` of the total *and* ``PLAIN_SECONDS`` apart (whichever is rarer), plus a first
and a last line: ``train: step 300/1000 (30%) loss=0.0214 | 9.81 step/s, elapsed 0:00:31, ETA 0:01:11``.
``SRNAS_PROGRESS`` = ``bar`` / ``plain`` / ``off`` overrides the choice (default ``auto``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TextIO, TypeVar

from tqdm import tqdm

from nas.errors import SrnasError

MODE_ENV = "SRNAS_PROGRESS"
MODES = ("auto", "bar", "plain", "off")
PLAIN_FRACTION = 0.1
PLAIN_SECONDS = 30.0

T = TypeVar("T")


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True) -> None: ...

    def close(self) -> None: ...


def progress_mode(stream: TextIO | None = None) -> str:
    """``bar``, ``plain`` or ``off``: ``SRNAS_PROGRESS`` when set, else ``bar`` on a terminal and ``plain`` off one."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise SrnasError(f"{MODE_ENV}={mode!r}: expected one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    stream = stream if stream is not None else sys.stderr
    try:
        return "bar" if stream.isatty() else "plain"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "plain"


def progress(
    total: int | None,
    *,
    desc: str,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    leave: bool = True,
    stream: TextIO | None = None,
) -> Progress:
    """A progress reporter for ``total`` units (see the module doc); ``enabled=False`` reports nothing."""
    mode = progress_mode(stream) if enabled else "off"
    if mode == "bar":
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=stream)
    if mode == "plain":
        return PlainProgress(total, desc=desc, unit=unit, initial=initial, stream=stream)
    return tqdm(total=total, initial=initial, disable=True)


def track(items: Iterable[T], *, desc: str, unit: str = "it", total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """Iterate ``items`` while reporting progress (``progress``'s keyword arguments)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = progress(total, desc=desc, unit=unit, **kwargs)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


class PlainProgress:
    """Milestone lines for logs: step, postfix (loss...), speed, elapsed time and ETA; no carriage returns."""

    def __init__(
        self,
        total: int | None,
        *,
        desc: str,
        unit: str = "it",
        initial: int = 0,
        stream: TextIO | None = None,
        min_fraction: float = PLAIN_FRACTION,
        min_seconds: float = PLAIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.stream = stream
        self.min_fraction, self.min_seconds, self.clock = min_fraction, min_seconds, clock
        self.start_n, self.start_t = initial, clock()
        self.last_n, self.last_t = initial, self.start_t
        self.postfix: dict[str, Any] = {}
        self.closed = False
        self._write()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        step_due = self.total is None or self.n - self.last_n >= self.min_fraction * self.total
        if step_due and now - self.last_t >= self.min_seconds and self.n != self.total:
            self.last_n, self.last_t = self.n, now
            self._write(now)

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.n != self.last_n or self.n == self.start_n:
            self._write(done=True)

    def line(self, now: float | None = None, done: bool = False) -> str:
        """The line for the current state (what ``update`` writes at a milestone)."""
        now = self.clock() if now is None else now
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = "".join(f" {k}={v}" for k, v in self.postfix.items())
        elapsed = now - self.start_t
        done_n = self.n - self.start_n
        parts = []
        if done_n > 0 and elapsed > 0:
            rate = done_n / elapsed
            parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {_hms(elapsed)}")
        if self.total is not None and done_n > 0 and self.n < self.total and not done:
            parts.append(f"ETA {_hms((self.total - self.n) * elapsed / done_n)}")
        head = f"{self.desc}: {self.unit} {count}{pct}{post}"
        ended = " done" if self.total is None or self.n >= self.total else " stopped"  # closed early: an error
        return f"{head}{ended if done else ''} | {', '.join(parts)}"

    def _write(self, now: float | None = None, done: bool = False) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(self.line(now, done), file=stream, flush=True)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
