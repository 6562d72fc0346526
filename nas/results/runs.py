"""Run folders: what a search writes under ``results/``, and reading it back for browsing.

The run-folder contract (``srnas search`` writes exactly this; ``srnas front``/``show`` read it)::

    results/<run>/
      status.json     {"state": "running" | "complete" | "failed", "started": ISO time, "finished": ISO | null,
                       "trials": n, "pid": int, "host": str, ...}   (pid/host: the search process, optional)
      config.yaml     the resolved search space + options (nas.search.space format, ``search:`` holds the options)
      study.journal   Optuna journal storage (optuna.storages.JournalStorage(JournalFileBackend(path))); a torn
                      last record is moved to study.journal.torn-<time> on the next open (nas.search.journal)
      trials.csv      one row per trial, columns TRIAL_COLUMNS:
                        trial (int), state (COMPLETE | FAIL | RUNNING | PRUNED: a proposal that repeated an
                        architecture already in the study, not measured again), psnr (dB, Y, validation set),
                        runtime_ms, activations, params, flops, flops_fvcore, num_conv, genotype (nas.models.genotype),
                        spec (JSON), device, input_size (e.g. 3x256x256), error (FAIL only), duration_s,
                        reference (name of the hand design this trial evaluates in the supernet, else empty)
      pareto.csv      the same columns, exactly the non-dominated COMPLETE trials of the search objectives (one per
                      architecture: a repeated spec is its first trial)
      models/<trial>/ spec.yaml + weights.safetensors (+ profile.json: nas.measure.profiler Profile.to_dict()) of each
                      Pareto model; a MODEL for every command (nas.zoo.resolve.load_model)
    results/index.csv one row per run, INDEX_COLUMNS (update_index: locked, atomic)
    results/reference/zoo.csv (+ zoo.md)
                      one row per zoo model, REFERENCE_COLUMNS: its profile and Set5/Set14 Y-PSNR with the
                      conditions they were measured under (device, input_size, torch)

A run is *half-written* when status.json is missing or unreadable (state ``incomplete``) or says ``running``
while its pid on this host is gone (state ``stale``); reading it works and ``Run.problems`` says what is wrong.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from nas.errors import SrnasError
from nas.io import atomic_write, pid_alive, remove_stale_temps
from nas.results.lock import file_lock
from nas.results.pareto import COMPLETE, direction, first_of_each_spec, non_dominated

TRIAL_COLUMNS = [
    "trial",
    "state",
    "psnr",
    "runtime_ms",
    "activations",
    "params",
    "flops",
    "flops_fvcore",
    "num_conv",
    "genotype",
    "spec",
    "device",
    "input_size",
    "error",
    "duration_s",
    "reference",
]
NUMERIC_COLUMNS = ["psnr", "runtime_ms", "activations", "params", "flops", "flops_fvcore", "num_conv", "duration_s"]
INDEX_COLUMNS = ["run", "space", "state", "started", "finished", "trials", "pareto", "best_psnr", "device"]
REFERENCE_COLUMNS = [
    "model",
    "params",
    "flops",
    "flops_fvcore",
    "activations",
    "num_conv",
    "runtime_ms",
    "device",
    "input_size",
    "torch",
    "set5_psnr_y",
    "set14_psnr_y",
]
RESERVED = {"reference", "compare"}  # folders under results/ that are not runs
STATES = ("complete", "running", "failed")


@dataclass
class Run:
    """One run folder read back: status, config and trial tables, plus what is wrong with it."""

    path: Path
    state: str  # complete | running | failed | incomplete | stale
    status: dict[str, Any]
    config: dict[str, Any]
    trials: pd.DataFrame  # every TRIAL_COLUMNS column present (NaN where the file lacks it)
    pareto: pd.DataFrame | None  # pareto.csv as the search wrote it
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def space(self) -> str:
        return str(self.config.get("name", "")) if isinstance(self.config, dict) else ""

    def complete_trials(self) -> pd.DataFrame:
        return self.trials[self.trials["state"] == COMPLETE]

    def counts(self) -> dict[str, int]:
        """Number of trials per state."""
        return {str(k): int(v) for k, v in self.trials["state"].value_counts().sort_index().items()}

    def front(self, x: str = "runtime_ms", y: str = "psnr") -> pd.DataFrame:
        """The non-dominated COMPLETE trials for (x, y), sorted by x; an architecture measured twice is listed
        once (its first trial)."""
        trials = self.trials[first_of_each_spec(self.trials)]
        mask = non_dominated(trials, {y: direction(y), x: direction(x)})
        return trials[mask].sort_values([x, y], ascending=[direction(x) == "min", direction(y) == "max"])

    def conditions(self) -> tuple[list[str], list[str]]:
        """Distinct (devices, input sizes) of the COMPLETE trials, normalised."""
        done = self.complete_trials()
        devices = sorted({normalise_device(d) for d in done["device"].dropna()} - {""})
        sizes = sorted({normalise_size(s) for s in done["input_size"].dropna()} - {""})
        return devices, sizes

    def model_dir(self, trial: int) -> Path:
        return self.path / "models" / str(trial)


# ----------------------------------------------------------------------------------- reading


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=TRIAL_COLUMNS)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise SrnasError(f"cannot read {path}: {exc}") from exc


def _trial_table(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in ("trial", "state") if c not in df.columns]
    if missing:
        raise SrnasError(f"{path} has no column(s) {', '.join(missing)}; expected: {', '.join(TRIAL_COLUMNS)}")
    df = df.copy()
    for col in TRIAL_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    trial = pd.to_numeric(df["trial"], errors="coerce")
    bad = trial.isna() | (trial != trial.round())
    if bad.any():
        raise SrnasError(
            f"{path}: column 'trial' must hold integers, row {int(np.flatnonzero(bad)[0]) + 2} "
            f"has {df['trial'].iloc[int(np.flatnonzero(bad)[0])]!r}"
        )
    df["trial"] = trial.astype(int)
    df["state"] = df["state"].fillna("UNKNOWN").astype(str).str.strip().str.upper()
    for col in NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.reset_index(drop=True)


def _read_status(path: Path, problems: list[str]) -> tuple[str, dict[str, Any]]:
    file = path / "status.json"
    if not file.is_file():
        problems.append("no status.json: the run is half-written (never started properly, or still being set up)")
        return "incomplete", {}
    try:
        status = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        problems.append(f"unreadable status.json ({exc}): the run is half-written")
        return "incomplete", {}
    if not isinstance(status, dict) or status.get("state") not in STATES:
        problems.append(f"status.json has no valid 'state' ({', '.join(STATES)}): the run is half-written")
        return "incomplete", status if isinstance(status, dict) else {}
    state = status["state"]
    pid, host = status.get("pid"), status.get("host")
    if state == "running" and isinstance(pid, int) and not isinstance(pid, bool):
        if host not in (None, socket.gethostname()):
            problems.append(f"running on host {host} (pid {pid}): not checked from here")
        elif not pid_alive(pid):
            problems.append(
                f"status.json says running, but process {pid} is gone: the run was interrupted and is half-written"
            )
            state = "stale"
    if state == "failed":
        problems.append(f"the search failed: {status.get('error', 'no error recorded in status.json')}")
    return state, status


def read_run(path: str | Path) -> Run:
    """Read a run folder (see the module docstring). Raises SrnasError for a path that is not a run folder
    or an unreadable trials.csv; a half-written run is read with ``problems`` saying so."""
    path = Path(path)
    if not path.exists():
        raise SrnasError(f"run folder not found: {path}")
    if not path.is_dir():
        raise SrnasError(f"{path} is not a run folder (a file, not a directory)")
    if not (path / "status.json").exists() and not (path / "trials.csv").exists():
        raise SrnasError(f"{path} is not a run folder: it has neither status.json nor trials.csv")
    problems: list[str] = []
    state, status = _read_status(path, problems)
    config: dict[str, Any] = {}
    cfg_file = path / "config.yaml"
    if cfg_file.is_file():
        try:
            loaded = yaml.safe_load(cfg_file.read_text())
            config = loaded if isinstance(loaded, dict) else {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            problems.append(f"unreadable config.yaml: {exc}")
    else:
        problems.append("no config.yaml")
    raw = _read_csv(path / "trials.csv")
    if raw is None:
        problems.append("no trials.csv yet")
        raw = pd.DataFrame(columns=TRIAL_COLUMNS)
    trials = _trial_table(raw, path / "trials.csv")
    pareto_raw = _read_csv(path / "pareto.csv")
    pareto = _trial_table(pareto_raw, path / "pareto.csv") if pareto_raw is not None else None
    if pareto is None and state == "complete":
        problems.append("no pareto.csv although the run is complete")
    return Run(path, state, status, config, trials, pareto, problems)


def list_runs(results_root: str | Path) -> list[Path]:
    """Run folders directly under ``results_root`` (those with status.json or trials.csv), by name."""
    root = Path(results_root)
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name not in RESERVED
        and not p.name.startswith(".")
        and ((p / "status.json").exists() or (p / "trials.csv").exists())
    )


def _when(path: Path) -> str:
    """Sort key of a run: its finished/started time from status.json, else the folder's mtime (ISO)."""
    with contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        status = json.loads((path / "status.json").read_text())
        stamp = status.get("finished") or status.get("started")
        if isinstance(stamp, str):
            return stamp
    return pd.Timestamp(path.stat().st_mtime, unit="s").isoformat()


