"""``srnas prune``: channel-prune a trained model to a target, fine-tune it by distillation, report before/after."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nas.cli.commands._common import (
    check_output_dir,
    device_name,
    non_negative_float,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_int,
    resolve_device,
    unit_fraction,
    val_pairs_from_args,
)
from nas.data import EMBEDDED, open_pairs
from nas.errors import CheckpointError, SrnasError
from nas.zoo.resolve import load_model

_DESCRIPTION = """\
Prune MODEL (zoo name, spec file or model folder) with trained weights to a target given as a fraction of the
original: exactly one of --target-activations, --target-params, --target-flops, --target-runtime, in (0, 1).
Each round scores channels (Gate Decorator Taylor |g*dL/dg|, or L1 of weights), divides by what each saves
(--cost), prunes the globally cheapest ones towards the target and fine-tunes briefly; after the last round
the model is physically shrunk and fine-tuned again. Fine-tuning distils from the unpruned model (its outputs
are the targets; --gt-weight mixes in the ground truth), so small or off-domain --data does not pull the model
away from what it learned; --feature-weight W also distils its block outputs (the trunk features, on the
channels the pruned model keeps). --target-runtime is measured: each round's candidate is shrunk and timed on the
device (median of --repeats), with steps chosen on the latency proxy calibrated to those measurements.
DIR receives spec.yaml + weights.safetensors (a MODEL for every command), report.json / report.md (params,
FLOPs, activations, #conv, measured runtime and PSNR before / after pruning / after fine-tuning) and
state.json: running the same command again continues an interrupted run.
Defaults (3 rounds x 150 steps + 1500 final steps, batch 8 of 32x32 LR patches, lr 5e-4) take about
10 minutes for RFDN on 2 CPU cores."""


def register(sub) -> None:
    from pruning.config import COSTS, IMPORTANCES, TARGETS, PruneConfig

    d = PruneConfig(target=0.5)
    p = sub.add_parser("prune", help="prune a trained model to a target and fine-tune it", description=_DESCRIPTION)
    p.add_argument("model", metavar="MODEL", help="zoo name, spec file (.yaml/.json) or model folder")
    p.add_argument("--weights", help="trained weights: official .pth/.pt or srnas .safetensors (a folder's own)")
    for metric in TARGETS:
        p.add_argument(
            f"--target-{metric}", type=open_fraction, metavar="F", help=f"keep this fraction of the {metric}"
        )
    p.add_argument("--output", required=True, help="output folder (continued when it holds a state.json)")
    p.add_argument("--mode", choices=("coupled", "fine"), default=d.mode, help="gate granularity (pruning.gates)")
    p.add_argument("--importance", choices=IMPORTANCES, default=d.importance)
    p.add_argument(
        "--cost",
        choices=COSTS,
        help="what importance is divided by (default: the target metric; latency proxy for runtime)",
    )
    p.add_argument(
        "--round-to", type=positive_int, default=d.round_to, metavar="N", help="pruned widths multiples of N"
    )
    p.add_argument("--data", default=EMBEDDED, help="fine-tuning data: DIR or 'embedded' (default)")
    p.add_argument(
        "--val", help="validation data: DIR, 'embedded' or 'none' (default: the val split of --data, else embedded)"
    )
    p.add_argument(
        "--val-max-size", type=non_negative_int, default=256, help="centre-crop validation HR images (0: whole)"
    )
    p.add_argument("--rounds", type=positive_int, default=d.rounds, help="prune + fine-tune rounds")
    p.add_argument("--round-steps", type=non_negative_int, default=d.round_steps, help="fine-tune steps per round")
    p.add_argument(
        "--steps", type=non_negative_int, default=d.final_steps, help="final fine-tune steps of the shrunk model"
    )
    p.add_argument("--score-batches", type=positive_int, default=d.score_batches, help="batches for Taylor scores")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--patch-size", type=positive_int, default=d.patch_size, help="LR patch side")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="fine-tune learning rate (cosine per round)")
    p.add_argument("--final-lr", type=positive_float, help="learning rate of the final fine-tune (default --lr)")
    p.add_argument(
        "--gt-weight", type=unit_fraction, default=d.gt_weight, help="ground-truth share of the target (0..1)"
    )
    p.add_argument(
        "--feature-weight",
        type=non_negative_float,
        default=d.feature_weight,
        metavar="W",
        help="also distil the unpruned model's block outputs (trunk features): loss += W * their mean L1 (0: off)",
    )
    p.add_argument(
        "--reconstruct",
        action=argparse.BooleanOptionalAction,
        default=d.reconstruct,
        help="after each round's pruning, refit the convs reading pruned channels by least squares to the "
        "unpruned model's features (pruning.reconstruct)",
    )
    p.add_argument(
        "--reconstruct-patches",
        type=positive_int,
        default=d.reconstruct_patches,
        help="LR calibration patches of the refit",
    )
    p.add_argument("--size", type=positive_int, default=d.input_size[1], help="LR input side for costs and runtime")
    p.add_argument("--repeats", type=positive_int, default=d.repeats, help="timed passes per runtime measurement")
    p.add_argument("--bench", default=",".join(d.benchmarks), help="reference-kit sets in the report, or 'none'")
    p.add_argument("--no-report", action="store_true", help="skip report.json / report.md")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--device", default="auto", type=device_name, help="auto (cuda when available), cpu, cuda, cuda:1, ..."
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from pruning.config import PruneConfig, parse_prune_target
    from pruning.schedule import prune

    metric, fraction = parse_prune_target(  # PruneTargetError is a UsageError
        activations=args.target_activations,
        params=args.target_params,
        flops=args.target_flops,
        runtime=args.target_runtime,
    )
    check_output_dir(args.output, ("--data", args.data), ("--val", args.val))
    resolve_device(args.device)  # a missing GPU fails before anything is written
    bench = () if args.bench.strip().lower() in ("", "none") else tuple(b.strip() for b in args.bench.split(","))
    cfg = PruneConfig(
        target=fraction,
        metric=metric,
        mode=args.mode,
        importance=args.importance,
        cost=args.cost,
        round_to=args.round_to,
        rounds=args.rounds,
        round_steps=args.round_steps,
        final_steps=args.steps,
        score_batches=args.score_batches,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        lr=args.lr,
        final_lr=args.final_lr,
        gt_weight=args.gt_weight,
        feature_weight=args.feature_weight,
        reconstruct=args.reconstruct,
        reconstruct_patches=args.reconstruct_patches,
        input_size=(3, args.size, args.size),
        device=args.device,
        repeats=args.repeats,
        seed=args.seed,
        progress=not args.json,
        report=not args.no_report,
        benchmarks=bench,
    )
    loaded = load_model(args.model, args.weights, pretrained=True)
    if loaded.weights is None:
        raise CheckpointError(f"pruning needs trained weights: pass --weights for {args.model}")
    scale = loaded.spec["scale"]
    # all data is opened and checked before anything is written
    train_data = open_pairs(args.data, scale, "train")
    val = val_pairs_from_args(args, scale)
    if Path(args.output).resolve() == Path(loaded.source).resolve():
        raise SrnasError("--output must differ from the model folder being pruned")
    result = prune(loaded.model, loaded.spec, cfg, args.output, train_data=train_data, val_data=val, source=args.model)
    out = Path(args.output)
    info = {
        "output": str(out),
        "model": args.model,
        "target": {metric: fraction},
        "mode": cfg.mode,
        "resumed": result.resumed,
        "seconds": result.seconds,
        "rounds": [{k: v for k, v in r.items() if k != "masks"} for r in result.rounds],
        "report": result.report,
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    if result.report is not None:
        print((out / "report.md").read_text())
    print(f"pruned model saved to {out} (spec.yaml + weights.safetensors); state: {out / 'state.json'}")
    return 0
