"""The embedded dataset: natural RGB photos shipped with scikit-image, no download (``--data embedded``)."""

from __future__ import annotations

import contextlib
from functools import lru_cache

import numpy as np

from nas.data.cache import cache_dir, read_cached
from nas.data.pairs import Entry, Pair, PairedImages
from nas.errors import DataError
from nas.measure.images import modcrop, write_image
from nas.measure.imresize import downscale

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
    lr = read_cached(path, hr, scale) if path.is_file() else None
    if lr is None:
        lr = downscale(hr, scale)
        with contextlib.suppress(OSError):  # no cache: the pair still lives in memory for this process
            write_image(path, lr)
    hr.setflags(write=False)
    lr.setflags(write=False)
    return Pair(name, lr, hr)


def open_embedded(split: str, scale: int) -> PairedImages:
    pairs = [_embedded_pair(n, scale) for n in EMBEDDED_SPLITS[split]]
    entries = [Entry(p.name, None, None, p.lr.shape[:2], p) for p in pairs]
    return PairedImages(f"{EMBEDDED}:{split}", scale, entries)
