"""``srnas pipeline``: search -> pick Pareto models -> prune each -> final fine-tune -> one final front.

Everything lands in the search run's folder, stage by stage, each resumable:

    results/<run>/                 the search (nas.search.run): supernet, study, trials.csv, pareto.csv, models/
    results/<run>/pipeline/
      picks.json                   the Pareto trials picked (written once; a restart keeps them)
      <trial>/pruned/              pruning.schedule output for the picked model (state.json resumes it)
      <trial>/final/               stand-alone fine-tune of the pruned model (train checkpoint resumes it)
    results/<run>/final/           a run folder of the final models (status.json, trials.csv, pareto.csv,
                                   models/<trial>/): `srnas front <run>/final <run>` overlays both fronts

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
from nas.io import atomic_write
from nas.models.genotype import genotype
from nas.results.runs import TRIAL_COLUMNS, update_index
from nas.search.run import SearchOptions, now, run_search, write_status
from nas.search.space import SearchSpace


@dataclass
class PipelineOptions:
    pick: int = 3  # Pareto models to carry on (evenly spread along runtime)
    min_psnr: float | None = None  # only picks at or above this PSNR
    max_runtime_ms: float | None = None  # only picks at or below this runtime
    target_metric: str = "activations"
    target: float = 0.7
    prune_mode: str = "coupled"
    prune_rounds: int = 2
    prune_round_steps: int = 60
    prune_final_steps: int = 100
    final_steps: int = 300
    final_lr: float = 2e-4


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


def run_pipeline(space: SearchSpace, run_dir: Path, search: SearchOptions, opts: PipelineOptions) -> pd.DataFrame:
    """All stages; returns the final models' table (also written to ``<run>/final/trials.csv``)."""
    from nas.data import open_pairs, validation_pairs
    from nas.measure.profiler import profile_model
    from nas.train import TrainConfig, evaluate, train
    from nas.zoo.resolve import load_model, save_model
    from pruning.schedule import PruneConfig, prune

    run_search(space, run_dir, search)
    stage_dir = run_dir / "pipeline"
    picks_file = stage_dir / "picks.json"
    if picks_file.is_file():
        picks = json.loads(picks_file.read_text())["trials"]
    else:
        picks = pick_models(pd.read_csv(run_dir / "pareto.csv"), opts)
        atomic_write(picks_file, json.dumps({"trials": picks, "options": opts.__dict__}, indent=2))
    data = space.train.get("data", "embedded")
    train_data = open_pairs(data, space.scale, "train")
    val = validation_pairs(data, space.scale, max_size=search.val_max_size)
    final_dir = run_dir / "final"
    final_dir.mkdir(parents=True, exist_ok=True)
    write_status(final_dir, state="running", started=now(), finished=None, space=f"{space.name} (pipeline)")
    # the search's resolved space + options, and how its models were pruned: final/ is a complete run folder
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    atomic_write(final_dir / "config.yaml", yaml.safe_dump({**config, "pipeline": asdict(opts)}, sort_keys=False))
    searched = pd.read_csv(run_dir / "trials.csv").set_index("trial")  # the picks' search-time numbers
    rows = []
    for trial in picks:
        source = run_dir / "models" / str(trial)
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
            stage_dir / str(trial) / "pruned",
            train_data=train_data,
            val_data=val,
            source=str(source),
        )
        model, spec = pruned.model, pruned.spec
        tcfg = TrainConfig(
            steps=opts.final_steps,
            lr=opts.final_lr,
            batch_size=space.train.get("batch_size", 16),
            patch_size=space.train.get("patch_size", 24),
            device=search.device,
            seed=search.seed,
        )
        train(model, train_data, tcfg, stage_dir / str(trial) / "final", val_data=val)
        out = save_model(final_dir / "models" / str(trial), model, spec)
        prof = profile_model(
            model, tuple(search.runtime_size), device=search.device, runtime=True, repeats=search.runtime_repeats
        )
        counts = profile_model(model, (3, 256, 256))
        atomic_write(out / "profile.json", json.dumps(counts.to_dict(), indent=2))
        psnr = evaluate(model, val, space.scale)
        base = searched.loc[trial]
        rows.append(
            {
                "trial": trial,
                "state": "COMPLETE",
                "psnr": psnr,
                "runtime_ms": prof.runtime_ms,
                "activations": counts.activations,
                "params": counts.params,
                "flops": counts.flops,
                "flops_fvcore": counts.flops_fvcore,
                "num_conv": counts.num_conv,
                "genotype": genotype(spec),  # base genotype + its pruning plan (nas.models.genotype)
                "spec": json.dumps(spec),
                "device": prof.device,
                "input_size": "x".join(map(str, search.runtime_size)),
                "error": None,
                "duration_s": None,
                "reference": None,
                "search_psnr": float(base["psnr"]),
                "search_runtime_ms": float(base["runtime_ms"]),
                "search_activations": int(base["activations"]),
            }
        )
    df = pd.DataFrame(rows)
    df = df[TRIAL_COLUMNS + [c for c in df.columns if c not in TRIAL_COLUMNS]]
    from nas.results.pareto import non_dominated

    atomic_write(final_dir / "trials.csv", df.to_csv(index=False))
    atomic_write(
        final_dir / "pareto.csv", df[non_dominated(df, {"psnr": "max", "runtime_ms": "min"})].to_csv(index=False)
    )
    write_status(final_dir, state="complete", finished=now(), trials=len(df))
    update_index(
        run_dir.parent,
        {
            "run": f"{run_dir.name}/final",
            "space": space.name,
            "state": "complete",
            "trials": len(df),
            "device": str(resolve_device(search.device)),
        },
    )
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
