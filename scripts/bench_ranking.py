"""Supernet ranking quality: does inherited-weight PSNR rank subnets like stand-alone training does?

1. The supernets: ``--run RUN`` reuses a search run's ``supernet.safetensors`` and search space; otherwise the
   space (``--space``, default quick) is trained here with the shared loop once per ``--remedies`` entry
   (``baseline``: the space's ``train:`` section as it is; ``sandwich``; ``sandwich+inplace``; each with the
   ``--train KEY=VALUE`` overrides) into ``results/bench/ranking/supernet-<space>-<hash of its options>/``
   (resumable).
2. ``--subnets`` architectures spanning the space: ``--pool`` distinct random choices, sorted by activations,
   picked at evenly spaced quantiles (smallest and largest included).
3. Each is scored as the search scores it (``nas.search.evaluator.Evaluator``: inherited weights, BatchNorm
   recalibrated, Y-PSNR on the validation set), then trained from scratch with the shared loop for
   ``--steps`` steps (the space's training options otherwise) into ``results/bench/ranking/<id>/`` -- a kill
   loses nothing, the next run resumes -- and scored on the same validation images.
4. For each ranker (each supernet's inherited PSNR; and activations, FLOPs, params alone): Kendall tau with
   the stand-alone PSNR, its bootstrap 95% interval (subnets resampled, the same resamples for every
   ranker), and the mean tau within activation terciles (does it rank models of similar size?); for the
   supernets also Spearman, a permutation p-value and the tau gain over the best size-only ranker [interval].

    .venv/bin/python scripts/bench_ranking.py                       # train quick's supernet, then 24 subnets
    .venv/bin/python scripts/bench_ranking.py --remedies baseline sandwich sandwich+inplace
    .venv/bin/python scripts/bench_ranking.py --run results/quick   # reuse a finished search's supernet
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from bench_common import (
    bench_dir,
    bootstrap_interval,
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
from torch import nn
from tqdm import tqdm

from nas.cli.commands.search import find_space
from nas.data import Pair, PairedImages
from nas.device import resolve_device
from nas.errors import SpecError, SrnasError
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
# ~0.3 s per step (batch 16, LR patch 24) on a free 2-core CPU: 24 x 800 steps ~ 1.6 h; results/bench/ranking.md
# was measured with smaller budgets (see its command line)
DEFAULT_STEPS = 800
# the supernet-training remedies compared by --remedies: overrides of the space's train: section
REMEDIES: dict[str, dict[str, Any]] = {
    "baseline": {},
    "sandwich": {"sampling": "sandwich"},
    "sandwich+inplace": {"sampling": "sandwich", "distill": "inplace"},
}
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


def run_space(ref: str) -> tuple[Path, SearchSpace]:
    """The folder and search space of a search run (a folder, or a name under the results folder)."""
    run = Path(ref) if Path(ref).is_dir() else results_dir(default=REPO_ROOT / "results") / ref
    config = run / "config.yaml"
    if not config.is_file():
        raise SrnasError(f"{run} is not a search run: {config} not found")
    data = yaml.safe_load(config.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("space"), dict):
        raise SrnasError(f"{config} has no 'space' mapping")
    return run, parse_space(data["space"], str(config))


def open_run(ref: str) -> tuple[SearchSpace, Path]:
    """The space and supernet weights of a search run (a folder, or a name under the results folder)."""
    run, space = run_space(ref)
    weights = run / SUPERNET_WEIGHTS
    if not weights.is_file():
        raise SrnasError(f"{weights} not found: the run's supernet training has not finished")
    return space, weights


def stratified(space: SearchSpace, n: int, pool: int, seed: int) -> list[dict[str, Any]]:
    """``n`` of ``pool`` distinct random choices, evenly spaced in activations (at 3x256x256)."""
    choices = distinct_choices(space, pool, seed)
    acts = [count_complexity(build(space.to_spec(c)), COUNT_SIZE).activations for c in choices]
    order = np.argsort(acts, kind="stable")
    picks = sorted(set(np.round(np.linspace(0, len(order) - 1, n)).astype(int).tolist()))
    return [choices[order[i]] for i in picks]


def train_from_scratch(
    spec: dict[str, Any],
    key: dict[str, Any],
    opts: SupernetTraining,
    data: tuple[PairedImages, list[Pair]],
    device: str,
    root: Path,
) -> tuple[str, nn.Module, float, float]:
    """Train ``build(spec)`` from scratch on ``data`` (train images, validation pairs) in ``root/<id>/``.

    The id hashes ``key`` (what names the model: its choice or spec), the loop's weight-relevant options and the
    data, so a killed run resumes and a finished one is reused. Returns (id, trained model, validation Y-PSNR,
    seconds of this call).
    """
    cfg = opts.loop_config(device)
    identity = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IN_ID}
    run_id = short_hash({**key, "train": identity, "data": opts.data})
    folder = root / run_id
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "subnet.json", json.dumps({**key, "spec": spec, "train": identity}, indent=2))
    torch.manual_seed(cfg.seed)
    model = build(spec)
    train_data, val = data
    result = train(model, train_data, cfg, folder, val_data=val)
    psnr = result.final_psnr
    if psnr is None:  # only when a finished run's state lacks it
        psnr = mean_psnr(model, val, train_data.scale, device)
    return run_id, model, float(psnr), result.seconds


def train_standalone(
    choice: dict[str, Any], space: SearchSpace, opts: SupernetTraining, evaluator, device: str
) -> tuple[str, float, float]:
    """Train one subnet from scratch (resuming its folder); returns (id, validation Y-PSNR, seconds)."""
    data = (evaluator.train_data, evaluator.val)
    run_id, _, psnr, seconds = train_from_scratch(
        space.to_spec(choice), {"choice": choice}, opts, data, device, ranking_dir()
    )
    return run_id, psnr, seconds


def arg_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--run", help="reuse this search run's supernet and space (folder or name under results/)")
    parser.add_argument("--space", default="quick", help="search space to train here when --run is absent")
    parser.add_argument("--supernet-steps", type=int, help="supernet training steps (default: the space's)")
    parser.add_argument(
        "--remedies", nargs="+", default=["baseline"], choices=list(REMEDIES), help="supernets to train and compare"
    )
    parser.add_argument(
        "--train", action="append", default=[], metavar="KEY=VALUE", help="override of the supernets' train: section"
    )
    parser.add_argument("--subnets", type=int, default=24, help="architectures to compare (>= 3)")
    parser.add_argument("--pool", type=int, default=64, help="random architectures they are picked from")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="stand-alone training steps per subnet")
    parser.add_argument("--batch-size", type=int, help="training batch (default: the space's)")
    parser.add_argument("--patch-size", type=int, help="LR training patch side (default: the space's)")
    parser.add_argument("--data", help="HR image folder tree or embedded: train + val data (default: the space's)")
    parser.add_argument("--val-max-size", type=int, help="validation crop, HR pixels (default: the space's)")
    parser.add_argument("--runtime-size", type=int, help="LR side for the runtime column (default: the space's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--seed", type=int, default=0, help="architecture sampling, initialisation and patches")
    parser.add_argument("--permutations", type=int, default=10000, help="for the p-value of Kendall tau")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples for the 95%% intervals")
    return parser


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a mapping, values read as YAML (``steps=500``, ``distill=inplace``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SrnasError(f"--train expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def supernet_options(space: SearchSpace, args: argparse.Namespace, remedy: str) -> SupernetTraining:
    """The supernet's training options: the space's, this run's overrides, the remedy, ``--train``."""
    overrides = {**REMEDIES[remedy], **parse_overrides(args.train)}
    try:
        return replace(train_options(space, args, args.supernet_steps), **overrides)
    except (TypeError, SpecError) as exc:
        raise SrnasError(f"supernet {remedy}: bad --train override: {exc}") from exc


