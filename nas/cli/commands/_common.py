"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nas.device import resolve_device  # noqa: F401  (used by the commands)


def add_model_args(parser: argparse.ArgumentParser, *, weights_required: bool = False) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="zoo name (see `srnas zoo`), spec file (.yaml/.json) or model folder"
    )
    parser.add_argument(
        "--weights", required=weights_required, help="checkpoint: official .pth/.pt or srnas .safetensors"
    )


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def val_pairs_from_args(args: argparse.Namespace, scale: int):
    """--val, or by default the val split of --data when it has one (embedded, DIV2K roots); None for no validation."""
    from nas.data import has_split, open_pairs, validation_pairs

    source = args.data if args.val is None else args.val
    if source == "none" or (args.val is None and not has_split(source, "val")):
        return None
    split = "val" if has_split(source, "val") else "train"
    return validation_pairs(open_pairs(source, scale, split), max_size=args.val_max_size or None)
