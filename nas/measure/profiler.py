"""Complexity and speed of a model as ``srnas profile`` reports them (counting rules: ``nas.measure.counting``).

Runtime. The challenges' ``test_demo.py`` times *one* forward pass per validation image (CUDA events
around ``model(img)`` then ``torch.cuda.synchronize()``; ``time.time()`` off CUDA since NTIRE2025), takes
the arithmetic mean over the ~100 images (no warm-up, no best-of-N), and reports ``Ave Time`` as the mean
of the valid and test means; memory is ``torch.cuda.max_memory_allocated() / 1024**2`` over the whole
run. Here there is one fixed random input, so ``runtime_mean_ms`` (the mean over ``repeats`` timed passes
after ``warmup`` untimed ones) is the challenge-style number, ``runtime_ms`` the median (robust, what to
compare between runs) and ``runtime_min_ms`` the best pass. The AIM 2020 report instead averages over the
images and keeps "the best one among three consecutive trials": ``runtime_best3_mean_ms`` splits the timed
passes into three consecutive trials and reports the lowest trial mean. ``memory_mb`` is the CUDA peak allocated
during the timed passes (weights, input and activations), ``None`` off CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nas.device import resolve_device
from nas.errors import SrnasError
from nas.measure import counting
from nas.measure.counting import DEFAULT_INPUT_SIZE, InputSize, einsum_flops

# Module globals so that tests can replace them.
_count_on_meta = counting.count_on_meta
_count_on_device = counting.count_on_device

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "Counts",
    "InputSize",
    "Profile",
    "Timing",
    "check_device",
    "count_complexity",
    "einsum_flops",
    "measure_runtime",
    "profile_model",
]

# ---------------------------------------------------------------- public API


@dataclass(frozen=True)
class Counts:
    """The device-independent complexity numbers."""

    params: int
    flops: int
    flops_fvcore: int
    activations: int
    num_conv: int
    flops_by_op: dict[str, int] = field(default_factory=dict)
    flops_fvcore_by_op: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Timing:
    """Per-pass wall times of ``repeats`` timed forward passes."""

    times_ms: list[float]
    memory_mb: float | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def best3_mean_ms(self) -> float:
        """AIM 2020: the passes split into three consecutive trials; the lowest trial mean."""
        n = len(self.times_ms)
        if n < 3:
            return self.mean_ms
        bounds = [round(i * n / 3) for i in range(4)]
        return min(statistics.fmean(self.times_ms[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))


@dataclass(frozen=True)
class Profile:
    """Everything ``srnas profile`` reports about one model (see the module docstring for definitions)."""

    params: int
    flops: int
    flops_fvcore: int
    activations: int
    num_conv: int
    input_size: InputSize
    device: str
    torch_version: str
    flops_by_op: dict[str, int] = field(default_factory=dict)
    flops_fvcore_by_op: dict[str, int] = field(default_factory=dict)
    runtime_ms: float | None = None  # median of the timed passes
    runtime_mean_ms: float | None = None  # mean of the timed passes: the challenge-style number
    runtime_min_ms: float | None = None
    runtime_best3_mean_ms: float | None = None  # AIM 2020: best of three consecutive trials' means
    repeats: int | None = None
    memory_mb: float | None = None  # CUDA peak allocated, MiB

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out


def check_device(device: str | torch.device) -> torch.device:
    """A ``torch.device`` (``auto``: CUDA when present); asking for CUDA on a machine without it is an SrnasError."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def count_complexity(model: nn.Module, input_size: Sequence[int] = DEFAULT_INPUT_SIZE) -> Counts:
    """Params, both FLOP conventions, activations and #conv for one ``1 x input_size`` forward pass."""
    size = _check_size(input_size)
    with _eval_mode(model):
        try:
            summary, fvcore = _count_on_meta(model, size)
        except Exception:  # noqa: BLE001 - anything meta cannot run: count with a real forward pass
            summary, fvcore = _count_on_device(model, size)
    return Counts(
        params=sum(p.numel() for p in model.parameters()),
        flops=sum(summary.by_op.values()),
        flops_fvcore=sum(fvcore.by_op.values()),
        activations=summary.activations,
        num_conv=summary.num_conv,
        flops_by_op=dict(summary.by_op),
        flops_fvcore_by_op=dict(fvcore.by_op),
    )


