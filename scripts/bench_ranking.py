"""Supernet ranking quality: does inherited-weight PSNR rank subnets like stand-alone training does?

1. The supernet: ``--run RUN`` reuses a search run's ``supernet.safetensors`` and search space; otherwise the
   space (``--space``, default quick) is trained here with the shared loop into
   ``results/bench/ranking/supernet-<space>-<hash>/`` (resumable).
2. ``--subnets`` architectures spanning the space: ``--pool`` distinct random choices, sorted by activations,
   picked at evenly spaced quantiles (smallest and largest included).
3. Each is scored as the search scores it (``nas.search.evaluator.Evaluator``: inherited weights, BatchNorm
   recalibrated, Y-PSNR on the validation set), then trained from scratch with the shared loop for
   ``--steps`` steps (the space's training options otherwise) into ``results/bench/ranking/<id>/`` -- a kill
   loses nothing, the next run resumes -- and scored on the same validation images.
4. Kendall tau and Spearman between inherited and stand-alone PSNR, with a permutation p-value; for
   reference, how well params, activations and FLOPs alone rank the stand-alone PSNR.

    .venv/bin/python scripts/bench_ranking.py                       # train quick's supernet, then 8 subnets
    .venv/bin/python scripts/bench_ranking.py --run results/quick   # reuse a finished search's supernet
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from bench_common import (
    bench_dir,
    command_line,
    distinct_choices,
    environment,
    kendall_tau,
    make_parser,
    markdown_table,
    permutation_pvalue,
    print_table,
    ranks,
    spearman,
    write_results,
)
from tqdm import tqdm

from nas.cli.commands.search import find_space
from nas.device import resolve_device
from nas.errors import SrnasError
from nas.io import atomic_write
from nas.measure.evaluate import mean_psnr
from nas.measure.profiler import count_complexity
from nas.models.network import build
from nas.paths import REPO_ROOT, results_dir
from nas.search.options import SupernetTraining
from nas.search.run import SUPERNET_WEIGHTS, train_supernet
from nas.search.space import SearchSpace, load_space, parse_space
from nas.train import train

NAME = "ranking"
# ~0.3 s per step (batch 16, LR patch 24) on a free 2-core CPU: 8 x 800 steps ~ 32 min, + ~8 min for quick's
# 1500-step supernet when it is trained here -- about 40 min in all
DEFAULT_STEPS = 800
COUNT_SIZE = (3, 256, 256)
PROXIES = ("params", "activations", "flops")
# TrainConfig fields that do not change the trained weights: left out of a stand-alone run's id
NOT_IN_ID = {"device", "progress", "val_every", "ckpt_every", "log_every", "num_workers"}


def short_hash(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


def ranking_dir() -> Path:
    return bench_dir() / NAME


def train_options(space: SearchSpace, args: argparse.Namespace, steps: int | None) -> SupernetTraining:
    """The space's ``train:`` options with this run's overrides (``data`` and ``sampling`` kept)."""
    return space.with_training(
        steps=steps, batch_size=args.batch_size, patch_size=args.patch_size, data=args.data, seed=args.seed
    ).train


def open_run(ref: str) -> tuple[SearchSpace, Path]:
    """The space and supernet weights of a search run (a folder, or a name under the results folder)."""
    run = Path(ref) if Path(ref).is_dir() else results_dir(default=REPO_ROOT / "results") / ref
    config, weights = run / "config.yaml", run / SUPERNET_WEIGHTS
    if not config.is_file():
        raise SrnasError(f"{run} is not a search run: {config} not found")
    if not weights.is_file():
        raise SrnasError(f"{weights} not found: the run's supernet training has not finished")
    data = yaml.safe_load(config.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("space"), dict):
        raise SrnasError(f"{config} has no 'space' mapping")
    return parse_space(data["space"], str(config)), weights


def stratified(space: SearchSpace, n: int, pool: int, seed: int) -> list[dict[str, Any]]:
    """``n`` of ``pool`` distinct random choices, evenly spaced in activations (at 3x256x256)."""
    choices = distinct_choices(space, pool, seed)
    acts = [count_complexity(build(space.to_spec(c)), COUNT_SIZE).activations for c in choices]
    order = np.argsort(acts, kind="stable")
    picks = sorted(set(np.round(np.linspace(0, len(order) - 1, n)).astype(int).tolist()))
    return [choices[order[i]] for i in picks]


def train_standalone(
    choice: dict[str, Any], space: SearchSpace, opts: SupernetTraining, evaluator, device: str
) -> tuple[str, float, float]:
    """Train one subnet from scratch (resuming its folder); returns (id, validation Y-PSNR, seconds)."""
    cfg = opts.loop_config(device)
    identity = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IN_ID}
    run_id = short_hash({"choice": choice, "train": identity, "data": opts.data})
    folder = ranking_dir() / run_id
    folder.mkdir(parents=True, exist_ok=True)
    spec = space.to_spec(choice)
    atomic_write(folder / "subnet.json", json.dumps({"choice": choice, "spec": spec, "train": identity}, indent=2))
    torch.manual_seed(cfg.seed)
    model = build(spec)
    result = train(model, evaluator.train_data, cfg, folder, val_data=evaluator.val)
    psnr = result.final_psnr
    if psnr is None:  # only when a finished run's state lacks it
        psnr = mean_psnr(model, evaluator.val, space.scale, device)
    return run_id, float(psnr), result.seconds


def arg_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--run", help="reuse this search run's supernet and space (folder or name under results/)")
    parser.add_argument("--space", default="quick", help="search space to train here when --run is absent")
    parser.add_argument("--supernet-steps", type=int, help="supernet training steps (default: the space's)")
    parser.add_argument("--subnets", type=int, default=8, help="architectures to compare (>= 3)")
    parser.add_argument("--pool", type=int, default=64, help="random architectures they are picked from")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="stand-alone training steps per subnet")
    parser.add_argument("--batch-size", type=int, help="training batch (default: the space's)")
    parser.add_argument("--patch-size", type=int, help="LR training patch side (default: the space's)")
    parser.add_argument("--data", help="training/validation data (default: the space's, usually embedded)")
    parser.add_argument("--val-max-size", type=int, help="validation crop, HR pixels (default: the space's)")
    parser.add_argument("--runtime-size", type=int, help="LR side for the runtime column (default: the space's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--seed", type=int, default=0, help="architecture sampling, initialisation and patches")
    parser.add_argument("--permutations", type=int, default=10000, help="for the p-value of Kendall tau")
    return parser


def supernet_and_space(args: argparse.Namespace, device: str) -> tuple[SearchSpace, Path, str]:
    """The space and supernet weights of ``--run``, or a supernet trained here; plus where it came from."""
    if args.run:
        space, weights = open_run(args.run)
        return space, weights, str(weights)
    space = load_space(find_space(args.space))
    sn_opts = train_options(space, args, args.supernet_steps)
    space_data = {k: v for k, v in space.to_dict().items() if k not in ("train", "search")}
    folder = ranking_dir() / f"supernet-{space.name}-{short_hash([sn_opts.to_dict(), space_data])}"
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)  # the supernet's initialisation (train_supernet builds it)
    weights = train_supernet(space, folder, sn_opts, device)
    return space, weights, f"trained here: {weights} ({sn_opts.steps} steps; {time.perf_counter() - t0:.0f} s)"


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Rank both PSNRs (in place, on ``rows``) and compare them: Kendall tau (+ p-value), Spearman, proxies."""
    inherited = [r["psnr_inherited"] for r in rows]
    alone = [r["psnr_standalone"] for r in rows]
    for r, a, b in zip(rows, ranks([-v for v in inherited]), ranks([-v for v in alone]), strict=True):
        r["rank_inherited"], r["rank_standalone"] = (int(v) if float(v).is_integer() else float(v) for v in (a, b))
    summary: dict[str, Any] = {
        "subnets": len(rows),
        "kendall_tau": kendall_tau(inherited, alone),
        "kendall_p_value": permutation_pvalue(inherited, alone, permutations=args.permutations, seed=args.seed),
        "spearman": spearman(inherited, alone),
        "standalone_steps": args.steps,
    }
    for proxy in PROXIES:
        summary[f"kendall_{proxy}_vs_standalone"] = kendall_tau([r[proxy] for r in rows], alone)
    return summary


