"""``srnas search``: train a supernet, then search its architectures with Optuna (locally or on Ray).

Stages, each resumable: (1) supernet training with the shared loop (``<run>/supernet/``); (2) trials: an
Optuna study in ``<run>/study.journal`` (or any storage URL) whose objective samples a choice, extracts the
subnet with inherited weights and measures it (``nas.search.evaluator``); (3) export of the Pareto models to
``<run>/models/<trial>/``. ``trials.csv`` and ``pareto.csv`` are rewritten atomically after every trial.

Journal file storage is the default: an append-only log that survives ``kill -9`` (at worst the last,
partial record is ignored) and that several local processes share through a file lock; for many machines
pass ``--storage postgresql://...``. Trials left RUNNING by a dead process are marked FAIL on the next
start and their architecture is re-queued, so a killed search loses only the trials in flight.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from nas.device import resolve_device
from nas.errors import SrnasError
from nas.io import atomic_write
from nas.models.checkpoint import save_weights
from nas.results.runs import TRIAL_COLUMNS, pid_alive, update_index
from nas.search.space import SearchSpace
from nas.search.supernet import Supernet, sample_choice

STUDY_NAME = "srnas"
OBJECTIVES = {
    "psnr": "maximize",
    "runtime_ms": "minimize",
    "activations": "minimize",
    "flops": "minimize",
    "params": "minimize",
}
SAMPLERS = ("nsga2", "random", "tpe", "nsga3", "qmc")
SUPERNET_WEIGHTS = "supernet.safetensors"


@dataclass
class SearchOptions:
    """Everything a search run needs besides the space; stored in ``config.yaml`` under ``search:``."""

    trials: int = 40
    sampler: str = "nsga2"
    population: int = 50  # NSGA-II/III generation size (its first generation is random)
    objectives: list[str] = field(default_factory=lambda: ["psnr", "runtime_ms"])
    min_psnr: float | None = None  # constraint: PSNR >= this (dB)
    runtime_size: list[int] = field(default_factory=lambda: [3, 128, 128])
    runtime_repeats: int = 7
    val_max_size: int | None = 192
    device: str = "auto"
    seed: int = 0
    storage: str | None = None  # Optuna storage URL; default: journal file in the run folder
    backend: str = "optuna"  # optuna | ray
    workers: int = 1  # Ray: concurrent trials
    ray_address: str | None = None  # Ray: auto | HOST:PORT | None (start a local cluster)
    export_pareto: bool = True

    def __post_init__(self) -> None:
        if self.population < 2:
            raise SrnasError(f"population must be >= 2, got {self.population}")
        if self.trials <= 0:
            raise SrnasError(f"trials must be positive, got {self.trials}")
        if self.sampler not in SAMPLERS:
            raise SrnasError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        if not self.objectives or self.objectives[0] != "psnr" or len(set(self.objectives)) != len(self.objectives):
            raise SrnasError(f"objectives must start with psnr and list each once, got {self.objectives}")
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad:
            raise SrnasError(f"unknown objective(s) {bad}; known: {', '.join(OBJECTIVES)}")
        if len(self.runtime_size) != 3:
            raise SrnasError(f"runtime_size must be [C, H, W], got {self.runtime_size}")
        if self.backend not in ("optuna", "ray"):
            raise SrnasError(f"unknown backend {self.backend!r}; known: optuna, ray")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    path = run_dir / "status.json"
    status = json.loads(path.read_text()) if path.is_file() else {}
    status.update(fields, pid=os.getpid(), host=socket.gethostname())
    atomic_write(path, json.dumps(status, indent=2) + "\n")
    return status


# --------------------------------------------------------------------------- supernet training


def train_supernet(space: SearchSpace, run_dir: Path, train_options: dict[str, Any], device: str) -> Path:
    """Stage 1: one-shot supernet training (resumable); returns the weights file."""
    import torch
    from torch import nn

    from nas.data import open_pairs
    from nas.train import TrainConfig, train

    weights = run_dir / SUPERNET_WEIGHTS
    opts = dict(train_options)
    data = opts.pop("data", "embedded")
    sampling = opts.pop("sampling", "fair")
    cfg = TrainConfig(**{**opts, "device": device})
    torch.manual_seed(cfg.seed)  # reproducible initialisation of a fresh run
    supernet = Supernet(space)

    class PathTrainer(nn.Module):
        """Runs the path sampled for the current step (a pure function of seed and step)."""

        def __init__(self) -> None:
            super().__init__()
            self.supernet = supernet
            self.choice = sample_choice(space, cfg.seed, 0, sampling)

        def forward(self, x):
            return self.supernet(x, self.choice)

    trainer = PathTrainer()

    def before_step(step: int) -> None:
        trainer.choice = sample_choice(space, cfg.seed, step, sampling)

    if not weights.is_file():
        train(
            trainer,
            open_pairs(data, space.scale, "train"),
            cfg,
            run_dir / "supernet",
            before_step=before_step,
        )
        save_weights(supernet, weights)
    return weights


# --------------------------------------------------------------------------- the study


def make_sampler(opts: SearchOptions, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler; ``seed`` defaults to ``opts.seed``."""
    seed = opts.seed if seed is None else seed
    constraints = _constraints if opts.min_psnr is not None else None
    if opts.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=opts.population, seed=seed, constraints_func=constraints)
    if opts.sampler == "nsga3":
        return optuna.samplers.NSGAIIISampler(population_size=opts.population, seed=seed, constraints_func=constraints)
    if opts.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
    if opts.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return [float(trial.user_attrs.get("constraint", 0.0))]


