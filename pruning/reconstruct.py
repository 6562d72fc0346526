"""Layer-wise least-squares reconstruction (He et al. 2017 channel pruning; ThiNet): after a pruning step,
refit every conv that reads pruned channels so that its output on calibration patches matches the unpruned
model's output at the same conv, in closed form.

For a conv with kept input channels ``I`` and kept output channels ``O`` the features are the im2col-unfolded
inputs of the *pruned* (gated) model restricted to ``I`` (plus a column of ones for the bias), ``A``, and the
targets are the unpruned model's raw outputs of ``O``, ``Y``. The refit solves
``min ||A W - Y||^2 + ridge * mean(diag(A^T A)) * ||W||^2`` (the bias is not penalised) from the normal
equations in float64 (Cholesky; least squares when singular).

It costs two forward passes of the calibration batch, whatever the depth:

1. the unpruned model runs once; hooks keep, per refit conv, its outputs at ``rows`` sampled output positions
   (ThiNet samples positions too: a few thousand rows per unknown column are plenty);
2. the gated model runs once with a hook before every refit conv: the conv's input (as the pruned model
   computes it, i.e. with every conv before it already refit: errors do not accumulate) is unfolded at the
   same positions, in chunks of the batch so the im2col memory stays small, the normal equations are solved
   and the refit is written *before the conv runs*, so the rest of the pass sees it.

A refit is kept only when it lowers the conv's calibration error (by more than ``IMPROVEMENT``, so rounding
noise never decides), and the whole reconstruction is undone when the network's output on the calibration
batch is further from the unpruned model's than before (one more gated pass): reconstruction never makes the
calibration error larger. A conv called several times per pass is refit at its last call on the features of
all its calls. Depthwise, grouped and image-space convs are skipped with their reason: they act channel by
channel or are never pruned.

Gate values are respected: inputs are read behind the gates (as the conv receives them), outputs are matched
before the output gate, so the gated model's conv output matches and ``pruning.shrink`` folds the gates as
before.
"""

from __future__ import annotations

import time
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
ROWS = 16384  # sampled output positions per conv call (rows of the least-squares problem)
UNFOLD_ELEMENTS = 1 << 23  # im2col chunk size (floats) so memory stays bounded for large batches


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
    output_mse_before: float = 0.0  # network output vs the unpruned model's on the calibration batch
    output_mse_after: float = 0.0
    reverted: bool = False  # the refits made the output error larger: all undone
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``state.json``: counts and the error reduction, per conv only as totals."""
        before = sum(f.mse_before for f in self.fits)
        after = sum(f.mse_after if f.kept else f.mse_before for f in self.fits)
        return {
            "refit": 0 if self.reverted else sum(f.kept for f in self.fits),
            "rejected": sum(not f.kept for f in self.fits),
            "skipped": len(self.skipped),
            "patches": self.patches,
            "mse_before": before,
            "mse_after": before if self.reverted else after,
            "output_mse_before": self.output_mse_before,
            "output_mse_after": self.output_mse_after,
            "reverted": self.reverted,
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
        """The ridge solution; the first ``penalised`` columns are penalised (the bias column is not).
        Cholesky when the system is positive definite, else the least-squares (minimum-norm) solution."""
        gram = self.gram.clone()
        if ridge > 0 and penalised:
            scale = float(torch.diagonal(gram)[:penalised].mean()) or 1.0
            idx = torch.arange(penalised)
            gram[idx, idx] += ridge * scale
        factor, info = torch.linalg.cholesky_ex(gram)
        if int(info) == 0:
            return torch.cholesky_solve(self.cross, factor)
        return torch.linalg.lstsq(gram, self.cross, driver="gelsd").solution


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


def unfold_rows(conv: nn.Conv2d, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """The rows ``rows`` (sorted indices into ``unfold_input(conv, x)``; None: all) of the im2col of ``x``,
    unfolding a few images at a time so at most about ``UNFOLD_ELEMENTS`` floats are unfolded at once."""
    n = x.shape[0]
    cols = x.shape[1] * int(np.prod(conv.kernel_size))
    per_image = unfold_input(conv, x[:1, :1]).shape[0]  # output positions per image
    step = max(1, UNFOLD_ELEMENTS // max(per_image * cols, 1))
    parts = []
    for start in range(0, n, step):
        a = unfold_input(conv, x[start : start + step])
        if rows is not None:
            lo, hi = start * per_image, (start + step) * per_image
            sel = rows[(rows >= lo) & (rows < hi)] - lo
            a = a[sel.to(a.device)]
        parts.append(a)
    return torch.cat(parts)


def _rows(y: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N * H * W, C)``, the row order of ``unfold_input``."""
    return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])


def sample_rows(total: int, count: int, generator: torch.Generator) -> torch.Tensor | None:
    """``count`` sorted distinct row indices out of ``total`` (None: all of them, when ``total <= count``)."""
    if total <= count:
        return None
    return torch.randperm(total, generator=generator)[:count].sort().values


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


