"""Chaos benchmark: SIGKILL the whole process tree of every long command at moments keyed to its progress, restart
the same command line after each kill, and check that what it finally wrote equals an uninterrupted run.

Cases (``scripts/chaos_cases.py``, tiny budgets, CPU, one thread): ``search`` (local), ``ray`` (``search --backend
ray``), ``train``, ``prune``, ``pipeline``. Each runs once uninterrupted (the reference), then with ``--kills`` kills:
kill *i* waits until the command's progress, read from the files it writes (checkpoint steps, COMPLETE rows of
trials.csv, exported models, the pruning state; ``chaos_watch.py``), passes a seeded target in the *i*-th of
``--kills`` equal slices of its stages (so every stage is hit), plus up to 0.2 s, then kills the command's group,
its descendants and every process carrying its tag (Ray's included) at once. A restart whose progress is already past
its target is killed 0.5-2 s after its start instead (stage ``restart``: during start-up and resume); a kill
aimed at a stage of well under a second (export, the pruning report) fires as soon as the stage is entered. Then
the command runs to the end.

Per case: kills and the stage each hit; recoveries (restarts after a kill that got back to the point of the
kill and on, or finished); failed restarts (exits with an error, or 3x the reference's time without progress);
lost / duplicated / mismatched trials or results (study vs trials.csv vs pareto.csv vs exported models; weights);
not bit-identical deterministic outputs (supernet, the PSNR of each architecture both runs measured, trained and
pruned weights, the pipeline's final model when both runs picked the same trial); corrupt files (json, csv, yaml,
safetensors, journal, pt that do not parse); leftover temporary and lock files; stray processes (tagged processes
alive 3 s after a kill or after the final run); and the extra wall time per kill. Writes
``results/bench/chaos.{json,md}``; exits 1 unless every count is zero.

    .venv/bin/python scripts/bench_chaos.py                      # all five cases, 10 kills each (~25 min)
    .venv/bin/python scripts/bench_chaos.py --only train --kills 3
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_common import command_line, environment, make_parser, markdown_table, print_table, write_results
from chaos_cases import Case, Settings, cases
from chaos_watch import corrupt_files, kill_tree, leftovers, start, strays

COUNTS = ("failed_restarts", "lost", "duplicated", "mismatch", "not_identical", "corrupt", "leftovers", "strays")
POLL_S = 0.03  # export and the pruning report last well under a second


def run_reference(case: Case, work: Path) -> tuple[float, int]:
    """Run the case uninterrupted in ``work``: (wall seconds, stray processes afterwards)."""
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    process = start(case.argv(work), work, work / "log.txt", f"{case.name}-reference")
    if process.wait() != 0:
        raise SystemExit(f"bench_chaos: the uninterrupted {case.name} run failed; see {work / 'log.txt'}")
    return time.perf_counter() - t0, strays(f"{case.name}-reference")


def _watch(process, case: Case, work: Path, target: float, rng: random.Random, limit_s: float) -> dict | None:
    """Kill ``process`` once its progress reaches ``target`` (see the module doc); None when it exited first."""
    t0 = time.monotonic()
    _, p0 = case.progress(work)
    resume_s = rng.uniform(0.5, 2.0)
    aimed = case.aimed(target)
    while process.poll() is None:
        stage, p = case.progress(work)
        late = p0 >= target and time.monotonic() - t0 >= resume_s
        entered = stage == aimed and stage in case.short and p > p0
        if (p >= target and p > p0) or entered or late or time.monotonic() - t0 > limit_s:
            time.sleep(rng.uniform(0.0, 0.2))
            stage, p = case.progress(work)
            hung = time.monotonic() - t0 > limit_s
            return {"stage": "restart" if late else stage, "progress": round(p, 3), "hung": hung}
        time.sleep(POLL_S)
    return None


def run_chaos(case: Case, work: Path, ref_wall: float, kills: int, rng: random.Random) -> dict[str, Any]:
    """The case with ``kills`` progress-keyed kills, then to the end; the counts of the module doc."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    targets = [(i + rng.uniform(0.1, 0.9)) / kills for i in range(kills)]
    hits: list[dict[str, Any]] = []
    failed = stray = recovered = 0
    limit_s = 3 * ref_wall + 60
    t0 = time.perf_counter()
    for i, target in enumerate(targets):
        tag = f"{case.name}-{i}"
        process = start(case.argv(work), work, log, tag)
        hit = _watch(process, case, work, target, rng, limit_s)
        if hit is None:  # it finished (or failed) before the target
            failed += process.returncode != 0
            recovered += bool(hits) and process.returncode == 0
            stray += strays(tag)
            if process.returncode == 0:
                break
            continue
        kill_tree(process, tag)
        failed += hit["hung"]  # it ran 3x the reference's time without getting there
        stray += strays(tag)
        recovered += bool(hits) and hit["progress"] >= hits[-1]["progress"]
        hits.append({"target": round(target, 3), **hit, "t_s": round(time.perf_counter() - t0, 1)})
    final = start(case.argv(work), work, log, f"{case.name}-final")
    failed += final.wait() != 0
    recovered += bool(hits) and final.returncode == 0
    stray += strays(f"{case.name}-final")
    wall = time.perf_counter() - t0
    return _row(case, work, hits, wall, ref_wall, failed=failed, stray=stray, recovered=recovered)


