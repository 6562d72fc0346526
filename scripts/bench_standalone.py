"""Searched vs hand-designed, trained the same way: does the search's front dominate the space's references?

1. Models: the Pareto front (PSNR vs runtime_ms, inherited weights) of a search run's searched trials (``--run``:
   its ``trials.csv`` and ``config.yaml``; an architecture counts once, one equal to a reference is left out),
   at most ``--max-front`` of them spread evenly over runtime (fastest and slowest kept); plus every hand design
   of the run's space (``references:``).
2. Each is trained stand-alone from scratch with the same budget, data and seed (``bench_ranking``'s
   ``train_from_scratch``: the shared loop ``nas.train.train``) into ``results/bench/standalone/<id>/``; a kill
   loses nothing, the next run resumes, a finished model is reused.
3. Runtime of all models in one interleaved run (round-robin repeats, median; CPU, ``--threads`` torch threads,
   1x3xSxS LR input); Y-PSNR (``scale``-pixel border) on the space's validation images and on the reference kit's
   Set5 and Set14; params and activations at 3x256x256.
4. For each reference: the searched model that dominates it (PSNR on ``--criterion`` >= its, at <= its measured
   runtime; the best such by PSNR), whether that model also dominates on val, and the goal line (every
   reference dominated); ``results/bench/standalone.{md,json,png}``.

    .venv/bin/python scripts/bench_standalone.py --run results/bench/search/nsga2
    .venv/bin/python scripts/bench_standalone.py --run quick --steps 500 --max-front 4
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from bench_common import bench_dir, command_line, environment, make_parser, markdown_table, print_table, write_results
from bench_ranking import run_space, train_from_scratch

from nas.data import validation_pairs
from nas.errors import SrnasError
from nas.io import atomic_write
from nas.measure.profiler import DEFAULT_INPUT_SIZE, count_complexity
from nas.measure.score import interleaved_runtimes
from nas.models.genotype import genotype
from nas.paths import REPO_ROOT
from nas.results.pareto import direction, first_of_each_spec, non_dominated
from nas.search.space import SearchSpace
from pruning.report import benchmark_folders, psnr_scores

NAME = "standalone"
OBJ = {o: direction(o) for o in ("psnr", "runtime_ms")}  # the default search's objectives
SHARED_TRAIN = REPO_ROOT.parent / "shared" / "data" / "train"  # the project's training images, when present
SETS = ("Set5", "Set14")


def canonical(spec: Any) -> str:
    """A spec (dict or JSON text) as sorted JSON: identical architectures compare equal."""
    return json.dumps(json.loads(spec) if isinstance(spec, str) else spec, sort_keys=True)


def spread(values: Sequence[float], n: int) -> list[int]:
    """Indices of ``n`` of ``values`` nearest ``n`` evenly spaced targets from min to max (all when fewer)."""
    if len(values) <= n:
        return list(range(len(values)))
    v = np.asarray(values, dtype=float)
    picked: list[int] = []
    for target in np.linspace(v.min(), v.max(), n):
        free = [i for i in range(len(v)) if i not in picked]
        picked.append(min(free, key=lambda i: (abs(v[i] - target), i)))
    return sorted(picked, key=lambda i: (v[i], i))


def searched_front(trials: pd.DataFrame, references: set[str], max_front: int) -> tuple[list[dict[str, Any]], int]:
    """The front of the searched (non-reference) trials, one row per architecture: at most ``max_front`` of
    them, and the front's size."""
    df = trials[first_of_each_spec(trials)]
    if "reference" in df.columns:
        df = df[df["reference"].isna()]
    df = df[~df["spec"].map(canonical).isin(references)]
    front = df[non_dominated(df, OBJ)].sort_values(["runtime_ms", "trial"])
    if front.empty:
        raise SrnasError("the run has no COMPLETE searched trial on its front")
    picks = front.iloc[spread(front["runtime_ms"].tolist(), max_front)]
    picked = [
        {
            "model": f"trial {int(r.trial)}",
            "kind": "searched",
            "spec": json.loads(r.spec),
            "search_psnr": float(r.psnr),
            "search_runtime_ms": float(r.runtime_ms),
        }
        for r in picks.itertuples()
    ]
    return picked, len(front)