def storage_for(run_dir: Path, url: str | None) -> optuna.storages.BaseStorage | str:
    if url:
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))


def open_study(run_dir: Path, opts: SearchOptions) -> optuna.Study:
    """Create or continue the run's study. A continued study reseeds its sampler with the number of trials
    so far, so a resumed search does not redraw the architectures its first start drew."""
    storage = storage_for(run_dir, opts.storage)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        directions=[OBJECTIVES[o] for o in opts.objectives],
        sampler=make_sampler(opts),
        load_if_exists=True,
    )
    done = len(study.get_trials(deepcopy=False))
    if done:
        sampler = make_sampler(opts, opts.seed + done)
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(opts.objectives)
    return study


def suggest_choice(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Sample every decision of the space (all layers, so the parameter set is fixed for NSGA-II)."""
    depth = trial.suggest_categorical("depth", space.depths)
    layers = [trial.suggest_categorical(f"layer{i}", space.layers[i]) for i in range(space.num_layers)]
    return {
        "width": trial.suggest_categorical("width", space.widths),
        "depth": depth,
        "layers": layers[:depth],
        "fusion": trial.suggest_categorical("fusion", list(space.fusions)),
        "upsampler": trial.suggest_categorical("upsampler", list(space.upsamplers)),
        "global_skip": trial.suggest_categorical("global_skip", space.global_skips),
    }


def choice_params(choice: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """The Optuna parameters of a choice (inactive layers filled with the first candidate)."""
    params = {k: choice[k] for k in ("depth", "width", "fusion", "upsampler", "global_skip")}
    for i in range(space.num_layers):
        params[f"layer{i}"] = choice["layers"][i] if i < len(choice["layers"]) else space.layers[i][0]
    return params


def record(trial_attrs_setter, metrics: dict[str, Any], opts: SearchOptions) -> None:
    """Store every measurement as a trial user attribute (shown by optuna-dashboard)."""
    for key, value in metrics.items():
        trial_attrs_setter(key, json.dumps(value) if key == "spec" else value)
    if opts.min_psnr is not None:
        trial_attrs_setter("constraint", opts.min_psnr - metrics["psnr"])


def recover_stale(study: optuna.Study) -> int:
    """Mark RUNNING trials of dead local processes FAIL and re-queue their parameters; returns how many."""
    host = socket.gethostname()
    storage = study._storage
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") != host or pid_alive(int(t.user_attrs.get("pid", -1))):
            continue
        storage.set_trial_user_attr(t._trial_id, "error", "stale: its process died; re-queued")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        n += 1
    return n


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                **{k: a.get(k) for k in TRIAL_COLUMNS if k not in ("trial", "state", "duration_s")},
                "duration_s": t.duration.total_seconds() if t.duration else None,
            }
        )
    df = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    for col in ("activations", "params", "flops", "flops_fvcore", "num_conv"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")  # stay integers next to FAIL rows
    return df


def write_tables(study: optuna.Study, run_dir: Path, opts: SearchOptions) -> pd.DataFrame:
    """Rewrite trials.csv and pareto.csv atomically; returns the Pareto rows."""
    from nas.results.pareto import non_dominated

    df = trials_table(study)
    mask = non_dominated(df, {o: "max" if OBJECTIVES[o] == "maximize" else "min" for o in opts.objectives})
    if opts.min_psnr is not None:
        mask &= (df["psnr"].astype(float) >= opts.min_psnr).to_numpy()
    pareto = df[mask]
    atomic_write(run_dir / "trials.csv", df.to_csv(index=False))
    atomic_write(run_dir / "pareto.csv", pareto.to_csv(index=False))
    return pareto


# --------------------------------------------------------------------------- the run


@dataclass
class SearchResult:
    run_dir: str
    trials: int
    complete: int
    failed: int
    pareto: int
    timings: dict[str, float]


def prepare_run(space: SearchSpace, run_dir: Path, opts: SearchOptions) -> None:
    """Write config.yaml on first start; on a restart, refuse a different space or options."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"space_file": space.source, "space": _space_dict(space), "search": asdict(opts)}
    path = run_dir / "config.yaml"
    if path.is_file():
        old = yaml.safe_load(path.read_text())
        keep = ("trials", "backend", "workers", "ray_address", "storage", "device")
        same_space = old.get("space") == config["space"]
        old_opts = {k: v for k, v in old.get("search", {}).items() if k not in keep}
        new_opts = {k: v for k, v in config["search"].items() if k not in keep}
        if not same_space or old_opts != new_opts:
            raise SrnasError(
                f"{run_dir} holds a run with a different search space or options; use another --run name "
                "(only --trials, --backend, --workers, --device and --storage may change on resume)"
            )
    atomic_write(path, yaml.safe_dump(config, sort_keys=False))


def _space_dict(space: SearchSpace) -> dict[str, Any]:
    d = asdict(space)
    d.pop("source", None)
    return d


def run_search(space: SearchSpace, run_dir: Path, opts: SearchOptions) -> SearchResult:
    """Run (or continue) a search; see the module docstring."""
    from nas.search.evaluator import Evaluator

    started = time.perf_counter()
    device = str(resolve_device(opts.device))
    prepare_run(space, run_dir, opts)
    status = write_status(run_dir, state="running", started=now(), finished=None, space=space.name, device=device)
    update_index(
        run_dir.parent,
        {
            "run": run_dir.name,
            "space": space.name,
            "state": "running",
            "started": status["started"],
            "device": device,
        },
    )
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        weights = train_supernet(space, run_dir, space.train, device)
        timings["supernet_train_s"] = round(time.perf_counter() - t0, 2)
        study = open_study(run_dir, opts)
        for name, choice in space.references.items():  # hand designs first: the same axes as the search
            if not any(t.user_attrs.get("reference") == name for t in study.get_trials(deepcopy=False)):
                study.enqueue_trial(choice_params(choice, space), user_attrs={"reference": name})
        recovered = recover_stale(study)
        if recovered:
            print(f"re-queued {recovered} trial(s) left running by a killed search")
        t1 = time.perf_counter()
        session_start = datetime.now()
        if opts.backend == "ray":
            from nas.search.backends.ray import run_ray_trials

            timings.update(run_ray_trials(space, run_dir, opts, weights, device))
        else:
            evaluator = Evaluator(
                space,
                weights,
                run_dir / "cache",
                data=space.train.get("data", "embedded"),
                device=device,
                runtime_size=tuple(opts.runtime_size),
                runtime_repeats=opts.runtime_repeats,
                val_max_size=opts.val_max_size,
                seed=opts.seed,
            )
            run_local_trials(study, space, run_dir, opts, evaluator)
        timings["trials_s"] = round(time.perf_counter() - t1, 2)
        study = open_study(run_dir, opts)
        timings.update(trial_cost_split(study, session_start, timings["trials_s"]))
        pareto = write_tables(study, run_dir, opts)
        t2 = time.perf_counter()
        if opts.export_pareto:
            export_models(space, run_dir, weights, pareto, device)
        timings["export_s"] = round(time.perf_counter() - t2, 2)
        timings["total_s"] = round(time.perf_counter() - started, 2)
        df = trials_table(study)
        complete = int((df["state"] == "COMPLETE").sum())
        failed = int((df["state"] == "FAIL").sum())
        write_status(
            run_dir,
            state="complete",
            finished=now(),
            trials=len(df),
            complete=complete,
            failed=failed,
            pareto=len(pareto),
            timings=timings,
        )
        update_index(
            run_dir.parent,
            {
                "run": run_dir.name,
                "space": space.name,
                "state": "complete",
                "started": status["started"],
                "finished": now(),
                "trials": len(df),
                "pareto": len(pareto),
                "best_psnr": float(pd.to_numeric(pareto["psnr"]).max()) if len(pareto) else None,
                "device": device,
            },
        )
        return SearchResult(str(run_dir), len(df), complete, failed, len(pareto), timings)
    except BaseException as exc:
        state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        write_status(run_dir, state="failed", finished=now(), error=f"{state}: {exc}")
        update_index(
            run_dir.parent,
            {
                "run": run_dir.name,
                "space": space.name,
                "state": "failed",
                "started": status["started"],
                "device": device,
            },
        )
        raise


def trial_cost_split(study: optuna.Study, since: datetime, trials_s: float) -> dict[str, float]:
    """Where this session's trial time went: subnet extraction + PSNR, counting, runtime measurement, and the
    rest (sampler, storage, tables: orchestration overhead). Cached measurements cost ~0."""
    new = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None and t.datetime_start >= since]
    split = {
        key: round(sum(float(t.user_attrs.get(key, 0.0)) for t in new), 2)
        for key in ("eval_s", "count_s", "runtime_measure_s")
    }
    out = {f"trials_{k}": v for k, v in split.items()}
    out["trials_new"] = len(new)
    out["orchestration_s"] = round(max(trials_s - sum(split.values()), 0.0), 2)
    return out


