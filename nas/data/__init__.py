"""Paired LR/HR super-resolution data: image folders in the DIV2K layout, or the embedded photos.

``--data`` (``open_pairs(data, scale, split)``) resolves as follows:

- ``embedded``: natural RGB photos shipped with scikit-image, no download. Train split:
  astronaut, rocket, motorcycle_left, motorcycle_right (the two views of ``stereo_motorcycle``),
  immunohistochemistry, hubble_deep_field, retina. Val split: chelsea, coffee.
- a folder that holds images: they are the HR images. LR images are looked up in
  ``DIR/LR_bicubic/X{s}``, ``DIR/LR_bicubic_X{s}``, then (for ``NAME_HR``) the DIV2K sibling
  ``NAME_LR_bicubic/X{s}``.
- a folder with an ``HR`` subfolder: HR = ``DIR/HR``, LR as above in ``DIR``.
- a folder with ``*_HR`` subfolders (a DIV2K root: ``DIV2K_train_HR``, ``DIV2K_valid_HR``): the one
  whose name contains ``train`` (split ``train``) or ``val`` (split ``val``); a single ``*_HR``
  subfolder serves the train split. LR in ``<prefix>_LR_bicubic/X{s}``.

An LR image for HR ``0001.png`` is ``0001x{s}.<ext>`` or ``0001.<ext>``; its size must be the HR
size // s (the HR image is cropped to a multiple of s). When no LR folder exists, LR images are
made with MATLAB bicubic (``nas.measure.imresize.downscale``) and cached in ``HR_DIR/.srnas_cache/
LR_bicubic/X{s}`` or, when that cannot be written, under ``cache_dir()/lr``; a cached file is
remade when it is older than its HR image. Every image is decoded and checked before anything is
written, so bad input gives one ``DataError`` naming the file. Sets whose decoded size fits
``memory_bytes`` stay in memory; larger ones are decoded again for each sample.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from nas.errors import DataError
from nas.measure.images import IMAGE_SUFFIXES, list_images, modcrop, read_image, write_image
from nas.measure.imresize import downscale

SCALES = (2, 3, 4)
EMBEDDED = "embedded"
EMBEDDED_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut",
        "rocket",
        "motorcycle_left",
        "motorcycle_right",
        "immunohistochemistry",
        "hubble_deep_field",
        "retina",
    ),
    "val": ("chelsea", "coffee"),
}
SPLITS = ("train", "val")
DEFAULT_MEMORY_BYTES = 2 << 30


@dataclass(frozen=True)
class Pair:
    """An aligned pair: ``lr`` is HxWx3 uint8, ``hr`` is (H*scale)x(W*scale)x3 uint8."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


@dataclass
class _Entry:
    name: str
    hr_path: Path | None
    lr_path: Path | None
    lr_shape: tuple[int, int]
    pair: Pair | None = None  # decoded, when the set fits in memory


class PairedImages:
    """Validated (LR, HR) pairs of one scale; ``pair(i)`` decodes on demand unless kept in memory."""

    def __init__(self, source: str, scale: int, entries: list[_Entry]) -> None:
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
        return _load_checked(entry.name, entry.hr_path, entry.lr_path, self.scale)

    def pairs(self) -> Iterator[Pair]:
        for i in range(len(self)):
            yield self.pair(i)