def measure_runtime(
    model: nn.Module,
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    *,
    device: str | torch.device = "cpu",
    repeats: int = 10,
    warmup: int = 3,
    memory: bool = False,
) -> Timing:
    """Time ``repeats`` forward passes (after ``warmup``) of a ``torch.rand(1, *input_size)`` input.

    CUDA: CUDA events around each pass and a synchronize after it; otherwise ``time.perf_counter``.
    ``memory`` (CUDA only) records the peak allocated memory of the timed passes. The model is not
    modified: a copy is moved when its parameters live on another device.
    """
    size = _check_size(input_size)
    if repeats < 1 or warmup < 0:
        raise SrnasError(f"repeats must be >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    dev = check_device(device)
    net = model if _on_device(model, dev) else copy.deepcopy(model).to(dev)
    x = torch.rand(1, *size, generator=torch.Generator().manual_seed(0)).to(dev)
    cuda = dev.type == "cuda"
    times: list[float] = []
    on_device = torch.cuda.device(dev) if cuda else contextlib.nullcontext()  # events on dev's stream
    with on_device, _eval_mode(net), torch.inference_mode():
        for _ in range(warmup):
            net(x)
        if cuda:
            torch.cuda.synchronize(dev)
            if memory:
                torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                net(x)
                end.record()
                torch.cuda.synchronize(dev)
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                net(x)
                times.append((time.perf_counter() - t0) * 1000.0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda and memory else None
    return Timing(times, peak)


def profile_model(
    model: nn.Module,
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    *,
    device: str | torch.device = "cpu",
    runtime: bool = False,
    repeats: int = 10,
    warmup: int = 3,
    memory: bool = False,
) -> Profile:
    """Counts (always), plus runtime (``runtime``) and CUDA peak memory (``memory``) on ``device``."""
    size = _check_size(input_size)
    dev = check_device(device)
    counts = count_complexity(model, size)
    timing = None
    if runtime or (memory and dev.type == "cuda"):
        timing = measure_runtime(
            model, size, device=dev, repeats=repeats if runtime else 1, warmup=warmup, memory=memory
        )
    return Profile(
        params=counts.params,
        flops=counts.flops,
        flops_fvcore=counts.flops_fvcore,
        activations=counts.activations,
        num_conv=counts.num_conv,
        input_size=size,
        device=str(dev),
        torch_version=torch.__version__,
        flops_by_op=counts.flops_by_op,
        flops_fvcore_by_op=counts.flops_fvcore_by_op,
        runtime_ms=timing.median_ms if runtime else None,
        runtime_mean_ms=timing.mean_ms if runtime else None,
        runtime_min_ms=timing.min_ms if runtime else None,
        runtime_best3_mean_ms=timing.best3_mean_ms if runtime else None,
        repeats=repeats if runtime else None,
        memory_mb=timing.memory_mb if timing is not None else None,
    )


# ---------------------------------------------------------------- helpers


def _check_size(input_size: Sequence[int]) -> InputSize:
    size = tuple(input_size)
    if len(size) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise SrnasError(f"input_size must be three positive integers (C, H, W), got {input_size!r}")
    return size  # type: ignore[return-value]


class _eval_mode:
    """``model.eval()`` inside the block; every submodule's own training flag restored afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.flags = [(m, m.training) for m in self.model.modules()]
        return self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for m, flag in self.flags:
            m.training = flag


def _on_device(model: nn.Module, dev: torch.device) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return all(t.device.type == dev.type and (dev.index is None or t.device.index == dev.index) for t in tensors)
