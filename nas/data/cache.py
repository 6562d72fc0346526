"""Where generated LR images are cached: the per-user cache folder and reading a cached LR image back."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nas.errors import DataError
from nas.measure.images import read_image


def cache_dir() -> Path:
    """Per-user cache: ``SRNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/srnas``, else ``~/.cache/srnas``."""
    env = os.environ.get("SRNAS_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "srnas"


def read_cached(path: Path, hr: np.ndarray, scale: int) -> np.ndarray | None:
    """The cached LR image of ``hr`` at ``path``, or None when it is missing, unreadable or of the wrong size."""
    try:
        lr = read_image(path)
    except DataError:
        return None
    return lr if lr.shape[:2] == (hr.shape[0] // scale, hr.shape[1] // scale) else None
