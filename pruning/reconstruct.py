"""Layer-wise least-squares reconstruction (He et al. 2017 channel pruning; ThiNet): after a pruning step,
refit every conv that reads pruned channels so that its output on calibration patches matches the unpruned
model's output at the same conv, in closed form.

For a conv with kept input channels ``I`` and kept output channels ``O`` the features are the im2col-unfolded
inputs of the *pruned* (gated) model restricted to ``I`` (plus a column of ones for the bias), ``A``, and the
targets are the unpruned model's raw outputs of ``O``, ``Y``. The refit solves
``min ||A W - Y||^2 + ridge * mean(diag(A^T A)) * ||W||^2`` (the bias is not penalised) from the normal
equations accumulated over the batches, so memory does not grow with the number of patches. Convs are refit
in call order, each on the inputs the already refit convs before it produce (errors do not accumulate). A
refit is kept only when it lowers the conv's calibration error (by more than ``IMPROVEMENT``, so
rounding noise never decides). Depthwise, grouped and image-space convs are
skipped with their reason: they act channel by channel or are never pruned.

Gate values are respected: inputs are read behind the gates (as the conv receives them), outputs are matched
before the output gate, so the gated model's conv output matches and ``pruning.shrink`` folds the gates as
before.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.data import PairedImages, PatchBatches
from nas.errors import SrnasError
from pruning.gates import GatedModel
from pruning.shrink import layout

IMPROVEMENT = 1e-6  # a refit is written when it lowers the calibration error by more than this share (no ties)


class ReconstructError(SrnasError):
    """Least-squares reconstruction could not run (no calibration data, a conv the model never calls...)."""


@dataclass
class ConvFit:
    """One refit conv: calibration MSE of its kept outputs before and after, and whether the refit was kept."""

    name: str
    inputs: int  # kept input channels
    outputs: int  # kept output channels
    mse_before: float
    mse_after: float
    kept: bool


@dataclass
class ReconstructSummary:
    fits: list[ConvFit] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # conv -> why it was not refit
    patches: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``state.json``: counts and the error reduction, per conv only as totals."""
        before = sum(f.mse_before for f in self.fits)
        after = sum(f.mse_after if f.kept else f.mse_before for f in self.fits)
        return {
            "refit": sum(f.kept for f in self.fits),
            "rejected": sum(not f.kept for f in self.fits),
            "skipped": len(self.skipped),
            "patches": self.patches,
            "mse_before": before,
            "mse_after": after,
            "seconds": round(self.seconds, 2),
        }


class NormalEquations:
    """``A^T A``, ``A^T Y`` and ``sum(Y^2)`` accumulated in float64 over batches of rows."""

    def __init__(self, cols: int, outputs: int) -> None:
        self.gram = torch.zeros(cols, cols, dtype=torch.float64)
        self.cross = torch.zeros(cols, outputs, dtype=torch.float64)
        self.yy = 0.0
        self.rows = 0

    def add(self, a: torch.Tensor, y: torch.Tensor) -> None:
        a, y = a.double().cpu(), y.double().cpu()
        self.gram += a.T @ a
        self.cross += a.T @ y
        self.yy += float((y * y).sum())
        self.rows += a.shape[0]

    def error(self, w: torch.Tensor) -> float:
        """Mean squared error of ``A w`` against ``Y`` per target element."""
        w = w.double()
        sse = float((w * (self.gram @ w)).sum() - 2 * (w * self.cross).sum()) + self.yy
        return max(sse, 0.0) / max(self.rows * self.cross.shape[1], 1)

    def solve(self, ridge: float, penalised: int) -> torch.Tensor:
        """The ridge solution; the first ``penalised`` columns are penalised (the bias column is not)."""
        gram = self.gram.clone()
        if ridge > 0 and penalised:
            scale = float(torch.diagonal(gram)[:penalised].mean()) or 1.0
            idx = torch.arange(penalised)
            gram[idx, idx] += ridge * scale
        return torch.linalg.lstsq(gram, self.cross).solution


