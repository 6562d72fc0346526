"""The one atomic file writer: every file srnas writes goes through a unique temporary file in the target's folder,
is flushed to disk (fsync) and renamed over the target, so a reader (or a crash) sees the old file or the new one,
never half of one, and two writers of the same file never share a temporary name.

A temporary file is named ``.<target>~<host>~<pid>~<random>.tmp``: the writer that a ``kill -9`` stopped mid-write
is recognisable, and ``remove_stale_temps`` (called when a command starts on a folder) deletes the temporaries of
writers on this host that are no longer alive. Temporaries of live processes and of other hosts are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

_TEMP = re.compile(r"^\.(?P<target>.+)~(?P<host>[^~/]+)~(?P<pid>\d+)~[^~/]*\.tmp$")


def _host() -> str:
    """This host's name as it appears in temporary names (``~`` and ``/`` would break the pattern)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporary files for a target called ``name``."""
    return f".{name}~{_host()}~{os.getpid()}~"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts as alive; pids <= 0 never do)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError, OverflowError):  # e.g. a pid beyond the platform's range
        return False
    return True


def stale_temps(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Temporary files under ``folder`` left by dead writers of this host (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = _host()
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    out = []
    for path in found:
        m = _TEMP.match(path.name)
        if m and m["host"] == host and not pid_alive(int(m["pid"])) and path.is_file():
            out.append(path)
    return sorted(out)


def remove_stale_temps(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Delete ``stale_temps(folder)``; returns what was removed (a file already gone is skipped)."""
    removed = []
    for path in stale_temps(folder, recursive):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success it is fsynced and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def atomic_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """``obj`` as JSON (plus a final newline), atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` atomically (plain tensors and containers: read back with ``weights_only=True``)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> Path:
    """A safetensors file of contiguous CPU tensors, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    return Path(path)


def atomic_with(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` (any writer that takes a path, e.g. Pillow's ``save``) and commit it atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)
