"""Run a model over image folders: super-resolve LR images, score them against HR (challenge protocol)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nas.errors import DataError
from nas.measure.images import list_images, modcrop, read_image, to_tensor, to_uint8

METRICS = ("psnr_y", "psnr_rgb", "ssim_y", "ssim_rgb")


@dataclass
class ImagePair:
    name: str
    lr: np.ndarray
    hr: np.ndarray | None  # None when only super-resolving


def find_lr(lr_dir: Path, stem: str, scale: int) -> Path:
    """The LR file for HR ``stem``: ``<stem>x<scale>.<ext>`` (DIV2K / Set5 naming) or ``<stem>.<ext>``."""
    for candidate in (f"{stem}x{scale}", stem):
        for path in sorted(lr_dir.glob(f"{candidate}.*")):
            if path.is_file():
                return path
    raise DataError(f"no LR image for {stem!r} in {lr_dir} (expected {stem}x{scale}.png or {stem}.png)")


def iter_pairs(hr_dir: str | Path, lr_dir: str | Path | None, scale: int) -> Iterator[ImagePair]:
    """HR images (modcropped to ``scale``) with their LR: read from ``lr_dir`` or made by MATLAB bicubic."""
    from nas.measure.imresize import downscale

    hr_files = list_images(hr_dir)
    lr_root = Path(lr_dir) if lr_dir is not None else None
    if lr_root is not None and not lr_root.is_dir():
        raise DataError(f"LR folder not found: {lr_root}")
    lr_files = [find_lr(lr_root, f.stem, scale) for f in hr_files] if lr_root is not None else [None] * len(hr_files)
    for hr_file, lr_file in zip(hr_files, lr_files, strict=True):
        hr = modcrop(read_image(hr_file), scale)
        if lr_file is None:
            lr = downscale(hr, scale)
        else:
            lr = read_image(lr_file)
            expected = (hr.shape[0] // scale, hr.shape[1] // scale)
            if lr.shape[:2] != expected:
                raise DataError(
                    f"{lr_file}: LR size {lr.shape[1]}x{lr.shape[0]} does not match HR {hr_file.name} "
                    f"{hr.shape[1]}x{hr.shape[0]} at x{scale} (expected {expected[1]}x{expected[0]})"
                )
        yield ImagePair(hr_file.stem, lr, hr)


@torch.inference_mode()
def super_resolve(model: nn.Module, lr: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """One uint8 HxWx3 LR image -> uint8 SR image (clamped and rounded, as the challenge scores it)."""
    model.eval()
    out = model(to_tensor(lr).to(device))
    return to_uint8(out)


def evaluate_folder(
    model: nn.Module,
    hr_dir: str | Path,
    lr_dir: str | Path | None = None,
    scale: int = 4,
    *,
    device: str | torch.device = "cpu",
    ssim: bool = True,
    progress: bool = True,
) -> dict:
    """Per-image and mean PSNR/SSIM (Y and RGB, border = scale) of ``model`` on an HR folder.

    Returns ``{"images": [{"name", "psnr_y", "psnr_rgb", ["ssim_y", "ssim_rgb"]}...], "mean": {...}}``.
    """
    from nas.measure.metrics import evaluate_pair

    model = model.to(device)
    pairs = list(iter_pairs(hr_dir, lr_dir, scale))  # validate every file before running the model
    rows = []
    for pair in tqdm(pairs, desc="eval", unit="img", disable=not progress, leave=False):
        sr = super_resolve(model, pair.lr, device)
        if sr.shape != pair.hr.shape:
            raise DataError(f"{pair.name}: model output {sr.shape} does not match HR {pair.hr.shape}")
        scores = evaluate_pair(sr, pair.hr, scale, with_ssim=ssim)
        rows.append({"name": pair.name, **scores})
    keys = [k for k in METRICS if k in rows[0]]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return {"images": rows, "mean": mean}
