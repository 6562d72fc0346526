"""Device names as users type them (``auto``, ``cpu``, ``cuda``, ``cuda:1``) -> ``torch.device``."""

from __future__ import annotations

import re

import torch

from nas.errors import SrnasError, UsageError

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str) -> str:
    """``name`` when it is auto, cpu, cuda or cuda:N (whether that GPU exists is ``resolve_device``'s check)."""
    text = str(name).strip().lower()
    if not DEVICE_PATTERN.fullmatch(text):
        raise UsageError(f"unknown device {str(name)!r}: expected auto, cpu, cuda or cuda:N")
    return text


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available; asking for cuda without it (or for a GPU index past the last) is an
    error, not a silent CPU run or a CUDA error later."""
    name = check_device_name(str(name))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SrnasError(f"device {name!r} requested but CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SrnasError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    return device
