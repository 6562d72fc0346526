"""The tracer: one forward pass under a ``TorchFunctionMode`` that applies the channel rules of
``pruning.graph`` (see its docstring) to every torch call, with the call's real tensors."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nas.measure.counting import call_arg
from nas.models.pruned import declared_splits, is_image_space
from pruning.graph.nodes import Nodes
from pruning.graph.ops import (
    CATS,
    CHANNELWISE,
    COMBINING,
    COUNTED,
    PERMUTES,
    REDUCTIONS,
    RESIZABLE_SELECTS,
    SELECTS,
    VIEWS,
    getitem_channels,
    keeps_channel_axis,
    norm_dim,
    op_name,
    reduced_dims,
    tensors,
)


def _call_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        return "conv"
    if isinstance(module, nn.BatchNorm2d):
        return "bn"
    return "linear" if isinstance(module, nn.Linear) else "act"


class Tracer:
    """Channel nodes of every tensor the traced forward pass makes, and what the rules found.

    After the pass: ``convs`` (path -> in/out nodes, kind, calls), ``norms`` (BN/PReLU path -> nodes),
    ``splits`` (declared splits: module, call index, pieces), ``calls`` (counted module calls), ``outputs``
    (every module's first output),
    ``uses`` / ``conv_out_tensor`` / ``bn_inputs`` (to place BatchNorms behind convs), ``unknown`` ops.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.nodes = Nodes()
        self.tmap: dict[int, np.ndarray] = {}
        self.keep: list[torch.Tensor] = []  # keeps tracked tensors alive so ids stay unique
        self.stack: list[str] = []
        self.modules = dict(model.named_modules())
        self.conv_of: dict[int, str] = {}
        self.bn_of: dict[int, str] = {}
        self.prelu_of: dict[int, str] = {}
        for path, m in self.modules.items():
            if isinstance(m, nn.Conv2d):
                self.conv_of[id(m.weight)] = path
            elif isinstance(m, nn.BatchNorm2d):
                self.bn_of.update({id(t): path for t in (m.weight, m.running_mean) if t is not None})
            elif isinstance(m, nn.PReLU):
                self.prelu_of[id(m.weight)] = path
        self.convs: dict[str, dict[str, Any]] = {}
        self.norms: dict[str, dict[str, Any]] = {}
        self.splits: list[tuple[str, int, list[np.ndarray]]] = []
        self.split_count: Counter = Counter()
        self.calls: list[tuple[str, str, int, np.ndarray | None]] = []
        self.outputs: dict[str, np.ndarray] = {}  # path -> nodes of the first call's (first) tensor output
        self.call_count: Counter = Counter()
        self.uses: Counter = Counter()
        self.conv_out_tensor: dict[int, str] = {}
        self.bn_inputs: dict[str, list[int]] = defaultdict(list)
        self.unknown: Counter = Counter()

    # ------------------------------------------------------------------ bookkeeping

    @property
    def path(self) -> str:
        """The path of the innermost module running now (``""``: the model itself)."""
        return self.stack[-1] if self.stack else ""

    @property
    def where(self) -> str:
        """``path`` for messages."""
        return self.path or "(model)"

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
        """An op the rules do not know on the channel dimension: freeze its tracked inputs and outputs."""
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

    # ------------------------------------------------------------------ module hooks

    def attach(self) -> list:
        """Forward hooks on every module (the module stack and counted calls); returns their handles."""
        handles = []
        for path, m in self.modules.items():
            handles.append(m.register_forward_pre_hook(lambda mod, args, p=path: self.stack.append(p)))
            handles.append(m.register_forward_hook(lambda mod, args, out, p=path: self._post(p, mod, out)))
        return handles

    def _post(self, path: str, module: nn.Module, out: Any) -> None:
        self.stack.pop()
        first = out[0] if isinstance(out, tuple | list) and out else out
        if path not in self.outputs and isinstance(first, torch.Tensor) and id(first) in self.tmap:
            self.outputs[path] = self.tmap[id(first)]
        if not isinstance(module, COUNTED) or not isinstance(out, torch.Tensor):
            return
        kind = _call_kind(module)
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

    # ------------------------------------------------------------------ dispatch

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """Apply the rule of ``func`` to one finished call."""
        name = op_name(func)
        outputs = tensors(out)
        if name == "setitem":  # x[idx] = y writes in place and returns nothing
            self.freeze_op("item assignment", tensors(args), [])
            return
        if not outputs:
            return  # size(), dim(), item(): no tensor flows on
        inputs = tensors(args) + tensors(kwargs)
        tracked = [t for t in inputs if id(t) in self.tmap]
        for t in tracked:
            self.uses[id(t)] += 1
        if name == "conv2d":
            self._conv(args, kwargs, out)
        elif not tracked:
            return  # arithmetic on constants only
        elif name in ("batch_norm", "prelu", "pixel_shuffle"):
            getattr(self, f"_{name}")(args, kwargs, out)
        elif name in CATS:
            self._cat(args, kwargs, out)
        elif name in SELECTS:
            self._select(name, args, kwargs, outputs)
        elif name in VIEWS or name in PERMUTES:
            self._view(name, args, kwargs, outputs)
        elif name == "pad":
            self._pad(args, kwargs, inputs, outputs)
        elif name in REDUCTIONS and len(inputs) == 1:
            self._reduction(name, args, kwargs, outputs)
        elif name in CHANNELWISE or name in COMBINING:
            self._channelwise(name, inputs if name in COMBINING else inputs[:1], outputs)
        else:
            self.freeze_op(name or repr(func), inputs, outputs)

    # ------------------------------------------------------------------ rules

    def _channelwise(self, name: str, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        """Unify the operands position by position; size-1 channel operands broadcast."""
        outs = [t for t in outputs if t.dim() >= 2]
        if not outs or any(t.shape[1] != outs[0].shape[1] or t.dim() != outs[0].dim() for t in outs):
            self.freeze_op(name, inputs, outputs)
            return
        channels, ndim = outs[0].shape[1], outs[0].dim()
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
        """Over spatial dims: per channel; over channels (or everything): frozen."""
        x = args[0]
        dims, keepdim = reduced_dims(name, args, kwargs, x.dim())
        if dims is None:
            self.freeze_op(f"{name} over all dimensions", [x], outputs)
        elif 1 in dims or (0 in dims and not keepdim):
            self.freeze_op(f"{name} over dims {sorted(dims)}", [x], outputs)
        else:
            self._channelwise(name, [x], outputs)

    def _pad(self, args: tuple, kwargs: dict, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        x, pad = args[0], call_arg(args, kwargs, 1, "pad")
        if len(pad) <= 2 * (x.dim() - 2):
            self._channelwise("pad", [x], outputs)
        else:
            self.freeze_op("pad over channels", inputs, outputs)

    def _view(self, name: str, args: tuple, kwargs: dict, outputs: list[torch.Tensor]) -> None:
        x = args[0]
        if len(outputs) == 1 and keeps_channel_axis(name, args, kwargs, x, outputs[0]):
            self.track(outputs[0], self.tmap[id(x)])
        else:
            self.freeze_op(f"{name} moving the channel axis", [x], outputs)

    def _conv(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        """Plain conv: new output nodes; depthwise: out = in; image-space layer: image; other groups: frozen."""
        x, weight = args[0], call_arg(args, kwargs, 1, "weight")
        groups = call_arg(args, kwargs, 6, "groups", 1)
        path = self.conv_of.get(id(weight))
        if path is None:
            self.freeze_op("conv2d with a weight that is no Conv2d parameter", [x], [out])
            return
        in_nodes = self.nodes_of(x)
        c_in, c_out = x.shape[1], out.shape[1]
        info = self.convs.get(path)
        if info is not None:  # a conv called again: the same channels
            self.nodes.union_all([info["in"], in_nodes], shared=True)
            info["calls"] += 1
        if is_image_space(self.modules[path]):
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
        keys = (call_arg(args, kwargs, 3, "weight"), call_arg(args, kwargs, 1, "running_mean"))
        path = next((self.bn_of[id(t)] for t in keys if t is not None and id(t) in self.bn_of), None)
        if path is None or id(x) not in self.tmap:
            self.freeze_op("batch_norm of no BatchNorm2d module", [x], [out])
            return
        self.bn_inputs[path].append(id(x))
        self._per_channel("batchnorm", path, x, out)

    def _prelu(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        x, weight = args[0], call_arg(args, kwargs, 1, "weight")
        if weight.numel() == 1:
            self._channelwise("prelu", [x], [out])
        elif id(weight) in self.prelu_of and weight.numel() == x.shape[1]:
            self._per_channel("prelu", self.prelu_of[id(weight)], x, out)
        else:
            self.freeze_op("prelu of no PReLU module", [x], [out])

    def _pixel_shuffle(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        """Output channel k and input channels ``k*r^2 .. k*r^2 + r^2 - 1`` are one unit."""
        x, r = args[0], call_arg(args, kwargs, 1, "upscale_factor")
        group = r * r
        in_nodes = self.tmap[id(x)]
        out_nodes = self.nodes.new(out.shape[1], f"pixel_shuffle output ({self.where})")
        for k, node in enumerate(out_nodes.tolist()):
            for j in range(group):
                self.nodes.union(node, int(in_nodes[k * group + j]), shared=False)
        self.track(out, out_nodes)

    def _cat(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        items = list(call_arg(args, kwargs, 0, "tensors"))
        dim = norm_dim(call_arg(args, kwargs, 1, "dim", 0), out.dim())
        if dim == 1:
            self.track(out, np.concatenate([self.nodes_of(t) for t in items]))
        else:
            self._channelwise("cat", items, [out])

    def _select(self, name: str, args: tuple, kwargs: dict, outputs: list[torch.Tensor]) -> None:
        """split/chunk/narrow/slicing: on other dims the channels pass; on dim 1 the pieces are recorded when
        the running module declares its splits (``split_sizes``), else frozen."""
        x = args[0]
        dim = self._select_dim(name, args, kwargs, outputs)
        if dim is None:
            return
        nodes = self.tmap[id(x)]
        if dim != 1:
            for t in outputs:
                if t.dim() >= 2 and t.shape[1] == x.shape[1]:
                    self.track(t, nodes)
                else:
                    self.freeze_op(name, [x], [t])
            return
        pieces = _pieces(name, args, kwargs, nodes, outputs)
        path = self.path
        if name in RESIZABLE_SELECTS and declared_splits(self.modules.get(path)) is not None:
            self.splits.append((path, self.split_count[path], pieces))
            self.split_count[path] += 1
        else:
            self.nodes.freeze(nodes, f"channel {name} in {self.where} (the module declares no split_sizes)")
            self.unknown[f"channel {name}"] += 1
        for t, piece in zip(outputs, pieces, strict=True):
            self.track(t, piece)

    def _select_dim(self, name: str, args: tuple, kwargs: dict, outputs: list[torch.Tensor]) -> int | None:
        """The dim a select acts on (-1: none, a plain ``x[:]``); None after freezing what it cannot read."""
        x = args[0]
        if name == "getitem":
            ranges = getitem_channels(args[1], x)
            if ranges is None:
                self.freeze_op("indexing over channels", [x], outputs)
                return None
            return 1 if ranges != "all" else -1
        dim = call_arg(args, kwargs, 1 if name == "narrow" else 2, "dim", 0)
        if not isinstance(dim, int):
            self.freeze_op(name, [x], outputs)
            return None
        return norm_dim(dim, x.dim())


def _pieces(name: str, args: tuple, kwargs: dict, nodes: np.ndarray, outputs: list[torch.Tensor]) -> list:
    """The channel nodes of each output of a select on dim 1."""
    if name == "getitem":
        start, stop, step = getitem_channels(args[1], args[0])
        return [nodes[start:stop:step]]
    if name == "narrow":
        start, length = call_arg(args, kwargs, 2, "start"), call_arg(args, kwargs, 3, "length")
        return [nodes[start : start + length]]
    bounds = np.cumsum([0, *(t.shape[1] for t in outputs)])  # split / chunk / tensor_split: consecutive pieces
    return [nodes[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class Recorder(TorchFunctionMode):
    """Runs every torch call, then hands it to the tracer."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.tracer.record(func, args, kwargs, out)
        return out
