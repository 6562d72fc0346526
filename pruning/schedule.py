"""The pruning schedule: score -> prune a step -> fine-tune -> ... until the target is met -> shrink -> final fine-tune.

``prune(model, spec, cfg, output_dir, train_data=..., val_data=...)`` prunes an SRNet to ``cfg.target`` (a fraction
of the original's activations, params, FLOPs or measured runtime; ``pruning.config``) in ``cfg.rounds`` rounds:

1. **score** the live gate entries: ``taylor`` (Gate Decorator |g * dL/dg| summed over ``score_batches`` patch
   batches; L is the L1 loss to the ground-truth HR, because the distillation loss of the unpruned model is 0
   and so is its gradient) or ``l1`` (weights, no data); divide by what pruning each entry alone saves of
   ``cfg.cost`` (``pruning.importance.unit_costs``; default: the target metric, ``latency`` for runtime);
2. **prune** the globally lowest-ranked entries (``pruning.select``) to the round's goal (goals go linearly from
   the original to the target over the rounds; ``pruning.calibrate`` for measured runtime targets);
3. optionally **refit** the convs that read pruned channels by least squares (``cfg.reconstruct``,
   ``pruning.reconstruct``), undone when it lowers the validation PSNR;
4. **fine-tune** ``round_steps`` steps with the shared train loop (``nas.train``, resumable in
   ``DIR/round_<k>/``), gates frozen, distilling from the unpruned model: target =
   ``(1 - gt_weight) * teacher(lr) + gt_weight * hr``; with ``feature_weight > 0`` also its block outputs
   (``feature_targets``: L1 of the trunk features, hooked in the same passes; ``nas.train.features``).

Then the gated model is shrunk to real smaller convs and fine-tuned ``final_steps`` more steps the same way
(``DIR/final/``); ``DIR`` receives ``spec.yaml`` + ``weights.safetensors`` (a MODEL for every command) and the
report (``pruning.report``).

Resuming (``pruning.state``): calling ``prune`` again with the same configuration on the same folder
continues: finished rounds are restored (masks + the weights of their train checkpoint), an unfinished
fine-tune resumes from its own checkpoint, and the result equals that of an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.data import Pair, PairedImages
from nas.device import resolve_device
from nas.errors import SrnasError
from nas.io import remove_stale_temps
from nas.measure.evaluate import mean_psnr
from nas.models.spec import normalize_spec
from nas.train import FeatureDistillation, FeatureLayer, TrainConfig, TrainResult, train
from nas.zoo.resolve import load_model, save_model
from pruning.calibrate import measure_candidate, reachable_minimum, round_goal
from pruning.config import PruneConfig
from pruning.gates import GatedModel
from pruning.importance import l1_importance, sensitivity_scores, taylor_scores
from pruning.reconstruct import reconstruct_gated
from pruning.report import REPORT_JSON, stage_report, write_prune_report
from pruning.select import Selector
from pruning.shrink import shrink
from pruning.state import (
    RECONSTRUCTED_FILE,
    STATE_FILE,
    fingerprint,
    load_state,
    load_weights,
    masks_from_data,
    masks_to_data,
    new_state,
    restore_round,
    round_dir,
    save_reconstructed,
    save_state,
)

# PruneConfig: re-exported from pruning.config
__all__ = [
    "STATE_FILE",
    "PruneConfig",
    "PruneResult",
    "feature_targets",
    "final_fine_tune_config",
    "fine_tune_config",
    "prune",
]
FINAL_DIR = "final"  # the final fine-tune's train folder in the output folder
FINAL_SEED_OFFSET = 1000  # the final fine-tune's seed is cfg.seed + this


@dataclass
class PruneResult:
    output_dir: str
    model: nn.Module  # the pruned, fine-tuned model (no gates)
    spec: dict[str, Any]
    rounds: list[dict[str, Any]]
    report: dict[str, Any] | None
    resumed: bool  # continued a previous run
    stopped: bool  # on_round asked to stop before the end
    seconds: float
    final: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """Everything one ``prune`` call works with."""

    cfg: PruneConfig
    out: Path
    device: torch.device
    gated: GatedModel
    teacher: nn.Module
    selector: Selector
    state: dict[str, Any]
    data: PairedImages
    val: Sequence[Pair] | None
    base_cost: float
    minimum: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        save_state(self.out / STATE_FILE, self.state)

    def say(self, text: str) -> None:
        if self.cfg.progress:
            print(text, file=sys.stderr, flush=True)


def prune(
    model: nn.Module,
    spec: dict[str, Any] | None,
    cfg: PruneConfig,
    output_dir: str | Path,
    *,
    train_data: PairedImages,
    val_data: Sequence[Pair] | None = None,
    source: str | None = None,
    on_round: Callable[[int, dict[str, Any]], bool | None] | None = None,
) -> PruneResult:
    """Prune ``model`` (an SRNet with weights; ``spec``, when given, must be its spec) into ``output_dir``.

    ``model`` is changed in place (gated, fine-tuned); the result holds the new, smaller model.

    ``on_round(k, record)`` runs after round ``k`` is finished and saved; returning True stops there (the
    same call later continues). Raises ``SrnasError`` for a target the pruner cannot reach, naming the
    smallest fraction it can.
    """
    start = time.time()
    own = getattr(model, "spec", None)
    if not isinstance(own, dict) or (spec is not None and normalize_spec(spec) != own):
        raise SrnasError(
            "prune needs an SRNet built from its spec (nas.models.network.build / nas.zoo.resolve.load_model)"
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model = model.to(device)
    run, resumed = _start(model, own, cfg, out, device, train_data, val_data, source)
    stopped = _rounds(run, on_round)
    rounds = run.state["rounds"]
    if stopped:
        run.gated.remove()
        return PruneResult(str(out), model, own, rounds, None, resumed, True, round(time.time() - start, 2))
    final_masks = masks_to_data(run.gated)
    small, small_spec, final, after_rounds = _final(run)
    report = _report(run, small, final_masks, source, after_rounds)
    seconds = round(time.time() - start, 2)
    return PruneResult(str(out), small.cpu(), small_spec, rounds, report, resumed, False, seconds, final)


def _start(
    model: nn.Module,
    spec: dict[str, Any],
    cfg: PruneConfig,
    out: Path,
    device: torch.device,
    data: PairedImages,
    val: Sequence[Pair] | None,
    source: str | None,
) -> tuple[_Run, bool]:
    """Gate the model, load (True) or create (False) the state, and check that the target is reachable."""
    remove_stale_temps(out)  # what a killed run was writing: state, weights, reports, fine-tune checkpoints
    finger = fingerprint(model, spec)
    state = load_state(out / STATE_FILE, cfg, finger)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    gated = GatedModel(model, cfg.mode)
    gated.gate_values.requires_grad_(False)
    selector = Selector(gated, cfg)
    nz_full = selector.nonzero()
    resumed = state is not None
    if state is None:
        state = new_state(cfg, finger, source, selector.cm.counts(nz_full))
    base_cost = selector.cost(nz_full)
    run = _Run(cfg, out, device, gated, teacher, selector, state, data, val, base_cost)
    run.minimum = reachable_minimum(gated, selector, cfg, state, teacher, device)
    state["config"] = cfg.to_dict()  # resumable fields may have changed
    run.save()
    return run, resumed


def _rounds(run: _Run, on_round: Callable[[int, dict[str, Any]], bool | None] | None) -> bool:
    """Prune + fine-tune rounds until the target is met; True when ``on_round`` stopped them."""
    cfg, rounds = run.cfg, run.state["rounds"]
    done = [r for r in rounds if r["done"]]
    if done:
        restore_round(run.gated, run.out, done[-1], cfg)
    k = len(done)
    while not _target_met(run.state, cfg):
        k += 1
        if k > 2 * cfg.rounds:
            last = rounds[-1]
            raise SrnasError(
                f"runtime target {cfg.target} not met after {k - 1} rounds: the last candidate measured "
                f"{last['runtime_ms']:.2f} ms ({last['fraction']:.3f} of the original); the timing may be too noisy "
                "on this device: use more --repeats, a larger target, or an activations/FLOPs target"
            )
        round_start = time.time()
        if len(rounds) >= k:  # chosen before an interruption: reuse exactly
            record = rounds[k - 1]
            _reuse_round(run, record)
        else:
            record = _prune_round(run, k)
            rounds.append(record)
            run.save()
            run.say(
                f"round {k}: pruned {record['pruned_entries']} gate entries: {cfg.metric} "
                f"{record['fraction']:.4f} of the original (goal {record['goal_fraction']:.4f})"
                + (f", val PSNR-Y {record['val_psnr_pruned']:.3f} dB" if "val_psnr_pruned" in record else "")
            )
        if cfg.round_steps > 0:
            tcfg = fine_tune_config(cfg, cfg.round_steps, cfg.lr, cfg.seed + k)
            result = _fine_tune(run, run.gated, round_dir(run.out, k), tcfg)
            record["val_psnr"] = result.final_psnr
        record["done"] = True
        record["seconds"] = round(record.get("seconds", 0.0) + time.time() - round_start, 2)
        run.save()
        if on_round is not None and on_round(k, record):
            return True
    return False


def _target_met(state: dict[str, Any], cfg: PruneConfig) -> bool:
    rounds = [r for r in state["rounds"] if r["done"]]
    return bool(rounds) and rounds[-1]["fraction"] <= cfg.target + 1e-12


def _prune_round(run: _Run, k: int) -> dict[str, Any]:
    """Choose and apply round ``k``'s masks (then refit, when configured); the round's record."""
    t0 = time.time()
    cfg, gated, selector = run.cfg, run.gated, run.selector
    goal_fraction, goal = round_goal(selector, cfg, run.state, k, run.base_cost)
    nz = selector.select(_scores(gated, cfg, run.data, k), goal)
    if cfg.metric != "runtime" and selector.cost(nz) > goal * (1 + 1e-9):
        raise SrnasError(
            f"round {k} cannot bring the {cfg.metric} to {goal_fraction:.4f} of the original: with this ranking the "
            f"smallest model keeps {selector.cost(nz) / run.base_cost:.4f}; choose a larger target"
        )
    with torch.no_grad():
        gated.gate_mask.copy_(torch.from_numpy(nz) & gated.gate_mask.cpu())
    counts = selector.cm.counts(nz)
    record: dict[str, Any] = {
        "round": k,
        "goal_fraction": goal_fraction,
        "fraction": selector.cost(nz) / run.base_cost if cfg.metric != "runtime" else None,
        "counts": {key: float(v) for key, v in counts.items()},
        "pruned_entries": int((~nz).sum()),
        "masks": masks_to_data(gated),
        "done": False,
    }
    if cfg.reconstruct:
        record["reconstruct"] = _refit(run, k)
    if cfg.metric == "runtime":
        record.update(measure_candidate(gated, run.teacher, cfg, run.device))
        run.state["calibration"].append([selector.cost(nz), record["fraction"]])
    if run.val:
        record["val_psnr_pruned"] = mean_psnr(gated, run.val, run.data.scale, run.device)
    record["seconds"] = round(time.time() - t0, 2)
    return record


def _refit(run: _Run, k: int) -> dict[str, Any]:
    """Least-squares refit of round ``k`` (``pruning.reconstruct``); its weights are saved for resuming.

    With validation pairs the refit is undone when it lowers their PSNR: the calibration patches come from the
    training data, and a refit that fits them can still generalise worse (measured on RFDN's ESA convs)."""
    cfg = run.cfg
    before = mean_psnr(run.gated, run.val, run.data.scale, run.device) if run.val else None
    saved = {k: v.clone() for k, v in run.gated.model.state_dict().items()} if run.val else None
    summary = reconstruct_gated(
        run.gated,
        run.teacher,
        run.data,
        patches=cfg.reconstruct_patches,
        patch_size=cfg.patch_size,
        ridge=cfg.reconstruct_ridge,
        seed=cfg.seed + 104729 * k,
        rows=cfg.reconstruct_rows,
    )
    record = summary.to_dict()
    if before is not None:
        after = mean_psnr(run.gated, run.val, run.data.scale, run.device)
        record.update(val_psnr_before=before, val_psnr_after=after, reverted_on_val=after < before)
        if after < before:
            run.gated.model.load_state_dict(saved)
            run.say(f"round {k}: the refit lowered the validation PSNR ({before:.3f} -> {after:.3f} dB): undone")
    save_reconstructed(run.gated, run.out, k)
    return record


def _reuse_round(run: _Run, record: dict[str, Any]) -> None:
    """A round whose masks were chosen before an interruption: the same masks (and refit weights)."""
    masks_from_data(run.gated, record["masks"])
    refit = round_dir(run.out, record["round"]) / RECONSTRUCTED_FILE
    if run.cfg.reconstruct:
        if refit.is_file():
            load_weights(run.gated, refit, f"round {record['round']}'s refit weights")
        else:  # interrupted between choosing the masks and saving the refit: do it again (deterministic)
            record["reconstruct"] = _refit(run, record["round"])


def _scores(gated: GatedModel, cfg: PruneConfig, data: PairedImages, round_index: int) -> np.ndarray:
    if cfg.importance == "l1":
        return l1_importance(gated).numpy()
    seed = cfg.seed + 7919 * round_index  # a patch stream the fine-tunes (seed + k) do not use
    scores = sensitivity_scores if cfg.importance == "sensitivity" else taylor_scores
    return scores(gated, data, cfg.score_batches, cfg.batch_size, cfg.patch_size, seed)


def fine_tune_config(cfg: PruneConfig, steps: int, lr: float, seed: int) -> TrainConfig:
    """The shared loop's options of one of the schedule's fine-tunes (cosine from ``lr`` to ``lr / 100``)."""
    return TrainConfig(
        steps=steps,
        batch_size=cfg.batch_size,
        patch_size=cfg.patch_size,
        lr=lr,
        schedule="cosine",
        eta_min=lr * 0.01,
        ckpt_every=min(cfg.ckpt_every, steps),
        log_every=min(10, steps),
        seed=seed,
        device=cfg.device,
        progress=cfg.progress,
    )


def final_fine_tune_config(cfg: PruneConfig) -> TrainConfig:
    """The options of the final fine-tune of the shrunk model (``DIR/final/``)."""
    return fine_tune_config(cfg, cfg.final_steps, cfg.final_lr or cfg.lr, cfg.seed + FINAL_SEED_OFFSET)


def _fine_tune(run: _Run, model: nn.Module, folder: Path, tcfg: TrainConfig) -> TrainResult:
    """Distillation fine-tune with the shared loop (resumable in ``folder``)."""
    teacher_weight = 1.0 - run.cfg.gt_weight
    features = feature_targets(run.gated, model, run.cfg.feature_weight) if run.cfg.feature_weight > 0 else None
    teacher = run.teacher if teacher_weight > 0 or features is not None else None
    return train(
        model,
        run.data,
        tcfg,
        folder,
        val_data=run.val,
        teacher=teacher,
        teacher_weight=teacher_weight,
        features=features,
    )


def feature_targets(gated: GatedModel, model: nn.Module, weight: float) -> FeatureDistillation:
    """Distil the unpruned model's block outputs (``SRNet.body[i]``) into ``model``: the gated model (the rounds)
    or the network it shrinks to (the final fine-tune), on the channels the gates keep of each."""
    alive = gated.unit_alive()
    student = "model." if model is gated else ""  # the gated model's network is its ``model``
    layers = []
    for i in range(len(gated.model.body)):
        units = gated.graph.module_outputs.get(f"body.{i}")
        if units is None:
            raise SrnasError(f"feature distillation: the channel analysis did not see the output of block {i}")
        kept = tuple(int(c) for c in np.flatnonzero(alive[units]))
        layers.append(FeatureLayer(f"{student}body.{i}", f"body.{i}", kept if model is gated else None, kept))
    return FeatureDistillation(tuple(layers), weight, "l1")


def _final(run: _Run) -> tuple[nn.Module, dict[str, Any], dict[str, Any], nn.Module | None]:
    """Shrink, fine-tune ``final_steps`` and save the model into the output folder (or load it when done).

    The fourth value is the shrunk model as the rounds left it (their refits and fine-tunes, before the final
    fine-tune), when that differs from both the plain pruned and the final model; else None."""
    cfg, state = run.cfg, run.state
    small, small_spec = shrink(run.gated)
    run.gated.remove()
    changed = (cfg.reconstruct or cfg.round_steps > 0) and cfg.final_steps > 0
    final = state["final"] or {"done": False}
    if final["done"]:
        return load_model(run.out).model, small_spec, final, small if changed else None
    after_rounds = copy.deepcopy(small).cpu() if changed else None
    final_start = time.time()
    if cfg.final_steps > 0:
        result = _fine_tune(run, small, run.out / FINAL_DIR, final_fine_tune_config(cfg))
        final["val_psnr"] = result.final_psnr
    save_model(run.out, small.cpu(), small_spec)
    final.update(done=True, seconds=round(time.time() - final_start, 2))
    state["final"] = final
    run.save()
    return small, small_spec, final, after_rounds


def _report(
    run: _Run, small: nn.Module, masks: dict[str, str], source: str | None, after_rounds: nn.Module | None
) -> dict[str, Any] | None:
    """The report (``pruning.report.stage_report``), made once per set of benchmarks."""
    cfg, state, out = run.cfg, run.state, run.out
    if not cfg.report:
        return None
    made = state.get("report") or {}
    if made.get("benchmarks") == list(cfg.benchmarks) and (out / REPORT_JSON).is_file():
        return json.loads((out / REPORT_JSON).read_text())
    run.say("report: timing and evaluating the unpruned, pruned and fine-tuned models")
    report_start = time.time()
    report = stage_report(
        run.teacher, small, masks, state, cfg, run.minimum, run.device, run.val, source, after_rounds=after_rounds
    )
    write_prune_report(out, report)
    state["report"] = {"seconds": round(time.time() - report_start, 2), "benchmarks": list(cfg.benchmarks)}
    run.save()
    return report
