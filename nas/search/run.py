"""``srnas search``: train a supernet, then search its architectures with Optuna (locally or on Ray).

Stages, each resumable: (1) supernet training with the shared loop (``<run>/supernet/``); (2) trials: an
Optuna study (``nas.search.study``) whose trials sample a choice, extract the subnet with inherited weights
and measure it (``nas.search.evaluator``), run by a backend (``nas.search.backends.optuna`` in this process,
or ``nas.search.backends.ray``); (3) export of the Pareto models to ``<run>/models/<trial>/``. Every file of
the run folder is written by ``nas.results.writer.RunWriter``; ``trials.csv`` and ``pareto.csv`` after every
trial. A killed search loses only the trials in flight.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml

from nas.device import resolve_device
from nas.errors import SpecError, SrnasError
from nas.measure.counting import DEFAULT_INPUT_SIZE
from nas.results.lock import run_lock
from nas.results.writer import RunWriter
from nas.search.evaluator import EvalSetup
from nas.search.options import SearchOptions
from nas.search.space import SearchSpace, parse_space
from nas.search.study import enqueue_references, open_study, recover_stale, trial_choice, trials_table
from nas.search.supernet import Supernet
from nas.search.supernet_train import SUPERNET_WEIGHTS as SUPERNET_WEIGHTS  # stage 1, re-exported
from nas.search.supernet_train import train_supernet as train_supernet


@dataclass
class SearchResult:
    run_dir: str
    trials: int
    complete: int
    failed: int
    pareto: int
    timings: dict[str, float]


# --------------------------------------------------------------------------- the run folder


def run_config(space: SearchSpace, opts: SearchOptions) -> dict[str, Any]:
    """What ``config.yaml`` holds: the resolved space and the search options."""
    return {"space_file": space.source, "space": space.to_dict(), "search": opts.to_dict()}


def check_restart(space: SearchSpace, run_dir: Path, opts: SearchOptions) -> None:
    """Refuse to continue a run folder that holds a different space or options (``--trials``, the backend,
    workers, device and storage may change); an older config.yaml is read through ``parse_space``."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text()) or {}
    try:
        old_space = parse_space(old.get("space"), str(path)).to_dict()
        old_opts = SearchOptions.parse(old.get("search")).fingerprint()
    except SpecError:
        old_space, old_opts = None, None
    new_space = space.to_dict()
    for d in (old_space, new_space):
        if d is not None:
            d.pop("search")  # the space's own defaults; the run's options are compared below
            d["train"].pop("device", None)
    if old_space != new_space or old_opts != opts.fingerprint():
        raise SrnasError(
            f"{run_dir} holds a run with a different search space or options; use another --run name "
            "(only --trials, --backend, --workers, --device and --storage may change on resume)"
        )


def check_data(data: str, scale: int) -> None:
    """Refuse a ``--data`` that names no training images before anything is written (``DataError``)."""
    from nas.data.embedded import EMBEDDED
    from nas.data.folders import resolve_folder

    if str(data) != EMBEDDED:
        resolve_folder(Path(data), scale, "train")


def writer_for(space: SearchSpace, run_dir: Path, opts: SearchOptions, device: str) -> RunWriter:
    return RunWriter(run_dir, space.name, opts.directions, device, min_psnr=opts.min_psnr)


# --------------------------------------------------------------------------- the search


def run_search(space: SearchSpace, run_dir: Path, opts: SearchOptions, force_unlock: bool = False) -> SearchResult:
    """Run (or continue) a search; see the module docstring. The run folder is locked for this process
    (``nas.results.lock``: a second writer is refused); nothing is written before the options, the lock and
    a restart's config are checked."""
    started = time.perf_counter()
    device = str(resolve_device(opts.device))
    check_data(space.train.data, space.scale)
    if opts.backend == "ray":  # an unreachable cluster fails now, not after the supernet is trained
        from nas.search.backends.ray import check_reachable

        check_reachable(opts.ray_address)
    with run_lock(run_dir, force=force_unlock):
        check_restart(space, run_dir, opts)
        return _search(space, run_dir, opts, device, started)


def _search(space: SearchSpace, run_dir: Path, opts: SearchOptions, device: str, started: float) -> SearchResult:
    writer = writer_for(space, run_dir, opts, device)
    writer.config(run_config(space, opts))
    writer.start()
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        weights = train_supernet(space, run_dir, space.train, device)
        timings["supernet_train_s"] = round(time.perf_counter() - t0, 2)
        study = open_study(run_dir, opts)
        enqueue_references(study, space)
        recovered = recover_stale(study)
        if recovered:
            print(f"re-queued {recovered} trial(s) left running by a killed search")
        setup = EvalSetup.for_run(space, run_dir, weights, opts, device)
        t1 = time.perf_counter()
        session_start = datetime.now()
        timings.update(run_trials(study, space, opts, setup, writer))
        timings["trials_s"] = round(time.perf_counter() - t1, 2)
        study = open_study(run_dir, opts)
        timings.update(trial_cost_split(study, session_start, timings["trials_s"]))
        df = trials_table(study)
        pareto = writer.tables(df)
        t2 = time.perf_counter()
        if opts.export_pareto:
            export_models(space, weights, pareto, study, writer)
        timings["export_s"] = round(time.perf_counter() - t2, 2)
        timings["total_s"] = round(time.perf_counter() - started, 2)
        complete = int((df["state"] == "COMPLETE").sum())
        failed = int((df["state"] == "FAIL").sum())
        writer.complete(pareto, trials=len(df), complete=complete, failed=failed, timings=timings)
        return SearchResult(str(run_dir), len(df), complete, failed, len(pareto), timings)
    except BaseException as exc:
        writer.fail(exc)
        raise


def run_trials(
    study: optuna.Study, space: SearchSpace, opts: SearchOptions, setup: EvalSetup, writer: RunWriter
) -> dict[str, float]:
    """Stage 2 on the chosen backend, until ``opts.trials`` trials are COMPLETE; returns its timings."""
    if opts.backend == "ray":
        from nas.search.backends.ray import run_trials as backend
    else:
        from nas.search.backends.optuna import run_trials as backend
    return backend(study, space, opts, setup, writer)


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


# --------------------------------------------------------------------------- stage 3: export


def export_models(
    space: SearchSpace, weights: Path, pareto: pd.DataFrame, study: optuna.Study, writer: RunWriter
) -> None:
    """Write spec + inherited weights + profile of each Pareto model to ``models/<trial>/``; each trial's
    choice is the one it stored."""
    from nas.measure.profiler import profile_model
    from nas.models.checkpoint import read_state_dict

    todo = [int(t) for t in pareto["trial"] if not writer.has_model(int(t))]
    if not todo:
        return
    supernet = Supernet(space)
    supernet.load_state_dict(read_state_dict(weights), strict=True)
    supernet.eval()
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = pareto.set_index("trial")
    for number in todo:
        row = rows.loc[number]
        model = supernet.extract(trial_choice(trials[number])).eval()
        profile = profile_model(model, DEFAULT_INPUT_SIZE).to_dict()
        profile.update(
            psnr_val=float(row["psnr"]),
            runtime_ms_search=float(row["runtime_ms"]),
            runtime_device=str(row["device"]),
            runtime_input=str(row["input_size"]),
        )
        writer.model(number, model, json.loads(row["spec"]), profile)
