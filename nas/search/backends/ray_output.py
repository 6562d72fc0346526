"""Ray's output off the user's terminal: while the Ray backend runs, everything Ray prints in the driver process goes
to ``<run>/ray/driver.log``, and srnas' own lines go to the terminal.

Ray writes from Python (Tune's experiment boxes and "Trial ... errored" lines through ``print``, the token and
deprecation warnings and the per-failure tracebacks through the ``ray`` loggers) and from its C++ core (straight
to file descriptors 1 and 2). ``ray_output`` therefore points fds 1 and 2 at the log for the duration of the block
(processes started meanwhile, Ray's local cluster included, inherit the log, not the terminal), does the same for
``sys.stdout``/``sys.stderr`` and the ``ray`` loggers' streams when they are not those fds (pytest, notebooks), and
yields a ``Terminal`` holding the user's original stdout/stderr: progress bars and the one line per failure go
there. Ray's workers keep their own logs in Ray's session folder (``/tmp/ray/session_*/logs``); what they print
is also forwarded to the driver, so it lands in ``driver.log`` too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

DRIVER_LOG = "driver.log"


@dataclass(frozen=True)
class Terminal:
    """The user's streams while Ray's output is diverted, and where it goes."""

    out: TextIO
    err: TextIO
    log: Path

    def failure(self, text: str) -> None:
        """One line on the terminal's stderr about a failure, pointing at the log for Ray's details."""
        print(f"{text} (Ray's trace: {self.log})", file=self.err, flush=True)


def _flush(*streams: TextIO) -> None:
    for stream in streams:
        with contextlib.suppress(Exception):
            stream.flush()


def _ray_stream_handlers() -> list[logging.StreamHandler]:
    """The stream handlers (not file handlers) of the ``ray`` logger and its children."""
    names = ["ray"] + [n for n in logging.root.manager.loggerDict if n.startswith("ray.")]
    handlers = []
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handlers.append(handler)
    return handlers


@contextlib.contextmanager
def _fds_to(log_fd: int) -> Iterator[tuple[int, int]]:
    """Point fds 1 and 2 at ``log_fd``; yields duplicates of the original ones; restores them at exit."""
    saved = (os.dup(1), os.dup(2))
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield saved
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _terminal_stream(original: TextIO, fd: int) -> TextIO:
    """A text stream to the user's terminal: a new file on ``fd`` when ``original`` writes to fd 1/2, else
    ``original`` itself (already off those fds, e.g. pytest's capture)."""
    try:
        on_fd = original.fileno() in (1, 2)
    except (AttributeError, ValueError, io.UnsupportedOperation):
        on_fd = False
    if not on_fd:
        return original
    return open(os.dup(fd), "w", buffering=1, encoding=getattr(original, "encoding", None) or "utf-8")


@contextlib.contextmanager
def ray_output(ray_dir: str | Path) -> Iterator[Terminal]:
    """Divert Ray's output to ``ray_dir/driver.log`` (appended, one header line per block) for the block."""
    log = Path(ray_dir) / DRIVER_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    _flush(sys.stdout, sys.stderr)
    original_out, original_err = sys.stdout, sys.stderr
    with open(log, "a", buffering=1, encoding="utf-8") as text:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        print(f"---- srnas: Ray driver output, pid {os.getpid()}, {stamp}", file=text, flush=True)
        with _fds_to(text.fileno()) as (term_out_fd, term_err_fd):
            out = _terminal_stream(original_out, term_out_fd)
            err = _terminal_stream(original_err, term_err_fd)
            handlers = _ray_stream_handlers()
            previous = [h.setStream(text) for h in handlers]
            sys.stdout = sys.stderr = text
            try:
                yield Terminal(out, err, log)
            finally:
                _flush(text, out, err)
                sys.stdout, sys.stderr = original_out, original_err
                for handler, stream in zip(handlers, previous, strict=True):
                    if stream is not None:
                        handler.setStream(stream)
                for stream, original in ((out, original_out), (err, original_err)):
                    if stream is not original:
                        stream.close()
