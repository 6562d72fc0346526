"""Search cost and quality on the proxy task (quick.yaml, embedded data, this machine).

One supernet is trained (or reused with --run); then, on it:
  1. NSGA-II, local Optuna backend: the default search, with its cost split (supernet training, candidate
     evaluation, runtime measurement, orchestration overhead);
  2. random sampling at the same number of trials, sharing NSGA-II's measurement cache (an architecture both
     visit gets the same numbers), for a hypervolume comparison on common axes;
  3. the Ray backend with 2 local workers at the same number of trials (own cache), for its overhead;
  4. stand-alone training of one searched subnet for as many steps as the supernet got, to put the
     per-candidate evaluation cost next to what evaluating it without weight sharing would cost;
and the hand designs of the space (RFDN-like, PAN-like, ...) as evaluated in the same supernet.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from bench_common import environment, make_parser, markdown_table, print_table, write_results

from nas.paths import REPO_ROOT, results_dir
from nas.results.pareto import direction, hypervolume, non_dominated, reference_point
from nas.search.run import SUPERNET_WEIGHTS, run_search
from nas.search.space import load_space

OBJ = {o: direction(o) for o in ("psnr", "runtime_ms")}  # the default objectives


def seed_run(src: Path, dst: Path, share_cache: bool) -> None:
    """Give ``dst`` the supernet of ``src`` (so it is not retrained), optionally its measurement cache."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / SUPERNET_WEIGHTS, dst / SUPERNET_WEIGHTS)
    if share_cache and not (dst / "cache").exists():
        (dst / "cache").symlink_to((src / "cache").resolve(), target_is_directory=True)


