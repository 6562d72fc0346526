"""``PruneConfig`` (the schedule's options) and ``parse_prune_target``, the one parser of pruning targets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from nas.errors import SrnasError, UsageError
from nas.measure.counting import DEFAULT_INPUT_SIZE
from pruning.gates import MODES

TARGETS = ("activations", "params", "flops", "runtime")
IMPORTANCES = ("taylor", "l1", "sensitivity")
COSTS = ("activations", "flops", "params", "latency")  # what importance is normalised by


class PruneTargetError(UsageError):
    """A pruning target that is not exactly one fraction in (0, 1) of a known metric (a usage error: exit 2)."""


@dataclass
class PruneConfig:
    """Schedule options (see ``pruning.schedule``). ``target``: the fraction of the original ``metric`` to keep.

    Defaults are sized for RFDN on a 2-core CPU (about 10 minutes): 3 rounds of 150 fine-tune steps, 1500 final
    steps, batch 8 of 32x32 LR patches, lr 5e-4 (cosine per stage), pure distillation. The learning rate is
    that of RFDN's own training, official checkpoints included: with the unpruned model as the target the
    weights are not pulled off their task, and a pruned RFDN recovers faster with it (measured, 400 steps after
    a one-shot 0.75-activations pruning: Set5 +1.63 dB at 1e-4, +2.07 dB at 5e-4, +2.13 dB at 1e-3, +1.96 dB at
    2e-3).

    ``reconstruct``: after each round's pruning, refit every conv that reads pruned channels by least squares
    to the unpruned model's features (``pruning.reconstruct``) on ``reconstruct_patches`` LR patches of
    ``patch_size``, at most ``reconstruct_rows`` sampled output positions per conv (two forward passes of that
    batch per round: about 20 s for RFDN on a shared 2-core CPU).

    ``feature_weight``: the fine-tunes also distil the unpruned model's block outputs (the trunk features, never
    pruned in coupled mode): the loss gains ``feature_weight *`` their mean L1 distance (``nas.train.features``).
    """

    target: float
    metric: str = "activations"  # activations | params | flops | runtime
    mode: str = "coupled"  # coupled | fine (pruning.gates)
    importance: str = "taylor"  # taylor | l1 | sensitivity (pruning.importance)
    cost: str | None = None  # normalisation: params | flops | activations | latency; None: the target's
    round_to: int = 1  # prune widths in multiples of this
    rounds: int = 3
    round_steps: int = 150
    final_steps: int = 1500
    score_batches: int = 16
    batch_size: int = 8
    patch_size: int = 32
    lr: float = 5e-4
    final_lr: float | None = None  # None: lr
    gt_weight: float = 0.0  # share of the ground truth in the fine-tune target (0: pure distillation)
    feature_weight: float = 0.0  # weight of the block-output (trunk feature) L1 to the teacher's (0: none)
    reconstruct: bool = False  # least-squares refit of the convs reading pruned channels (pruning.reconstruct)
    reconstruct_patches: int = 64
    reconstruct_rows: int = 16384
    reconstruct_ridge: float = 1e-3
    input_size: tuple[int, int, int] = DEFAULT_INPUT_SIZE  # costs and runtime are counted at 1 x input_size
    device: str = "auto"
    repeats: int = 10  # timed passes per runtime measurement
    warmup: int = 3
    ckpt_every: int = 50
    seed: int = 0
    progress: bool = True
    report: bool = True  # time and evaluate the stages into report.json / report.md
    benchmarks: tuple[str, ...] = ("Set5", "Set14")  # reference-kit sets in the report (when present)

    def __post_init__(self) -> None:
        self.input_size = tuple(int(s) for s in self.input_size)  # type: ignore[assignment]
        self.benchmarks = tuple(self.benchmarks)
        check_target(self.metric, self.target)
        _choice("pruning mode", self.mode, MODES)
        _choice("importance", self.importance, IMPORTANCES)
        if self.cost is not None:
            _choice("cost metric", self.cost, COSTS)
        positive = ("round_to", "rounds", "score_batches", "batch_size", "patch_size", "repeats", "ckpt_every")
        for name in (*positive, "reconstruct_patches", "reconstruct_rows"):
            if int(getattr(self, name)) < 1:
                raise SrnasError(f"pruning option {name} must be >= 1, got {getattr(self, name)}")
        for name in ("round_steps", "final_steps", "warmup"):
            if int(getattr(self, name)) < 0:
                raise SrnasError(f"pruning option {name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or (self.final_lr is not None and not self.final_lr > 0):
            raise SrnasError("learning rates must be > 0")
        if not 0.0 <= self.gt_weight <= 1.0:
            raise SrnasError(f"gt_weight must be in [0, 1], got {self.gt_weight}")
        if not (math.isfinite(self.feature_weight) and self.feature_weight >= 0):
            raise SrnasError(f"feature_weight must be a finite number >= 0, got {self.feature_weight}")
        if not self.reconstruct_ridge >= 0:
            raise SrnasError(f"reconstruct_ridge must be >= 0, got {self.reconstruct_ridge}")
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise SrnasError(f"input_size must be three positive integers (C, H, W), got {self.input_size}")

    @property
    def cost_metric(self) -> str:
        return self.cost or ("latency" if self.metric == "runtime" else self.metric)

    @property
    def proxy_metric(self) -> str:
        """What the rounds select on: the target metric, or the latency proxy for runtime."""
        return "latency" if self.metric == "runtime" else self.metric

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["benchmarks"] = list(self.benchmarks)
        return d


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SrnasError(f"unknown {what} {value!r}: expected one of {', '.join(allowed)}")


def check_target(metric: str, fraction: float) -> None:
    """A target is a fraction of the original in (0, 1) of one of ``TARGETS``; ``PruneTargetError`` if not."""
    if metric not in TARGETS:
        raise PruneTargetError(f"unknown pruning target {metric!r}: expected one of {', '.join(TARGETS)}")
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction < 1.0:
        raise PruneTargetError(
            f"target {metric} must be a fraction of the original model in (0, 1), e.g. 0.75; got {fraction!r}"
        )


def parse_prune_target(
    activations: float | None = None,
    params: float | None = None,
    flops: float | None = None,
    runtime: float | None = None,
    *,
    default: tuple[str, float] | None = None,
) -> tuple[str, float]:
    """``(metric, fraction)`` from the ``--target-<metric>`` options, of which exactly one may be set.

    None set: ``default`` when given (e.g. ``("activations", 0.7)``), else an error. Raises
    ``PruneTargetError`` naming the options for two or more, an unknown metric or a fraction outside (0, 1).
    """
    given = {
        k: v
        for k, v in {"activations": activations, "params": params, "flops": flops, "runtime": runtime}.items()
        if v is not None
    }
    if not given and default is not None:
        given = {default[0]: default[1]}
    if len(given) != 1:
        names = ", ".join(f"--target-{t}" for t in TARGETS)
        got = f"got {', '.join(f'--target-{k}' for k in given)}" if given else "got none"
        raise PruneTargetError(f"give exactly one pruning target ({names}); {got}")
    metric, fraction = next(iter(given.items()))
    check_target(metric, fraction)
    return metric, float(fraction)
