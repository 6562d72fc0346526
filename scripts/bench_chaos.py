"""Chaos benchmark: SIGKILL every long command at random moments, restart it with the same command line, and
check that what it finally writes equals an uninterrupted run.

Cases (tiny budgets, CPU):

- ``search``: a local search of a tiny space (journal storage). Checked: COMPLETE trials == ``--trials``,
  no architecture measured twice, no trial left RUNNING, trials.csv / status.json / the journal readable.
- ``train``: ``srnas train`` of a small RFDB net. Checked: the final weights are bit-identical to the
  uninterrupted run's.
- ``prune``: ``srnas prune`` of that trained net (rounds + final fine-tune). Checked: bit-identical weights and
  the same pruned spec.
- ``ray`` (``--ray``): the search case on the Ray backend.

Each kill takes the whole process group (the command and whatever it started); afterwards no process of the
group may be left. Per case: kills, recoveries (restarts that then finished), lost (trials or results missing
or different from the reference), duplicated (architectures measured twice), corrupt (files that do not
parse), stray processes, and the extra wall time per kill. Writes ``results/bench/chaos.{json,md}``.

    .venv/bin/python scripts/bench_chaos.py                 # search, train, prune; 3 kills each
    .venv/bin/python scripts/bench_chaos.py --ray --kills 2
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from bench_common import command_line, environment, make_parser, markdown_table, print_table, write_results

TINY_SPACE = {
    "name": "chaos",
    "widths": [8, 12],
    "depths": [1, 2],
    "candidates": {"res": {"type": "residual"}, "rfdb": {"type": "rfdb"}},
    "fusions": {"none": None, "concat": {"type": "concat"}},
    "upsamplers": {"ps": {"type": "pixelshuffle"}},
    "global_skips": ["none", "bilinear"],
    "train": {"data": "embedded", "steps": 60, "batch_size": 2, "patch_size": 24, "ckpt_every": 10, "progress": False},
    "search": {"runtime_size": [3, 48, 48], "runtime_repeats": 5, "val_max_size": 64, "export_pareto": False},
}
NET = {
    "name": "chaos-rfdb",
    "scale": 4,
    "width": 16,
    "head": {"type": "conv"},
    "blocks": [{"type": "rfdb"}] * 2,
    "fusion": {"type": "concat"},
    "upsampler": {"type": "pixelshuffle"},
}


@dataclass
class Case:
    """A command line (run in ``work``) and a check of its outputs against the reference run's."""

    name: str
    argv: Callable[[Path], list[str]]
    check: Callable[[Path, Path], dict[str, int]]  # (chaos work dir, reference work dir) -> counts
    needs: list[str] = field(default_factory=list)  # cases whose reference output this one reads


def _srnas(*args: str) -> list[str]:
    return [sys.executable, "-m", "nas.cli", *args]


def _weights_equal(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    wa, wb = load_file(a), load_file(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


def _check_search(work: Path, trials: int) -> dict[str, int]:
    import optuna
    import pandas as pd
    from optuna.trial import TrialState

    run = work / "results" / "chaos"
    corrupt = 0
    for path, read in ((run / "trials.csv", pd.read_csv), (run / "status.json", lambda p: json.loads(p.read_text()))):
        try:
            read(path)
        except Exception:
            corrupt += 1
    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run / "study.journal")))
        all_trials = optuna.load_study(study_name="srnas", storage=storage).get_trials(deepcopy=False)
    except Exception:
        return {"lost": trials, "duplicated": 0, "corrupt": corrupt + 1}
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    choices = [t.user_attrs.get("choice") for t in complete]
    hanging = sum(t.state == TrialState.RUNNING for t in all_trials)
    return {
        "lost": max(0, trials - len(complete)) + hanging,
        "duplicated": len(choices) - len(set(choices)),
        "corrupt": corrupt,
    }