def _row(case: Case, work: Path, hits: list[dict], wall: float, ref_wall: float, **n: int) -> dict[str, Any]:
    results = work / "results" if (work / "results").is_dir() else work
    bad, left = corrupt_files(work), leftovers(work)
    stages = Counter(h["stage"] for h in hits)
    return {
        "case": case.name,
        "kills": len(hits),
        "stages hit": ", ".join(f"{s} {stages[s]}" for s in (*case.stages, "finishing", "restart") if stages[s]),
        "recoveries": n["recovered"],
        "failed_restarts": n["failed"],
        **{k: 0 for k in ("lost", "duplicated", "mismatch", "not_identical")},
        "corrupt": len(bad),
        "leftovers": len(left),
        "strays": n["stray"],
        "reference_s": round(ref_wall, 1),
        "chaos_s": round(wall, 1),
        "extra_s_per_kill": round((wall - ref_wall) / len(hits), 1) if hits else None,
        "_details": {"kills": hits, "corrupt": bad, "leftovers": left, "results": str(results)},
    }


def run_case(case: Case, root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    ref = root / f"reference-{case.name}"
    ref_wall, ref_strays = run_reference(case, ref)
    row = run_chaos(case, root / f"chaos-{case.name}", ref_wall, kills, rng)
    checked = case.check(root / f"chaos-{case.name}", ref)
    for key in ("lost", "duplicated", "mismatch", "not_identical"):
        row[key] = int(checked.pop(key, 0))
    row["strays"] += ref_strays
    row["leftovers"] += len(leftovers(ref))
    row["_details"].update(check=checked, reference_leftovers=leftovers(ref), reference_strays=ref_strays)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs per case (default 10)")
    parser.add_argument("--trials", type=int, default=Settings.trials, help="COMPLETE trials of the search cases")
    parser.add_argument("--train-steps", type=int, default=Settings.train_steps, help="steps of the train case")
    parser.add_argument("--only", nargs="*", help="run only these cases: search ray train prune pipeline")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work", type=Path, help="work folder, kept (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    rng = random.Random(args.seed)
    all_cases = cases(Settings(trials=args.trials, train_steps=args.train_steps))
    selected = [c for c in all_cases if not args.only or c.name in args.only]
    root = args.work or Path(tempfile.mkdtemp(prefix="srnas-chaos-"))
    t0 = time.perf_counter()
    rows = []
    try:
        for case in selected:
            for need in case.needs:  # e.g. prune reads the train reference's model
                if not (root / f"reference-{need}").is_dir():
                    run_reference(next(c for c in all_cases if c.name == need), root / f"reference-{need}")
            rows.append(run_case(case, root, args.kills, rng))
            print_table([{k: v for k, v in rows[-1].items() if not k.startswith("_")}])
    finally:
        if args.work is None:
            shutil.rmtree(root, ignore_errors=True)
    return _write(rows, args, argv, time.perf_counter() - t0)


def _write(rows: list[dict[str, Any]], args, argv: list[str] | None, wall: float) -> int:
    table = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    totals = {k: sum(r[k] for r in rows) for k in ("kills", *COUNTS)}
    body = (
        "Each case runs once uninterrupted (reference), then with SIGKILLs of its whole process tree at moments keyed "
        "to its progress (one kill per equal slice of its stages), each followed by the same command line, until it "
        "finishes; its outputs are then compared with the reference's (see the docstring of scripts/bench_chaos.py "
        f"and scripts/chaos_cases.py).\n\n## Results\n\n{markdown_table(table)}\n\n"
        f"Totals: {json.dumps(totals)} (goal: zero in every column but kills). Whole benchmark: {wall / 60:.1f} min.\n"
    )
    write_results(
        "chaos",
        title="Chaos benchmark: kill -9 and resume",
        env=environment(),
        command=command_line("bench_chaos.py", argv),
        arguments=vars(args) | {"work": str(args.work) if args.work else None},
        results={"rows": rows, "totals": totals, "wall_s": round(wall, 1)},
        body=body,
    )
    return 0 if not any(totals[k] for k in COUNTS) else 1


if __name__ == "__main__":
    sys.exit(main())