def newest_complete_run(results_root: str | Path) -> Path:
    """The complete run that finished last; SrnasError naming what exists when there is none."""
    root = Path(results_root)
    runs = list_runs(root)
    complete = []
    for path in runs:
        with contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            if json.loads((path / "status.json").read_text()).get("state") == "complete":
                complete.append(path)
    if not complete:
        found = f"; runs there: {', '.join(p.name for p in runs)} (none complete)" if runs else ""
        raise SrnasError(f"no complete run in {root}{found}; name a run folder explicitly")
    return max(complete, key=_when)


def resolve_run(ref: str | Path, results_root: str | Path) -> Path:
    """A run given as a path or as a name under ``results_root``."""
    path = Path(ref)
    if path.exists():
        return path
    candidate = Path(results_root) / str(ref)
    if candidate.exists():
        return candidate
    names = ", ".join(p.name for p in list_runs(results_root)) or "none"
    raise SrnasError(f"run {str(ref)!r} not found (neither a folder nor a run in {results_root}; runs: {names})")


# ----------------------------------------------------------------------------------- conditions


def normalise_device(value: Any) -> str:
    """``CUDA:0`` -> ``cuda``, ``cpu `` -> ``cpu``; names such as ``cuda (NVIDIA H100)`` are kept lower-cased."""
    text = str(value).strip().lower()
    return "" if text in ("", "nan", "none") else re.sub(r"^cuda:0$", "cuda", text)


