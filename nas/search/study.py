"""The Optuna core of a search, shared by both backends: objectives, sampler, storage, the study, the parameters
of a choice, the measurements a trial stores, and the trials table.

Journal file storage is the default: an append-only log that survives ``kill -9`` (a torn last record is moved
aside on the next open: ``nas.search.journal``) and that several local processes share through a file lock;
for many machines pass ``--storage postgresql://...``. Trials left RUNNING by a dead process are marked FAIL
on the next start and their architecture is re-queued (``recover_stale``). A proposal that repeats an
architecture the study has measured or is measuring is not spent as a trial: it ends PRUNED with
``duplicate_of`` (``duplicate_of``/``mark_duplicate``; Optuna's documented way to skip repeated parameters),
so ``--trials N`` measures N distinct architectures on both backends.
"""

from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from nas.io import pid_alive
from nas.results.runs import TRIAL_COLUMNS
from nas.search.journal import journal_storage
from nas.search.options import SearchOptions
from nas.search.space import SearchSpace
from nas.search.supernet import choice_key

STUDY_NAME = "srnas"
JOURNAL = "study.journal"
MAX_DUPLICATES = 200  # proposals in a row that repeat measured architectures before a backend gives up
OPTUNA_DIRECTION = {"max": "maximize", "min": "minimize"}
INTEGER_COLUMNS = ("activations", "params", "flops", "flops_fvcore", "num_conv")


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
    """``url``, or the journal file ``<run>/study.journal``."""
    if url:
        return url
    return journal_storage(run_dir / JOURNAL)


def open_storage(run_dir: Path, url: str | None) -> optuna.storages.BaseStorage:
    """The study's storage as an object (Ray's ``OptunaSearch`` does not take URLs)."""
    storage = storage_for(run_dir, url)
    return optuna.storages.get_storage(storage) if isinstance(storage, str) else storage


def open_study(
    run_dir: Path, opts: SearchOptions, storage: optuna.storages.BaseStorage | str | None = None
) -> optuna.Study:
    """Create or continue the run's study. A continued study reseeds its sampler with the number of trials
    so far, so a resumed search does not redraw the architectures its first start drew."""
    storage = storage_for(run_dir, opts.storage) if storage is None else storage
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        directions=[OPTUNA_DIRECTION[d] for d in opts.directions.values()],
        sampler=make_sampler(opts),
        load_if_exists=True,
    )
    done = len(study.get_trials(deepcopy=False))
    if done:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=make_sampler(opts, opts.seed + done))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(opts.objectives))
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


def trial_choice(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The choice a trial evaluated, as it stored it (``choice`` user attribute)."""
    return json.loads(trial.user_attrs["choice"])


def duplicate_of(study: optuna.Study, number: int, choice: dict[str, Any]) -> int | None:
    """The first other trial that measured (COMPLETE) or is measuring (RUNNING) the same architecture as
    trial ``number`` (compared by choice: inactive layers do not count), else None."""
    key = choice_key(choice)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if t.number != number and "choice" in t.user_attrs and choice_key(trial_choice(t)) == key:
            return t.number
    return None


def mark_duplicate(trial: optuna.Trial, of: int) -> None:
    """Record that ``trial`` repeats trial ``of``; the caller then ends it PRUNED (not spent as a trial)."""
    trial.set_user_attr("duplicate_of", of)


def enqueue_references(study: optuna.Study, space: SearchSpace) -> None:
    """Queue the hand designs not yet in the study: they are evaluated first, on the same axes as the search."""
    seen = {t.user_attrs.get("reference") for t in study.get_trials(deepcopy=False)}
    for name, choice in space.references.items():
        if name not in seen:
            study.enqueue_trial(choice_params(choice, space), user_attrs={"reference": name})


def record(set_attr: Callable[[str, Any], None], metrics: dict[str, Any], opts: SearchOptions) -> None:
    """Store every measurement as a trial user attribute (shown by optuna-dashboard)."""
    for key, value in metrics.items():
        set_attr(key, json.dumps(value) if key == "spec" else value)
    if opts.min_psnr is not None:
        set_attr("constraint", opts.min_psnr - metrics["psnr"])


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


def complete_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, TRIAL_COLUMNS (the measurements from the user attributes)."""
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
    for col in INTEGER_COLUMNS:
        df[col] = pd.to_numeric(df[col]).astype("Int64")  # stay integers next to FAIL rows
    return df
