"""PSNR and SSIM with the super-resolution protocol made explicit (border crop, Y channel).

Values are computed in float64 on the [0, 255] scale. uint8 inputs imply range 255; float inputs
must say their range (``data_range=1.0`` or ``255.0``) and are rescaled to [0, 255], so the Y
formula and the SSIM constants are always those of 8-bit images. ``Y`` is the float BT.601 luma
of MATLAB ``rgb2ycbcr`` (not rounded). A 2-D (HxW) or HxWx1 image is grey and is taken as
already being luma: with ``test_y_channel`` it is compared as it is.
"""

from __future__ import annotations

import math

import numpy as np

from nas.errors import DataError
from nas.measure.images import modcrop

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Float BT.601 luma of an RGB image on [0, 255]: ``16 + (65.481 R + 128.553 G + 24.966 B) / 255``.

    ``image`` is HxWx3 with values on [0, 255] (uint8 or float); the result is float64 HxW.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an HxWx3 image, got shape {image.shape}")
    return 16.0 + image.astype(np.float64) @ _Y_WEIGHTS / 255.0


def _prepare(
    img1: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool, data_range: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 HxWxC on [0, 255], border-cropped, reduced to Y when asked."""
    img1, img2 = np.asarray(img1), np.asarray(img2)
    if img1.shape != img2.shape:
        raise ValueError(f"images must have the same shape, got {img1.shape} and {img2.shape}")
    if img1.ndim == 2:
        img1, img2 = img1[:, :, None], img2[:, :, None]
    if img1.ndim != 3 or img1.shape[2] not in (1, 3):
        raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {img1.shape}")
    scale = 255.0 / _data_range(img1.dtype, img2.dtype, data_range)
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    h, w = img1.shape[:2]
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {h}x{w} image")
    if crop_border:
        img1 = img1[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    img1 = img1.astype(np.float64) * scale
    img2 = img2.astype(np.float64) * scale
    if test_y_channel and img1.shape[2] == 3:
        img1, img2 = rgb_to_y(img1)[:, :, None], rgb_to_y(img2)[:, :, None]
    return img1, img2


def _data_range(dtype1: np.dtype, dtype2: np.dtype, data_range: float | None) -> float:
    if dtype1 == np.uint8 and dtype2 == np.uint8:
        if data_range not in (None, 255, 255.0):
            raise ValueError(f"uint8 images have data_range 255, got data_range={data_range}")
        return 255.0
    if np.issubdtype(dtype1, np.floating) and np.issubdtype(dtype2, np.floating):
        if data_range is None:
            raise ValueError("float images need an explicit data_range (1.0 or 255.0)")
        if not data_range > 0:
            raise ValueError(f"data_range must be positive, got {data_range}")
        return float(data_range)
    raise ValueError(f"images must both be uint8 or both be float, got {dtype1} and {dtype2}")


def psnr(
    img1: np.ndarray,
    img2: np.ndarray,
    *,
    crop_border: int,
    test_y_channel: bool,
    data_range: float | None = None,
) -> float:
    """Peak signal-to-noise ratio in dB (over all channels at once); ``inf`` for identical images."""
    a, b = _prepare(img1, img2, crop_border, test_y_channel, data_range)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(
    img1: np.ndarray,
    img2: np.ndarray,
    *,
    crop_border: int,
    test_y_channel: bool,
    data_range: float | None = None,
) -> float:
    """Structural similarity (Wang et al. 2004) as in MATLAB ``ssim_index`` / BasicSR.

    11x11 Gaussian window (sigma 1.5), statistics over 'valid' windows only,
    C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2; the mean over channels for RGB.
    """
    a, b = _prepare(img1, img2, crop_border, test_y_channel, data_range)
    if min(a.shape[:2]) < _SSIM_WINDOW:
        n = _SSIM_WINDOW
        raise ValueError(f"SSIM needs at least {n}x{n} pixels after cropping, got {a.shape[:2]}")
    return float(np.mean([_ssim_channel(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))


def _gaussian_window() -> np.ndarray:
    r = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2
    g = np.exp(-(r**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D array with the 1-D kernel ``g`` along both axes."""
    k = len(g)
    rows = np.lib.stride_tricks.sliding_window_view(x, k, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def evaluate_pair(sr: np.ndarray, hr: np.ndarray, scale: int, *, with_ssim: bool = True) -> dict[str, float]:
    """PSNR/SSIM of a uint8 SR output against its uint8 HR image (SR benchmark protocol).

    HR is modcropped to a multiple of ``scale`` and must then match SR's shape; ``scale`` pixels
    are cropped from each border. Returns ``psnr_y``, ``psnr_rgb`` and, unless ``with_ssim`` is False,
    ``ssim_y``, ``ssim_rgb``.
    """
    if sr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise TypeError(f"evaluate_pair expects uint8 images, got {sr.dtype} and {hr.dtype}")
    hr = modcrop(hr, scale)
    if sr.shape != hr.shape:
        raise DataError(f"SR shape {sr.shape} does not match the HR shape {hr.shape} modcropped to x{scale}")
    scores = {
        "psnr_y": psnr(sr, hr, crop_border=scale, test_y_channel=True),
        "psnr_rgb": psnr(sr, hr, crop_border=scale, test_y_channel=False),
    }
    if with_ssim:
        scores["ssim_y"] = ssim(sr, hr, crop_border=scale, test_y_channel=True)
        scores["ssim_rgb"] = ssim(sr, hr, crop_border=scale, test_y_channel=False)
    return scores
