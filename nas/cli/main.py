"""The ``srnas`` command: one subcommand per module in ``nas.cli.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys

from nas.errors import SrnasError

# Each module defines ``register(subparsers)``, which adds its parser and sets ``func=run``.
COMMAND_MODULES = ["zoo", "profile", "downscale", "sr", "eval", "train", "prune", "search", "pipeline", "front", "show"]


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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
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
