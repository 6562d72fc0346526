"""Channel-space analysis: which channels of which convs must be pruned together, and which never can be.

``analyze(model)`` runs one small forward pass under a ``TorchFunctionMode`` that sees every torch call with
its real tensors (concrete shapes, so shape-dependent control flow such as ESA's size check just runs; a
``torch.fx`` symbolic trace cannot get past it). Every channel of every conv output is a node; the rules below
unify nodes into *units* (union-find classes: channels that can only be pruned together):

- conv (``groups == 1``): its output channels are new nodes; its input channels are read (an *in port*).
  Depthwise conv (``groups == in == out``), BatchNorm and per-channel PReLU act channel by channel: out = in.
  Any other grouped conv or a conv with a weight that is no ``nn.Conv2d`` parameter freezes its channels.
- elementwise ops (``+ - * /``, ``where``, activations, pooling, interpolation, spatial reductions...) unify
  the channels of their operands position by position; a ``[N, 1, H, W]`` operand broadcasts (no unification);
  a unit merged from two different producers by such an op is *shared* (residual adds, attention products).
- ``torch.cat(dim=1)`` concatenates channel lists (a composite); ``split/chunk/narrow/[:, a:b]`` on dim 1
  select from them -- only inside modules that ``nas.models.pruned.SPLIT_ADAPTERS`` can resize (IMDB);
  anywhere else the selected channels are frozen.
- ``pixel_shuffle(r)``: output channel k and input channels ``k*r^2 .. k*r^2 + r^2 - 1`` form one unit, so
  channels feeding a PixelShuffle are pruned in groups of r^2.
- the network input and output are the *image* (never pruned); ``MeanShift`` convs (LatticeNet) stay image.
- anything unknown on the channel dimension (reductions over channels, permutes, matmul, per-channel
  constants...) marks the channels involved *frozen* (never pruned), with the op and module as the reason.

A *space* groups the units of conv outputs (and pixel-shuffle outputs) that are linked by unification: the
trunk of a residual network is one space; a distillation branch another. ``ChannelGraph.summary()`` lists them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nas.errors import SrnasError

EXAMPLE_SIZE = (17, 19)  # small, odd, distinct H and W; ESA needs >= 15 pixels
SUMMARY_ACTS = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6)  # counted by the challenge FLOP counter
COUNTED = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Linear, *SUMMARY_ACTS)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ops that act on each channel independently (possibly combining several tensors channel by channel)
CHANNELWISE = _words(
    """
    add sub mul div truediv floordiv rsub radd rmul rdiv rtruediv rfloordiv remainder pow rpow maximum minimum
    fmax fmin where lerp addcmul addcdiv atan2 hypot copysign eq ne lt le gt ge logical_and logical_or
    logical_xor logical_not and or xor masked_fill copy relu relu6 leaky_relu hardtanh elu selu celu gelu silu
    mish sigmoid tanh softplus hardswish hardsigmoid logsigmoid hardshrink softshrink tanhshrink threshold
    rrelu abs neg pos exp expm1 log log1p log2 sqrt rsqrt square reciprocal sign clamp clip clamp_min
    clamp_max round floor ceil trunc frac nan_to_num contiguous clone detach to float double half bfloat16
    type type_as cpu cuda requires_grad fill zero dropout dropout2d alpha_dropout feature_alpha_dropout
    zeros_like ones_like empty_like full_like rand_like randn_like interpolate upsample upsample_nearest
    upsample_bilinear max_pool2d avg_pool2d adaptive_avg_pool2d adaptive_max_pool2d lp_pool2d
    max_pool2d_with_indices fractional_max_pool2d
    """
)
REDUCTIONS = _words(
    """
    sum mean std var amax amin max min prod norm logsumexp median nansum nanmean std_mean var_mean all any
    count_nonzero argmax argmin softmax log_softmax softmin cumsum cumprod
    """
)
# channelwise ops that combine all their tensor operands (the others read only their first tensor)
COMBINING = _words(
    """
    add sub mul div truediv floordiv rsub radd rmul rdiv rtruediv rfloordiv remainder pow rpow maximum minimum
    fmax fmin where lerp addcmul addcdiv atan2 hypot copysign eq ne lt le gt ge logical_and logical_or
    logical_xor and or xor masked_fill copy clamp clip max min
    """
)
VIEWS = _words("reshape view view_as reshape_as flatten unflatten squeeze unsqueeze expand expand_as repeat")
PERMUTES = {"permute", "transpose", "swapaxes", "swapdims"}
SELECTS = {"split", "split_with_sizes", "chunk", "tensor_split", "narrow", "getitem"}
CATS = {"cat", "concat", "concatenate"}
INPLACE_DUNDERS = {"iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "truediv", "idiv": "div", "ipow": "pow"}


@dataclass
class ConvInfo:
    """One ``nn.Conv2d`` module: the unit of each of its input and output channels.

    kind: ``conv`` (prunable in and out), ``depthwise`` (per-channel: in = out, no gates of its own) or
    ``fixed`` (grouped, image MeanShift...: never changed). ``norm``: the BatchNorm that alone consumes the
    conv's output; the output gate sits after it (so a zero gate removes the channel, BN shift included).
    """

    name: str
    kind: str
    in_units: np.ndarray
    out_units: np.ndarray
    norm: str | None = None
    calls: int = 1


@dataclass
class NormInfo:
    """A per-channel module (``batchnorm`` or ``prelu``) and the unit of each of its channels."""

    name: str
    kind: str
    units: np.ndarray


@dataclass
class SplitInfo:
    """A channel split inside an adapter module (the ``index``-th call in its forward): its output segments."""

    module: str
    index: int
    segments: list[np.ndarray]


@dataclass
class CallInfo:
    """One call of a module the challenge FLOP counter counts (conv, activation module, BatchNorm, Linear)."""

    module: str
    kind: str  # conv | act | bn | linear
    index: int  # n-th call of this module
    units: np.ndarray | None  # the unit of each channel of the call's output (None for linear)


@dataclass
class Space:
    """Units linked through unification (see the module docstring).

    members: ``(module, role, offset, length)`` runs: ``length`` consecutive channels of the module's ``role``
    (``in``/``out`` for convs, ``norm`` for BN/PReLU/depthwise) starting at ``offset`` belong to this space.
    private: every unit has one producer and reaches only conv inputs (through unary ops, cat/split and
    pixel shuffle); frozen/image: some unit can never be pruned.
    """

    id: int
    units: list[int]
    members: list[tuple[str, str, int, int]] = field(default_factory=list)
    private: bool = False
    frozen: bool = False
    image: bool = False

    @property
    def size(self) -> int:
        return len(self.units)


@dataclass
class ChannelGraph:
    """The result of ``analyze``: units, spaces, and where every conv's channels live."""

    num_units: int
    unit_space: np.ndarray
    unit_image: np.ndarray
    unit_frozen: np.ndarray
    unit_shared: np.ndarray
    unit_channels: np.ndarray  # channels per unit in the producer (r^2 for pixel-shuffle groups)
    reasons: dict[int, list[str]]
    spaces: list[Space]
    convs: dict[str, ConvInfo]
    norms: dict[str, NormInfo]
    splits: list[SplitInfo]
    calls: list[CallInfo]
    unknown_ops: Counter

    @property
    def unit_private(self) -> np.ndarray:
        return ~(self.unit_shared | self.unit_frozen | self.unit_image)

    @property
    def unit_prunable(self) -> np.ndarray:
        return ~(self.unit_frozen | self.unit_image)

    def space_of(self, module: str, role: str = "out") -> Space:
        """The space of the first channel of a conv's input (``in``) or output (``out``)."""
        info = self.convs[module]
        units = info.in_units if role == "in" else info.out_units
        return self.spaces[int(self.unit_space[units[0]])]

    def summary(self) -> str:
        """A printable listing of spaces, their members and every frozen unit's reason."""
        lines = [f"{len(self.spaces)} spaces, {self.num_units} units, {len(self.convs)} convs"]
        for s in self.spaces:
            flags = [f for f, on in (("image", s.image), ("frozen", s.frozen), ("private", s.private)) if on]
            lines.append(f"space {s.id}: {s.size} units{' [' + ', '.join(flags) + ']' if flags else ''}")
            for module, role, offset, length in s.members:
                lines.append(f"    {module}.{role}[{offset}:{offset + length}]")
            reasons = sorted({r for u in s.units for r in self.reasons.get(u, [])})
            lines.extend(f"    frozen: {r}" for r in reasons)
        if self.unknown_ops:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.unknown_ops.items()))
            lines.append(f"unknown ops on the channel dimension (their channels are frozen): {ops}")
        return "\n".join(lines)


