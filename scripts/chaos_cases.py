"""The chaos benchmark's cases: per command its command line, its stages (read from the files it writes, for kills
keyed to progress) and the check of what it finally wrote against an uninterrupted run.

- ``search`` / ``ray``: ``srnas search`` of a tiny space (local backend / Ray with 2 workers). Stages: supernet
  training, trials, export. Checked: COMPLETE trials == ``--trials`` in the study, trials.csv and pareto.csv (no
  trial lost, none duplicated, no architecture measured twice, none left RUNNING), pareto.csv == the front of
  trials.csv, every Pareto model exported; the supernet bit-identical to the uninterrupted run's, and the PSNR of
  every architecture both runs measured equal.
- ``train``: ``srnas train`` of a small RFDB net; final weights and spec bit-identical.
- ``prune``: ``srnas prune`` of that net (prune rounds, final fine-tune, report); weights and spec bit-identical.
- ``pipeline``: ``srnas pipeline --pick 1``: the search stages, then the picked model's prune rounds, its
  pruning fine-tune and the final fine-tune. Checked: the search's checks, the final front complete with one model
  per pick, and (when both runs picked the same trial) the final model bit-identical.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from chaos_watch import checkpoint_step, complete_rows, read_json

RUN = "chaos"
SUPERNET = "supernet.safetensors"


@dataclass(frozen=True)
class Settings:
    """The tiny budgets of every case."""

    trials: int = 10
    supernet_steps: int = 300
    train_steps: int = 300
    prune_rounds: int = 3
    prune_round_steps: int = 40
    prune_steps: int = 80
    pipeline_final_steps: int = 150


PIPELINE_PRUNE = (2, 60, 100)  # nas.cli.pipeline.PipelineOptions: prune_rounds, prune_round_steps, prune_final_steps


def tiny_space(steps: int) -> dict[str, Any]:
    return {
        "name": RUN,
        "widths": [8, 12],
        "depths": [1, 2],
        "candidates": {"res": {"type": "residual"}, "rfdb": {"type": "rfdb"}},
        "fusions": {"none": None, "concat": {"type": "concat"}},
        "upsamplers": {"ps": {"type": "pixelshuffle"}},
        "global_skips": ["none", "bilinear"],
        "train": {"data": "embedded", "steps": steps, "batch_size": 2, "patch_size": 24, "ckpt_every": 10},
        "search": {"runtime_size": [3, 48, 48], "runtime_repeats": 3, "val_max_size": 64, "export_pareto": True},
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
    """A command line (run in its work folder), its stages and the check of its outputs.

    ``probe(work)`` returns (stage index, fraction of that stage done); index ``len(stages)`` means finished.
    ``check(work, reference_work)`` returns counts (lost, duplicated, mismatch, not_identical) and details."""

    name: str
    argv: Callable[[Path], list[str]]
    stages: tuple[str, ...]
    probe: Callable[[Path], tuple[int, float]]
    check: Callable[[Path, Path], dict[str, Any]]
    needs: tuple[str, ...] = ()
    short: tuple[str, ...] = ()  # stages of well under a second: a kill aimed at one fires as it is entered

    def aimed(self, target: float) -> str:
        """The stage whose share of the progress holds ``target``."""
        return self.stages[min(int(target * len(self.stages)), len(self.stages) - 1)]

    def progress(self, work: Path) -> tuple[str, float]:
        """(stage name, overall progress in [0, 1]): each stage takes an equal share."""
        index, fraction = self.probe(work)
        n = len(self.stages)
        if index >= n:
            return "finishing", 1.0  # past the last stage, not exited yet
        return self.stages[index], (index + min(max(fraction, 0.0), 0.999)) / n


def _srnas(*args: str) -> list[str]:
    return [sys.executable, "-m", "nas.cli", *args]


def weights_equal(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    try:
        wa, wb = load_file(a), load_file(b)
    except Exception:
        return False
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


# --------------------------------------------------------------------------- probes


def search_probe(run: Path, trials: int, steps: int) -> tuple[int, float]:
    """supernet (checkpoint step), trials (COMPLETE rows of trials.csv), export (models written), done."""
    if not (run / SUPERNET).is_file():
        return 0, checkpoint_step(run / "supernet") / steps
    done = complete_rows(run / "trials.csv")
    if done < trials:
        return 1, done / trials
    if read_json(run / "status.json").get("state") == "complete":
        return 3, 0.0
    try:
        pareto = max(len((run / "pareto.csv").read_text().splitlines()) - 1, 1)
    except OSError:
        pareto = 1
    return 2, len(list((run / "models").glob("*/profile.json"))) / pareto


def prune_probe(out: Path, rounds: int, round_steps: int, final_steps: int) -> tuple[int, float]:
    """prune rounds (rounds done + the current round's fine-tune step), final fine-tune, report, done."""
    state = read_json(out / "state.json")
    if state.get("report") is not None:
        return 3, 0.0
    if (state.get("final") or {}).get("done"):
        return 2, 0.0
    if (out / "final").is_dir():
        return 1, checkpoint_step(out / "final") / final_steps
    done = sum(bool(r.get("done")) for r in state.get("rounds", []))
    return 0, (done + checkpoint_step(out / f"round_{done + 1}") / round_steps) / rounds


def pipeline_probe(run: Path, s: Settings) -> tuple[int, float]:
    """The search's stages, then the (one) pick's prune rounds, pruning fine-tune and final fine-tune."""
    picks = read_json(run / "pipeline" / "picks.json").get("trials") or []
    if not picks:
        index, fraction = search_probe(run, s.trials, s.supernet_steps)
        return min(index, 3), fraction if index < 3 else 0.0
    if read_json(run / "final" / "status.json").get("state") == "complete":
        return 6, 0.0
    work = run / "pipeline" / str(picks[0])
    index, fraction = prune_probe(work / "pruned", *PIPELINE_PRUNE)
    if index < 2:
        return 3 + index, fraction
    return 5, checkpoint_step(work / "final") / s.pipeline_final_steps


# --------------------------------------------------------------------------- checks


def study_counts(run: Path, trials: int) -> dict[str, Any]:
    """Study vs trials.csv vs pareto.csv vs models/: lost, duplicated and mismatched trials."""
    import optuna
    import pandas as pd
    from optuna.trial import TrialState

    from nas.results.writer import pareto_rows

    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run / "study.journal")))
        study = optuna.load_study(study_name="srnas", storage=storage).get_trials(deepcopy=False)
        df = pd.read_csv(run / "trials.csv")
        pareto = pd.read_csv(run / "pareto.csv")
        objectives = yaml.safe_load((run / "config.yaml").read_text())["search"]["objectives"]
    except Exception as exc:
        return {"lost": trials, "duplicated": 0, "mismatch": 0, "error": f"{type(exc).__name__}: {exc}"}
    complete = [t for t in study if t.state == TrialState.COMPLETE]
    numbers = {t.number for t in complete}
    choices = [t.user_attrs.get("choice") for t in complete]
    csv_done = df[df["state"] == "COMPLETE"]
    front = set(pareto_rows(df, {o: "max" if o == "psnr" else "min" for o in objectives})["trial"])
    listed = set(pareto["trial"])
    exported = {int(p.parent.name) for p in (run / "models").glob("*/weights.safetensors")}
    return {
        "lost": max(0, trials - len(complete))
        + sum(t.state == TrialState.RUNNING for t in study)
        + len(numbers - set(csv_done["trial"]))
        + len(front - listed)
        + len(listed - exported),
        "duplicated": len(choices)
        - len(set(choices))
        + int(df["trial"].duplicated().sum())
        + int(pareto["trial"].duplicated().sum()),
        "mismatch": len(set(csv_done["trial"]) - numbers) + len(listed - front),
        "complete": len(complete),
        "psnr": {str(c): t.values[0] for c, t in zip(choices, complete, strict=True)},
    }


