"""The one atomic file writer: every file srnas writes goes through a unique temporary file in the target's folder,
is flushed to disk (fsync) and renamed over the target, so a reader (or a crash) sees the old file or the new one,
never half of one, and two writers of the same file never share a temporary name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success it is fsynced and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
