"""What ``--data`` names: ``open_pairs(data, scale, split)`` for "embedded" or a folder (layouts: ``nas.data``)."""

from __future__ import annotations

from pathlib import Path

from nas.data.embedded import EMBEDDED, EMBEDDED_SPLITS, open_embedded
from nas.data.folders import open_folder, resolve_folder
from nas.data.pairs import DEFAULT_MEMORY_BYTES, SCALES, SPLITS, Pair, PairedImages, center_crop, check_scale
from nas.errors import DataError


def open_pairs(
    data: str | Path, scale: int, split: str = "train", *, memory_bytes: int = DEFAULT_MEMORY_BYTES
) -> PairedImages:
    """The ``split`` ("train" or "val") of ``data`` ("embedded" or a folder, see the module doc)."""
    check_scale(scale)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected train or val")
    if str(data) == EMBEDDED:
        return open_embedded(split, scale)
    hr_dir, lr_dir = resolve_folder(Path(data), scale, split)
    return open_folder(hr_dir, lr_dir, scale, memory_bytes)


def has_split(data: str | Path, split: str) -> bool:
    """Whether ``data`` has the given split (the embedded set and DIV2K roots have a val split)."""
    if str(data) == EMBEDDED:
        return split in EMBEDDED_SPLITS
    try:
        resolve_folder(Path(data), SCALES[0], split)
    except DataError:
        return False
    return True


def validation_pairs(
    data: str | Path | PairedImages,
    scale: int | None = None,
    split: str = "val",
    *,
    max_size: int | None = None,
    limit: int | None = None,
) -> list[Pair]:
    """Whole validation images as pairs, optionally centre-cropped to ``max_size`` HR pixels a side."""
    if not isinstance(data, PairedImages):
        if scale is None:
            raise DataError("validation_pairs needs a scale when given a data path")
        data = open_pairs(data, scale, split)
    pairs = [data.pair(i) for i in range(len(data) if limit is None else min(limit, len(data)))]
    if max_size is None:
        return pairs
    return [center_crop(p, max_size, data.scale) for p in pairs]
