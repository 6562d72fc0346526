"""``srnas pipeline``: search -> pick Pareto models -> prune each -> final fine-tune -> one final front.

Everything lands in the search run's folder, stage by stage, each resumable:

    results/<run>/                 the search (nas.search.run): supernet, study, trials.csv, pareto.csv, models/
    results/<run>/pipeline/
      picks.json                   the Pareto trials picked (written once; a restart keeps them)
      <trial>/pruned/              pruning.schedule output for the picked model (state.json resumes it)
      <trial>/final/               stand-alone fine-tune of the pruned model (train checkpoint resumes it)
    results/<run>/final/           a run folder of the final models (written by nas.results.writer, like the
                                   search's; its front uses the search's objectives):
                                   `srnas front <run>/final <run>` overlays both fronts

The picked models start from their inherited supernet weights; pruning distils from that starting point,
and the final fine-tune trains the pruned model on the ground truth with the shared loop.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from nas.device import resolve_device
from nas.errors import SrnasError
from nas.io import atomic_json
from nas.measure.counting import DEFAULT_INPUT_SIZE
from nas.models.genotype import genotype
from nas.models.pruned import MODES as PRUNE_MODES
from nas.results.lock import run_lock
from nas.results.writer import RunWriter
from nas.search.options import SearchOptions
from nas.search.run import check_data, run_search
from nas.search.space import SearchSpace
from pruning.config import check_target


@dataclass(frozen=True)
class PipelineOptions:
    """What happens after the search; validated when made (before anything is written)."""

    pick: int = 3  # Pareto models to carry on (evenly spread along runtime)
    min_psnr: float | None = None  # only picks at or above this PSNR
    max_runtime_ms: float | None = None  # only picks at or below this runtime
    target_metric: str = "activations"  # pruning.schedule.TARGETS
    target: float = 0.7
    prune_mode: str = "coupled"
    prune_rounds: int = 2
    prune_round_steps: int = 60
    prune_final_steps: int = 100
    final_steps: int = 300
    final_lr: float = 2e-4

    def __post_init__(self) -> None:
        check_target(self.target_metric, self.target)
        if self.pick < 1:
            raise SrnasError(f"--pick must be at least 1, got {self.pick}")
        if self.prune_mode not in PRUNE_MODES:
            raise SrnasError(f"unknown prune mode {self.prune_mode!r}; known: {', '.join(PRUNE_MODES)}")
        if min(self.prune_rounds, self.prune_round_steps, self.prune_final_steps, self.final_steps) < 1:
            raise SrnasError("pipeline rounds and step counts must be positive")


def pick_models(pareto: pd.DataFrame, opts: PipelineOptions) -> list[int]:
    """Trial numbers of up to ``opts.pick`` Pareto models spread evenly by runtime (fastest and best included)."""
    df = pareto.copy()
    if opts.min_psnr is not None:
        df = df[df["psnr"] >= opts.min_psnr]
    if opts.max_runtime_ms is not None:
        df = df[df["runtime_ms"] <= opts.max_runtime_ms]
    if df.empty:
        raise SrnasError("no Pareto model meets the pick constraints (--min-psnr / --max-runtime)")
    df = df.sort_values("runtime_ms")
    n = min(opts.pick, len(df))
    idx = sorted({int(round(i)) for i in np.linspace(0, len(df) - 1, n)})
    return [int(t) for t in df.iloc[idx]["trial"]]


def _picks(run_dir: Path, opts: PipelineOptions) -> list[int]:
    picks_file = run_dir / "pipeline" / "picks.json"
    if picks_file.is_file():
        return json.loads(picks_file.read_text())["trials"]
    picks = pick_models(pd.read_csv(run_dir / "pareto.csv"), opts)
    atomic_json(picks_file, {"trials": picks, "options": asdict(opts)})
    return picks


@dataclass
class _Stage:
    """What every picked model's prune + fine-tune shares."""

    space: SearchSpace
    run_dir: Path
    search: SearchOptions
    opts: PipelineOptions
    train_data: Any
    val: Any
    writer: RunWriter