class _Refit:
    """One target conv during the passes: its sampled rows and teacher outputs per call, its normal equations."""

    def __init__(self, target: _Target, conv: nn.Conv2d, seed: int) -> None:
        self.target, self.conv = target, conv
        self.in_idx = torch.from_numpy(np.flatnonzero(target.in_keep))
        self.out_idx = torch.from_numpy(np.flatnonzero(target.out_keep))
        self.kk = int(np.prod(conv.kernel_size))
        self.bias = conv.bias is not None
        self.eq = NormalEquations(len(self.in_idx) * self.kk + self.bias, len(self.out_idx))
        self.generator = torch.Generator().manual_seed(seed)
        self.rows: list[torch.Tensor | None] = []  # per call: sampled rows (teacher pass)
        self.targets: list[torch.Tensor] = []  # per call: the teacher's outputs at those rows
        self.seen = 0  # calls seen in the gated pass
        self.fit: ConvFit | None = None

    def record_teacher(self, y: torch.Tensor, count: int) -> None:
        rows = sample_rows(y.shape[0] * y.shape[2] * y.shape[3], count, self.generator)
        target = _rows(y[:, self.out_idx.to(y.device)])
        self.rows.append(rows)
        self.targets.append(target if rows is None else target[rows.to(target.device)])

    def add_input(self, x: torch.Tensor, ridge: float) -> None:
        """One call's gated input; after the last call, solve and write the refit (before the conv runs)."""
        if self.seen >= len(self.rows):
            raise ReconstructError(f"reconstruction: {self.target.name} runs more often in the pruned model")
        a = unfold_rows(self.conv, x[:, self.in_idx.to(x.device)], self.rows[self.seen])
        if self.bias:
            a = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
        self.eq.add(a, self.targets[self.seen])
        self.seen += 1
        if self.seen == self.target.calls:
            self.fit = self._solve(ridge)

    def _solve(self, ridge: float) -> ConvFit:
        conv, in_idx, out_idx = self.conv, self.in_idx, self.out_idx
        n_in = len(in_idx)
        w0 = conv.weight.detach()[out_idx][:, in_idx].reshape(len(out_idx), -1).T.double().cpu()
        if self.bias:
            w0 = torch.cat([w0, conv.bias.detach()[out_idx].double().cpu().view(1, -1)])
        w = self.eq.solve(ridge, n_in * self.kk)
        before, after = self.eq.error(w0), self.eq.error(w)
        kept = bool(torch.isfinite(w).all()) and after < before * (1 - IMPROVEMENT)
        if kept:
            dev_out, dev_in = out_idx.to(conv.weight.device), in_idx.to(conv.weight.device)
            weight = w[: n_in * self.kk].T.reshape(len(out_idx), n_in, *conv.kernel_size).to(conv.weight)
            rows = conv.weight[dev_out]
            rows[:, dev_in] = weight
            conv.weight[dev_out] = rows
            if self.bias:
                conv.bias[dev_out] = w[-1].to(conv.bias)
        return ConvFit(self.target.name, n_in, len(out_idx), before, after, kept)


def _hooked_pass(model: nn.Module, hooks: dict[nn.Module, Any], x: torch.Tensor, pre: bool) -> torch.Tensor:
    """``model(x)`` with ``hooks`` (module -> callable) as forward pre-hooks (``pre``) or forward hooks."""
    if pre:
        handles = [m.register_forward_pre_hook(lambda mod, args, f=f: f(args[0])) for m, f in hooks.items()]
    else:
        handles = [m.register_forward_hook(lambda mod, args, out, f=f: f(out)) for m, f in hooks.items()]
    try:
        return model(x)
    finally:
        for h in handles:
            h.remove()


def reconstruct(
    gated: GatedModel,
    teacher: nn.Module,
    patches: torch.Tensor,
    *,
    ridge: float = 1e-3,
    rows: int = ROWS,
    seed: int = 0,
) -> ReconstructSummary:
    """Refit, in place, every conv of ``gated`` that reads pruned channels to ``teacher``'s (the unpruned
    model's) outputs on the LR ``patches`` (``N x C x H x W``, one batch), using at most ``rows`` sampled
    output positions per conv call; see the module docstring."""
    if len(patches) == 0:
        raise ReconstructError("reconstruction needs at least one calibration patch")
    start = time.time()
    targets, skipped = refit_targets(gated)
    summary = ReconstructSummary(skipped=skipped, patches=len(patches))
    modules, teacher_modules = dict(gated.model.named_modules()), dict(teacher.named_modules())
    refits = [_Refit(t, modules[t.name], seed + 1009 * i) for i, t in enumerate(targets)]
    flags = [(m, m.training) for m in (*gated.modules(), *teacher.modules())]
    saved = {r.target.name: [p.detach().clone() for p in r.conv.parameters(recurse=False)] for r in refits}
    try:
        gated.eval()
        teacher.eval()
        with torch.no_grad():
            x = patches.to(gated.gate_values.device)
            want = {teacher_modules[r.target.name]: (lambda y, r=r: r.record_teacher(y, rows)) for r in refits}
            reference = _hooked_pass(teacher, want, x, pre=False)
            summary.output_mse_before = float(F.mse_loss(gated(x), reference))
            out = _hooked_pass(gated, {r.conv: (lambda a, r=r: r.add_input(a, ridge)) for r in refits}, x, pre=True)
            missing = [r.target.name for r in refits if r.fit is None]
            if missing:
                raise ReconstructError(f"reconstruction: {', '.join(missing[:4])} did not run in the pruned model")
            if any(r.target.calls > 1 for r in refits):  # earlier calls ran with the old weights
                out = gated(x)
            summary.output_mse_after = float(F.mse_loss(out, reference))
            summary.fits = [r.fit for r in refits]
            if summary.output_mse_after > summary.output_mse_before:
                summary.reverted = True
                summary.output_mse_after = summary.output_mse_before
                for r in refits:
                    for p, old in zip(r.conv.parameters(recurse=False), saved[r.target.name], strict=True):
                        p.copy_(old)
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
    rows: int = ROWS,
) -> ReconstructSummary:
    """``reconstruct`` on ``patches`` calibration patches drawn from ``data`` (what the schedule runs)."""
    x = calibration_patches(data, patches, patch_size, seed)
    return reconstruct(gated, teacher, x, ridge=ridge, rows=rows, seed=seed)
