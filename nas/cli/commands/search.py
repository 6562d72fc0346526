"""``srnas search``: supernet training + multi-objective architecture search (Optuna locally, or Ray Tune)."""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict
from pathlib import Path

from nas.cli.commands._common import print_json
from nas.errors import SrnasError
from nas.paths import builtin_spaces, results_dir

DEFAULT_SPACE = "quick"
RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def register(sub) -> None:
    p = sub.add_parser(
        "search",
        help="search architectures (supernet + Optuna/Ray)",
        description="Train the weight-sharing supernet of a search space, then search it for the Pareto front of "
        "PSNR vs measured runtime (and/or activations). Running the same command again continues the run.",
    )
    add_search_args(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def add_search_args(p) -> None:
    """The options of a search (shared with ``srnas pipeline``)."""
    p.add_argument(
        "space",
        nargs="?",
        default=DEFAULT_SPACE,
        help="search-space YAML, or the name of one in search_spaces/ (default: quick)",
    )
    p.add_argument(
        "--run", type=run_name, help="run name under results/: letters, digits, -_. (default: the space name)"
    )
    p.add_argument("--trials", type=int, help="number of COMPLETE trials to reach")
    p.add_argument("--sampler", help="nsga2 (default), nsga3, tpe, random, qmc")
    p.add_argument("--objectives", help="comma list starting with psnr, e.g. psnr,runtime_ms or psnr,activations")
    p.add_argument("--min-psnr", type=float, help="constraint: keep PSNR >= this (dB)")
    p.add_argument("--data", help="training/validation data: embedded (default of quick) or a DIV2K-layout folder")
    p.add_argument("--steps", type=int, help="supernet training steps (overrides the space's train.steps)")
    p.add_argument("--device", help="auto (default), cpu or cuda: where runtime is measured and the supernet trains")
    p.add_argument("--backend", choices=["optuna", "ray"], help="optuna (this process, default) or ray (Ray Tune)")
    p.add_argument("--ray-address", help="existing Ray cluster: auto or HOST:PORT (default: start a local one)")
    p.add_argument("--workers", type=int, help="Ray: concurrent trials (default 1)")
    p.add_argument("--storage", help="Optuna storage URL for many machines (default: journal file in the run)")
    p.add_argument("--seed", type=int, help="sampler and supernet seed")
    p.add_argument(
        "--force-unlock",
        action="store_true",
        help="take over the run's lock held by a process on another host (only when that process is gone)",
    )


def run_name(name: str) -> str:
    """A run name is a plain folder name under results/ (argparse type: a bad one is a usage error)."""
    if not RUN_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a run name: use letters, digits and -_. (no path separators, not starting with .)"
        )
    return name


def run_dir_for(args, space) -> Path:
    """``results/<--run>`` (default: the space's name, checked like --run)."""
    name = args.run or space.name
    try:
        return results_dir() / run_name(name)
    except argparse.ArgumentTypeError as exc:
        raise SrnasError(f"{exc}; pass --run NAME") from None


def find_space(ref: str) -> Path:
    path = Path(ref)
    if path.is_file():
        return path
    builtin = builtin_spaces()
    if ref in builtin:
        return builtin[ref]
    known = ", ".join(sorted(builtin))
    raise SrnasError(f"search space {ref!r} not found (a YAML path, or one of: {known})")


def options_from(space, args):
    """The space's validated search options with the command line's overrides (``dataclasses.replace``)."""
    return space.search.with_overrides(
        trials=args.trials,
        sampler=args.sampler,
        min_psnr=args.min_psnr,
        device=args.device,
        backend=args.backend,
        ray_address=args.ray_address,
        workers=args.workers,
        storage=args.storage,
        seed=args.seed,
        objectives=args.objectives.split(",") if args.objectives else None,
    )


def space_and_options(args):
    """The search space named on the command line with its --steps/--data overrides, and the search options;
    every option is validated here, before anything is written."""
    from nas.search.space import load_space

    space = load_space(find_space(args.space)).with_training(steps=args.steps, data=args.data)
    return space, options_from(space, args)


def run(args) -> int:
    from nas.search.run import run_search

    space, opts = space_and_options(args)
    run_dir = run_dir_for(args, space)
    result = run_search(space, run_dir, opts, force_unlock=args.force_unlock)
    if args.json:
        print_json(asdict(result))
        return 0
    print(f"run {run_dir}: {result.complete} complete, {result.failed} failed, {result.pareto} on the Pareto front")
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items() if k.endswith("_s")))
    print(f"browse: srnas front {run_dir}")
    return 0
