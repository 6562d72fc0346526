"""The ``srnas`` command: one subcommand per module in ``nas.cli.commands``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from nas.errors import SrnasError
from nas.paths import RESULTS_ENV

# Each module defines ``register(subparsers)``, which adds its parser and sets ``func=run``.
COMMAND_MODULES = ["zoo", "profile", "downscale", "sr", "eval", "train", "prune", "search", "pipeline", "front", "show"]
COMMAND_MODULES += ["export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srnas",
        description="Architecture search and pruning for efficient single-image super-resolution.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"nas.cli.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"nas.cli.commands.{name}":
                raise
            continue
        module.register(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--results-dir",
            metavar="DIR",
            help=f"root of runs and results (default: ${RESULTS_ENV}, else ./results in the working directory)",
        )
    return parser


@contextlib.contextmanager
def _results_root(folder: str | None) -> Iterator[None]:
    """``--results-dir`` for the duration of one command (also seen by the processes it starts, e.g. Ray's)."""
    if not folder:
        yield
        return
    before = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(Path(folder).expanduser().absolute())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = before


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _results_root(args.results_dir):
            return int(args.func(args) or 0)
    except SrnasError as exc:
        print(f"srnas {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"srnas {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `srnas front | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
