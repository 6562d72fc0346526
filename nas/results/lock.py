"""One writer per run folder: ``<run>/.lock`` names the process that writes the run (pid, host, start, command).

The lock is an ``fcntl.flock`` on that file, so the kernel releases it when its process dies, ``kill -9``
included; the file then still names the dead owner, and the next start takes it over with a warning (a
*stale* lock). An owner on another host cannot be checked from here: the start is refused, naming that host,
unless ``force=True`` (``--force-unlock``). A clean release removes the file. Taking the lock again in the
process that holds it (``srnas pipeline`` around its search) is a no-op. Taking the lock also removes the
temporary files that dead writers of this host left in the run folder (``nas.io.remove_stale_temps``).

``file_lock`` is the plain, blocking form (``results/.index.csv.lock``). Both remove their lock file on release,
*while still holding the flock*; every locker re-checks after ``flock`` that the file it locked is still the one
on disk (same inode) and retries otherwise, so a waiter never holds a lock on a removed file that a third
process has already replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nas.errors import RunLockedError
from nas.io import remove_stale_temps

LOCK_FILE = ".lock"
_HELD: dict[Path, int] = {}  # lock files this process holds -> nesting depth


def _owner(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        owner = json.loads(os.read(fd, 1 << 16) or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    return (
        f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} "
        f"(since {owner.get('started', '?')}: {owner.get('command', '?')})"
    )


def _flock_current(path: Path, blocking: bool) -> int | None:
    """Open ``path`` (created if missing) and flock it: the fd, or None when ``blocking`` is false and another
    process holds it (the fd is then closed). Retries when the file was removed or replaced between open and
    flock (a release unlinks it), so the returned fd locks the file that is on disk now."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _release(path: Path, fd: int) -> None:
    """Remove the lock file while still holding its flock (waiters see the inode change and retry), then unlock."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` for the block, waiting for other holders; the file is removed on
    release, so nothing is left behind. Not re-entrant (a second ``file_lock`` of the same path in one process
    waits for ever)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _flock_current(path, blocking=True)
    assert fd is not None
    try:
        yield path
    finally:
        _release(path, fd)


def _open_locked(path: Path) -> tuple[int | None, dict[str, Any]]:
    """Open and flock ``path`` (created if missing): (fd, the previous owner's record) or, when a live process
    holds the lock, (None, its record)."""
    fd = _flock_current(path, blocking=False)
    if fd is not None:
        return fd, _owner(fd)
    try:  # held by a live process: read its record without locking
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None, {}
    try:
        return None, _owner(fd)
    finally:
        os.close(fd)


def _check_stale(run_dir: Path, owner: dict[str, Any], force: bool) -> None:
    """The lock file names an owner that no longer holds the flock: on this host it is gone (the kernel
    released its lock), so take over; an owner on another host cannot be checked: refuse unless ``force``."""
    if not owner:
        return
    if owner.get("host") != socket.gethostname() and not force:
        raise RunLockedError(
            f"{run_dir} is locked by {_describe(owner)}, on another host that this machine cannot check; "
            "if that process is gone, run again with --force-unlock"
        )
    print(f"srnas: warning: {run_dir}: taking over the stale lock of {_describe(owner)}", file=sys.stderr)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, force: bool = False) -> Iterator[Path]:
    """Hold ``<run_dir>/.lock`` for the duration of the block (see the module docstring); creates ``run_dir``.

    Raises ``RunLockedError`` (naming the owner's pid and host) when another process writes the run."""
    run_dir = Path(run_dir)
    path = (run_dir / LOCK_FILE).resolve()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, owner = _open_locked(path)
    if fd is None:
        raise RunLockedError(f"{run_dir} is in use by {_describe(owner)}; wait for it to end, or use another --run")
    try:
        _check_stale(run_dir, owner, force)
    except BaseException:
        os.close(fd)
        raise
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(me) + "\n").encode())
    os.fsync(fd)
    remove_stale_temps(run_dir)
    _HELD[path] = 1
    try:
        yield path
    finally:
        del _HELD[path]
        _release(path, fd)
