"""``srnas pipeline``: search -> pick Pareto models -> prune each -> final fine-tune -> the final front."""

from __future__ import annotations

from nas.cli.commands._common import print_json
from nas.cli.commands.search import add_search_args, run_dir_for, space_and_options

PRUNE_TARGETS = ("activations", "params", "flops", "runtime")  # the keywords of pruning.config.parse_prune_target
DEFAULT_TARGET = ("activations", 0.7)


def register(sub) -> None:
    p = sub.add_parser(
        "pipeline",
        help="search, prune the picked Pareto models, fine-tune, final front",
        description=__doc__ + " Every stage resumes: running the same command again continues where it stopped. "
        "Outputs: results/<run>/pipeline/ (per model) and results/<run>/final/ (a run folder: srnas front).",
    )
    add_search_args(p)
    p.add_argument("--pick", type=int, default=3, help="Pareto models to prune (spread along runtime)")
    p.add_argument("--pick-min-psnr", type=float, help="only pick models with PSNR >= this")
    p.add_argument("--pick-max-runtime", type=float, help="only pick models with runtime_ms <= this")
    for metric in PRUNE_TARGETS:  # as `srnas prune`; none given: --target-activations 0.7
        p.add_argument(
            f"--target-{metric}", type=float, metavar="F", help=f"pruning target: keep this fraction of the {metric}"
        )
    p.add_argument("--prune-mode", choices=("coupled", "fine"), default="coupled")
    p.add_argument("--final-steps", type=int, default=300, help="final fine-tune steps per model")
    p.add_argument("--json", action="store_true", help="print the final models as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from nas.cli.pipeline import PipelineOptions, run_pipeline, summary
    from pruning.config import parse_prune_target

    space, search = space_and_options(args)
    given = {m: getattr(args, f"target_{m}") for m in PRUNE_TARGETS}
    metric, target = parse_prune_target(**given, default=DEFAULT_TARGET)
    opts = PipelineOptions(
        pick=args.pick,
        min_psnr=args.pick_min_psnr,
        max_runtime_ms=args.pick_max_runtime,
        target_metric=metric,
        target=target,
        prune_mode=args.prune_mode,
        final_steps=args.final_steps,
    )
    run_dir = run_dir_for(args, space)
    df = run_pipeline(space, run_dir, search, opts, force_unlock=args.force_unlock)
    rows = summary(df)
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        print(
            f"trial {r['trial']}: PSNR {r['search_psnr']:.3f} -> {r['psnr']:.3f} dB, runtime "
            f"{r['search_runtime_ms']:.1f} -> {r['runtime_ms']:.1f} ms, activations "
            f"{r['search_activations'] / 1e6:.1f}M -> {r['activations'] / 1e6:.1f}M"
        )
    print(f"final front: srnas front {run_dir / 'final'} {run_dir}")
    return 0
