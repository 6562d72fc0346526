"""Run a model over LR/HR pairs: super-resolve, score against HR (challenge protocol). The one PSNR loop.

``score_pairs(model, pairs, scale)`` is the loop every caller uses: the training loop's validation
(``mean_psnr``), ``srnas eval`` (``evaluate_folder``), the search evaluator and the pruning report.
Outputs are clamped and rounded to uint8, HR is modcropped to ``scale``, ``scale`` pixels are cropped
from each border; ``psnr_y`` is on float BT.601 luma (see ``nas.measure.metrics``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.errors import DataError, SrnasError
from nas.measure.images import Pair, list_images, modcrop, read_image, to_tensor, to_uint8
from nas.measure.metrics import psnr, ssim
from nas.progress import track

METRICS = ("psnr_y", "psnr_rgb", "ssim_y", "ssim_rgb")
PSNR_METRICS = ("psnr_y", "psnr_rgb")


def find_lr(lr_dir: Path, stem: str, scale: int) -> Path:
    """The LR file for HR ``stem``: ``<stem>x<scale>.<ext>`` (DIV2K / Set5 naming) or ``<stem>.<ext>``."""
    for candidate in (f"{stem}x{scale}", stem):
        for path in sorted(lr_dir.glob(f"{candidate}.*")):
            if path.is_file():
                return path
    raise DataError(f"no LR image for {stem!r} in {lr_dir} (expected {stem}x{scale}.png or {stem}.png)")


def iter_pairs(hr_dir: str | Path, lr_dir: str | Path | None, scale: int) -> Iterator[Pair]:
    """HR images (modcropped to ``scale``) with their LR: read from ``lr_dir`` or made by MATLAB bicubic."""
    from nas.measure.imresize import downscale

    hr_files = list_images(hr_dir)
    lr_root = Path(lr_dir) if lr_dir is not None else None
    if lr_root is not None and not lr_root.is_dir():
        raise DataError(f"LR folder not found: {lr_root}")
    lr_files = [find_lr(lr_root, f.stem, scale) for f in hr_files] if lr_root is not None else [None] * len(hr_files)
    for hr_file, lr_file in zip(hr_files, lr_files, strict=True):
        hr = read_image(hr_file)
        if min(hr.shape[:2]) < scale:
            raise DataError(f"HR image {hr_file} ({hr.shape[1]}x{hr.shape[0]}) is smaller than the scale {scale}")
        hr = modcrop(hr, scale)
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
        yield Pair(hr_file.stem, lr, hr)


@torch.inference_mode()
def super_resolve(model: nn.Module, lr: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """One uint8 HxWx3 LR image -> uint8 SR image (clamped and rounded, as the challenge scores it)."""
    model.eval()
    out = model(to_tensor(lr).to(device))
    return to_uint8(out)


def _score(sr: np.ndarray, hr: np.ndarray, scale: int, metrics: Sequence[str]) -> dict[str, float]:
    fns = {"psnr": psnr, "ssim": ssim}
    return {m: fns[m.split("_")[0]](sr, hr, crop_border=scale, test_y_channel=m.endswith("_y")) for m in metrics}


@torch.no_grad()
def score_pairs(
    model: nn.Module,
    pairs: Iterable[Pair],
    scale: int,
    *,
    device: str | torch.device | None = None,
    metrics: Sequence[str] = ("psnr_y",),
    check_finite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-image and mean scores of ``model`` on whole images: ``{"images": [{"name", metric...}], "mean": {...}}``.

    ``device``: where the model runs (default: where its parameters are); the model is in eval mode
    during the loop and its training flag restored after. ``check_finite``: a NaN/inf output is an
    SrnasError naming the image (diverged weights) instead of a meaningless score.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise SrnasError(f"unknown metrics {unknown}: expected some of {', '.join(METRICS)}")
    pairs = list(pairs)
    if not pairs:
        raise DataError("no images to evaluate")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    rows = []
    try:
        for pair in track(pairs, desc="eval", unit="img", enabled=progress, leave=False):
            out = model(to_tensor(pair.lr).to(device))
            if check_finite and not bool(torch.isfinite(out).all()):
                raise SrnasError(f"the model's output on {pair.name} is not finite (diverged weights?)")
            sr, hr = to_uint8(out), modcrop(pair.hr, scale)
            if sr.shape != hr.shape:
                raise DataError(f"{pair.name}: model output {sr.shape} does not match HR {hr.shape}")
            rows.append({"name": pair.name, **_score(sr, hr, scale, metrics)})
    finally:
        model.train(was_training)
    return {"images": rows, "mean": {m: float(np.mean([r[m] for r in rows])) for m in metrics}}


def mean_psnr(
    model: nn.Module,
    pairs: Sequence[Pair],
    scale: int,
    device: str | torch.device | None = None,
    *,
    check_finite: bool = False,
) -> float:
    """Mean Y-PSNR (``scale``-pixel border, uint8 outputs) of ``model`` on in-memory pairs."""
    return score_pairs(model, pairs, scale, device=device, check_finite=check_finite)["mean"]["psnr_y"]


def evaluate_folder(
    model: nn.Module,
    hr_dir: str | Path,
    lr_dir: str | Path | None = None,
    scale: int = 4,
    *,
    device: str | torch.device = "cpu",
    ssim: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-image and mean PSNR/SSIM (Y and RGB, border = scale) of ``model`` on an HR folder.

    Returns ``{"images": [{"name", "psnr_y", "psnr_rgb", ["ssim_y", "ssim_rgb"]}...], "mean": {...}}``; a
    non-finite model output is an SrnasError naming the image, never a meaningless score.
    """
    model = model.to(device)
    pairs = list(iter_pairs(hr_dir, lr_dir, scale))  # validate every file before running the model
    metrics = METRICS if ssim else PSNR_METRICS
    return score_pairs(model, pairs, scale, device=device, metrics=metrics, check_finite=True, progress=progress)
