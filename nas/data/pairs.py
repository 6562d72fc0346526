"""The paired-data types: ``Pair`` (one aligned LR/HR image pair) and ``PairedImages`` (a validated set of them)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.errors import DataError
from nas.measure.images import Pair, modcrop, read_image

SCALES = (2, 3, 4)
SPLITS = ("train", "val")
DEFAULT_MEMORY_BYTES = 2 << 30

__all__ = ["DEFAULT_MEMORY_BYTES", "SCALES", "SPLITS", "Entry", "Pair", "PairedImages", "center_crop", "check_scale"]


@dataclass
class Entry:
    """One pair of a set: where its files are (None for in-memory sets) and, when kept, the decoded pair."""

    name: str
    hr_path: Path | None
    lr_path: Path | None
    lr_shape: tuple[int, int]
    pair: Pair | None = None  # decoded, when the set fits in memory


class PairedImages:
    """Validated (LR, HR) pairs of one scale; ``pair(i)`` decodes on demand unless kept in memory."""

    def __init__(self, source: str, scale: int, entries: list[Entry]) -> None:
        self.source = source
        self.scale = scale
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    @property
    def lr_shapes(self) -> list[tuple[int, int]]:
        return [e.lr_shape for e in self._entries]

    def pair(self, index: int) -> Pair:
        entry = self._entries[index]
        if entry.pair is not None:
            return entry.pair
        assert entry.hr_path is not None and entry.lr_path is not None
        return load_checked(entry.name, entry.hr_path, entry.lr_path, self.scale)

    def pairs(self) -> Iterator[Pair]:
        for i in range(len(self)):
            yield self.pair(i)


def check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SCALES:
        raise DataError(f"unsupported scale {scale!r}: expected one of {', '.join(map(str, SCALES))}")
    return scale


def center_crop(pair: Pair, max_size: int, scale: int) -> Pair:
    """The centre of ``pair``, at most ``max_size`` HR pixels a side, aligned to the LR grid."""
    lh, lw = pair.lr.shape[:2]
    side = max(1, max_size // scale)
    ch, cw = min(lh, side), min(lw, side)
    top, left = (lh - ch) // 2, (lw - cw) // 2
    lr = pair.lr[top : top + ch, left : left + cw]
    hr = pair.hr[top * scale : (top + ch) * scale, left * scale : (left + cw) * scale]
    return Pair(pair.name, np.ascontiguousarray(lr), np.ascontiguousarray(hr))


def check_sizes(name: str, hr: np.ndarray, lr: np.ndarray, lr_path: Path | str, scale: int) -> None:
    h, w = hr.shape[:2]
    if h < scale or w < scale:
        raise DataError(f"HR image {name} ({w}x{h}) is smaller than the scale {scale}")
    want = (h // scale, w // scale)
    got = lr.shape[:2]
    if got == want:
        return
    hint = ""
    for s in SCALES:
        if s != scale and got == (h // s, w // s):
            hint = f"; it looks like a x{s} image, not x{scale}"
    raise DataError(
        f"LR image {lr_path} is {got[1]}x{got[0]}, expected {want[1]}x{want[0]} (HR {name} {w}x{h} // {scale}){hint}"
    )


def load_checked(name: str, hr_path: Path, lr_path: Path, scale: int) -> Pair:
    hr, lr = read_image(hr_path), read_image(lr_path)
    check_sizes(name, hr, lr, lr_path, scale)
    return Pair(name, lr, modcrop(hr, scale))
