"""Runtime targets: measured candidates, the latency proxy calibrated to them, and each round's goal.

``runtime`` targets are *measured*: after each round's pruning the candidate is shrunk and timed together with
the unpruned model (``pruning.report.measure_runtimes``: medians of ``repeats`` interleaved passes at
``input_size`` on the training device); the target is met when their ratio is. A round's step is chosen on the
latency proxy (``flops + 64 * activations``, ``pruning.importance``) calibrated to the measured ratios so far
by a least-squares line; the smallest reachable model is measured first (``reachable_minimum``), which also
tells whether the target is reachable. Rounds past ``rounds`` aim ``RUNTIME_MARGIN`` lower each.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.errors import SrnasError
from pruning.config import PruneConfig
from pruning.gates import GatedModel
from pruning.importance import l1_importance
from pruning.report import measure_runtimes
from pruning.select import Selector
from pruning.shrink import shrink

RUNTIME_MARGIN = 0.02  # runtime targets: how much lower each round past the plan aims


class UnreachableTargetError(SrnasError):
    """A target below what removing every prunable channel reaches."""


def measure_candidate(
    gated: GatedModel, teacher: nn.Module, cfg: PruneConfig, device: torch.device
) -> dict[str, float]:
    """Median runtimes (ms) of the model ``shrink(gated)`` would return and of the unpruned model, timed in turn
    in one run (so load on a shared machine hits both alike), and their ratio."""
    small, _ = shrink(gated)
    times = measure_runtimes(
        {"base": teacher, "small": small}, cfg.input_size, device=str(device), repeats=cfg.repeats, warmup=cfg.warmup
    )
    small_ms, base_ms = times["small"], times["base"]
    return {"runtime_ms": small_ms, "baseline_runtime_ms": base_ms, "fraction": small_ms / base_ms}


def proxy_goal(points: list[list[float]], fraction: float) -> float:
    """The latency-proxy value whose calibrated runtime fraction is ``fraction``: a least-squares line through
    the measured (proxy, runtime fraction) points; proportional to the first point when the line does not rise."""
    p = np.array(points, dtype=np.float64)
    if len(p) >= 2 and np.ptp(p[:, 0]) > 0:
        slope, intercept = np.polyfit(p[:, 0], p[:, 1], 1)
        if slope > 0:
            return float((fraction - intercept) / slope)
    return float(p[0, 0] * fraction / p[0, 1])


def round_goal(selector: Selector, cfg: PruneConfig, state: dict[str, Any], k: int, base_cost: float) -> tuple:
    """``(goal fraction, proxy goal)`` of round ``k``: goals go linearly from the original to the target over
    the rounds; runtime rounds aim at the calibrated proxy value and past the plan 2% lower each."""
    step = min(k, cfg.rounds) / cfg.rounds
    goal_fraction = 1.0 - (1.0 - cfg.target) * step
    if cfg.metric != "runtime":
        return goal_fraction, goal_fraction * base_cost
    extra = max(0, k - cfg.rounds)  # rounds past the plan aim 2% lower each and take >= 2% steps
    goal_fraction -= RUNTIME_MARGIN * extra
    goal = proxy_goal(state["calibration"], goal_fraction)
    current = selector.cost(selector.nonzero())
    return goal_fraction, min(goal, current * (1.0 - RUNTIME_MARGIN * max(1, extra)))


def reachable_minimum(
    gated: GatedModel,
    selector: Selector,
    cfg: PruneConfig,
    state: dict[str, Any],
    teacher: nn.Module,
    device: torch.device,
) -> dict[str, Any]:
    """The smallest model the schedule can reach (everything rankable pruned); unreachable targets fail here.
    Runtime targets measure it once (kept in ``state``) and start the calibration points with it."""
    saved = gated.gate_mask.clone()
    nz = selector.select(l1_importance(gated).numpy(), -math.inf)
    counts = selector.cm.counts(nz)
    base = state["baseline"]
    minimum: dict[str, Any] = {"fraction": {k: counts[k] / base[k] for k in ("params", "flops", "activations")}}
    if cfg.metric == "runtime":
        if "minimum_runtime" not in state:
            with torch.no_grad():
                gated.gate_mask.copy_(torch.from_numpy(nz))
            state["minimum_runtime"] = measure_candidate(gated, teacher, cfg, device)
            # (latency proxy, measured runtime fraction) points the rounds calibrate the proxy on
            state["calibration"] = [
                [selector.cost(np.ones_like(nz)), 1.0],
                [selector.cost(nz), state["minimum_runtime"]["fraction"]],
            ]
        minimum["fraction"]["runtime"] = state["minimum_runtime"]["fraction"]
    with torch.no_grad():
        gated.gate_mask.copy_(saved)
    reach = minimum["fraction"][cfg.metric]
    if cfg.target < reach:
        what = "measured runtime" if cfg.metric == "runtime" else cfg.metric
        raise UnreachableTargetError(
            f"target {cfg.metric} {cfg.target} is unreachable in {cfg.mode} mode"
            f"{f' with widths rounded to {cfg.round_to}' if cfg.round_to > 1 else ''}: removing every prunable "
            f"channel leaves {reach:.4f} of the original {what} (the reachable minimum); choose a target >= "
            f"{math.ceil(reach * 1000) / 1000:.3f}" + ("" if cfg.mode == "coupled" else " or coupled mode")
        )
    return minimum