def cache_dir() -> Path:
    """Per-user cache: ``SRNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/srnas``, else ``~/.cache/srnas``."""
    env = os.environ.get("SRNAS_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "srnas"


def check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SCALES:
        raise DataError(f"unsupported scale {scale!r}: expected one of {', '.join(map(str, SCALES))}")
    return scale


def open_pairs(
    data: str | Path, scale: int, split: str = "train", *, memory_bytes: int = DEFAULT_MEMORY_BYTES
) -> PairedImages:
    """The ``split`` ("train" or "val") of ``data`` ("embedded" or a folder, see the module doc)."""
    check_scale(scale)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected train or val")
    if str(data) == EMBEDDED:
        return _embedded(split, scale)
    hr_dir, lr_dir = resolve_folder(Path(data), scale, split)
    return _open_folder(hr_dir, lr_dir, scale, memory_bytes)


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


def center_crop(pair: Pair, max_size: int, scale: int) -> Pair:
    """The centre of ``pair``, at most ``max_size`` HR pixels a side, aligned to the LR grid."""
    lh, lw = pair.lr.shape[:2]
    side = max(1, max_size // scale)
    ch, cw = min(lh, side), min(lw, side)
    top, left = (lh - ch) // 2, (lw - cw) // 2
    lr = pair.lr[top : top + ch, left : left + cw]
    hr = pair.hr[top * scale : (top + ch) * scale, left * scale : (left + cw) * scale]
    return Pair(pair.name, np.ascontiguousarray(lr), np.ascontiguousarray(hr))


# ----------------------------------------------------------------------------- folders


def resolve_folder(data: Path, scale: int, split: str = "train") -> tuple[Path, Path | None]:
    """(HR folder, LR folder or None when LR must be generated) for ``data``, as the module doc says."""
    if not data.is_dir():
        raise DataError(f"data folder not found: {data}")
    if _has_images(data):
        if split != "train":
            raise DataError(f"{data} is a plain image folder: it has no {split} split")
        return data, _find_lr_dir(data, data, scale)
    if (data / "HR").is_dir():
        if split != "train":
            raise DataError(f"{data} has no {split} split")
        return data / "HR", _find_lr_dir(data / "HR", data, scale)
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
    return chosen[0], _find_lr_dir(chosen[0], data, scale)


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())


def _find_lr_dir(hr_dir: Path, root: Path, scale: int) -> Path | None:
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


def _check_sizes(name: str, hr: np.ndarray, lr: np.ndarray, lr_path: Path | str, scale: int) -> None:
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


def _load_checked(name: str, hr_path: Path, lr_path: Path, scale: int) -> Pair:
    hr, lr = read_image(hr_path), read_image(lr_path)
    _check_sizes(name, hr, lr, lr_path, scale)
    return Pair(name, lr, modcrop(hr, scale))


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


def _open_folder(hr_dir: Path, lr_dir: Path | None, scale: int, memory_bytes: int) -> PairedImages:
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
        loaded = _imap(lambda fl: _load_checked(fl[0].stem, fl[0], fl[1], scale), file_pairs)
        entries = [
            _Entry(p.name, hf, lf, p.lr.shape[:2], budget.keep(p))
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
            lr = _read_cached(lr_path, hr, scale)
        if lr is None:
            lr = downscale(hr, scale)
            lr_path = _write_cache(lr_path, lr, hr_dir, f, scale)
        pair = Pair(f.stem, lr, modcrop(hr, scale))
        entries.append(_Entry(f.stem, f, lr_path, lr.shape[:2], budget.keep(pair)))
    return PairedImages(str(hr_dir), scale, entries)


def _read_cached(path: Path, hr: np.ndarray, scale: int) -> np.ndarray | None:
    try:
        lr = read_image(path)
    except DataError:
        return None
    return lr if lr.shape[:2] == (hr.shape[0] // scale, hr.shape[1] // scale) else None


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
        return fallback


# ----------------------------------------------------------------------------- embedded photos


def embedded_image(name: str) -> np.ndarray:
    """One embedded photo (uint8 HxWx3) from scikit-image's bundled data, without network access."""
    import skimage
    import skimage.data

    try:
        if name in ("motorcycle_left", "motorcycle_right"):
            image = skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
        else:
            image = getattr(skimage.data, name)()
    except Exception as exc:  # missing file or optional download: the message names the image
        version = skimage.__version__
        raise DataError(f"embedded image {name!r} is not available in scikit-image {version}: {exc}") from exc
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[:, :, :3])


@lru_cache(maxsize=64)
def _embedded_pair(name: str, scale: int) -> Pair:
    hr = modcrop(embedded_image(name), scale)
    path = cache_dir() / "embedded" / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"
    lr = _read_cached(path, hr, scale) if path.is_file() else None
    if lr is None:
        lr = downscale(hr, scale)
        with contextlib.suppress(OSError):  # no cache: the pair still lives in memory for this process
            write_image(path, lr)
    hr.setflags(write=False)
    lr.setflags(write=False)
    return Pair(name, lr, hr)


def _embedded(split: str, scale: int) -> PairedImages:
    pairs = [_embedded_pair(n, scale) for n in EMBEDDED_SPLITS[split]]
    entries = [_Entry(p.name, None, None, p.lr.shape[:2], p) for p in pairs]
    return PairedImages(f"{EMBEDDED}:{split}", scale, entries)


# ----------------------------------------------------------------------------- patches

_DIHEDRAL = 8


def dihedral(image: np.ndarray, t: int) -> np.ndarray:
    """The ``t``-th (0..7) of the 8 flips/rotations of an HxWxC image (0 is the identity)."""
    out = np.rot90(image, t % 4, axes=(0, 1))
    return out[:, ::-1] if t >= 4 else out


class PatchBatches(torch.utils.data.Dataset):
    """Random aligned patch batches; batch ``step`` depends only on (seed, step), so resuming is exact.

    ``self[step]`` is ``(lr, hr)``: float tensors in [0, 1], ``B x 3 x P x P`` and
    ``B x 3 x (P*s) x (P*s)``, each patch a random crop of a random image under a random
    flip/rotation. ``P`` is the LR patch size.
    """

    def __init__(self, data: PairedImages, batch_size: int, patch_size: int, seed: int) -> None:
        if len(data) == 0:
            raise DataError(f"no training images in {data.source}")
        small = [(n, s) for n, s in zip(data.names, data.lr_shapes, strict=True) if min(s) < patch_size]
        if small:
            name, (h, w) = small[0]
            raise DataError(f"LR image {name} in {data.source} is {w}x{h}, smaller than the LR patch size {patch_size}")
        self.data, self.batch_size, self.patch_size, self.seed = data, batch_size, patch_size, seed

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        p, s = self.patch_size, self.data.scale
        lrs, hrs = [], []
        for _ in range(self.batch_size):
            pair = self.data.pair(int(rng.integers(len(self.data))))
            h, w = pair.lr.shape[:2]
            y, x, t = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1)), int(rng.integers(_DIHEDRAL))
            lrs.append(dihedral(pair.lr[y : y + p, x : x + p], t))
            hrs.append(dihedral(pair.hr[y * s : (y + p) * s, x * s : (x + p) * s], t))
        return _batch_tensor(lrs), _batch_tensor(hrs)

    def iterate(
        self, start: int, stop: int, num_workers: int = 0, pin_memory: bool = False
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """``(step, lr, hr)`` for ``step`` in ``[start, stop)``, decoded in ``num_workers`` processes."""
        if num_workers <= 0:
            for step in range(start, stop):
                yield (step, *self[step])
            return
        loader = torch.utils.data.DataLoader(
            self, batch_size=None, sampler=range(start, stop), num_workers=num_workers, pin_memory=pin_memory
        )
        yield from ((step, lr, hr) for step, (lr, hr) in zip(range(start, stop), loader, strict=True))


def _batch_tensor(patches: list[np.ndarray]) -> torch.Tensor:
    arr = np.ascontiguousarray(np.stack(patches).transpose(0, 3, 1, 2))
    return torch.from_numpy(arr).float().div_(255.0)
