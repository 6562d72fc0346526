"""Image folders as paired data: the DIV2K / Flickr2K / benchmark layouts or a tree of HR images.

See ``nas.data`` for the layouts ``resolve_folder`` understands. LR images are read from disk or generated
with MATLAB bicubic into the user cache (``nas.data.cache``), never written into the data folder. Every
image is decoded and checked before anything is written, so bad input gives one ``DataError`` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nas.data.cache import lr_cache_file, read_cached, write_cached
from nas.data.pairs import Entry, Pair, PairedImages, load_checked
from nas.errors import DataError
from nas.measure.images import IMAGE_SUFFIXES, list_images, modcrop, read_image
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
        if not tree_images(data):
            raise DataError(
                f"no images in {data} or its subfolders (expected HR images, DIR/HR, DIV2K's NAME_train_HR, "
                "or a tree of HR images)"
            )
        if split != "train":
            raise DataError(f"{data} is a tree of HR images: it has no {split} split")
        return data, None
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


def tree_images(root: Path) -> list[Path]:
    """Every image under ``root``'s subfolders (sorted; hidden folders and ``LR_bicubic*`` folders skipped)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.startswith("LR_bicubic"))
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def hr_images(hr_dir: Path) -> list[tuple[str, Path]]:
    """(name, file) of every HR image: the folder's own images, else every image of the tree under it.

    Tree names are paths relative to ``hr_dir`` without suffix (``T91/t1``); two files with one name are an error.
    """
    flat = _has_images(hr_dir)
    files = list_images(hr_dir) if flat else tree_images(hr_dir)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {hr_dir} or its subfolders")
    named: dict[str, Path] = {}
    for f in files:
        name = f.stem if flat else f.relative_to(hr_dir).with_suffix("").as_posix()
        if name in named:
            raise DataError(f"two HR images share the name {name}: {named[name]} and {f}")
        named[name] = f
    return list(named.items())


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
    """The pairs of ``hr_dir`` (its images or its tree), LR from ``lr_dir`` or generated and cached."""
    named = hr_images(hr_dir)
    if lr_dir is None:
        return _open_generated(hr_dir, named, scale, memory_bytes)
    budget = _Budget(memory_bytes)
    files = [f for _, f in named]
    if lr_dir is not None:
        lr_files = [_lr_file(lr_dir, f.stem, scale) for f in files]
        file_pairs = list(zip(files, lr_files, strict=True))
        loaded = _imap(lambda fl: load_checked(fl[0].stem, fl[0], fl[1], scale), file_pairs)
    entries = [
        Entry(p.name, hf, lf, p.lr.shape[:2], budget.keep(p)) for p, (hf, lf) in zip(loaded, file_pairs, strict=True)
    ]
    return PairedImages(str(hr_dir), scale, entries)


def _open_generated(hr_dir: Path, named: list[tuple[str, Path]], scale: int, memory_bytes: int) -> PairedImages:
    """LR made by MATLAB bicubic, cached per HR file in the user cache. Every HR image is decoded and checked
    before anything is written."""
    budget = _Budget(memory_bytes)
    kept: list[np.ndarray | None] = []
    for (name, f), hr in zip(named, _imap(read_image, [f for _, f in named]), strict=True):
        if min(hr.shape[:2]) < scale:
            raise DataError(f"HR image {f} ({hr.shape[1]}x{hr.shape[0]}) is smaller than the scale {scale}")
        kept.append(hr if budget.keep(Pair(name, hr[:0], hr)) is not None else None)

    def lr_of(item: tuple[Path, np.ndarray | None]) -> tuple[np.ndarray, Path, np.ndarray]:
        f, hr = item
        hr = read_image(f) if hr is None else hr
        path = lr_cache_file(f, scale)
        lr = read_cached(path, hr, scale) if path.is_file() else None
        if lr is None:
            lr = downscale(hr, scale)
            write_cached(path, lr, f)
        return hr, path, lr

    budget, entries = _Budget(memory_bytes), []
    items = [(f, hr) for (_, f), hr in zip(named, kept, strict=True)]
    for (name, f), (hr, lr_path, lr) in zip(named, _imap(lr_of, items), strict=True):
        pair = Pair(name, lr, modcrop(hr, scale))
        entries.append(Entry(name, f, lr_path, lr.shape[:2], budget.keep(pair)))
    return PairedImages(str(hr_dir), scale, entries)