def normalise_size(value: Any) -> str:
    """``3x256x256``, ``(3, 256, 256)``, ``[3, 256, 256]`` and ``256x256`` -> ``3x256x256``."""
    numbers = re.findall(r"\d+", str(value))
    if len(numbers) == 2:
        numbers = ["3", *numbers]
    return "x".join(numbers)


# ----------------------------------------------------------------------------------- index.csv


def read_index(results_root: str | Path) -> pd.DataFrame:
    """``results/index.csv`` (INDEX_COLUMNS first), empty when absent."""
    path = Path(results_root) / "index.csv"
    df = _read_csv(path)
    if df is None or df.empty:
        return pd.DataFrame(columns=INDEX_COLUMNS)
    if "run" not in df.columns:
        raise SrnasError(f"{path} has no 'run' column; expected: {', '.join(INDEX_COLUMNS)}")
    return df


def update_index(results_root: str | Path, row: dict[str, Any]) -> Path:
    """Insert or replace (by ``run``) one row of ``results/index.csv``; locked and atomic, so concurrent
    searches can call it."""
    if not row.get("run"):
        raise SrnasError("an index row needs a 'run' name")
    root = Path(results_root)
    path = root / "index.csv"
    with file_lock(root / ".index.csv.lock"):
        remove_stale_temps(root, recursive=False)  # index.csv temporaries of killed writers
        df = read_index(root)
        df = df[df["run"].astype(str) != str(row["run"])]
        new = pd.DataFrame([{k: row.get(k) for k in INDEX_COLUMNS} | row])
        df = new if df.empty else pd.concat([df, new], ignore_index=True)
        columns = INDEX_COLUMNS + [c for c in df.columns if c not in INDEX_COLUMNS]
        atomic_write(path, df[columns].sort_values("run").to_csv(index=False))
    return path


