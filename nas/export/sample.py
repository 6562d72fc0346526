"""The real image an exported model's parity is checked on, as a 1x3xHxW float tensor in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from nas.data import embedded_image
from nas.measure.images import read_image, to_tensor
from nas.measure.imresize import downscale
from nas.paths import reference_dir

EMBEDDED_PHOTO = "chelsea"  # a val photo of the embedded set, used when the reference kit is absent
SET5_LR = ("images", "Set5", "LR_bicubic_X4")


def sample_image() -> tuple[str, np.ndarray]:
    """``(label, uint8 HxWx3)``: the first Set5 x4 LR image of the reference kit, else an embedded photo
    (scikit-image's ``chelsea``) downscaled x4 with the MATLAB bicubic."""
    ref = reference_dir()
    folder = ref.joinpath(*SET5_LR) if ref is not None else None
    if folder is not None and folder.is_dir():
        files = sorted(folder.glob("*.png"))
        if files:
            return f"Set5/{files[0].name}", read_image(files[0])
    return f"embedded/{EMBEDDED_PHOTO} (x4 bicubic)", downscale(embedded_image(EMBEDDED_PHOTO), 4)


def fit(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``image`` centre-cropped to ``size`` (H, W); first resized (bicubic, aspect kept) when it is smaller.

    ``None`` keeps the image as it is."""
    if size is None:
        return image
    h, w = size
    ih, iw = image.shape[:2]
    if ih < h or iw < w:
        factor = max(h / ih, w / iw)
        ih, iw = max(h, round(ih * factor)), max(w, round(iw * factor))
        image = np.asarray(Image.fromarray(image).resize((iw, ih), Image.Resampling.BICUBIC))
    top, left = (ih - h) // 2, (iw - w) // 2
    return np.ascontiguousarray(image[top : top + h, left : left + w])


def sample_input(size: tuple[int, int] | None = None) -> tuple[str, torch.Tensor]:
    """``(label, 1x3xHxW tensor)`` of :func:`sample_image`, fitted to ``size`` when given."""
    label, image = sample_image()
    return label, to_tensor(fit(image, size))
