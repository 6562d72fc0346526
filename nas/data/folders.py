"""Image folders as paired data: the DIV2K / Flickr2K / benchmark layouts, LR read from disk or generated.

See ``nas.data`` for the layouts ``resolve_folder`` understands. Every image is decoded and checked
before anything is written, so bad input gives one ``DataError`` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nas.data.cache import cache_dir, read_cached
from nas.data.pairs import Entry, Pair, PairedImages, load_checked
from nas.errors import DataError
from nas.measure.images import IMAGE_SUFFIXES, list_images, modcrop, read_image, write_image
from nas.measure.imresize import downscale


def resolve_folder(data: Path, scale: int, split: str = "train") -> tuple[Path, Path | None]:
    """(HR folder, LR folder or None when LR must be generated) for ``data``, as the module doc says."""
    if not data.is_dir():
        raise DataError(f"data folder not found: {data}")
    if _has_images(data):
        if split != "train":
            raise DataError(f"{data} is a plain image folder: it has no {split} split")
        return data, find_lr_dir(data, data, scale)
    if (data / "HR").is_dir():
        if split != "train":
            raise DataError(f"{data} has no {split} split")
        return data / "HR", find_lr_dir(data / "HR", data, scale)
    hr_dirs = sorted(p for p in data.iterdir() if p.is_dir() and p.name.endswith("_HR"))
    if not hr_dirs:
        raise DataError(
            f"no images in {data} and no HR subfolder (expected HR images, DIR/HR, or DIV2K's NAME_train_HR)"
        )
    keys = ("train",) if split == "train" else ("valid", "val")
    chosen = [p for p in hr_dirs if any(k in p.name.lower() for k in keys)]
    if not chosen and split == "train" and len(hr_dirs) == 1:
        chosen = hr_dirs
    if len(chosen) != 1:
        names = ", ".join(p.name for p in hr_dirs)
        what = "several" if chosen else "no"
        raise DataError(f"{what} {split} HR folders in {data} ({names}): pass the HR folder itself")
    return chosen[0], find_lr_dir(chosen[0], data, scale)


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())


def find_lr_dir(hr_dir: Path, root: Path, scale: int) -> Path | None:
    candidates = [root / "LR_bicubic" / f"X{scale}", root / f"LR_bicubic_X{scale}"]
    if hr_dir.name.endswith("_HR"):
        candidates.append(hr_dir.parent / f"{hr_dir.name[:-3]}_LR_bicubic" / f"X{scale}")
    return next((c for c in candidates if c.is_dir()), None)


def _lr_file(lr_dir: Path, stem: str, scale: int) -> Path:
    for name in (f"{stem}x{scale}", stem):
        for suffix in IMAGE_SUFFIXES:
            for s in (suffix, suffix.upper()):
                path = lr_dir / f"{name}{s}"
                if path.is_file():
                    return path
    raise DataError(f"LR image for {stem} not found: expected {lr_dir / f'{stem}x{scale}.png'}")


def _imap(fn, items: list) -> Iterator:
    """``map(fn, items)`` in order, on a few threads (PIL decodes without the GIL)."""
    workers = min(8, os.cpu_count() or 1, max(1, len(items)))
    if workers == 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers)
    try:
        yield from pool.map(fn, items)
    finally:  # on a bad file, do not decode the rest
        pool.shutdown(wait=True, cancel_futures=True)


class _Budget:
    """Keeps decoded pairs while their total size fits ``memory_bytes``."""

    def __init__(self, memory_bytes: int) -> None:
        self.left = memory_bytes

    def keep(self, pair: Pair) -> Pair | None:
        self.left -= pair.lr.nbytes + pair.hr.nbytes
        return pair if self.left >= 0 else None


def open_folder(hr_dir: Path, lr_dir: Path | None, scale: int, memory_bytes: int) -> PairedImages:
    files = list_images(hr_dir)
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise DataError(f"two HR images share the name {f.stem}: {stems[f.stem]} and {f}")
        stems[f.stem] = f
    budget = _Budget(memory_bytes)
    if lr_dir is not None:
        lr_files = [_lr_file(lr_dir, f.stem, scale) for f in files]
        file_pairs = list(zip(files, lr_files, strict=True))
        loaded = _imap(lambda fl: load_checked(fl[0].stem, fl[0], fl[1], scale), file_pairs)
        entries = [
            Entry(p.name, hf, lf, p.lr.shape[:2], budget.keep(p))
            for p, (hf, lf) in zip(loaded, file_pairs, strict=True)
        ]
        return PairedImages(str(hr_dir), scale, entries)

    # Generated LR: decode and check every HR image before writing anything.
    kept: list[np.ndarray | None] = []
    for f, hr in zip(files, _imap(read_image, files), strict=True):
        if min(hr.shape[:2]) < scale:
            raise DataError(f"HR image {f} ({hr.shape[1]}x{hr.shape[0]}) is smaller than the scale {scale}")
        kept.append(hr if budget.keep(Pair(f.stem, hr[:0], hr)) is not None else None)
    cache, budget = _lr_cache_dir(hr_dir, scale), _Budget(memory_bytes)
    entries = []
    for f, hr in zip(files, kept, strict=True):
        hr = read_image(f) if hr is None else hr
        lr_path, lr = cache / f"{f.stem}x{scale}.png", None
        if lr_path.is_file() and lr_path.stat().st_mtime >= f.stat().st_mtime:
            lr = read_cached(lr_path, hr, scale)
        if lr is None:
            lr = downscale(hr, scale)
            lr_path = _write_cache(lr_path, lr, hr_dir, f, scale)
        pair = Pair(f.stem, lr, modcrop(hr, scale))
        entries.append(Entry(f.stem, f, lr_path, lr.shape[:2], budget.keep(pair)))
    return PairedImages(str(hr_dir), scale, entries)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def _lr_cache_dir(hr_dir: Path, scale: int) -> Path:
    local = hr_dir / ".srnas_cache" / "LR_bicubic" / f"X{scale}"
    if local.is_dir() or (os.access(hr_dir, os.W_OK) and _writable(local)):
        return local
    return _user_lr_cache(hr_dir, scale)


def _user_lr_cache(hr_dir: Path, scale: int) -> Path:
    key = hashlib.sha1(str(hr_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "lr" / f"{hr_dir.name}-{key}" / f"X{scale}"


def _write_cache(path: Path, lr: np.ndarray, hr_dir: Path, hr_file: Path, scale: int) -> Path:
    try:
        write_image(path, lr)
        return path
    except OSError:
        fallback = _user_lr_cache(hr_dir, scale) / path.name
        try:
            write_image(fallback, lr)
        except OSError as exc:
            raise DataError(f"cannot cache the LR image of {hr_file} at {path} or {fallback}: {exc}") from exc