def reference_models(space: SearchSpace, trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The space's hand designs, with their numbers in the search (inherited weights) when it evaluated them."""
    seen = trials[trials["reference"].notna()] if "reference" in trials.columns else trials.iloc[:0]
    out = []
    for name, choice in space.references.items():
        row = seen[seen["reference"] == name]
        out.append(
            {
                "model": name,
                "kind": "reference",
                "spec": space.to_spec(choice),
                "search_psnr": float(row["psnr"].iloc[0]) if len(row) else None,
                "search_runtime_ms": float(row["runtime_ms"].iloc[0]) if len(row) else None,
            }
        )
    return out


def select_models(run: str, max_front: int) -> tuple[Path, SearchSpace, list[dict[str, Any]], int]:
    """The run's folder, its space, the models to compare (searched front first, then the references) and the
    size of the searched front they were taken from."""
    folder, space = run_space(run)
    if not (folder / "trials.csv").is_file():
        raise SrnasError(f"{folder / 'trials.csv'} not found: the search has not written its trials")
    trials = pd.read_csv(folder / "trials.csv")
    refs = reference_models(space, trials)
    if not refs:
        raise SrnasError(f"space {space.name} has no references: to compare with")
    searched, front_size = searched_front(trials, {canonical(r["spec"]) for r in refs}, max_front)
    return folder, space, searched + refs, front_size


def train_data_source(data: str | None, space: SearchSpace) -> str:
    """``--data``, else the project's shared training images when present, else the space's data."""
    if data:
        return data
    return str(SHARED_TRAIN) if SHARED_TRAIN.is_dir() else space.train.data


def data_note(data: str, given: str | None) -> str:
    """Which training images were used, for the report."""
    if data == str(SHARED_TRAIN):
        return "the project's shared training images"
    return "given by --data" if given else f"the space's data: {SHARED_TRAIN} is absent here"


def train_all(models: list[dict[str, Any]], space: SearchSpace, args: argparse.Namespace) -> dict[str, Any]:
    """Train every model from scratch (same options and seed); fills id/train_s, returns {model: module}."""
    from nas.data import open_pairs

    opts = space.with_training(
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        lr=args.lr,
        schedule="cosine",
        data=train_data_source(args.data, space),
        seed=args.seed,
        progress=False,
    ).train
    data = (open_pairs(opts.data, space.scale, "train"), args.val)
    modules = {}
    for i, m in enumerate(models, 1):
        print(f"[bench_standalone] {i}/{len(models)} training {m['model']} ({genotype(m['spec'])})", flush=True)
        run_id, module, _, seconds = train_from_scratch(
            m["spec"], {"spec": m["spec"]}, opts, data, "cpu", bench_dir() / NAME
        )
        m.update(id=run_id, train_s=round(seconds, 1))
        modules[m["model"]] = module.eval()
    args.train_opts = opts
    return modules


def measure(models: list[dict[str, Any]], modules: dict[str, Any], space: SearchSpace, args) -> list[dict[str, Any]]:
    """One row per model: counts, interleaved runtime, Y-PSNR on val and the benchmark sets."""
    side = args.runtime_size
    times = interleaved_runtimes(
        modules, (3, side, side), device="cpu", repeats=args.repeats, warmup=args.warmup
    )  # one run, round-robin: load on the shared machine hits every model alike
    sets = benchmark_folders(args.sets, space.scale)
    missing = [s for s in args.sets if s not in sets]
    if missing:
        raise SrnasError(f"benchmark sets {', '.join(missing)} not in the reference kit (SRNAS_REFERENCE_DIR)")
    rows = []
    for m in models:
        module = modules[m["model"]]
        counts = count_complexity(module, DEFAULT_INPUT_SIZE)
        with torch.inference_mode():
            psnr = psnr_scores(module, space.scale, val_pairs=args.val, benchmarks=sets, device="cpu")
        rows.append(
            {
                "model": m["model"],
                "kind": m["kind"],
                "genotype": genotype(m["spec"]),
                "params": counts.params,
                "activations": counts.activations,
                "runtime_ms": times[m["model"]],
                "val_psnr": psnr["val"],
                **{f"{s}_psnr": psnr[s] for s in args.sets},
                "search_psnr": m["search_psnr"],
                "search_runtime_ms": m["search_runtime_ms"],
                "train_s": m["train_s"],
                "id": m["id"],
                "spec": m["spec"],
            }
        )
    return rows


def dominance(rows: list[dict[str, Any]], criterion: str) -> list[dict[str, Any]]:
    """For each reference: the searched models with PSNR (``criterion`` column) >= its at runtime <= its, the
    best of them by that PSNR (ties: the faster), and whether it (or any of them) also dominates on val."""
    searched = [r for r in rows if r["kind"] == "searched"]
    out = []
    for ref in (r for r in rows if r["kind"] == "reference"):
        faster = [s for s in searched if s["runtime_ms"] <= ref["runtime_ms"]]
        beats = [s for s in faster if s[criterion] >= ref[criterion]]
        best = max(beats, key=lambda s: (s[criterion], -s["runtime_ms"])) if beats else None
        on_val = [s["model"] for s in faster if s["val_psnr"] >= ref["val_psnr"]]
        out.append(
            {
                "reference": ref["model"],
                "runtime_ms": ref["runtime_ms"],
                criterion: ref[criterion],
                "val_psnr": ref["val_psnr"],
                "dominated_by": best["model"] if best else "none",
                "its_runtime_ms": best["runtime_ms"] if best else None,
                f"its_{criterion}": best[criterion] if best else None,
                "its_val_psnr": best["val_psnr"] if best else None,
                "it_dominates_on_val": (best["val_psnr"] >= ref["val_psnr"]) if best else None,
                f"dominating_on_{criterion}": [s["model"] for s in beats],
                "dominating_on_val": on_val,
            }
        )
    return out


def goal(dom: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 12 point 5: every reference dominated (on the criterion; and, reported beside it, on val)."""
    return {
        "every_reference_dominated": bool(dom) and all(d["dominated_by"] != "none" for d in dom),
        "every_reference_dominated_on_val": bool(dom) and all(d["dominating_on_val"] for d in dom),
        "dominated": sum(d["dominated_by"] != "none" for d in dom),
        "references": len(dom),
    }


def plot(rows: list[dict[str, Any]], columns: Sequence[str], path: Path) -> Path:
    """Runtime vs PSNR, one panel per PSNR column: the searched front as a line, the references as named stars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * len(columns), 4.8), layout="constrained")
    searched = sorted((r for r in rows if r["kind"] == "searched"), key=lambda r: r["runtime_ms"])
    refs = [r for r in rows if r["kind"] == "reference"]
    for k, col in enumerate(columns, 1):
        ax = fig.add_subplot(1, len(columns), k)
        ax.plot(
            [r["runtime_ms"] for r in searched],
            [r[col] for r in searched],
            "o-",
            color="tab:blue",
            label="searched (front of the search), stand-alone",
        )
        ax.scatter(
            [r["runtime_ms"] for r in refs],
            [r[col] for r in refs],
            marker="*",
            s=160,
            color="tab:red",
            zorder=4,
            label="references, stand-alone",
        )
        for r in refs:
            ax.annotate(r["model"], (r["runtime_ms"], r[col]), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xlabel("runtime_ms, measured interleaved (lower is better)")
        ax.set_ylabel(f"{col.removesuffix('_psnr')} Y-PSNR dB (higher is better)")
        ax.set_title(f"Trained the same way: {col.removesuffix('_psnr')}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write(path, buf.getvalue())


def report_body(rows: list[dict[str, Any]], dom: list[dict[str, Any]], summary: dict[str, Any], args) -> str:
    """The Markdown of the benchmark: protocol, goal line, domination table, every model."""
    crit, name, opts = args.criterion, args.criterion_name, args.train_opts
    sets = [f"{s}_psnr" for s in args.sets]
    cols = ["model", "kind", "genotype", "params", "activations", "runtime_ms", "val_psnr", *sets]
    cols += ["search_psnr", "search_runtime_ms", "train_s", "id"]
    dom_cols = ["reference", "runtime_ms", crit, "val_psnr", "dominated_by", "its_runtime_ms", f"its_{crit}"]
    dom_cols += ["its_val_psnr", "it_dominates_on_val", "dominating_on_val"]
    dom_rows = [{**d, "dominating_on_val": ", ".join(d["dominating_on_val"]) or "none"} for d in dom]
    yes = {True: "yes", False: "no"}
    return (
        "## Protocol\n\n"
        f"- Search run `{summary['run']}` (space `{summary['space']}`): {summary['front_size']} architectures on the "
        f"Pareto front of its searched trials (psnr vs runtime_ms, inherited weights; references and repeats left "
        f"out), {summary['searched']} of them taken, spread evenly over runtime; plus the space's "
        f"{summary['references']} references.\n"
        f"- Every model trained from scratch with `nas.train.train`: data `{opts.data}` ({summary['data_note']}), "
        f"{opts.steps} steps, batch {opts.batch_size}, LR patch {opts.patch_size}, {opts.optimizer} lr {opts.lr} "
        f"{opts.schedule} schedule, {opts.loss} loss, seed {opts.seed}, {summary['threads']} torch thread(s), CPU; "
        "run folders `results/bench/standalone/<id>/` (resumable).\n"
        f"- Runtime: one interleaved run over all models, {args.repeats} round-robin repeats after {args.warmup} "
        f"warm-up, median, 1x3x{args.runtime_size}x{args.runtime_size} LR input, CPU, {summary['threads']} thread(s).\n"
        f"- PSNR: Y (BT.601), {summary['scale']}-pixel border; val = {summary['validation']}; "
        f"{', '.join(args.sets) or 'no benchmark sets'} from the reference kit. Params/activations at "
        f"{'x'.join(map(str, DEFAULT_INPUT_SIZE))}.\n"
        f"- A reference is dominated by a searched model with {name} PSNR >= its and measured runtime <= its (the "
        f"best such by {name} PSNR is named); whether that model also has val PSNR >= the reference's is shown, "
        "and which searched models dominate it on val.\n"
        "- search_psnr / search_runtime_ms: the model's numbers in the search (inherited supernet weights).\n\n"
        f"**Goal: every reference dominated ({name} PSNR, runtime): {yes[summary['every_reference_dominated']]}** "
        f"({summary['dominated']}/{summary['references']}); on val: "
        f"{yes[summary['every_reference_dominated_on_val']]}.\n\n"
        "## References and the searched models that dominate them\n\n"
        + markdown_table(dom_rows, dom_cols, floatfmt=".3f")
        + "\n\n## Every model\n\n"
        + markdown_table(rows, cols, floatfmt=".3f")
        + f"\n\n![runtime vs PSNR]({NAME}.png)\n"
    )


def arg_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--run", required=True, help="search run: a folder, or a name under results/")
    parser.add_argument("--max-front", type=int, default=8, help="searched models at most (spread over runtime)")
    parser.add_argument("--steps", type=int, default=3000, help="stand-alone training steps per model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=16, help="LR training patch side")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (cosine schedule)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and patches, the same for every model")
    parser.add_argument("--data", help=f"training images (default: {SHARED_TRAIN} when present, else the space's)")
    parser.add_argument("--val-max-size", type=int, help="validation crop, HR pixels (default: the space's)")
    parser.add_argument("--sets", default=",".join(SETS), help="reference-kit benchmark sets, comma list or none")
    parser.add_argument("--criterion", default="Set5", help="PSNR that decides domination: val or one of --sets")
    parser.add_argument("--runtime-size", type=int, default=128, help="LR side of the runtime input")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved timed passes per model (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes per model first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (training and timing)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = arg_parser()
    args = parser.parse_args(argv)
    args.sets = [] if args.sets.strip().lower() in ("", "none") else [s.strip() for s in args.sets.split(",")]
    if min(args.max_front, args.steps, args.batch_size, args.patch_size, args.repeats, args.threads) < 1:
        parser.error("--max-front, --steps, --batch-size, --patch-size, --repeats and --threads must be >= 1")
    if args.criterion != "val" and args.criterion not in args.sets:
        parser.error(f"--criterion {args.criterion}: expected val or one of --sets ({', '.join(args.sets)})")
    args.criterion_name = args.criterion
    args.criterion = "val_psnr" if args.criterion == "val" else f"{args.criterion}_psnr"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        folder, space, models, front_size = select_models(args.run, args.max_front)
        max_size = args.val_max_size or space.search.val_max_size
        args.val = validation_pairs(space.train.data, space.scale, max_size=max_size)
        modules = train_all(models, space, args)
        print(f"[bench_standalone] timing {len(modules)} models, interleaved ({args.repeats} repeats)", flush=True)
        rows = measure(models, modules, space, args)
    except SrnasError as exc:
        print(f"bench_standalone: error: {exc}", file=sys.stderr)
        return 2
    dom = dominance(rows, args.criterion)
    data = args.train_opts.data
    summary = {
        "run": str(folder),
        "space": space.source,
        "front_size": front_size,
        "searched": sum(r["kind"] == "searched" for r in rows),
        "references": sum(r["kind"] == "reference" for r in rows),
        "steps": args.steps,
        "data": data,
        "data_note": data_note(data, args.data),
        "validation": f"{space.train.data} val split, centre crops of at most {max_size} HR pixels",
        "scale": space.scale,
        "threads": args.threads,
        "criterion": args.criterion,
        **goal(dom),
    }
    arguments = {k: v for k, v in vars(args).items() if k not in ("val", "train_opts")}
    write_results(
        NAME,
        title="Searched vs hand-designed, trained the same way (stand-alone)",
        env=environment(["cpu"]),
        command=command_line("bench_standalone.py", argv),
        arguments=arguments,
        results={"summary": summary, "dominance": dom, "rows": rows, "train": args.train_opts.to_dict()},
        body=report_body(rows, dom, summary, args),
    )
    plot(rows, [args.criterion, *(c for c in ("val_psnr",) if c != args.criterion)], bench_dir() / f"{NAME}.png")
    print_table(rows, ["model", "kind", "runtime_ms", "val_psnr", *(f"{s}_psnr" for s in args.sets)], floatfmt=".3f")
    print(f"every reference dominated ({args.criterion}): {summary['every_reference_dominated']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