def check_search(work: Path, ref: Path, trials: int) -> dict[str, Any]:
    run, ref_run = work / "results" / RUN, ref / "results" / RUN
    counts = study_counts(run, trials)
    ref_psnr = study_counts(ref_run, trials).get("psnr", {})
    psnr = counts.pop("psnr", {})
    differ = [c for c in psnr.keys() & ref_psnr.keys() if psnr[c] != ref_psnr[c]]
    counts["not_identical"] = int(not weights_equal(run / SUPERNET, ref_run / SUPERNET)) + len(differ)
    counts["compared_architectures"] = len(psnr.keys() & ref_psnr.keys())
    return counts


def check_folder(work: Path, ref: Path, name: str) -> dict[str, Any]:
    """A model folder's weights and spec against the reference's."""
    a, b = work / name, ref / name
    lost = int(not ((a / "weights.safetensors").is_file() and (a / "spec.yaml").is_file()))
    same = not lost and weights_equal(a / "weights.safetensors", b / "weights.safetensors")
    same = same and (a / "spec.yaml").read_text() == (b / "spec.yaml").read_text()
    return {"lost": lost, "duplicated": 0, "mismatch": 0, "not_identical": int(not same)}


def check_pipeline(work: Path, ref: Path, trials: int) -> dict[str, Any]:
    counts = check_search(work, ref, trials)
    run, ref_run = work / "results" / RUN, ref / "results" / RUN
    picks = read_json(run / "pipeline" / "picks.json").get("trials") or []
    ref_picks = read_json(ref_run / "pipeline" / "picks.json").get("trials") or []
    try:
        import pandas as pd

        final = pd.read_csv(run / "final" / "trials.csv")
        counts["duplicated"] += int(final["trial"].duplicated().sum())
        counts["lost"] += len(set(picks) - set(final[final["state"] == "COMPLETE"]["trial"]))
        counts["lost"] += int(read_json(run / "final" / "status.json").get("state") != "complete")
    except Exception:
        counts["lost"] += max(len(picks), 1)
    counts["lost"] += int(not picks)
    counts["same_picks"] = picks == ref_picks
    if picks and picks == ref_picks:
        for t in picks:
            folder = Path("final") / "models" / str(t)
            counts["not_identical"] += check_folder(run, ref_run, str(folder))["not_identical"]
    return counts


