"""Image I/O and conversions: uint8 HxWx3 numpy arrays on disk, float NCHW tensors in [0, 1] in models."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nas.errors import DataError
from nas.io import atomic_with

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass(frozen=True)
class Pair:
    """An aligned pair: ``lr`` is HxWx3 uint8, ``hr`` is (H*scale)x(W*scale)x3 uint8."""

    name: str
    lr: np.ndarray
    hr: np.ndarray


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 HxWx3 RGB.

    Grey images are replicated to three channels; 16-bit images are scaled to 8 bits (``round(v / 257)``, so
    65535 -> 255), not clipped; alpha is dropped; palette/CMYK images are converted. Images over Pillow's
    ``MAX_IMAGE_PIXELS`` (about 89 Mpx: a decompression bomb) are refused before decoding.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                arr = _as_rgb_array(im, path)
    except FileNotFoundError as exc:
        raise DataError(f"image not found: {path}") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path} is a folder, not an image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"image {path} is too large to decode safely: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def _as_rgb_array(im: Image.Image, path: Path) -> np.ndarray:
    """uint8 HxW (grey) or HxWx3 of an opened image; 16-bit grey is scaled, not clipped."""
    if im.mode.startswith("I;16") or im.mode == "I":
        values = np.asarray(im).astype(np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise DataError(f"image {path} has 32-bit integer pixels outside 0..65535; expected 8 or 16 bits")
        return np.round(values / 257.0).astype(np.uint8)
    if im.mode == "F":
        raise DataError(f"image {path} has floating-point pixels; expected 8 or 16-bit images")
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 HxWx3 (or HxW) array atomically (temp file + rename)."""
    path = Path(path)
    pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
    atomic_with(path, lambda tmp: pil.save(tmp, format=_format_of(path)))


def _format_of(path: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        path.suffix.lower(), "PNG"
    )


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files in ``folder``; a missing folder or one without images is a DataError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so height and width are multiples of ``scale``."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def to_tensor(image: np.ndarray):
    """uint8 HxWx3 -> float32 1x3xHxW tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(255.0).unsqueeze(0)


def to_uint8(tensor) -> np.ndarray:
    """float 1x3xHxW (or 3xHxW) tensor in [0, 1] -> uint8 HxWx3, clamped and rounded."""
    t = tensor.detach().float().cpu()
    if t.dim() == 4:
        t = t[0]
    return t.clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).numpy()
