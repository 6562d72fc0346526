"""Device names as users type them (``auto``, ``cpu``, ``cuda``, ``cuda:1``) -> ``torch.device``."""

from __future__ import annotations

import torch

from nas.errors import SrnasError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available; asking for cuda without it is an error, not a silent CPU run."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise SrnasError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SrnasError(f"device {name!r} requested but CUDA is not available on this machine")
    return device