# --------------------------------------------------------------------------- the cases


def cases(s: Settings) -> list[Case]:
    def write(work: Path, name: str, data: dict) -> str:
        (work / name).write_text(yaml.safe_dump(data, sort_keys=False))
        return name

    def search_argv(command: str, *extra: str) -> Callable[[Path], list[str]]:
        return lambda w: _srnas(
            command, write(w, "space.yaml", tiny_space(s.supernet_steps)), "--results-dir", "results",
            "--device", "cpu", "--trials", str(s.trials), "--seed", "0", *extra,
        )  # fmt: skip

    def train_argv(w: Path) -> list[str]:
        return _srnas(
            "train", write(w, "net.yaml", NET), "--steps", str(s.train_steps), "--batch-size", "4",
            "--patch-size", "24", "--ckpt-every", "10", "--val-every", "0", "--seed", "0", "--device", "cpu",
            "--output", "trained",
        )  # fmt: skip

    def prune_argv(w: Path) -> list[str]:
        return _srnas(
            "prune", str(w.parent / "reference-train" / "trained"), "--target-activations", "0.7",
            "--rounds", str(s.prune_rounds), "--round-steps", str(s.prune_round_steps), "--steps", str(s.prune_steps),
            "--batch-size", "4", "--patch-size", "24", "--repeats", "1", "--bench", "none", "--seed", "0",
            "--device", "cpu", "--output", "pruned",
        )  # fmt: skip

    search_stages = ("supernet", "trials", "export")
    run = Path("results") / RUN
    return [
        Case(
            "search",
            search_argv("search"),
            search_stages,
            lambda w: search_probe(w / run, s.trials, s.supernet_steps),
            lambda w, r: check_search(w, r, s.trials),
            short=("export",),
        ),
        Case(
            "ray",
            search_argv("search", "--backend", "ray", "--workers", "2"),
            search_stages,
            lambda w: search_probe(w / run, s.trials, s.supernet_steps),
            lambda w, r: check_search(w, r, s.trials),
            short=("export",),
        ),
        Case(
            "train",
            train_argv,
            ("training",),
            lambda w: (
                (1, 0.0)
                if (w / "trained" / "train_result.json").is_file()
                else (0, checkpoint_step(w / "trained") / s.train_steps)
            ),
            lambda w, r: check_folder(w, r, "trained"),
        ),  # fmt: skip
        Case(
            "prune",
            prune_argv,
            ("prune rounds", "final fine-tune", "report"),
            lambda w: prune_probe(w / "pruned", s.prune_rounds, s.prune_round_steps, s.prune_steps),
            lambda w, r: check_folder(w, r, "pruned"),
            needs=("train",),
            short=("report",),
        ),
        Case(
            "pipeline",
            search_argv("pipeline", "--pick", "1", "--final-steps", str(s.pipeline_final_steps)),
            (*search_stages, "prune rounds", "prune fine-tune", "final fine-tune"),
            lambda w: pipeline_probe(w / run, s),
            lambda w, r: check_pipeline(w, r, s.trials),
            short=("export",),
        ),
    ]


def describe(case: Case) -> str:
    """One line per case for the report."""
    return f"`{case.name}`: stages {', '.join(case.stages)}"


if __name__ == "__main__":  # the cases' stages, for a quick look
    print(json.dumps({c.name: c.stages for c in cases(Settings())}, indent=2))