def unfold_input(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """im2col of a conv's input: ``(N * L, C_in * kh * kw)`` rows, columns in the order of ``weight.view(O, -1)``."""
    padding = conv.padding
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    if isinstance(padding, str):  # "same" / "valid"
        if padding == "valid":
            padding = 0
        else:
            total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
            x = F.pad(x, [total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2])
            padding = 0
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _rows(y: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N * H * W, C)``, the row order of ``unfold_input``."""
    return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])


@dataclass
class _Target:
    name: str
    calls: int
    in_keep: np.ndarray  # bool per input channel
    out_keep: np.ndarray  # bool per output channel


def refit_targets(gated: GatedModel) -> tuple[list[_Target], dict[str, str]]:
    """The convs to refit (they read pruned channels), in call order, and the skipped convs with a reason."""
    _, alive, layouts = layout(gated)
    skipped: dict[str, str] = {}
    order = list(dict.fromkeys(c.module for c in gated.graph.calls if c.kind == "conv"))
    targets = []
    for name in order:
        conv = gated.graph.convs.get(name)
        if conv is None:
            continue
        if conv.kind != "conv":
            if not alive[conv.in_units].all():
                why = "per-channel (depthwise)" if conv.kind == "depthwise" else "grouped or image-space conv"
                skipped[name] = f"{why}: nothing to refit"
            continue
        lay = layouts[name]
        original = np.ones(len(conv.in_units), dtype=bool)
        if (lay["in_keep"] == original).all() or not lay["out_keep"].any() or not lay["in_keep"].any():
            continue
        targets.append(_Target(name, conv.calls, lay["in_keep"], lay["out_keep"]))
    return targets, skipped


class _Stop(Exception):
    """Ends a forward pass once the conv of interest has run."""


def _capture(model: nn.Module, module: nn.Module, calls: int, x: torch.Tensor, want: str) -> list[torch.Tensor]:
    """The inputs (``want="in"``, as the conv receives them) or raw outputs of ``module`` for every call of
    one forward pass of ``model`` on ``x``, stopping the pass after the last call."""
    got: list[torch.Tensor] = []

    def keep(t: torch.Tensor) -> None:
        got.append(t.detach())
        if len(got) == calls:
            raise _Stop

    def pre_hook(m: nn.Module, args: tuple) -> None:
        keep(args[0])

    def post_hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        keep(out)

    # registered after the gates' own hooks: the input as the gated conv receives it
    handle = module.register_forward_pre_hook(pre_hook) if want == "in" else module.register_forward_hook(post_hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if len(got) != calls:
        raise ReconstructError(f"reconstruction: expected {calls} call(s) of a conv per pass, saw {len(got)}")
    return got


def _batches(patches: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(patches), batch_size):
        yield patches[i : i + batch_size]


def _fit(gated: GatedModel, teacher: nn.Module, target: _Target, patches: torch.Tensor, batch: int, ridge: float):
    """Accumulate one conv's normal equations over the patches, solve, and write the refit when it helps."""
    modules, teacher_modules = dict(gated.model.named_modules()), dict(teacher.named_modules())
    conv, ref = modules[target.name], teacher_modules[target.name]
    kk = int(np.prod(conv.kernel_size))
    in_idx = torch.from_numpy(np.flatnonzero(target.in_keep))
    out_idx = torch.from_numpy(np.flatnonzero(target.out_keep))
    n_in = len(in_idx)
    eq = NormalEquations(n_in * kk + (conv.bias is not None), len(out_idx))
    device = conv.weight.device
    for x in _batches(patches, batch):
        x = x.to(device)
        inputs = _capture(gated, conv, target.calls, x, "in")
        outputs = _capture(teacher, ref, target.calls, x, "out")
        for xin, y in zip(inputs, outputs, strict=True):
            a = unfold_input(conv, xin[:, in_idx])
            if conv.bias is not None:
                a = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
            eq.add(a, _rows(y[:, out_idx]))
    w0 = conv.weight.detach()[out_idx][:, in_idx].reshape(len(out_idx), -1).T.double().cpu()
    if conv.bias is not None:
        w0 = torch.cat([w0, conv.bias.detach()[out_idx].double().cpu().view(1, -1)])
    w = eq.solve(ridge, n_in * kk)
    before, after = eq.error(w0), eq.error(w)
    kept = bool(torch.isfinite(w).all()) and after < before * (1 - IMPROVEMENT)
    if kept:
        with torch.no_grad():
            weight = w[: n_in * kk].T.reshape(len(out_idx), n_in, *conv.kernel_size).to(conv.weight)
            rows = conv.weight[out_idx]
            rows[:, in_idx] = weight
            conv.weight[out_idx] = rows
            if conv.bias is not None:
                conv.bias[out_idx] = w[-1].to(conv.bias)
    return ConvFit(target.name, n_in, len(out_idx), before, after, kept)


def reconstruct(
    gated: GatedModel, teacher: nn.Module, patches: torch.Tensor, *, ridge: float = 1e-3, batch_size: int = 32
) -> ReconstructSummary:
    """Refit, in place, every conv of ``gated`` that reads pruned channels to ``teacher``'s (the unpruned
    model's) outputs on the LR ``patches`` (``N x C x H x W``); see the module docstring."""
    if len(patches) == 0:
        raise ReconstructError("reconstruction needs at least one calibration patch")
    start = time.time()
    targets, skipped = refit_targets(gated)
    summary = ReconstructSummary(skipped=skipped, patches=len(patches))
    flags = [(m, m.training) for m in (*gated.modules(), *teacher.modules())]
    try:
        gated.eval()
        teacher.eval()
        with torch.no_grad():
            for target in targets:
                summary.fits.append(_fit(gated, teacher, target, patches, batch_size, ridge))
    finally:
        for m, flag in flags:
            m.training = flag
    summary.seconds = time.time() - start
    return summary


def calibration_patches(data: PairedImages, count: int, patch_size: int, seed: int) -> torch.Tensor:
    """``count`` random LR patches (``count x 3 x P x P``) of ``data``, the same for the same seed."""
    batches = PatchBatches(data, min(count, 32), patch_size, seed)
    lrs = [lr for _, lr, _ in batches.iterate(0, -(-count // batches.batch_size))]
    return torch.cat(lrs)[:count]


def reconstruct_gated(
    gated: GatedModel,
    teacher: nn.Module,
    data: PairedImages,
    *,
    patches: int,
    patch_size: int,
    ridge: float,
    seed: int,
) -> ReconstructSummary:
    """``reconstruct`` on ``patches`` calibration patches drawn from ``data`` (what the schedule runs)."""
    return reconstruct(gated, teacher, calibration_patches(data, patches, patch_size, seed), ridge=ridge)