def _final_model(stage: _Stage, trial: int, searched: pd.Series) -> dict[str, Any]:
    """Prune, fine-tune and export one picked model; returns its row of the final trials table."""
    from nas.measure.evaluate import mean_psnr
    from nas.measure.profiler import profile_model
    from nas.train import TrainConfig, train
    from nas.zoo.resolve import load_model
    from pruning.config import PruneConfig
    from pruning.schedule import prune

    space, search, opts = stage.space, stage.search, stage.opts
    source = stage.run_dir / "models" / str(trial)
    work = stage.run_dir / "pipeline" / str(trial)
    loaded = load_model(source)
    cfg = PruneConfig(
        target=opts.target,
        metric=opts.target_metric,
        mode=opts.prune_mode,
        rounds=opts.prune_rounds,
        round_steps=opts.prune_round_steps,
        final_steps=opts.prune_final_steps,
        device=search.device,
        benchmarks=(),
        input_size=tuple(search.runtime_size),
        repeats=search.runtime_repeats,
    )
    pruned = prune(
        loaded.model,
        loaded.spec,
        cfg,
        work / "pruned",
        train_data=stage.train_data,
        val_data=stage.val,
        source=str(source),
    )
    model, spec = pruned.model, pruned.spec
    tcfg = TrainConfig(
        steps=opts.final_steps,
        lr=opts.final_lr,
        batch_size=space.train.batch_size,
        patch_size=space.train.patch_size,
        device=search.device,
        seed=search.seed,
    )
    train(model, stage.train_data, tcfg, work / "final", val_data=stage.val)
    timed = profile_model(
        model, search.runtime_size, device=search.device, runtime=True, repeats=search.runtime_repeats
    )
    counts = profile_model(model, DEFAULT_INPUT_SIZE)
    stage.writer.model(trial, model, spec, counts.to_dict())
    return {
        "trial": trial,
        "state": "COMPLETE",
        "psnr": mean_psnr(model, stage.val, space.scale),
        "runtime_ms": timed.runtime_ms,
        **{k: getattr(counts, k) for k in ("activations", "params", "flops", "flops_fvcore", "num_conv")},
        "genotype": genotype(spec),  # base genotype + its pruning plan (nas.models.genotype)
        "spec": json.dumps(spec),
        "device": timed.device,
        "input_size": "x".join(map(str, search.runtime_size)),
        "error": None,
        "duration_s": None,
        "reference": None,
        "search_psnr": float(searched["psnr"]),
        "search_runtime_ms": float(searched["runtime_ms"]),
        "search_activations": int(searched["activations"]),
    }


def run_pipeline(
    space: SearchSpace, run_dir: Path, search: SearchOptions, opts: PipelineOptions, force_unlock: bool = False
) -> pd.DataFrame:
    """All stages, with the run folder locked for this process (``nas.results.lock``); returns the final
    models' table (also written to ``<run>/final/trials.csv``)."""
    resolve_device(search.device)  # a bad --device or --data is refused before the lock creates the run folder
    check_data(space.train.data, space.scale)
    with run_lock(run_dir, force=force_unlock):
        return _pipeline(space, run_dir, search, opts)


def _pipeline(space: SearchSpace, run_dir: Path, search: SearchOptions, opts: PipelineOptions) -> pd.DataFrame:
    from nas.data import open_pairs, validation_pairs

    run_search(space, run_dir, search)
    picks = _picks(run_dir, opts)
    writer = RunWriter(
        run_dir / "final",
        space.name,
        search.directions,
        str(resolve_device(search.device)),
        index_root=run_dir.parent,
        run=f"{run_dir.name}/final",
        status_space=f"{space.name} (pipeline)",
    )
    # the search's resolved space + options, and how its models were pruned: final/ is a complete run folder
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    writer.config({**config, "pipeline": asdict(opts)})
    writer.start()
    try:
        data = space.train.data
        stage = _Stage(
            space,
            run_dir,
            search,
            opts,
            open_pairs(data, space.scale, "train"),
            validation_pairs(data, space.scale, max_size=search.val_max_size),
            writer,
        )
        searched = pd.read_csv(run_dir / "trials.csv").set_index("trial")  # the picks' search-time numbers
        df = pd.DataFrame([_final_model(stage, trial, searched.loc[trial]) for trial in picks])
        pareto = writer.tables(df)
        writer.complete(pareto, trials=len(df))
    except BaseException as exc:
        writer.fail(exc)
        raise
    return df


def summary(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "trial": int(r.trial),
            "psnr": round(r.psnr, 3),
            "search_psnr": round(r.search_psnr, 3),
            "runtime_ms": round(r.runtime_ms, 2),
            "search_runtime_ms": round(r.search_runtime_ms, 2),
            "activations": int(r.activations),
            "search_activations": int(r.search_activations),
        }
        for r in df.itertuples()
    ]
