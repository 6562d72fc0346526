"""The ``srnas`` command: one subcommand per module in ``nas.cli.commands``.

Errors and exit status (the same for every subcommand):

- ``0``: success.
- ``2``: a usage error, i.e. the command line itself is wrong: an unknown command or option, a missing
  argument, an option value of the wrong type or out of range (``--steps 0``, ``--lr nan``, ``--device tpu``,
  ``--storage bogus://x``) or contradictory options. Nothing has started.
- ``1``: bad data, i.e. the command line is well formed but what it names is not usable: a missing or
  unreadable file or folder, a bad image, spec or checkpoint, an unknown model, a GPU this machine lacks,
  an output folder that is a file or the input folder; also an unexpected exception (a bug).
- ``130``: interrupted (Ctrl-C).

Every error is one line on stderr, ``srnas COMMAND: error: ...`` naming the file or option, without a
traceback, and is detected before anything is written. An unexpected exception prints one line saying it
is a bug; ``srnas --debug ...`` (or ``SRNAS_DEBUG=1``) prints the full traceback of any error instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from nas.errors import SrnasError, UsageError
from nas.paths import RESULTS_ENV

# Each module defines ``register(subparsers)``, which adds its parser and sets ``func=run``.
COMMAND_MODULES = ["zoo", "profile", "downscale", "sr", "eval", "train", "prune", "search", "pipeline", "front", "show"]
COMMAND_MODULES += ["export"]

DEBUG_ENV = "SRNAS_DEBUG"
EXIT_DATA, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class ParseError(UsageError):
    """What ``ArgumentParser.error`` raises: its message already names the (sub)command."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), raised to ``main`` as a UsageError."""

    def error(self, message: str) -> NoReturn:
        raise ParseError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="srnas",
        description="Architecture search and pruning for efficient single-image super-resolution.",
        epilog="Exit status: 0 success, 1 bad data (or a bug), 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--debug", action="store_true", help=f"show the full traceback of errors (or {DEBUG_ENV}=1)")
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
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
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


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (multi-line messages joined with '; ')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _debug_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip().lower() not in (
        "",
        "0",
        "false",
        "no",
    )


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ParseError as exc:
        print(one_line(exc), file=sys.stderr)
        return EXIT_USAGE
    if not getattr(args, "func", None):
        build_parser().print_help()
        return EXIT_USAGE
    prefix, debug = f"srnas {args.command}", _debug_requested(args)
    try:
        with _results_root(args.results_dir):
            return int(args.func(args) or 0)
    except BrokenPipeError:  # `srnas front | head`
        sys.stderr.close()
        return 0
    except (SrnasError, OSError) as exc:
        if debug:
            traceback.print_exc()
        else:
            print(f"{prefix}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_DATA
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, or the traceback when asked for
        if debug:
            traceback.print_exc()
        else:
            print(
                f"{prefix}: internal error (a bug in srnas): {type(exc).__name__}: {one_line(exc)}; "
                f"rerun with --debug (or {DEBUG_ENV}=1) for the traceback and report it",
                file=sys.stderr,
            )
        return EXIT_DATA


if __name__ == "__main__":
    sys.exit(main())