def index_row(run: Run) -> dict[str, Any]:
    """The index.csv row describing ``run``."""
    done = run.complete_trials()
    psnr = done["psnr"].dropna()
    devices, _ = run.conditions()
    pareto = len(run.pareto) if run.pareto is not None else int(len(run.front()))
    return {
        "run": run.name,
        "space": run.space,
        "state": run.state,
        "started": run.status.get("started"),
        "finished": run.status.get("finished"),
        "trials": len(run.trials),
        "pareto": pareto,
        "best_psnr": float(psnr.max()) if len(psnr) else None,
        "device": ";".join(devices) or None,
    }


# ----------------------------------------------------------------------------------- references


def read_references(results_root: str | Path) -> pd.DataFrame:
    """``results/reference/zoo.csv`` (``name`` accepted for ``model``), empty when absent."""
    path = Path(results_root) / "reference" / "zoo.csv"
    df = _read_csv(path)
    if df is None:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    if "model" not in df.columns and "name" in df.columns:
        df = df.rename(columns={"name": "model"})
    if "model" not in df.columns:
        raise SrnasError(f"{path} has no 'model' column; expected: {', '.join(REFERENCE_COLUMNS)}")
    for col in REFERENCE_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    return df


def comparable_references(
    refs: pd.DataFrame, runs: list[Run], x: str, psnr_column: str = "set5_psnr_y", y: str = "psnr"
) -> tuple[pd.DataFrame, list[str]]:
    """The reference models that can be drawn on the runs' (x, y) axes: columns ``model``, ``x``, ``y``
    (the reference's ``psnr_column`` as ``y``), plus one note per reason a model is left out.

    Runtime is comparable only on the same device and input size; FLOPs and activations only at the same
    input size; params always.
    """
    empty = pd.DataFrame(columns=["model", x, y])
    if refs.empty:
        return empty, ["no reference table results/reference/zoo.csv (write it with the zoo profiling command)"]
    if psnr_column not in refs.columns:
        return empty, [f"results/reference/zoo.csv has no {psnr_column!r} column"]
    need_size = x in ("runtime_ms", "activations", "flops", "flops_fvcore")
    need_device = x == "runtime_ms"
    devices, sizes = set(), set()
    for run in runs:
        d, s = run.conditions()
        devices |= set(d)
        sizes |= set(s)
    if (need_device and len(devices) > 1) or (need_size and len(sizes) > 1):
        return empty, [
            f"references not shown: the runs were measured under different conditions "
            f"(devices {', '.join(sorted(devices)) or '?'}; input sizes {', '.join(sorted(sizes)) or '?'})"
        ]
    if (need_device and not devices) or (need_size and not sizes):
        return empty, ["references not shown: the runs' trials record no device/input_size"]
    run_dev, run_size = next(iter(devices), ""), next(iter(sizes), "")
    reasons: dict[str, list[str]] = {}
    keep = []
    for _, ref in refs.iterrows():
        name = str(ref["model"])
        xv, yv = pd.to_numeric(pd.Series([ref[x], ref[psnr_column]]), errors="coerce")
        dev, size = normalise_device(ref["device"]), normalise_size(ref["input_size"])
        if not np.isfinite(yv):
            reason = f"no {psnr_column} (no checkpoint)"
        elif not np.isfinite(xv):
            reason = f"no {x} measured"
        elif need_device and dev != run_dev:
            reason = f"{x} measured on {dev or '?'}, the runs on {run_dev}"
        elif need_size and size != run_size:
            reason = f"{x} measured at input {size or '?'}, the runs at {run_size}"
        else:
            keep.append({"model": name, x: float(xv), y: float(yv)})
            continue
        reasons.setdefault(reason, []).append(name)
    notes = [f"not shown ({reason}): {', '.join(names)}" for reason, names in reasons.items()]
    return (pd.DataFrame(keep, columns=["model", x, y]) if keep else empty), notes