def complete(run_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(run_dir / "trials.csv")
    return df[df.state == "COMPLETE"]


def standalone_cost(args, space, searched: pd.DataFrame, timings: dict, root: Path) -> dict:
    """Train one searched subnet from scratch for as many steps as the supernet got; time it."""
    from nas.data import open_pairs
    from nas.models.network import build
    from nas.train import train

    front = searched[non_dominated(searched, OBJ)].sort_values("psnr")
    pick = front.iloc[len(front) // 2]
    steps = args.standalone_steps or space.train.steps
    cfg = replace(space.train.loop_config(args.device), steps=steps, progress=True)
    t0 = time.perf_counter()
    train(
        build(json.loads(pick.spec)),
        open_pairs(space.train.data, space.scale, "train"),
        cfg,
        root / "standalone" / str(int(pick.trial)),
    )
    standalone_s = time.perf_counter() - t0
    per_candidate = (timings["nsga2"]["trials_s"]) / max(timings["nsga2"].get("trials_new", 1), 1)
    cost = {
        "supernet_train_s": timings["nsga2"]["supernet_train_s"],
        "standalone_train_s": round(standalone_s, 1),
        "standalone_steps": steps,
        "per_candidate_eval_s": round(per_candidate, 2),
        "standalone_over_candidate": round(standalone_s / per_candidate, 1),
    }
    return cost


def _timed_search(space, run_dir: Path, opts) -> dict:
    t0 = time.perf_counter()
    run_search(space, run_dir, opts)
    timings = json.loads((run_dir / "status.json").read_text())["timings"]
    timings["wall_s"] = round(time.perf_counter() - t0, 1)
    return timings


def run_all(args, space, opts, root: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    """The default NSGA-II run, the sampler comparison on its supernet, and the Ray run; (folders, timings)."""
    nsga_dir = root / "nsga2"
    timings = {"nsga2": _timed_search(space, nsga_dir, opts.with_overrides(sampler="nsga2"))}  # the default run
    dirs = {"nsga2": nsga_dir}
    for seed in args.seeds:  # sampler comparison: same supernet, shared measurement cache
        for sampler in ("nsga2", "random"):
            name = f"{sampler}-s{seed}"
            if name == f"nsga2-s{opts.seed}":
                continue
            dirs[name] = root / name
            seed_run(nsga_dir, dirs[name], share_cache=True)
            timings[name] = _timed_search(space, dirs[name], opts.with_overrides(sampler=sampler, seed=seed))
    if not args.skip_ray:
        dirs["ray2"] = root / "ray2"
        seed_run(nsga_dir, dirs["ray2"], share_cache=False)
        ray_opts = opts.with_overrides(sampler="nsga2", backend="ray", workers=2)
        timings["ray2"] = _timed_search(space, dirs["ray2"], ray_opts)
    return dirs, timings


def run_rows(tables: dict[str, pd.DataFrame], timings: dict[str, dict]) -> tuple[list[dict], np.ndarray]:
    """One row per run (front size, hypervolume at a common reference point, cost split); and that point."""
    dirs_hv = [n for n in tables if n != "ray2"]
    points = [tables[n][list(OBJ)].to_numpy(float) for n in dirs_hv]
    ref = reference_point(points, list(OBJ.values()))
    rows = []
    for name, df in tables.items():
        mask = non_dominated(df, OBJ)
        pts = df[list(OBJ)].to_numpy(float)
        t = timings.get(name, {})
        rows.append(
            {
                "run": name,
                "complete": len(df),
                "front": int(mask.sum()),
                "hypervolume": hypervolume(pts[mask], ref, list(OBJ.values())) if name in dirs_hv else None,
                "best_psnr": float(df.psnr.max()),
                "min_runtime_ms": float(df.runtime_ms.min()),
                "trials_s": t.get("trials_s"),
                "eval_s": t.get("trials_eval_s"),
                "count_s": t.get("trials_count_s"),
                "runtime_measure_s": t.get("trials_runtime_measure_s"),
                "orchestration_s": t.get("orchestration_s"),
                "ray_overhead_s": t.get("ray_overhead_s"),
            }
        )
    return rows, ref


def reference_rows(searched: pd.DataFrame) -> list[dict]:
    """The hand designs of the default run and how many searched models dominate each."""
    refs = searched[searched["reference"].notna()] if "reference" in searched else searched.iloc[:0]
    out = []
    for r in refs.itertuples():
        better = searched[(searched.psnr >= r.psnr) & (searched.runtime_ms < r.runtime_ms)]
        out.append(
            {
                "design": r.reference,
                "psnr": r.psnr,
                "runtime_ms": r.runtime_ms,
                "activations": r.activations,
                "params": r.params,
                "searched_dominating": len(better),
                "fastest_at_least_as_good_ms": float(better.runtime_ms.min()) if len(better) else None,
            }
        )
    return out


def sampler_summary(rows: list[dict]) -> list[dict]:
    by_sampler: dict[str, list[float]] = {}
    for row in rows:
        if row["hypervolume"] is not None:
            by_sampler.setdefault(row["run"].split("-")[0], []).append(row["hypervolume"])
    return [
        {"sampler": k, "runs": len(v), "hv_mean": float(np.mean(v)), "hv_min": min(v), "hv_max": max(v)}
        for k, v in by_sampler.items()
    ]


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("--space", default="search_spaces/quick.yaml")
    p.add_argument("--trials", type=int, help="complete trials per run (default: the space's)")
    p.add_argument("--steps", type=int, help="supernet steps (default: the space's)")
    p.add_argument("--standalone-steps", type=int, help="stand-alone training steps (default: = supernet steps)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds for NSGA-II vs random")
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-standalone", action="store_true", help="skip the stand-alone training comparison")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    space = load_space(args.space).with_training(steps=args.steps)
    root = results_dir(default=REPO_ROOT / "results") / "bench" / "search"
    opts = space.search.with_overrides(device=args.device, trials=args.trials)
    dirs, timings = run_all(args, space, opts, root)
    tables = {name: complete(d) for name, d in dirs.items()}
    rows, ref = run_rows(tables, timings)
    ref_rows = reference_rows(tables["nsga2"])
    cost = standalone_cost(args, space, tables["nsga2"], timings, root) if not args.skip_standalone else {}
    hv_summary = sampler_summary(rows)
    env = environment([args.device])
    body = (
        f"Space `{space.name}`, {opts.trials} complete trials per run, objectives psnr (max, Y dB on the embedded "
        f"val set, inherited weights) vs runtime_ms (min, {list(opts.runtime_size)}).\n\n"
        "## Runs\n\n"
        + markdown_table(rows, floatfmt=".4g")
        + f"\n\nHypervolume: common reference point {np.round(ref, 4).tolist()} over every NSGA-II and random run "
        "(`nsga2` is the default run: seed 0; the others share its supernet and measurement cache).\n\n"
        + markdown_table(hv_summary, floatfmt=".4g")
        + "\n\n## Cost of a candidate vs stand-alone training\n\n"
        + (markdown_table([cost]) if cost else "(skipped: --skip-standalone)")
        + "\n\n## Hand designs evaluated in the same supernet\n\n"
        + (markdown_table(ref_rows, floatfmt=".4g") if ref_rows else "(none in this space)")
        + "\n"
    )
    write_results(
        "search",
        title="Search cost and quality (proxy task)",
        env=env,
        command="python scripts/bench_search.py " + " ".join(argv or sys.argv[1:]),
        arguments=vars(args),
        results={"runs": rows, "hypervolume": hv_summary, "cost": cost, "references": ref_rows, "timings": timings},
        body=body,
    )
    print_table(rows)
    print_table(hv_summary)
    print(cost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