def train_seconds(folder: Path) -> float | None:
    """The recorded training time of a finished supernet (its last call; None if unknown)."""
    path = folder / "supernet" / "train_result.json"
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else None


def supernets(args: argparse.Namespace, device: str) -> tuple[SearchSpace, list[dict[str, Any]]]:
    """The space and one entry (name, weights, source, options, train_s) per supernet to compare."""
    if args.run:
        if args.remedies != ["baseline"] or args.train:
            raise SrnasError("--remedies/--train train supernets here: they do not go with --run")
        space, weights = open_run(args.run)
        return space, [{"name": "run", "weights": weights, "source": str(weights), "train_s": None}]
    space = load_space(find_space(args.space))
    space_data = {k: v for k, v in space.to_dict().items() if k not in ("train", "search")}
    out = []
    for remedy in args.remedies:
        opts = supernet_options(space, args, remedy)
        folder = ranking_dir() / f"supernet-{space.name}-{short_hash([opts.to_dict(), space_data])}"
        torch.manual_seed(args.seed)  # the supernet's initialisation (train_supernet builds it)
        weights = train_supernet(space, folder, opts, device)
        options = {k: v for k, v in opts.to_dict().items() if k in ("steps", "sampling", "sandwich_paths", "distill")}
        source = f"{folder.name} ({', '.join(f'{k} {v}' for k, v in options.items())}; data {opts.data})"
        out.append({"name": remedy, "weights": weights, "source": source, "train_s": train_seconds(folder)})
    return space, out