def run_local_trials(study: optuna.Study, space: SearchSpace, run_dir: Path, opts: SearchOptions, evaluator) -> None:
    """The Optuna loop in this process, until ``opts.trials`` trials are COMPLETE."""
    from tqdm import tqdm

    host, pid = socket.gethostname(), os.getpid()

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", pid)
        choice = suggest_choice(trial, space)
        trial.set_user_attr("choice", json.dumps(choice))
        try:
            metrics = evaluator.evaluate(choice)
        except Exception as exc:  # recorded with its reason; the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        record(trial.set_user_attr, metrics, opts)
        return tuple(float(metrics[o]) for o in opts.objectives)

    done = _complete(study)
    remaining = opts.trials - done
    if remaining <= 0:
        return
    bar = tqdm(total=opts.trials, initial=done, desc="search", unit="trial")

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        write_tables(study, run_dir, opts)
        write_status(run_dir, trials=len(study.trials))
        bar.update(1 if trial.state == TrialState.COMPLETE else 0)
        if trial.state == TrialState.COMPLETE:
            bar.set_postfix(
                psnr=f"{trial.user_attrs.get('psnr', math.nan):.2f}",
                ms=f"{trial.user_attrs.get('runtime_ms', math.nan):.1f}",
                refresh=False,
            )
        if _complete(study) >= opts.trials:
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        # Failures do not count towards --trials; at most as many extra attempts as trials.
        study.optimize(objective, n_trials=remaining + opts.trials, callbacks=[after], catch=(Exception,))
    finally:
        bar.close()


