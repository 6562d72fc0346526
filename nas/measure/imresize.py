"""MATLAB-compatible bicubic resizing (``imresize(img, scale)`` with its defaults).

Bicubic kernel with a = -0.5, antialiasing when downscaling (the kernel is stretched by
``1/scale``), symmetric border handling, output size ``ceil(in * scale)``. The image is resized
along H first, then along W. For uint8 input each pass is rounded half away from zero and
clipped to [0, 255], as MATLAB does on uint8 images: this reproduces MATLAB's uint8 output
bit for bit (the Set5/Set14 ``LR_bicubic`` x4 files). Float input is resized without rounding.
"""

from __future__ import annotations

import math

import numpy as np

from nas.measure.images import modcrop


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), support [-2, 2]."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based input indices (both ``out_len x taps``) of a 1-D bicubic resize.

    Indices outside ``[0, in_len)`` are mirrored symmetrically (edge pixel repeated), and tap
    columns whose weights are all zero are dropped, as in MATLAB's ``contributions``.
    """
    antialias = scale < 1
    kernel_width = 4.0 / scale if antialias else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    # Output pixel centres mapped to input coordinates (1-based, as in MATLAB).
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - indices
    weights = scale * cubic(dist * scale) if antialias else cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: 1-based index i maps into [1..n, n..1] periodically.
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx[:, keep]


def _round_clip_uint8(x: np.ndarray) -> np.ndarray:
    """Round half away from zero and saturate to uint8 (MATLAB's double -> uint8 cast)."""
    floor = np.floor(x)
    rounded = floor + (x - floor >= 0.5)  # exact: x - floor(x) has no rounding error
    return np.clip(rounded, 0, 255).astype(np.uint8)


def _resize_axis(image: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    """Resize ``image`` (float64) along ``axis``, accumulating the weighted taps in order."""
    weights, idx = contributions(image.shape[axis], out_len, scale)
    moved = np.moveaxis(image, axis, 0)  # (in_len, ...)
    shape = (out_len,) + (1,) * (moved.ndim - 1)
    out = np.zeros((out_len,) + moved.shape[1:], dtype=np.float64)
    for k in range(weights.shape[1]):  # one tap at a time: memory stays at one output image
        out += weights[:, k].reshape(shape) * moved[idx[:, k]]
    return np.moveaxis(out, 0, axis)


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize an HxW or HxWxC image by ``scale`` like MATLAB ``imresize(image, scale)`` (bicubic).

    uint8 in -> uint8 out, bit-identical to MATLAB; float in -> float of the same dtype, no
    rounding or clipping. Output size is ``ceil(H * scale) x ceil(W * scale)``.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC image, got shape {image.shape}")
    if not scale > 0:
        raise ValueError(f"imresize scale must be positive, got {scale}")
    is_uint8 = image.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"imresize supports uint8 or float images, got {image.dtype}")
    in_h, in_w = image.shape[:2]
    out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)

    out = _resize_axis(image.astype(np.float64), 0, out_h, scale)
    if is_uint8:
        out = _round_clip_uint8(out).astype(np.float64)
    out = _resize_axis(out, 1, out_w, scale)
    return _round_clip_uint8(out) if is_uint8 else out.astype(image.dtype)


def downscale(hr: np.ndarray, factor: int) -> np.ndarray:
    """MATLAB-bicubic LR of a uint8 HR image: modcrop to a multiple of ``factor``, resize by 1/factor."""
    if hr.dtype != np.uint8:
        raise TypeError(f"downscale expects a uint8 image, got {hr.dtype}")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"downscale factor must be a positive integer, got {factor}")
    hr = modcrop(hr, int(factor))
    if min(hr.shape[:2]) == 0:
        raise ValueError(f"image of shape {hr.shape} is smaller than the scale factor {factor}")
    return imresize(hr, 1 / factor)
