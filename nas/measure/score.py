"""The NTIRE efficient super-resolution challenge score of a model against the challenge's baseline model.

For each of runtime, FLOPs and params the model scores ``exp(2 * m / m_baseline)``; the score is their
weighted sum with the challenge's weights (``WEIGHTS``). Lower is better; the baseline itself scores
``e^2 = 7.389`` whatever the weights. FLOPs are those of the challenge's counter: fvcore for NTIRE 2024 and
later (``Profile.flops_fvcore``). Runtime must be measured in one run with the baseline on one device
(``interleaved_runtimes``): only its ratio enters the score.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from torch import nn

from nas.errors import SrnasError

METRICS = ("runtime", "flops", "params")
# challenge -> weight of each metric (NTIRE 2024 and 2025 used the same weights)
WEIGHTS: dict[str, dict[str, float]] = {
    "ntire2026": {"runtime": 0.8, "flops": 0.1, "params": 0.1},
    "ntire2024-25": {"runtime": 0.7, "flops": 0.15, "params": 0.15},
}


def esr_score(model: Mapping[str, float], baseline: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """``sum_m weights[m] * exp(2 * model[m] / baseline[m])`` over ``METRICS`` (runtime in any one unit)."""
    total = 0.0
    for metric in METRICS:
        if metric not in model or metric not in baseline or metric not in weights:
            raise SrnasError(f"ESR score: {metric!r} is missing from the model, the baseline or the weights")
        base = float(baseline[metric])
        if not base > 0 or not float(model[metric]) >= 0:
            raise SrnasError(f"ESR score: {metric} must be >= 0 and the baseline's > 0 (got {model[metric]}, {base})")
        total += float(weights[metric]) * math.exp(2.0 * float(model[metric]) / base)
    return total


def esr_scores(model: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """The score under every challenge's weights: ``{challenge: score}``."""
    return {name: esr_score(model, baseline, weights) for name, weights in WEIGHTS.items()}


def interleaved_runtimes(
    models: Mapping[str, nn.Module],
    input_size: Sequence[int],
    *,
    device: str = "cpu",
    repeats: int = 10,
    warmup: int = 3,
) -> dict[str, float]:
    """Median forward time (ms) of each model, every model timed once per repeat in turn, so load on a shared
    machine hits all of them alike (``nas.measure.profiler.measure_runtime`` per pass)."""
    from nas.measure.profiler import measure_runtime

    for model in models.values():
        measure_runtime(model, input_size, device=device, repeats=1, warmup=max(0, warmup - 1))
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            times[name].extend(measure_runtime(model, input_size, device=device, repeats=1, warmup=0).times_ms)
    return {name: statistics.median(t) for name, t in times.items()}
