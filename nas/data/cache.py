"""Where generated LR images are cached: one file per HR image in the per-user cache, never in the data folder.

The file of an HR image is keyed by its absolute path and its size and modification time, so an edited
(or replaced) image gets a new LR image and a read-only data folder needs no write access.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nas.errors import DataError
from nas.measure.images import read_image, write_image
from nas.paths import home_dir

LR_CACHE_VERSION = 1  # part of every key: bump it when the generated LR images change


def cache_dir() -> Path:
    """Per-user cache (``nas.paths.home_dir``: ``SRNAS_HOME``, else ``$XDG_CACHE_HOME/srnas`` or ``~/.cache/srnas``)."""
    return home_dir()


def read_cached(path: Path, hr: np.ndarray, scale: int) -> np.ndarray | None:
    """The cached LR image of ``hr`` at ``path``, or None when it is missing, unreadable or of the wrong size."""
    try:
        lr = read_image(path)
    except DataError:
        return None
    return lr if lr.shape[:2] == (hr.shape[0] // scale, hr.shape[1] // scale) else None


def lr_cache_file(hr_file: Path, scale: int) -> Path:
    """Cache file of ``hr_file``'s generated LR image: ``cache_dir()/lr/X<scale>/<key[:2]>/<stem>-<key>.png``."""
    st = hr_file.stat()
    ident = f"v{LR_CACHE_VERSION}\0{hr_file.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0x{scale}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:24]
    return cache_dir() / "lr" / f"X{scale}" / key[:2] / f"{hr_file.stem}-{key}.png"


def write_cached(path: Path, lr: np.ndarray, hr_file: Path) -> None:
    """Write a generated LR image to the cache; an unwritable cache is a DataError naming the way out."""
    try:
        write_image(path, lr)
    except OSError as exc:
        raise DataError(
            f"cannot cache the LR image of {hr_file} at {path}: {exc}; set SRNAS_HOME to a writable folder"
        ) from exc
