"""The local backend of ``srnas search``: the Optuna trial loop in this process."""

from __future__ import annotations

import json
import math
import os
import socket

import optuna
from optuna.trial import TrialState

from nas.results.writer import RunWriter
from nas.search.evaluator import EvalSetup
from nas.search.options import SearchOptions
from nas.search.space import SearchSpace
from nas.search.study import complete_count, record, suggest_choice, trials_table


def run_trials(
    study: optuna.Study, space: SearchSpace, opts: SearchOptions, setup: EvalSetup, writer: RunWriter
) -> dict[str, float]:
    """Run trials here until ``opts.trials`` are COMPLETE; failures are recorded (``error``) and do not count,
    at most ``opts.trials`` of them. Returns no extra timings."""
    from tqdm import tqdm

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
        try:
            metrics = evaluator.evaluate(choice)
        except Exception as exc:  # recorded with its reason; the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        record(trial.set_user_attr, metrics, opts)
        return tuple(float(metrics[o]) for o in opts.objectives)

    bar = tqdm(total=opts.trials, initial=done, desc="search", unit="trial")

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        writer.tables(trials_table(study))
        if trial.state == TrialState.COMPLETE:
            bar.update(1)
            bar.set_postfix(
                psnr=f"{trial.user_attrs.get('psnr', math.nan):.2f}",
                ms=f"{trial.user_attrs.get('runtime_ms', math.nan):.1f}",
                refresh=False,
            )
        if complete_count(study) >= opts.trials:
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        # Failures do not count towards --trials; at most as many extra attempts as trials.
        study.optimize(objective, n_trials=opts.trials - done + opts.trials, callbacks=[after], catch=(Exception,))
    finally:
        bar.close()
    return {}
