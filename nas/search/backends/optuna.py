"""The local backend of ``srnas search``: the Optuna trial loop in this process."""

from __future__ import annotations

import json
import math
import os
import socket

import optuna
from optuna.trial import TrialState

from nas.progress import progress
from nas.results.writer import RunWriter
from nas.search.evaluator import EvalSetup
from nas.search.options import SearchOptions
from nas.search.space import SearchSpace
from nas.search.study import (
    MAX_DUPLICATES,
    complete_count,
    duplicate_of,
    mark_duplicate,
    record,
    suggest_choice,
    trials_table,
)


def run_trials(
    study: optuna.Study, space: SearchSpace, opts: SearchOptions, setup: EvalSetup, writer: RunWriter
) -> dict[str, float]:
    """Run trials here until ``opts.trials`` are COMPLETE; failures are recorded (``error``) and do not count,
    at most ``opts.trials`` of them; a proposal repeating an architecture of the study ends PRUNED, unmeasured
    (at most ``MAX_DUPLICATES`` in a row: the space is then about exhausted). Returns no extra timings."""
    done = complete_count(study)
    if done >= opts.trials:
        return {}
    evaluator = setup.build()
    host, pid = socket.gethostname(), os.getpid()

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", pid)
        choice = suggest_choice(trial, space)
        trial.set_user_attr("choice", json.dumps(choice))
        repeated = duplicate_of(trial.study, trial.number, choice)
        if repeated is not None:
            mark_duplicate(trial, repeated)
            raise optuna.TrialPruned(f"repeats trial {repeated}")
        try:
            metrics = evaluator.evaluate(choice)
        except Exception as exc:  # recorded with its reason; the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        record(trial.set_user_attr, metrics, opts)
        return tuple(float(metrics[o]) for o in opts.objectives)

    bar = progress(opts.trials, desc="search", unit="trial", initial=done)
    ended = {"failed": 0, "duplicates": 0}  # this session's failures; duplicates in a row

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ended["failed"] += trial.state == TrialState.FAIL
        ended["duplicates"] = ended["duplicates"] + 1 if trial.state == TrialState.PRUNED else 0
        if ended["duplicates"] == 0:
            writer.tables(trials_table(study))
        if trial.state == TrialState.COMPLETE:
            bar.update(1)
            bar.set_postfix(
                psnr=f"{trial.user_attrs.get('psnr', math.nan):.2f}",
                ms=f"{trial.user_attrs.get('runtime_ms', math.nan):.1f}",
                refresh=False,
            )
        if ended["duplicates"] >= MAX_DUPLICATES:
            print(f"search: the last {MAX_DUPLICATES} proposals all repeated measured architectures; stopping")
        if (
            complete_count(study) >= opts.trials
            or ended["failed"] >= opts.trials
            or ended["duplicates"] >= MAX_DUPLICATES
        ):
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(objective, callbacks=[after], catch=(Exception,))
    finally:
        bar.close()
    writer.tables(trials_table(study))
    return {}