def report_body(rows: list[dict[str, Any]], summary: dict[str, Any], args, opts, runtime_side: int) -> str:
    """The markdown of the benchmark: protocol, summary, subnets."""
    supernet_source, device = summary["supernet"], summary["device"]
    cols = ["id", "genotype", "params", "activations", "runtime_ms", "psnr_inherited", "psnr_standalone"]
    cols += ["rank_inherited", "rank_standalone"]
    proxy_rows = [
        {"ranker": "inherited-weight PSNR (supernet)", "kendall_tau": summary["kendall_tau"]},
        *({"ranker": p, "kendall_tau": summary[f"kendall_{p}_vs_standalone"]} for p in PROXIES),
    ]
    return (
        "## Protocol\n\n"
        f"- Supernet: {supernet_source}; space `{summary['space']}`.\n"
        f"- {len(rows)} subnets picked from {args.pool} distinct random choices (seed {args.seed}) at evenly "
        "spaced quantiles of activations.\n"
        "- Inherited: `nas.search.evaluator.Evaluator` (what the search ranks by): supernet weights, BatchNorm "
        "recalibrated, Y-PSNR (float BT.601, 4-px border) on the validation set.\n"
        f"- Stand-alone: trained from scratch with `nas.train.train`, {args.steps} steps, batch "
        f"{opts.batch_size}, LR patch {opts.patch_size}, lr {opts.lr}, "
        f"seed {args.seed}, then the same Y-PSNR on the same images; runs in `results/bench/ranking/<id>/`.\n"
        f"- Validation: {summary['validation']}. Runtime column: median at 1x3x{runtime_side}x{runtime_side} "
        f"on {device}.\n"
        "- Short stand-alone budgets rank early learners, not converged quality; compare tau at one budget.\n\n"
        "## Summary\n\n"
        f"- **Kendall tau = {summary['kendall_tau']:.3f}** (one-sided permutation p = "
        f"{summary['kendall_p_value']:.3g}, {args.permutations} permutations), Spearman = "
        f"{summary['spearman']:.3f}, n = {len(rows)}\n\n"
        "How well each ranker orders the stand-alone PSNR (Kendall tau; counts: larger model ranked higher):\n\n"
        + markdown_table(proxy_rows, floatfmt=".3f")
        + "\n\n## Subnets\n\n"
        + markdown_table(rows, cols, floatfmt=".3f")
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser()
    args = parser.parse_args(argv)
    if args.subnets < 3 or args.pool < args.subnets or args.steps < 1:
        parser.error("need --subnets >= 3, --pool >= --subnets and --steps >= 1")
    try:
        device = str(resolve_device(args.device))
        space, weights, supernet_source = supernet_and_space(args, device)
        if args.pool > space.size():
            parser.error(f"--pool {args.pool} exceeds the {space.size()} architectures of {space.name}")
        from nas.search.evaluator import Evaluator

        runtime_side = args.runtime_size or space.search.runtime_size[-1]
        val_max_size = args.val_max_size or space.search.val_max_size
        opts = train_options(space, args, args.steps)
        evaluator = Evaluator(
            space,
            weights,
            ranking_dir() / "cache",
            data=opts.data,
            device=device,
            runtime_size=(3, runtime_side, runtime_side),
            runtime_repeats=space.search.runtime_repeats,
            val_max_size=val_max_size,
            seed=args.seed,
        )
    except SrnasError as exc:
        print(f"bench_ranking: error: {exc}", file=sys.stderr)
        return 2
    env = environment([device])

    choices = stratified(space, args.subnets, args.pool, args.seed)
    rows: list[dict[str, Any]] = []
    for choice in tqdm(choices, desc="subnets", unit="subnet"):
        metrics = evaluator.evaluate(choice)
        run_id, psnr_alone, seconds = train_standalone(choice, space, opts, evaluator, device)
        rows.append(
            {
                "id": run_id,
                "genotype": metrics["genotype"],
                "params": metrics["params"],
                "activations": metrics["activations"],
                "flops": metrics["flops"],
                "runtime_ms": metrics["runtime_ms"],
                "psnr_inherited": metrics["psnr"],
                "psnr_standalone": psnr_alone,
                "train_s": seconds,
                "choice": choice,
            }
        )
    summary = summarise(rows, args)
    summary.update(
        supernet=supernet_source,
        space=space.source,
        device=device,
        validation=f"{opts.data} val split, centre crops of at most {val_max_size} HR pixels",
    )
    body = report_body(rows, summary, args, opts, runtime_side)
    write_results(
        NAME,
        title="Supernet ranking quality (inherited vs stand-alone PSNR)",
        env=env,
        command=command_line("bench_ranking.py", argv),
        arguments=vars(args),
        results={"summary": summary, "rows": rows},
        body=body,
    )
    print_table(rows, ["id", "activations", "psnr_inherited", "psnr_standalone", "rank_inherited", "rank_standalone"])
    print(
        f"Kendall tau {summary['kendall_tau']:.3f} (p {summary['kendall_p_value']:.3g}), "
        f"Spearman {summary['spearman']:.3f}, n {len(rows)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
