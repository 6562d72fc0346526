"""One writer per run folder: ``<run>/.lock`` names the process that writes the run (pid, host, start, command).

The lock is an ``fcntl.flock`` on that file, so the kernel releases it when its process dies, ``kill -9``
included; the file then still names the dead owner, and the next start takes it over with a warning (a
*stale* lock). An owner on another host cannot be checked from here: the start is refused, naming that host,
unless ``force=True`` (``--force-unlock``). A clean release removes the file. Taking the lock again in the
process that holds it (``srnas pipeline`` around its search) is a no-op.
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


def _open_locked(path: Path) -> tuple[int | None, dict[str, Any]]:
    """Open and flock ``path`` (created if missing): (fd, the previous owner's record) or, when a live process
    holds the lock, (None, its record). Retries when the file was released (removed) between open and flock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            return None, owner
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, _owner(fd)
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
    _HELD[path] = 1
    try:
        yield path
    finally:
        del _HELD[path]
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still holding the flock: a waiting opener sees the inode change and retries
        os.close(fd)
