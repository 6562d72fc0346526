"""The Ray Tune backend of ``srnas search``: the objective of the local backend, run as Ray Tune trials.

The driver (the ``srnas search`` process) runs Ray Tune with ``OptunaSearch`` over the *same* Optuna study
as the local backend (``<run>/study.journal`` or ``--storage``), with the same sampler and the same
parameter names (``nas.search.study.suggest_choice``): enqueued references and re-queued trials are asked first,
and the driver tells the study each trial's objective values. A proposal that repeats an architecture of the
study is redrawn in the driver (``DistinctOptunaSearch``), so Ray only runs new architectures. Every Ray worker
process builds one
``Evaluator`` from the run's ``EvalSetup`` and writes the trial's measurements straight into the storage (the
user attributes ``nas.search.study.record`` writes), so ``trials.csv``/``pareto.csv`` do not depend on the backend.

A failing evaluation is recorded (``error`` attribute, FAIL state) and the search goes on; failures do not
count towards ``--trials`` (at most ``--trials`` extra attempts, as in the local backend). Running the same
command again continues the study: trials in flight when the driver was stopped (Ctrl-C, kill) stay RUNNING
with the driver's host/pid and are re-queued by ``recover_stale`` (ignore Ray's ``Tuner.restore`` hint).
Each trial takes one CPU (so CPU runtimes are single-threaded) or, on CUDA, one whole GPU, so that
runtimes are measured without a neighbour on the same GPU. Workers need the run folder (supernet weights,
journal) at the same path, so on several machines use a shared filesystem, or ``--storage postgresql://...``
for the study.

On a cluster: ``ray start --head`` on the head node, ``ray start --address HEAD:6379`` on every worker,
then ``srnas search SPACE --backend ray --ray-address auto --workers N`` on the head node.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from nas.errors import SrnasError
from nas.progress import progress as progress_reporter
from nas.results.writer import RunWriter
from nas.search.backends.ray_output import Terminal, ray_output
from nas.search.evaluator import EvalSetup, Evaluator
from nas.search.options import SearchOptions
from nas.search.space import SearchSpace
from nas.search.study import (
    MAX_DUPLICATES,
    STUDY_NAME,
    complete_count,
    duplicate_of,
    mark_duplicate,
    open_storage,
    record,
    suggest_choice,
    trials_table,
)

TRIAL_ID = "optuna_trial_id"  # config keys added by the define-by-run function
TRIAL_NUMBER = "optuna_trial_number"
LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2  # a local cluster only passes small configs around
PROBE_TIMEOUT_S = 5.0  # how long --ray-address may take to accept a connection


@dataclass(frozen=True)
class RayJob:
    """What a worker needs to evaluate trials (absolute paths: Ray workers run in their trial folders)."""

    setup: EvalSetup
    run_dir: str
    opts: SearchOptions


class SuggestTrial:
    """The define-by-run search space: the local backend's parameters, plus the Optuna trial id for workers.

    ``host``/``pid`` are the driver's: Ray ends a job's trials with its driver, so ``recover_stale``
    re-queues trials of a dead driver, including those asked but not started yet.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.host, self.pid = socket.gethostname(), os.getpid()

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("pid", self.pid)
        choice = suggest_choice(trial, self.space)
        trial.set_user_attr("choice", json.dumps(choice))
        return {TRIAL_ID: trial._trial_id, TRIAL_NUMBER: trial.number, "choice": choice}


class DistinctOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that redraws a proposal repeating an architecture of the study (measured, or in flight
    on another worker): the repeat ends PRUNED in the study (``duplicate_of``) and never reaches Ray, so every
    Ray trial measures a new architecture. After ``MAX_DUPLICATES`` repeats in a row it reports the search
    finished (``exhausted``)."""

    exhausted = False

    def suggest(self, trial_id: str) -> dict | str | None:
        for _ in range(MAX_DUPLICATES):
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials[trial_id]
            repeated = duplicate_of(self._ot_study, ot_trial.number, config["choice"])
            if repeated is None:
                return config
            mark_duplicate(ot_trial, repeated)
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            del self._ot_trials[trial_id]
        self.exhausted = True
        return Searcher.FINISHED

    # The Optuna study is the search's state (a resumed search reopens it); Tune's own searcher checkpoint is
    # never restored. The live study and sampler stay in this process: optuna >= 5.1's GA samplers hold a
    # thread lock, which Tune's pickling of its config (``tuner.pkl``) and of the searcher cannot take.
    LIVE = ("_sampler", "_ot_study", "_ot_trials")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self.LIVE}

    def save(self, checkpoint_path: str) -> None:
        raise NotImplementedError("the Optuna study holds the state; Tune skips the searcher checkpoint")


# --------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}  # one Evaluator and storage per worker process, reused across its trials


def _worker_state(job: RayJob) -> tuple[Evaluator, optuna.storages.BaseStorage]:
    from pathlib import Path

    key = (job, Path(job.setup.weights).stat().st_mtime_ns)
    if _WORKER.get("key") != key:
        _WORKER.clear()
        storage = open_storage(Path(job.run_dir), job.opts.storage)
        _WORKER.update(key=key, evaluator=job.setup.build(), storage=storage)
    return _WORKER["evaluator"], _WORKER["storage"]


def evaluate_trial(config: dict[str, Any], job: RayJob) -> None:
    """The Ray trainable: evaluate one choice, store its measurements in the study, report the objectives."""
    t0 = time.perf_counter()
    evaluator, storage = _worker_state(job)
    setup_s = time.perf_counter() - t0
    trial_id = int(config[TRIAL_ID])

    def set_attr(key: str, value: Any) -> None:
        storage.set_trial_user_attr(trial_id, key, value)

    set_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    set_attr("node", ray.get_runtime_context().get_node_id())  # which Ray node of the cluster measured it
    t1 = time.perf_counter()
    try:
        metrics = evaluator.evaluate(config["choice"])
    except Exception as exc:  # recorded with its reason; Ray marks the trial ERROR, Optuna FAIL
        set_attr("error", f"{type(exc).__name__}: {exc}")
        raise
    evaluate_s = time.perf_counter() - t1
    record(set_attr, metrics, job.opts)
    objectives = {o: float(metrics[o]) for o in job.opts.objectives}
    tune.report({**objectives, "evaluate_s": evaluate_s, "setup_s": setup_s})


# --------------------------------------------------------------------------- driver side


class Progress(tune.Callback):
    """A tqdm bar of COMPLETE trials; rewrites trials.csv/pareto.csv and status.json after every trial.

    Ray calls these hooks after ``OptunaSearch`` has told the study, so the tables see final states.
    """

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        writer: RunWriter,
        opts: SearchOptions,
        done: int,
        terminal: Terminal,
    ) -> None:
        self.study, self.storage, self.writer, self.opts = study, storage, writer, opts
        self.terminal = terminal
        self.bar = progress_reporter(opts.trials, desc="search (ray)", unit="trial", initial=done, stream=terminal.err)
        self.finished = self.failed = 0
        self.evaluate_s = self.setup_s = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.evaluate_s += float(result.get("evaluate_s", 0.0))
        self.setup_s += float(result.get("setup_s", 0.0))
        self.bar.set_postfix(
            psnr=f"{result.get('psnr', math.nan):.2f}",
            ms=f"{result.get('runtime_ms', math.nan):.1f}",
            failed=self.failed,
            refresh=False,
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.finished += 1
        frozen = self._frozen(trial)
        if frozen is not None and frozen.state == TrialState.COMPLETE:
            self.bar.update(1)
        self._write()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.finished += 1
        self.failed += 1
        frozen = self._frozen(trial)
        reason = frozen.user_attrs.get("error") if frozen is not None else None
        if frozen is not None and reason is None:  # e.g. the worker process died
            reason = _ray_error(trial)
            self.storage.set_trial_user_attr(frozen._trial_id, "error", reason)
        number = frozen.number if frozen is not None else trial.trial_id
        self.terminal.failure(f"search: trial {number} failed: {reason or _ray_error(trial)}")
        self.bar.set_postfix(failed=self.failed, refresh=False)
        self._write()

    def _frozen(self, trial) -> optuna.trial.FrozenTrial | None:
        trial_id = trial.config.get(TRIAL_ID)
        return None if trial_id is None else self.storage.get_trial(int(trial_id))

    def _write(self) -> None:
        self.writer.tables(trials_table(self.study))

    def close(self) -> None:
        self.bar.close()

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its run config (``tuner.pkl``); the bar and the study stay in this process."""
        live = ("bar", "study", "storage", "writer", "terminal")
        return {k: v for k, v in self.__dict__.items() if k not in live}


def _ray_error(trial) -> str:
    """The last line of Ray's error trace of a trial (its exception), or a generic reason."""
    text = trial.get_error() or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[-1] if lines else "the Ray trial failed (see the Ray logs)")[:500]


def check_reachable(address: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse a ``--ray-address HOST:PORT`` that nothing listens on, in seconds (``ray.init`` would retry
    for minutes); ``auto`` and ``ray://`` addresses are left to Ray."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SrnasError(f"--ray-address {address!r}: expected auto or HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SrnasError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one there with "
            "`ray start --head`, or leave out --ray-address to start a local one"
        ) from None


