"""Arguments and helpers shared by several subcommands: option types that reject bad numbers and devices at
parse time (exit 2), and output-folder checks made before anything is written (exit 1)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nas.device import check_device_name, resolve_device  # noqa: F401  (used by the commands)
from nas.errors import DataError, UsageError


def _number(kind: type, test: Callable[[float], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)``, finite, passing ``test``; else a one-line 'must be ...' error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a positive number")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
finite_float = _number(float, lambda v: True, "a finite number")
open_fraction = _number(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")
unit_fraction = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
share = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def device_name(text: str) -> str:
    """An argparse ``type`` for --device: auto, cpu, cuda or cuda:N (whether it exists is checked later)."""
    try:
        return check_device_name(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_args(parser: argparse.ArgumentParser, *, weights_required: bool = False) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="zoo name (see `srnas zoo`), spec file (.yaml/.json) or model folder"
    )
    parser.add_argument(
        "--weights", required=weights_required, help="checkpoint: official .pth/.pt or srnas .safetensors"
    )


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", type=device_name, help="cpu, cuda, cuda:N or auto (cuda when available)"
    )


def check_output_dir(output: str | Path, *inputs: tuple[str, str | Path | None]) -> Path:
    """``--output`` as a folder to write into: not an existing file, not one of the ``(option, path)`` inputs."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise DataError(f"--output {out} is a file, not a folder")
    for option, path in inputs:
        if path is not None and Path(path).exists() and out.resolve() == Path(path).resolve():
            raise DataError(f"--output {out} is the {option} folder: its files would be overwritten")
    return out


def check_distinct_targets(files: Sequence[Path], targets: Sequence[Path]) -> None:
    """Refuse inputs that would be written to the same output file (``a.png`` and ``a.jpg`` -> ``a.png``)."""
    seen: dict[Path, Path] = {}
    for source, target in zip(files, targets, strict=True):
        if target in seen:
            raise DataError(f"{seen[target]} and {source} would both be written to {target.name}: rename one")
        seen[target] = source


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def val_pairs_from_args(args: argparse.Namespace, scale: int):
    """--val; by default the val split of --data when it has one (embedded, DIV2K roots), else the embedded val
    photos (said on stderr), so that a run on a folder of HR images is still validated; None for ``--val none``."""
    from nas.data import EMBEDDED, has_split, open_pairs, validation_pairs

    source = args.data if args.val is None else args.val
    if source == "none":
        return None
    if args.val is None and not has_split(source, "val"):
        print(
            f"{args.data} has no val split: validating on the embedded val photos (--val DIR|none to change)",
            file=sys.stderr,
        )
        source = EMBEDDED
    split = "val" if has_split(source, "val") else "train"
    return validation_pairs(open_pairs(source, scale, split), max_size=args.val_max_size or None)