def cases(trials: int, train_steps: int, ray: bool) -> list[Case]:
    def space_file(work: Path) -> Path:
        path = work / "space.yaml"
        path.write_text(yaml.safe_dump(TINY_SPACE))
        return path

    def search_argv(*extra: str) -> Callable[[Path], list[str]]:
        return lambda w: _srnas(
            "search", str(space_file(w)), "--results-dir", str(w / "results"), "--device", "cpu", "--trials",
            str(trials), *extra,
        )  # fmt: skip

    def net_file(work: Path) -> Path:
        path = work / "net.yaml"
        path.write_text(yaml.safe_dump(NET))
        return path

    def train_argv(w: Path) -> list[str]:
        return _srnas(
            "train", str(net_file(w)), "--steps", str(train_steps), "--batch-size", "4", "--patch-size", "24",
            "--ckpt-every", "10", "--val-every", "0", "--seed", "0", "--device", "cpu", "--output", str(w / "trained"),
        )  # fmt: skip

    def prune_argv(w: Path) -> list[str]:
        source = w.parent / "reference-train" / "trained"
        return _srnas(
            "prune", str(source), "--target-activations", "0.7", "--rounds", "2", "--round-steps", "20",
            "--steps", "40", "--batch-size", "4", "--patch-size", "24", "--repeats", "1", "--bench", "none",
            "--device", "cpu", "--output", str(w / "pruned"),
        )  # fmt: skip

    def check_folder(name: str) -> Callable[[Path, Path], dict[str, int]]:
        def check(work: Path, ref: Path) -> dict[str, int]:
            a, b = work / name / "weights.safetensors", ref / name / "weights.safetensors"
            try:
                same = (
                    _weights_equal(a, b)
                    and (work / name / "spec.yaml").read_text() == (ref / name / "spec.yaml").read_text()
                )
            except Exception:
                return {"lost": 1, "duplicated": 0, "corrupt": 1}
            return {"lost": int(not same), "duplicated": 0, "corrupt": 0}

        return check

    out = [
        Case("search", search_argv(), lambda w, _: _check_search(w, trials)),
        Case("train", train_argv, check_folder("trained")),
        Case("prune", prune_argv, check_folder("pruned"), needs=["train"]),
    ]
    if ray:
        out.append(
            Case("ray", search_argv("--backend", "ray", "--workers", "2"), lambda w, _: _check_search(w, trials))
        )
    return out


def _group_alive(pgid: int) -> int:
    """Processes still in process group ``pgid`` (zombies excluded)."""
    done = subprocess.run(["ps", "-eo", "pgid=,stat="], capture_output=True, text=True, check=True)
    return sum(1 for line in done.stdout.splitlines() if line.split()[0] == str(pgid) and "Z" not in line.split()[1])


def _start(argv: list[str], work: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "SRNAS_PROGRESS": "plain"}
    return subprocess.Popen(
        argv, cwd=work, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def run_reference(case: Case, work: Path) -> float:
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    process = _start(case.argv(work), work, work / "log.txt")
    if process.wait() != 0:
        raise SystemExit(f"bench_chaos: the uninterrupted {case.name} run failed; see {work / 'log.txt'}")
    return time.perf_counter() - t0


def run_chaos(case: Case, work: Path, ref: Path, ref_wall: float, kills: int, rng: random.Random) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    done_kills = recoveries = stray = 0
    t0 = time.perf_counter()
    for _ in range(kills):
        process = _start(case.argv(work), work, log)
        deadline = time.monotonic() + rng.uniform(0.15, 0.7) * ref_wall
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        if process.poll() is not None:  # finished before the kill: nothing left to interrupt
            recoveries += process.returncode == 0
            break
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        time.sleep(0.5)
        stray += _group_alive(process.pid)
        done_kills += 1
    else:
        process = _start(case.argv(work), work, log)
        recoveries += process.wait() == 0
    if process.poll() is None or process.returncode != 0:  # the finishing run
        process = _start(case.argv(work), work, log)
        recoveries += process.wait() == 0
    wall = time.perf_counter() - t0
    counts = case.check(work, ref)
    return {
        "case": case.name,
        "kills": done_kills,
        "recoveries": recoveries,
        **counts,
        "stray_processes": stray,
        "reference_s": round(ref_wall, 1),
        "chaos_s": round(wall, 1),
        "extra_s_per_kill": round((wall - ref_wall) / done_kills, 1) if done_kills else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per case")
    parser.add_argument("--trials", type=int, default=10, help="COMPLETE trials of the search cases")
    parser.add_argument("--train-steps", type=int, default=200, help="steps of the train case")
    parser.add_argument("--ray", action="store_true", help="also the Ray backend")
    parser.add_argument("--only", nargs="*", help="run only these cases (prune needs train)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="srnas-chaos-") as tmp:
        root = args.work or Path(tmp)
        rows = []
        selected = [c for c in cases(args.trials, args.train_steps, args.ray) if not args.only or c.name in args.only]
        for case in selected:
            ref = root / f"reference-{case.name}"
            wall = run_reference(case, ref)
            rows.append(run_chaos(case, root / f"chaos-{case.name}", ref, wall, args.kills, rng))
            print_table([rows[-1]])
    totals = {k: sum(r[k] for r in rows) for k in ("lost", "duplicated", "corrupt", "stray_processes")}
    body = (
        "Each case runs once uninterrupted (reference), then again with SIGKILLs of its whole process group at "
        "random moments (15-70% of the reference wall time after each start), each followed by the same "
        "command line, until it finishes; its outputs are then compared with the reference.\n\n"
        f"## Results\n\n{markdown_table(rows)}\n\nTotals: {json.dumps(totals)} (goal: all zeros).\n"
    )
    write_results(
        "chaos",
        title="Chaos benchmark: kill -9 and resume",
        env=environment(),
        command=command_line("scripts/bench_chaos.py", argv),
        arguments=vars(args) | {"work": str(args.work) if args.work else None},
        results={"rows": rows, "totals": totals},
        body=body,
    )
    return 0 if not any(totals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