class _Nodes:
    """Union-find over channel nodes with per-class flags."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.base: list[int] = []
        self.bases: list[str] = []
        self.image: dict[int, bool] = {}
        self.shared: dict[int, bool] = {}
        self.reasons: dict[int, list[str]] = {}

    def new(self, count: int, desc: str) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.base.extend([len(self.bases)] * count)
        self.bases.append(desc)
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: int, b: int, shared: bool = True) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra == rb:
            return
        self.parent[rb] = ra
        self.image[ra] = self.image.pop(ra, False) | self.image.pop(rb, False)
        self.shared[ra] = shared | self.shared.pop(ra, False) | self.shared.pop(rb, False)
        if rb in self.reasons:
            self.reasons.setdefault(ra, []).extend(self.reasons.pop(rb))

    def union_all(self, lists: Sequence[np.ndarray], shared: bool = True) -> None:
        first = lists[0]
        for other in lists[1:]:
            for a, b in zip(first.tolist(), other.tolist(), strict=True):
                self.union(a, b, shared)

    def freeze(self, nodes: np.ndarray, reason: str) -> None:
        for n in nodes.tolist():
            r = self.find(n)
            lst = self.reasons.setdefault(r, [])
            if reason not in lst and len(lst) < 8:
                lst.append(reason)

    def mark_image(self, nodes: np.ndarray) -> None:
        for n in nodes.tolist():
            self.image[self.find(n)] = True


def _name(func: Any) -> str:
    name = getattr(func, "__name__", "") or ""
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        return INPLACE_DUNDERS.get(name, name)
    return name.strip("_")


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, list | tuple):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


class _Analysis:
    def __init__(self, model: nn.Module) -> None:
        from nas.models.blocks.lattice import MeanShift
        from nas.models.pruned import SPLIT_ADAPTERS

        self.model = model
        self.nodes = _Nodes()
        self.tmap: dict[int, np.ndarray] = {}
        self.keep: list[torch.Tensor] = []  # keeps tracked tensors alive so ids stay unique
        self.stack: list[str] = []
        self.conv_of: dict[int, str] = {}
        self.bn_of: dict[int, str] = {}
        self.prelu_of: dict[int, str] = {}
        self.modules = dict(model.named_modules())
        for path, m in self.modules.items():
            if isinstance(m, nn.Conv2d):
                self.conv_of[id(m.weight)] = path
            elif isinstance(m, nn.BatchNorm2d):
                for t in (m.weight, m.running_mean):
                    if t is not None:
                        self.bn_of[id(t)] = path
            elif isinstance(m, nn.PReLU):
                self.prelu_of[id(m.weight)] = path
        self.meanshift = MeanShift
        self.adapters = tuple(SPLIT_ADAPTERS)
        self.convs: dict[str, dict[str, Any]] = {}
        self.norms: dict[str, dict[str, Any]] = {}
        self.splits: list[tuple[str, int, list[np.ndarray]]] = []
        self.split_count: Counter = Counter()
        self.calls: list[tuple[str, str, int, np.ndarray | None]] = []
        self.call_count: Counter = Counter()
        self.uses: Counter = Counter()
        self.conv_out_tensor: dict[int, str] = {}
        self.bn_inputs: dict[str, list[int]] = defaultdict(list)
        self.unknown: Counter = Counter()

    # ------------------------------------------------------------------ bookkeeping

    @property
    def where(self) -> str:
        return (self.stack[-1] if self.stack else "") or "(model)"

    def track(self, t: torch.Tensor, nodes: np.ndarray) -> None:
        self.tmap[id(t)] = nodes
        self.keep.append(t)

    def nodes_of(self, t: torch.Tensor, axis: int = 1) -> np.ndarray:
        """Tracked nodes, or new frozen nodes for a constant (a parameter, buffer or factory tensor)."""
        nodes = self.tmap.get(id(t))
        if nodes is not None and axis == 1:
            return nodes
        if nodes is not None:
            self.nodes.freeze(nodes, f"channel axis moved ({self.where})")
        new = self.nodes.new(t.shape[axis], f"constant {tuple(t.shape)} ({self.where})")
        self.nodes.freeze(new, f"combined with a constant of shape {tuple(t.shape)} in {self.where}")
        return new

    def freeze_op(self, op: str, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        reason = f"{op} in {self.where}"
        touched = False
        for t in inputs:
            nodes = self.tmap.get(id(t))
            if nodes is not None and t.dim() >= 2:
                self.nodes.freeze(nodes, reason)
                touched = True
        if not touched:
            return
        self.unknown[op] += 1
        for t in outputs:
            if t.dim() >= 2 and id(t) not in self.tmap:
                new = self.nodes.new(t.shape[1], f"{op} output ({self.where})")
                self.nodes.freeze(new, reason)
                self.track(t, new)

    # ------------------------------------------------------------------ hooks

    def attach(self) -> list:
        handles = []
        for path, m in self.modules.items():
            handles.append(m.register_forward_pre_hook(lambda mod, args, p=path: self.stack.append(p)))
            handles.append(m.register_forward_hook(lambda mod, args, out, p=path: self._post(p, mod, out)))
        return handles

    def _post(self, path: str, module: nn.Module, out: Any) -> None:
        self.stack.pop()
        if not isinstance(module, COUNTED) or not isinstance(out, torch.Tensor):
            return
        kind = (
            "conv"
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d)
            else "bn"
            if isinstance(module, nn.BatchNorm2d)
            else "linear"
            if isinstance(module, nn.Linear)
            else "act"
        )
        index = self.call_count[path]
        self.call_count[path] += 1
        nodes = None
        if kind != "linear":
            nodes = self.tmap.get(id(out))
            if nodes is None:  # e.g. an activation module applied to a constant
                nodes = self.nodes.new(out.shape[1], f"{path} output")
                self.nodes.freeze(nodes, f"untracked output of {path}")
                self.track(out, nodes)
        self.calls.append((path, kind, index, nodes))

    # ------------------------------------------------------------------ op rules

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        outputs = _tensors(out)
        if _name(func) == "setitem":  # x[idx] = y writes in place and returns nothing
            self.freeze_op("item assignment", _tensors(args), [])
            return
        if not outputs:
            return  # size(), dim(), item(): no tensor flows on
        inputs = _tensors(args) + _tensors(kwargs)
        for t in inputs:
            if id(t) in self.tmap:
                self.uses[id(t)] += 1
        tracked = [t for t in inputs if id(t) in self.tmap]
        name = _name(func)
        if name == "conv2d":
            self._conv(args, kwargs, out)
        elif not tracked:
            return  # arithmetic on constants only
        elif name == "batch_norm":
            self._batch_norm(args, kwargs, out)
        elif name == "prelu":
            self._prelu(args, kwargs, out)
        elif name == "pixel_shuffle":
            self._pixel_shuffle(args, kwargs, out)
        elif name in CATS:
            self._cat(args, kwargs, out)
        elif name in SELECTS:
            self._select(name, args, kwargs, outputs)
        elif name in VIEWS or name in PERMUTES:
            self._view(name, args, kwargs, outputs)
        elif name == "pad":
            pad = _arg(args, kwargs, 1, "pad")
            x = args[0]
            if len(pad) <= 2 * (x.dim() - 2):
                self._channelwise(name, [x], outputs)
            else:
                self.freeze_op("pad over channels", inputs, outputs)
        elif name in REDUCTIONS and len(inputs) == 1:
            self._reduction(name, args, kwargs, outputs)
        elif name in CHANNELWISE or name in COMBINING:
            self._channelwise(name, inputs if name in COMBINING else inputs[:1], outputs)
        else:
            self.freeze_op(name or repr(func), inputs, outputs)

    def _channelwise(self, name: str, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        outs = [t for t in outputs if t.dim() >= 2]
        if not outs:
            self.freeze_op(name, inputs, outputs)
            return
        ref = outs[0]
        channels, ndim = ref.shape[1], ref.dim()
        if any(t.shape[1] != channels or t.dim() != ndim for t in outs):
            self.freeze_op(name, inputs, outputs)
            return
        parts = []
        for t in inputs:
            axis = t.dim() - ndim + 1
            if axis < 0 or t.dim() == 0:
                continue
            size = t.shape[axis]
            if size == 1 and channels != 1:
                continue  # broadcast over channels
            if size != channels or (id(t) in self.tmap and axis != 1):
                self.freeze_op(name, inputs, outputs)
                return
            parts.append(self.nodes_of(t, axis))
        if not parts:
            self.freeze_op(name, inputs, outputs)
            return
        self.nodes.union_all(parts, shared=True)
        for t in outs:
            self.track(t, parts[0])

    def _reduction(self, name: str, args: tuple, kwargs: dict, outputs: list[torch.Tensor]) -> None:
        x = args[0]
        dim = _arg(args, kwargs, 2 if name == "norm" else 1, "dim")
        keepdim_at = 3 if name in ("std", "var", "std_mean", "var_mean", "norm") else 2
        keepdim = bool(_arg(args, kwargs, keepdim_at, "keepdim", False))
        if name in ("softmax", "log_softmax", "softmin", "cumsum", "cumprod"):
            keepdim = True
        if isinstance(dim, int) and not isinstance(dim, bool):
            dims = {_norm_dim(dim, x.dim())}
        elif isinstance(dim, list | tuple) and dim and all(isinstance(d, int) for d in dim):
            dims = {_norm_dim(d, x.dim()) for d in dim}
        else:
            self.freeze_op(f"{name} over all dimensions", [x], outputs)
            return
        if 1 in dims or (0 in dims and not keepdim):
            self.freeze_op(f"{name} over dims {sorted(dims)}", [x], outputs)
            return
        self._channelwise(name, [x], outputs)

    def _view(self, name: str, args: tuple, kwargs: dict, outputs: list[torch.Tensor]) -> None:
        x = args[0]
        out = outputs[0]
        ok = len(outputs) == 1 and out.dim() >= 2 and x.dim() >= 2 and tuple(out.shape[:2]) == tuple(x.shape[:2])
        if ok and name in PERMUTES:
            if name == "permute":
                dims = args[1:] if len(args) > 2 else _arg(args, kwargs, 1, "dims")
                dims = [_norm_dim(d, x.dim()) for d in dims]
                ok = dims[:2] == [0, 1]
            else:
                d0, d1 = (_norm_dim(d, x.dim()) for d in (args[1], args[2]))
                ok = d0 == d1 or min(d0, d1) >= 2
        if ok:
            self.track(out, self.tmap[id(x)])
        else:
            self.freeze_op(f"{name} moving the channel axis", [x], outputs)

    def _conv(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        x, weight = args[0], _arg(args, kwargs, 1, "weight")
        groups = _arg(args, kwargs, 6, "groups", 1)
        path = self.conv_of.get(id(weight))
        if path is None:
            self.freeze_op("conv2d with a weight that is no Conv2d parameter", [x], [out])
            return
        in_nodes = self.nodes_of(x)
        c_in, c_out = x.shape[1], out.shape[1]
        info = self.convs.get(path)
        if info is not None:
            self.nodes.union_all([info["in"], in_nodes], shared=True)
            info["calls"] += 1
        module = self.modules[path]
        if isinstance(module, self.meanshift):
            kind, out_nodes = "fixed", in_nodes
            self.nodes.mark_image(in_nodes)
        elif groups == 1:
            kind = "conv"
            out_nodes = info["out"] if info is not None else self.nodes.new(c_out, f"{path} output")
        elif groups == c_in == c_out:
            kind, out_nodes = "depthwise", in_nodes
        else:
            kind = "fixed"
            self.nodes.freeze(in_nodes, f"grouped conv {path}")
            out_nodes = info["out"] if info is not None else self.nodes.new(c_out, f"{path} output")
            self.nodes.freeze(out_nodes, f"grouped conv {path}")
        if info is None:
            self.convs[path] = {"in": in_nodes, "out": out_nodes, "kind": kind, "calls": 1}
        self.track(out, out_nodes)
        self.conv_out_tensor[id(out)] = path

    def _per_channel(self, kind: str, path: str, x: torch.Tensor, out: torch.Tensor) -> None:
        nodes = self.tmap[id(x)]
        info = self.norms.get(path)
        if info is None:
            self.norms[path] = {"kind": kind, "nodes": nodes, "calls": 1}
        else:
            self.nodes.union_all([info["nodes"], nodes], shared=True)
            info["calls"] += 1
        self.track(out, nodes)

    def _batch_norm(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        x = args[0]
        keys = (_arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 1, "running_mean"))
        path = next((self.bn_of[id(t)] for t in keys if t is not None and id(t) in self.bn_of), None)
        if path is None or id(x) not in self.tmap:
            self.freeze_op("batch_norm of no BatchNorm2d module", [x], [out])
            return
        self.bn_inputs[path].append(id(x))
        self._per_channel("batchnorm", path, x, out)

    def _prelu(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        x, weight = args[0], _arg(args, kwargs, 1, "weight")
        if weight.numel() == 1:
            self._channelwise("prelu", [x], [out])
        elif id(weight) in self.prelu_of and weight.numel() == x.shape[1]:
            self._per_channel("prelu", self.prelu_of[id(weight)], x, out)
        else:
            self.freeze_op("prelu of no PReLU module", [x], [out])

    def _pixel_shuffle(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        x, r = args[0], _arg(args, kwargs, 1, "upscale_factor")
        group = r * r
        in_nodes = self.tmap[id(x)]
        out_nodes = self.nodes.new(out.shape[1], f"pixel_shuffle output ({self.where})")
        for k, node in enumerate(out_nodes.tolist()):
            for j in range(group):
                self.nodes.union(node, int(in_nodes[k * group + j]), shared=False)
        self.track(out, out_nodes)

    def _cat(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        tensors = list(_arg(args, kwargs, 0, "tensors"))
        dim = _norm_dim(_arg(args, kwargs, 1, "dim", 0), out.dim())
        if dim == 1:
            self.track(out, np.concatenate([self.nodes_of(t) for t in tensors]))
        else:
            self._channelwise("cat", tensors, [out])

    def _select(self, name: str, args: tuple, kwargs: dict, outputs: list[torch.Tensor]) -> None:
        x = args[0]
        if name == "getitem":
            ranges = _getitem_channels(args[1], x)
            if ranges is None:
                self.freeze_op("indexing over channels", [x], outputs)
                return
            dim = 1 if ranges != "all" else -1
        else:
            default = 0
            dim = _arg(args, kwargs, 1 if name == "narrow" else 2, "dim", default)
            if not isinstance(dim, int):
                self.freeze_op(name, [x], outputs)
                return
            dim = _norm_dim(dim, x.dim())
        nodes = self.tmap[id(x)]
        if dim != 1:
            for t in outputs:
                if t.dim() >= 2 and t.shape[1] == x.shape[1]:
                    self.track(t, nodes)
                else:
                    self.freeze_op(name, [x], [t])
            return
        if name == "getitem":
            start, stop, step = ranges
            pieces = [nodes[start:stop:step]]
        elif name == "narrow":
            start, length = _arg(args, kwargs, 2, "start"), _arg(args, kwargs, 3, "length")
            pieces = [nodes[start : start + length]]
        else:  # split / chunk / tensor_split: consecutive pieces
            sizes = [t.shape[1] for t in outputs]
            bounds = np.cumsum([0, *sizes])
            pieces = [nodes[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        module = self.modules.get(self.where)
        if name in ("split", "split_with_sizes") and isinstance(module, self.adapters):
            self.splits.append((self.where, self.split_count[self.where], pieces))
            self.split_count[self.where] += 1
        else:
            self.nodes.freeze(nodes, f"channel {name} in {self.where} (no pruning adapter for it)")
            self.unknown[f"channel {name}"] += 1
        for t, piece in zip(outputs, pieces, strict=True):
            self.track(t, piece)


def _getitem_channels(index: Any, x: torch.Tensor) -> tuple[int, int, int] | str | None:
    """``"all"`` when the channel dim is untouched, ``(start, stop, step)`` for a channel slice, else None."""
    index = index if isinstance(index, tuple) else (index,)
    if any(i is None or isinstance(i, torch.Tensor | list | bool) for i in index):
        return None
    if Ellipsis in index:
        pos = index.index(Ellipsis)
        fill = x.dim() - (len(index) - 1)
        index = index[:pos] + (slice(None),) * fill + index[pos + 1 :]
    index = index + (slice(None),) * (x.dim() - len(index))
    if len(index) < 2 or index[0] != slice(None) or not isinstance(index[1], slice):
        return None
    if not all(isinstance(i, slice | int) for i in index[2:]):
        return None
    start, stop, step = index[1].indices(x.shape[1])
    if (start, stop, step) == (0, x.shape[1], 1):
        return "all"
    return start, stop, step


class _Recorder(TorchFunctionMode):
    def __init__(self, analysis: _Analysis) -> None:
        super().__init__()
        self.analysis = analysis

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.analysis.record(func, args, kwargs, out)
        return out


def analyze(
    model: nn.Module, example_size: Sequence[int] = EXAMPLE_SIZE, in_channels: int | None = None
) -> ChannelGraph:
    """The channel graph of ``model`` from one forward pass on a ``1 x C x H x W`` random input."""
    if in_channels is None:
        spec = getattr(model, "spec", None)
        in_channels = spec["in_channels"] if isinstance(spec, dict) else 3
    height, width = example_size
    a = _Analysis(model)
    x = torch.rand(1, in_channels, height, width, generator=torch.Generator().manual_seed(0))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = x.to(device)
    a.track(x, a.nodes.new(in_channels, "image input"))
    a.nodes.mark_image(a.tmap[id(x)])
    flags = [(m, m.training) for m in model.modules()]
    handles = a.attach()
    try:
        model.eval()
        with torch.no_grad(), _Recorder(a):
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - name the module that failed
        raise SrnasError(f"channel analysis failed in module {a.where!r}: {type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag
    if not isinstance(out, torch.Tensor) or id(out) not in a.tmap:
        raise SrnasError("channel analysis: the model output is not a tensor derived from the input")
    a.nodes.mark_image(a.tmap[id(out)])
    return _finish(a)


def _finish(a: _Analysis) -> ChannelGraph:
    nodes = a.nodes
    roots = np.array([nodes.find(i) for i in range(len(nodes.parent))], dtype=np.int64)
    uniq, unit_of_node = np.unique(roots, return_inverse=True)
    num_units = len(uniq)
    image = np.array([nodes.image.get(int(r), False) for r in uniq], dtype=bool)
    shared = np.array([nodes.shared.get(int(r), False) for r in uniq], dtype=bool)
    reasons = {i: list(nodes.reasons[int(r)]) for i, r in enumerate(uniq) if int(r) in nodes.reasons}
    frozen = np.zeros(num_units, dtype=bool)
    frozen[list(reasons)] = True

    def units(n: np.ndarray) -> np.ndarray:
        return unit_of_node[n]

    # spaces: connected components of base tensors sharing a unit
    base = np.array(nodes.base, dtype=np.int64)
    parent = list(range(len(nodes.bases)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_base = {}
    for node, u in enumerate(unit_of_node.tolist()):
        b = int(base[node])
        if u in first_base:
            ra, rb = find(first_base[u]), find(b)
            if ra != rb:
                parent[rb] = ra
        else:
            first_base[u] = b
    comp = np.array([find(first_base[u]) for u in range(num_units)], dtype=np.int64)
    order = {}
    for u in range(num_units):  # spaces numbered by first appearance
        order.setdefault(int(comp[u]), len(order))
    unit_space = np.array([order[int(c)] for c in comp], dtype=np.int64)
    spaces = [Space(i, []) for i in range(len(order))]
    for u in range(num_units):
        spaces[unit_space[u]].units.append(u)

    convs: dict[str, ConvInfo] = {}
    for path, info in a.convs.items():
        convs[path] = ConvInfo(path, info["kind"], units(info["in"]), units(info["out"]), calls=info["calls"])
    norms = {p: NormInfo(p, info["kind"], units(info["nodes"])) for p, info in a.norms.items()}
    # a BatchNorm alone consuming a conv's output: the conv's output gate goes after it
    for path, tids in a.bn_inputs.items():
        if len(tids) != 1 or tids[0] not in a.conv_out_tensor or a.uses[tids[0]] != 1:
            continue
        conv = convs[a.conv_out_tensor[tids[0]]]
        module = a.modules[path]
        if conv.kind == "conv" and conv.calls == 1 and module.affine and conv.norm is None:
            conv.norm = path
    for conv in convs.values():
        if conv.kind == "depthwise":
            norms[conv.name] = NormInfo(conv.name, "depthwise", conv.out_units)
    # channels per unit as the producer sees them (pixel-shuffle groups: r^2)
    unit_channels = np.ones(num_units, dtype=np.int64)
    for conv in convs.values():
        if conv.kind == "conv":
            counts = np.bincount(conv.out_units, minlength=num_units)
            unit_channels = np.maximum(unit_channels, counts)

    for conv in convs.values():
        roles = [("in", conv.in_units), ("out", conv.out_units)] if conv.kind != "depthwise" else []
        for role, us in roles:
            _add_members(spaces, unit_space, conv.name, role, us)
    for norm in norms.values():
        _add_members(spaces, unit_space, norm.name, "norm", norm.units)
    for s in spaces:
        us = np.array(s.units)
        s.image = bool(image[us].any())
        s.frozen = bool(frozen[us].any())
        s.private = bool((~shared[us] & ~frozen[us] & ~image[us]).all())

    splits = [SplitInfo(m, i, [units(p) for p in pieces]) for m, i, pieces in a.splits]
    calls = [CallInfo(p, k, i, units(n) if n is not None else None) for p, k, i, n in a.calls]
    return ChannelGraph(
        num_units=num_units,
        unit_space=unit_space,
        unit_image=image,
        unit_frozen=frozen,
        unit_shared=shared,
        unit_channels=unit_channels,
        reasons=reasons,
        spaces=spaces,
        convs=convs,
        norms=norms,
        splits=splits,
        calls=calls,
        unknown_ops=a.unknown,
    )


def _add_members(spaces: list[Space], unit_space: np.ndarray, module: str, role: str, units: np.ndarray) -> None:
    sp = unit_space[units]
    start = 0
    for i in range(1, len(sp) + 1):
        if i == len(sp) or sp[i] != sp[start]:
            spaces[int(sp[start])].members.append((module, role, start, i - start))
            start = i


def conv_macs(module: nn.Conv2d) -> int:
    """Multiply-accumulates per output position, as the challenge counter computes them."""
    return math.prod(module.kernel_size) * module.in_channels * (module.out_channels // module.groups)