def terciles(rows: list[dict[str, Any]]) -> list[list[int]]:
    """Row indices split into three groups of consecutive activations (sizes differing by at most one)."""
    order = np.argsort([r["activations"] for r in rows], kind="stable")
    return [part.tolist() for part in np.array_split(order, 3)]


def ranker_stats(
    values: list[float], alone: list[float], groups: list[list[int]], args: argparse.Namespace
) -> dict[str, Any]:
    """Kendall tau of one ranker vs the stand-alone PSNR: point, bootstrap interval, within-tercile taus."""
    x, y = np.asarray(values, dtype=float), np.asarray(alone, dtype=float)
    low, high = bootstrap_interval(len(x), lambda i: kendall_tau(x[i], y[i]), resamples=args.bootstrap, seed=args.seed)
    within = [kendall_tau(x[g], y[g]) for g in groups]
    finite = [t for t in within if math.isfinite(t)]
    return {
        "kendall_tau": kendall_tau(x, y),
        "ci_low": low,
        "ci_high": high,
        "tercile_taus": within,
        "tercile_mean": float(np.mean(finite)) if finite else math.nan,
    }


def summarise(rows: list[dict[str, Any]], nets: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Every ranker's statistics; for each supernet also Spearman, p-value and the gain over size alone."""
    alone = [r["psnr_standalone"] for r in rows]
    for r, rank in zip(rows, ranks([-v for v in alone]), strict=True):
        r["rank_standalone"] = int(rank) if float(rank).is_integer() else float(rank)
    groups = terciles(rows)
    sizes = {p: ranker_stats([r[p] for r in rows], alone, groups, args) for p in PROXIES}
    best = max(PROXIES, key=lambda p: sizes[p]["kendall_tau"])
    x_best, y = np.asarray([r[best] for r in rows], dtype=float), np.asarray(alone, dtype=float)
    out = []
    for net in nets:
        values = [r[f"psnr_{net['name']}"] for r in rows]
        stats = ranker_stats(values, alone, groups, args)
        x = np.asarray(values, dtype=float)
        gain = bootstrap_interval(
            len(x),
            lambda i, x=x: kendall_tau(x[i], y[i]) - kendall_tau(x_best[i], y[i]),
            resamples=args.bootstrap,
            seed=args.seed,
        )
        stats.update(
            remedy=net["name"],
            supernet=net["source"],
            train_s=net["train_s"],
            spearman=spearman(values, alone),
            kendall_p_value=permutation_pvalue(values, alone, permutations=args.permutations, seed=args.seed),
            gain_over_best_size=stats["kendall_tau"] - sizes[best]["kendall_tau"],
            gain_ci=list(gain),
        )
        stats["meets_goal"] = bool(
            stats["kendall_tau"] >= 0.85
            and stats["gain_over_best_size"] >= 0.10
            and all(stats["tercile_mean"] > sizes[p]["tercile_mean"] for p in PROXIES)
        )
        out.append(stats)
    return {
        "subnets": len(rows),
        "standalone_steps": args.steps,
        "bootstrap_resamples": args.bootstrap,
        "tercile_sizes": [len(g) for g in groups],
        "best_size_ranker": best,
        "supernets": out,
        "size_rankers": sizes,
        "kendall_tau": out[0]["kendall_tau"],  # the first supernet's, as before
    }


def _ci(stats: dict[str, Any]) -> str:
    return f"{stats['kendall_tau']:.3f} [{stats['ci_low']:.2f}, {stats['ci_high']:.2f}]"


def _terciles(stats: dict[str, Any]) -> str:
    return f"{stats['tercile_mean']:.3f} ({' / '.join(f'{t:.2f}' for t in stats['tercile_taus'])})"


def _gain(s: dict[str, Any]) -> str:
    low, high = s["gain_ci"]
    return f"{s['gain_over_best_size']:+.3f} [{low:+.2f}, {high:+.2f}]"


TERCILE_COL = "tercile tau: mean (low / mid / high)"


def ranker_rows(summary: dict[str, Any], steps: int) -> list[dict[str, Any]]:
    """One table row per supernet, then the size-only rankers."""
    rows = [
        {
            "ranker": f"supernet: {s['remedy']}",
            "kendall_tau [95% CI]": _ci(s),
            TERCILE_COL: _terciles(s),
            "gain vs best size [95% CI]": _gain(s),
            "spearman": f"{s['spearman']:.3f}",
            "p": f"{s['kendall_p_value']:.3g}",
            "supernet train s": "?" if s["train_s"] is None else f"{s['train_s']:.0f}",
            "stand-alone steps": steps,
            "meets goal": "yes" if s["meets_goal"] else "no",
        }
        for s in summary["supernets"]
    ]
    for proxy, s in summary["size_rankers"].items():
        rows.append(
            {"ranker": proxy, "kendall_tau [95% CI]": _ci(s), "tercile tau: mean (low / mid / high)": _terciles(s)}
        )
    return rows


def report_body(rows: list[dict[str, Any]], summary: dict[str, Any], args, opts, runtime_side: int) -> str:
    """The markdown of the benchmark: protocol, rankers, subnets."""
    nets = summary["supernets"]
    cols = ["id", "genotype", "params", "activations", "flops", "runtime_ms"]
    cols += [f"psnr_{s['remedy']}" for s in nets] + ["psnr_standalone", "rank_standalone"]
    supernet_lines = "".join(f"  - `{s['remedy']}`: {s['supernet']}\n" for s in nets)
    table = markdown_table(ranker_rows(summary, args.steps))
    return (
        "## Protocol\n\n"
        f"- Space `{summary['space']}`. Supernets (each trained with the shared loop on {summary['supernet_data']}):\n"
        + supernet_lines
        + f"- {len(rows)} subnets picked from {args.pool} distinct random choices (seed {args.seed}) at evenly "
        "spaced quantiles of activations.\n"
        "- Inherited: `nas.search.evaluator.Evaluator` (what the search ranks by): supernet weights, BatchNorm "
        "recalibrated, Y-PSNR (float BT.601, 4-px border) on the validation set.\n"
        f"- Stand-alone: trained from scratch with `nas.train.train` on {opts.data}, {args.steps} steps, batch "
        f"{opts.batch_size}, LR patch {opts.patch_size}, lr {opts.lr}, seed {args.seed}, then the same Y-PSNR on "
        "the same images; runs in `results/bench/ranking/<id>/` (shared by every supernet compared).\n"
        f"- Validation: {summary['validation']}. Runtime column: median at 1x3x{runtime_side}x{runtime_side} "
        f"on {summary['device']}.\n"
        f"- Kendall tau-b vs the stand-alone PSNR; 95% percentile bootstrap intervals over {args.bootstrap} "
        "resamples of the subnets (the same resamples for every ranker; the gain is paired). Tercile tau: tau "
        f"within each third of the subnets by activations (sizes {summary['tercile_sizes']}), then their mean. "
        "Size rankers count a larger model as better. p: one-sided permutation p-value "
        f"({args.permutations} permutations).\n"
        "- Goal (issue 12): tau >= 0.85, >= best size-only ranker + 0.10, and tercile tau above every size-only "
        "ranker's.\n"
        "- Short stand-alone budgets rank early learners, not converged quality; compare tau at one budget.\n\n"
        "## Rankers\n\n" + table + "\n\n## Subnets\n\n" + markdown_table(rows, cols, floatfmt=".3f") + "\n"
    )


def setup(args: argparse.Namespace) -> tuple[str, SearchSpace, list[dict[str, Any]], SupernetTraining]:
    """Device, space, the trained supernets (each with its evaluator) and the stand-alone options."""
    from nas.search.evaluator import Evaluator

    device = str(resolve_device(args.device))
    space, nets = supernets(args, device)
    if args.pool > space.size():
        raise SrnasError(f"--pool {args.pool} exceeds the {space.size()} architectures of {space.name}")
    runtime_side = args.runtime_size or space.search.runtime_size[-1]
    opts = train_options(space, args, args.steps)
    for net in nets:
        net["evaluator"] = Evaluator(
            space,
            net["weights"],
            ranking_dir() / "cache",
            data=opts.data,
            device=device,
            runtime_size=(3, runtime_side, runtime_side),
            runtime_repeats=space.search.runtime_repeats,
            val_max_size=args.val_max_size or space.search.val_max_size,
            seed=args.seed,
        )
    return device, space, nets, opts


def measure(choice: dict[str, Any], space, nets, opts, device: str) -> dict[str, Any]:
    """One subnet's row: counts and runtime, each supernet's inherited PSNR, the stand-alone PSNR."""
    metrics = [net["evaluator"].evaluate(choice) for net in nets]
    first = nets[0]["evaluator"]
    run_id, psnr_alone, seconds = train_standalone(choice, space, opts, first, device)
    row = {k: metrics[0][k] for k in ("genotype", "params", "activations", "flops", "runtime_ms")}
    row.update({f"psnr_{net['name']}": m["psnr"] for net, m in zip(nets, metrics, strict=True)})
    return {"id": run_id, **row, "psnr_standalone": psnr_alone, "train_s": seconds, "choice": choice}


def main(argv: list[str] | None = None) -> int:
    parser = arg_parser()
    args = parser.parse_args(argv)
    if args.subnets < 3 or args.pool < args.subnets or args.steps < 1 or args.bootstrap < 1:
        parser.error("need --subnets >= 3, --pool >= --subnets, --steps >= 1 and --bootstrap >= 1")
    if len(set(args.remedies)) != len(args.remedies):
        parser.error("--remedies lists a remedy twice")
    try:
        device, space, nets, opts = setup(args)
    except SrnasError as exc:
        print(f"bench_ranking: error: {exc}", file=sys.stderr)
        return 2
    env = environment([device])
    choices = stratified(space, args.subnets, args.pool, args.seed)
    rows = [measure(c, space, nets, opts, device) for c in tqdm(choices, desc="subnets", unit="subnet")]
    summary = summarise(rows, nets, args)
    val_max_size = args.val_max_size or space.search.val_max_size
    summary.update(
        space=space.source,
        device=device,
        supernet_data="the run's data" if args.run else supernet_options(space, args, nets[0]["name"]).data,
        validation=f"{opts.data} val split, centre crops of at most {val_max_size} HR pixels",
    )
    runtime_side = args.runtime_size or space.search.runtime_size[-1]
    write_results(
        NAME,
        title="Supernet ranking quality (inherited vs stand-alone PSNR)",
        env=env,
        command=command_line("bench_ranking.py", argv),
        arguments=vars(args),
        results={"summary": summary, "rows": rows},
        body=report_body(rows, summary, args, opts, runtime_side),
    )
    print_table(rows, ["id", "activations", *(f"psnr_{n['name']}" for n in nets), "psnr_standalone"])
    print(markdown_table(ranker_rows(summary, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