def _complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def export_models(space: SearchSpace, run_dir: Path, weights: Path, pareto: pd.DataFrame, device: str) -> None:
    """Write spec + inherited weights + profile of each Pareto model to ``models/<trial>/``."""
    from nas.measure.profiler import profile_model
    from nas.models.checkpoint import read_state_dict
    from nas.zoo.resolve import save_model

    if pareto.empty:
        return
    supernet = Supernet(space)
    supernet.load_state_dict(read_state_dict(weights), strict=True)
    supernet.eval()
    study_df = pareto.set_index("trial")
    for trial, row in study_df.iterrows():
        folder = run_dir / "models" / str(trial)
        if (folder / "profile.json").is_file():
            continue
        spec = json.loads(row["spec"])
        choice = _choice_of(space, spec)
        model = supernet.extract(choice).eval()
        save_model(folder, model, spec)
        prof = profile_model(model, (3, 256, 256)).to_dict()
        prof.update(
            psnr_val=float(row["psnr"]),
            runtime_ms_search=float(row["runtime_ms"]),
            runtime_device=str(row["device"]),
            runtime_input=str(row["input_size"]),
        )
        atomic_write(folder / "profile.json", json.dumps(prof, indent=2) + "\n")


def _choice_of(space: SearchSpace, spec: dict[str, Any]) -> dict[str, Any]:
    """Recover the choice of a spec produced by ``space.to_spec``."""

    def name_of(table: dict[str, Any], cfg: Any) -> str:
        for name, value in table.items():
            if value == cfg or (value is not None and cfg is not None and value == {**cfg}):
                return name
        raise SrnasError(f"spec component {cfg!r} is not in the search space")

    blocks = spec["blocks"]
    return {
        "width": spec["width"],
        "depth": len(blocks),
        "layers": [name_of({n: space.candidates[n] for n in space.layers[i]}, b) for i, b in enumerate(blocks)],
        "fusion": name_of(space.fusions, spec["fusion"]),
        "upsampler": name_of(space.upsamplers, spec["upsampler"]),
        "global_skip": spec["global_skip"],
    }
