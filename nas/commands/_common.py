"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from ..errors import SrnasError


def add_model_args(parser: argparse.ArgumentParser, *, weights_required: bool = False) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="zoo name (see `srnas zoo`), spec file (.yaml/.json) or model folder"
    )
    parser.add_argument(
        "--weights", required=weights_required, help="checkpoint: official .pth/.pt or srnas .safetensors"
    )


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available; asking for cuda without it is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SrnasError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SrnasError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