def connect(opts: SearchOptions) -> bool:
    """Join the running Ray session, the cluster at ``opts.ray_address``, or start a local one.

    Returns whether this call started Ray (and so must shut it down).
    """
    if ray.is_initialized():
        return False
    if opts.ray_address:
        check_reachable(opts.ray_address)
        try:
            ray.init(address=opts.ray_address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as exc:
            raise SrnasError(
                f"cannot connect to the Ray cluster at {opts.ray_address!r} ({exc}); start one with "
                "`ray start --head`, or leave out --ray-address to start a local one"
            ) from exc
    else:
        ray.init(
            address="local",  # a new local instance, even when `ray start` left a cluster address in /tmp/ray
            _node_ip_address="127.0.0.1",  # one machine: nothing listens beyond loopback
            num_cpus=max(opts.workers, 1),
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            logging_level=logging.WARNING,
            # Ray starts its workers at niceness 15 by default: on a busy machine they (the trials) would get
            # only what other work leaves; the trials are the job here
            _system_config={"worker_niceness": 0},
        )
    return True


def trial_name(trial) -> str:
    """Ray's name (and folder) of a trial: the Optuna trial number it evaluates, plus Ray's id."""
    return f"trial{trial.config.get(TRIAL_NUMBER, '')}_{trial.trial_id}"


def _tuner(trainable, searcher: OptunaSearch, samples: int, opts: SearchOptions, writer: RunWriter, progress):
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=samples,
            max_concurrent_trials=opts.workers,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            storage_path=str(writer.path.resolve() / "ray"),
            name="tune",
            verbose=0,
            callbacks=[progress],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def run_trials(
    study: optuna.Study, space: SearchSpace, opts: SearchOptions, setup: EvalSetup, writer: RunWriter
) -> dict[str, float]:
    """Run Ray Tune trials until ``opts.trials`` trials of the study are COMPLETE; returns timings.

    Ray's own output (banner, warnings, tracebacks) goes to ``<run>/ray/driver.log`` (``ray_output``); the
    terminal gets the progress and one line per failed trial. Timings: ``ray_start_s`` (connecting/starting
    Ray), ``ray_evaluate_s`` and ``ray_worker_setup_s`` (summed over trials, in the workers), ``ray_overhead_s``
    (wall time of the trials minus the summed evaluate and setup times divided by the number of workers: what
    orchestration cost).
    """
    done = complete_count(study)
    if done >= opts.trials:
        return {}
    run_dir = writer.path.resolve()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with ray_output(run_dir / "ray") as terminal:
        t0 = time.perf_counter()
        started = connect(opts)
        timings = {"ray_start_s": round(time.perf_counter() - t0, 2)}
        try:
            progress = Progress(study, open_storage(run_dir, opts.storage), writer, opts, done, terminal)
            try:
                t1 = time.perf_counter()
                _rounds(study, space, opts, RayJob(setup, str(run_dir), opts), writer, progress)
            finally:
                progress.close()
        finally:
            if started:
                ray.shutdown()
    wall = time.perf_counter() - t1
    busy = (progress.evaluate_s + progress.setup_s) / opts.workers
    timings.update(
        ray_evaluate_s=round(progress.evaluate_s, 2),
        ray_worker_setup_s=round(progress.setup_s, 2),
        ray_overhead_s=round(max(wall - busy, 0.0), 2),
    )
    return timings


def _rounds(
    study: optuna.Study, space: SearchSpace, opts: SearchOptions, job: RayJob, writer: RunWriter, progress: Progress
) -> None:
    """Tune runs of the missing trials until ``opts.trials`` are COMPLETE or the failure budget is spent."""
    gpu = 1 if job.setup.device.startswith("cuda") else 0  # one trial per GPU: runtimes are measured alone
    trainable = tune.with_resources(tune.with_parameters(evaluate_trial, job=job), {"cpu": 1, "gpu": gpu})
    sampler = study.sampler  # one RNG across rounds, seeded as open_study does: reseeded on resume
    remaining = opts.trials - complete_count(study)
    budget = remaining + opts.trials  # failures do not count: at most --trials extra attempts
    while remaining > 0 and budget > 0:
        samples = min(remaining, budget)
        searcher = DistinctOptunaSearch(
            space=SuggestTrial(space),
            metric=list(opts.objectives),
            mode=list(opts.directions.values()),
            sampler=sampler,
            study_name=STUDY_NAME,
            storage=progress.storage,
        )
        before = progress.finished
        _tuner(trainable, searcher, samples, opts, writer, progress).fit()
        if searcher.exhausted:
            msg = f"search: {MAX_DUPLICATES} proposals in a row repeated measured architectures; stopping"
            print(msg, file=progress.terminal.out, flush=True)
            break
        if progress.finished - before < samples:  # Ray Tune stops gracefully on Ctrl-C
            raise KeyboardInterrupt("Ray Tune stopped before its trials finished")
        budget -= samples
        remaining = opts.trials - complete_count(study)
