"""What each gate entry is worth (importance) and what it costs, so a prune loop can rank and hit a target.

Scores are flat tensors over ``GatedModel.gate_values`` entries (``per_gate`` splits them by gate name);
a unit is one entry: one conv's output or input unit (fine) or one channel-space unit (coupled). Image and
frozen units have no entries, so they are never scored. Pruned entries score 0.

- ``TaylorImportance``: Gate Decorator's |g * dL/dg|, summed over the batches it has seen (call
  ``accumulate()`` after each ``loss.backward()``); ``taylor_scores`` runs it over patch batches of a data set.
- ``sensitivity_scores``: squared gate gradients of a random projection of the output (the linearised output
  change of removing each entry; no ground truth).
- ``l1_importance``: the L1 norm of the conv weights each entry multiplies (rows for output units, columns
  for input units; coupled: all of them), the cheap data-free alternative.
- ``CostModel`` / ``cost_of``: params, FLOPs, activations, #conv and a latency proxy of the model
  ``shrink(gated)`` would return, computed analytically from the gates (no shrinking), exactly as
  ``nas.measure.profiler.count_complexity`` counts them; ``unit_costs`` the cost each entry alone removes, to
  normalise scores by (``normalized``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from nas.data import PairedImages, PatchBatches
from nas.errors import SrnasError
from nas.measure.counting import DEFAULT_INPUT_SIZE
from nas.train import l1_loss
from pruning.gates import GatedModel
from pruning.graph import COUNTED

METRICS = ("params", "flops", "activations", "num_conv", "latency")
# latency proxy = flops + LATENCY_ELEMENT_COST * activations: SR convs are memory bound; writing and reading one
# fp32 output element costs about as long as 64 MACs on a current GPU (bandwidth / MAC throughput ~ 1/64)
LATENCY_ELEMENT_COST = 64.0
Metric = str | Mapping[str, float]


def per_gate(gated: GatedModel, flat: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
    """Split a flat per-entry vector by gate name."""
    flat = torch.as_tensor(flat)
    return {name: flat[g.slice] for name, g in gated.gates.items()}


class TaylorImportance:
    """Accumulates |g * dL/dg| per entry (Gate Decorator); masked entries stay 0."""

    def __init__(self, gated: GatedModel) -> None:
        self.gated = gated
        self.total = torch.zeros(gated.num_entries, dtype=torch.float64)
        self.batches = 0

    def accumulate(self) -> None:
        grad = self.gated.gate_values.grad
        if grad is None:
            raise SrnasError("no gate gradients: run loss.backward() on the gated model's output first")
        g = self.gated.effective()
        self.total += (g * grad.detach()).abs().double().cpu()
        self.batches += 1

    def scores(self) -> torch.Tensor:
        return self.total * (self.gated.effective() != 0).cpu()

    def reset(self) -> None:
        self.total.zero_()
        self.batches = 0


def taylor_scores(
    gated: GatedModel, data: PairedImages, batches: int, batch_size: int, patch_size: int, seed: int
) -> np.ndarray:
    """Gate Decorator scores over ``batches`` patch batches (ground-truth L1 loss, eval mode, weights untouched)."""
    taylor = TaylorImportance(gated)
    for lr, hr in _gate_gradients(gated, data, batches, batch_size, patch_size, seed):
        l1_loss(gated(lr), hr).backward()
        taylor.accumulate()
    return taylor.scores().numpy()


def sensitivity_scores(
    gated: GatedModel, data: PairedImages, batches: int, batch_size: int, patch_size: int, seed: int
) -> np.ndarray:
    """Output sensitivity: per entry, sum over batches of ``(g * d<v, f(x)>/dg)^2`` with ``v ~ N(0, 1)`` drawn anew
    per batch. Its expectation is the squared norm of the output change that removing the entry causes, to first
    order (``E_v[(J^T v)^2] = |J|^2``): how much the model's own output depends on the unit, needing no ground
    truth and no nonzero loss, where Taylor's ``|g dL/dg|`` ranks by the ground-truth error's first-order change
    (which cancels across samples and ignores what the teacher computes)."""
    total = torch.zeros(gated.num_entries, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed + 1)
    for lr, _ in _gate_gradients(gated, data, batches, batch_size, patch_size, seed):
        out = gated(lr)
        v = torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)
        (out * v).sum().backward()
        total += (gated.effective() * gated.gate_values.grad.detach()).double().cpu() ** 2
    return (total * (gated.effective() != 0).cpu()).numpy()


def _gate_gradients(
    gated: GatedModel, data: PairedImages, batches: int, batch_size: int, patch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(lr, hr)`` patch batches on the gates' device with only the gates requiring grad (eval mode, grads
    cleared before each batch); the model's flags and mode are restored afterwards."""
    device, dtype = gated.gate_values.device, gated.gate_values.dtype
    params = list(gated.model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = gated.training
    gated.eval()
    for p in params:
        p.requires_grad_(False)
    gated.gate_values.requires_grad_(True)
    try:
        for _, lr, hr in PatchBatches(data, batch_size, patch_size, seed).iterate(0, batches):
            gated.gate_values.grad = None
            yield lr.to(device, dtype), hr.to(device, dtype)
    finally:
        gated.gate_values.requires_grad_(False)
        gated.gate_values.grad = None
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        gated.train(was_training)


def l1_importance(gated: GatedModel) -> torch.Tensor:
    """Per entry: sum of |w| over the conv weights it scales (output rows, input columns)."""
    modules = dict(gated.model.named_modules())
    total = np.zeros(gated.num_entries + 1)
    for name, port in gated.ports.items():
        w = modules[name].weight.detach().abs().double().cpu()
        total += np.bincount(port["out"], weights=w.sum((1, 2, 3)).numpy(), minlength=gated.num_entries + 1)
        total += np.bincount(port["in"], weights=w.sum((0, 2, 3)).numpy(), minlength=gated.num_entries + 1)
    return torch.from_numpy(total[:-1]) * (gated.effective() != 0).cpu()


def normalized(scores: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """``scores / costs``; pruned entries (score 0) give 0; entries that save nothing (cost 0) give +inf."""
    scores, costs = scores.double(), costs.double()
    out = torch.where(costs > 0, scores / costs.clamp_min(1e-30), torch.full_like(scores, math.inf))
    return torch.where(scores == 0, torch.zeros_like(out), out)


def _weights(metric: Metric) -> dict[str, float]:
    if isinstance(metric, str):
        if metric not in METRICS:
            raise SrnasError(f"unknown cost metric {metric!r}; known: {', '.join(METRICS)} (or a mapping of weights)")
        return {"flops": 1.0, "activations": LATENCY_ELEMENT_COST} if metric == "latency" else {metric: 1.0}
    bad = [k for k in metric if k not in METRICS or k == "latency"]
    if bad:
        raise SrnasError(f"unknown cost metric(s) {bad}; known: {', '.join(METRICS[:-1])}")
    return dict(metric)


class CostModel:
    """Analytic complexity of ``shrink(gated)`` for any pattern of nonzero entries, at one input size."""

    def __init__(self, gated: GatedModel, input_size: Sequence[int] = DEFAULT_INPUT_SIZE) -> None:
        self.gated = gated
        self.input_size = tuple(input_size)
        graph = gated.graph
        modules = dict(gated.model.named_modules())
        spatial, linear_flops = _call_spatial(gated, self.input_size)
        self.const = Counter({"params": sum(p.numel() for p in gated.model.parameters()), "flops": linear_flops})
        seg_units: list[np.ndarray] = []
        seg_entries: list[np.ndarray] = []
        none = gated.num_entries

        def segment(units: np.ndarray, entries: np.ndarray | None = None) -> int:
            seg_units.append(units)
            seg_entries.append(np.full(len(units), none, np.int64) if entries is None else entries)
            return len(seg_units) - 1

        # per prunable module: its segments and parameter coefficients (old params removed from the constant)
        # per conv: segments (out_alive, out_keep, in_alive, in_keep), k*k, has bias, depthwise
        self.convs: list[tuple[int, int, int, int, int, bool, bool]] = []
        conv_seg: dict[str, tuple] = {}
        norm_seg: dict[str, int] = {}
        for conv in graph.convs.values():
            m = modules[conv.name]
            k2 = math.prod(m.kernel_size)
            if conv.kind == "fixed":
                continue
            self.const["params"] -= m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
            if conv.kind == "depthwise":
                s = segment(conv.out_units)
                conv_seg[conv.name] = ("dw", s, k2)
                self.convs.append((s, s, s, s, k2, m.bias is not None, True))
                continue
            port = gated.ports[conv.name]
            in_entries = port["in"] if gated.mode == "fine" else None
            segs = (segment(conv.out_units), segment(conv.out_units, port["out"]), segment(conv.in_units))
            segs = (*segs, segment(conv.in_units, in_entries))
            conv_seg[conv.name] = ("conv", segs, k2, conv.norm is not None)
            self.convs.append((*segs, k2, m.bias is not None, False))
        self.norms: list[tuple[int, int]] = []  # segment, params per channel
        for norm in graph.norms.values():
            if norm.kind == "depthwise":
                continue
            m = modules[norm.name]
            fused = next((conv_seg[c.name][1][1] for c in graph.convs.values() if c.norm == norm.name), None)
            s = fused if fused is not None else segment(norm.units)
            norm_seg[norm.name] = s
            per = (2 if m.affine else 0) if norm.kind == "batchnorm" else 1
            self.const["params"] -= sum(p.numel() for p in m.parameters(recurse=False))
            self.norms.append((s, per))
        # per call: (kind, segments, spatial)
        self.calls: list[tuple] = []
        for call in graph.calls:
            sp = spatial[(call.module, call.index)]
            m = modules[call.module]
            self.const["num_conv"] += call.kind == "conv"
            if call.kind == "conv":
                info = conv_seg.get(call.module)
                if info is None:  # fixed: unchanged
                    self.const["flops"] += _per_position(m) * sp
                    self.const["activations"] += m.out_channels * sp
                elif info[0] == "dw":
                    self.calls.append(("dw", info[1], info[2] * sp, sp))
                else:
                    self.calls.append(("conv", info[1], info[2] * sp, sp, info[3]))
            elif call.kind == "act":
                self.calls.append(("act", segment(call.units), sp))
            elif call.kind == "bn":
                seg = norm_seg.get(call.module)
                if seg is None:  # a BatchNorm the analysis froze: unchanged
                    self.const["flops"] += sp * m.num_features * (2 if m.affine else 1)
                else:
                    self.calls.append(("bn", seg, sp * (2 if m.affine else 1)))
        lengths = [len(u) for u in seg_units]
        if any(n == 0 for n in lengths):
            raise SrnasError("cost model: a module with no channels")
        self.units = np.concatenate(seg_units) if seg_units else np.zeros(0, np.int64)
        self.entries = np.concatenate(seg_entries) if seg_entries else np.zeros(0, np.int64)
        self.starts = np.cumsum([0, *lengths[:-1]]).astype(np.int64)

    def counts(self, nz: np.ndarray | None = None) -> dict[str, float]:
        """All metrics for the nonzero pattern ``nz`` of the flat entries (default: the current gates)."""
        gated = self.gated
        if nz is None:
            nz = (gated.effective() != 0).cpu().numpy()
        alive = gated.unit_alive(nz)
        ext = np.append(nz, True)
        vals = (alive[self.units] & ext[self.entries]).astype(np.int64)
        n = np.add.reduceat(vals, self.starts) if len(vals) else np.zeros(0, np.int64)
        out = Counter({k: float(v) for k, v in self.const.items()})
        for _oa, ok, _ia, ik, k2, bias, dw in self.convs:
            out["params"] += k2 * n[ik] * (1 if dw else n[ok]) + (n[ok] if bias else 0)
        for seg, per in self.norms:
            out["params"] += per * n[seg]
        for call in self.calls:
            kind = call[0]
            if kind == "conv":
                (oa, ok, _ia, ik), coef, sp, fused = call[1], call[2], call[3], call[4]
                out["flops"] += coef * n[ik] * n[ok]
                scatter = not fused and n[ok] != n[oa]
                out["activations"] += sp * (n[oa] if scatter else n[ok])
            elif kind == "dw":
                out["flops"] += call[2] * n[call[1]]
                out["activations"] += call[3] * n[call[1]]
            else:  # act or bn
                out["flops"] += call[2] * n[call[1]]
        out["latency"] = out["flops"] + LATENCY_ELEMENT_COST * out["activations"]
        return dict(out)

    def cost(self, metric: Metric = "flops", nz: np.ndarray | None = None) -> float:
        counts = self.counts(nz)
        return float(sum(w * counts[k] for k, w in _weights(metric).items()))

    def unit_costs(self, metric: Metric = "flops") -> torch.Tensor:
        """Per entry: how much ``metric`` drops when that entry alone is pruned (0 for pruned entries)."""
        nz = (self.gated.effective() != 0).cpu().numpy()
        base = self.cost(metric, nz)
        out = np.zeros(len(nz))
        for e in np.flatnonzero(nz):
            nz[e] = False
            out[e] = base - self.cost(metric, nz)
            nz[e] = True
        return torch.from_numpy(out)


def _per_position(m: nn.Conv2d) -> int:
    return math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)


def _call_spatial(gated: GatedModel, input_size: tuple[int, ...]) -> tuple[dict[tuple[str, int], int], int]:
    """Per counted module call: batch * output H * W at ``input_size``; plus Linear FLOPs (unchanged by pruning)."""
    model = gated.model
    spatial: dict[tuple[str, int], int] = {}
    seen: Counter = Counter()
    linear = [0]

    def hook(path: str, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        index = seen[path]
        seen[path] += 1
        if isinstance(module, nn.Linear):
            x = args[0]
            linear[0] += x.shape[0] * out.shape[0] if x.dim() == 1 else x.shape[0] * x.shape[1] * out.shape[1]
        else:
            spatial[(path, index)] = out.shape[0] * math.prod(out.shape[2:])

    handles = [
        m.register_forward_hook(lambda mod, a, o, p=p: hook(p, mod, a, o))
        for p, m in model.named_modules()
        if isinstance(m, COUNTED)
    ]
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with gated.hooks_disabled(), torch.no_grad():
            try:
                state = {n: t.to("meta") for n, t in (*model.named_parameters(), *model.named_buffers())}
                torch.func.functional_call(model, state, (torch.empty(1, *input_size, device="meta"),))
            except Exception:  # noqa: BLE001 - cannot run on meta: a real pass
                spatial.clear()
                seen.clear()
                linear[0] = 0
                device = next((p.device for p in model.parameters()), torch.device("cpu"))
                model(torch.zeros(1, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag
    return spatial, linear[0]


def cost_of(gated: GatedModel, metric: Metric = "flops", input_size: Sequence[int] = DEFAULT_INPUT_SIZE) -> float:
    """``metric`` (params, flops, activations, num_conv, latency, or a mapping of weights) of the model
    ``shrink(gated)`` would return, for a ``1 x input_size`` input; cached per input size."""
    return cost_model(gated, input_size).cost(metric)


def cost_model(gated: GatedModel, input_size: Sequence[int] = DEFAULT_INPUT_SIZE) -> CostModel:
    """The (cached) ``CostModel`` of ``gated`` at ``input_size``."""
    cache = gated.__dict__.setdefault("_cost_models", {})
    key = tuple(input_size)
    if key not in cache:
        cache[key] = CostModel(gated, key)
    return cache[key]


def unit_costs(
    gated: GatedModel, metric: Metric = "flops", input_size: Sequence[int] = DEFAULT_INPUT_SIZE
) -> torch.Tensor:
    """Per entry: the ``metric`` its pruning alone saves (see ``CostModel.unit_costs``)."""
    return cost_model(gated, input_size).unit_costs(metric)
