"""FLOPs, activations and #conv of one forward pass, counted exactly as the efficient-SR challenges count them.

Two FLOP conventions are reported, both as multiply-accumulates (MACs) on a ``1 x C x H x W`` input:

``flops`` -- ``utils/model_summary.py`` of AIM2020 / NTIRE2022-2023 (forward hooks on module calls):
    conv MACs ``k_h*k_w*C_in*(C_out/groups)*H_out*W_out`` for every ``nn.Conv2d``/``nn.ConvTranspose2d``
    call (bias not counted; read from the module's attributes); ``output.numel()`` for every
    ``nn.ReLU/PReLU/ELU/LeakyReLU/ReLU6`` call; ``2 * batch*num_features*H*W`` (1 without affine) for
    every ``nn.BatchNorm2d`` call; and for ``nn.Linear`` the quirk ``input.shape[0] * input.shape[1] *
    output.shape[1]`` (``input.shape[0] * output.shape[0]`` for 1-D input), which is *not* in*out MACs
    for 3-D/4-D token tensors. Functional activations, sigmoid, SiLU, GELU, elementwise ops,
    PixelShuffle, interpolation and pooling count 0. A module called twice counts twice.

``flops_fvcore`` -- ``fvcore.nn.FlopCountAnalysis(model, x).total()`` of NTIRE2024+ (fvcore
    0.1.5.post20221221 rules, reimplemented; fvcore itself is not needed). fvcore traces the model and
    counts these ops wherever they are called (module or functional):
    conv ``batch*prod(w.shape)*prod(out spatial)`` (transposed: ``prod(in spatial)``); linear
    ``input.numel()*out_features``; matmul/mm/bmm ``a.numel()*b.shape[-1]``; addmm ``n*k*m``;
    einsum ``abc,abd->acd`` / ``abc,adc->adb`` as bmm, any other equation as
    ``floor(float('%.3e' % numpy einsum_path optimal cost) / 2)`` (fvcore parses numpy's printed count,
    so it keeps 4 significant digits); batch_norm in eval ``numel*(2 if affine else 1)``, in training
    ``numel*(5 if affine else 4)``; layer_norm / group_norm / instance_norm ``numel*(5 if affine else 4)``;
    upsample_nearest2d 1 and upsample_bilinear2d 4 per output element; adaptive_avg_pool2d 1 per input
    element (also what ``F.interpolate(mode='area')`` on 4-D input calls); grid_sampler 4 per output
    element. Everything else counts 0: activations, softmax, elementwise ops, pooling other than
    adaptive_avg_pool2d, and the ops fvcore has no rule for -- ``upsample_bicubic2d`` (so bicubic
    interpolation is free under fvcore), nearest-exact, antialiased bilinear, 1-D/3-D interpolation,
    baddbmm, ``scaled_dot_product_attention``. Ops are captured with a ``TorchFunctionMode`` at the level
    a JIT trace records them (``F.interpolate``, ``F.linear``, ``torch.einsum``, ...); a Python-level
    composite such as ``F.multi_head_attention_forward`` is seen as one uncounted call, where fvcore
    would count the linear/bmm ops inside it.

``activations`` / ``num_conv`` -- ``get_model_activation``: ``output.numel()`` summed over every
    ``nn.Conv2d``/``nn.ConvTranspose2d`` call, and the number of those calls.

``params`` -- ``sum(p.numel() for p in model.parameters())`` (frozen parameters included).

Counting runs once on the ``meta`` device (shapes only, no arithmetic) and falls back to a real
forward pass when the model cannot run on meta (e.g. it builds CPU tensors inside ``forward``).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from nas.errors import SrnasError

InputSize = tuple[int, int, int]
DEFAULT_INPUT_SIZE: InputSize = (3, 256, 256)  # the challenges' LR input (C, H, W): every count is at this size

# ---------------------------------------------------------------- model_summary (hook) convention

_SUMMARY_ACTS = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6)
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


class SummaryCounter:
    """Forward hooks reproducing ``get_model_flops`` and ``get_model_activation``."""

    def __init__(self) -> None:
        self.by_op: Counter[str] = Counter()
        self.activations = 0
        self.num_conv = 0

    def attach(self, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        watched = (*_CONVS, *_SUMMARY_ACTS, nn.BatchNorm2d, nn.Linear)
        return [
            m.register_forward_hook(self._hook, with_kwargs=True) for m in model.modules() if isinstance(m, watched)
        ]

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if isinstance(module, _CONVS):
            per_position = math.prod(module.kernel_size) * module.in_channels * (module.out_channels // module.groups)
            self.by_op["conv"] += per_position * output.shape[0] * math.prod(output.shape[2:])
            self.activations += output.numel()
            self.num_conv += 1
        elif isinstance(module, _SUMMARY_ACTS):
            self.by_op["activation"] += output.numel()
        elif isinstance(module, nn.BatchNorm2d):
            elements = output.shape[0] * module.num_features * math.prod(output.shape[2:])
            self.by_op["batch_norm"] += elements * (2 if module.affine else 1)
        elif isinstance(module, nn.Linear):
            x = args[0] if args else kwargs["input"]
            if x.dim() == 1:
                self.by_op["linear"] += x.shape[0] * output.shape[0]
            else:  # the official quirk: dim 1 of input and output, whatever the tensor rank
                self.by_op["linear"] += x.shape[0] * x.shape[1] * output.shape[1]


# ---------------------------------------------------------------- fvcore convention


def call_arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` of a traced call, positional or by keyword ``name`` (``default`` when absent)."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _conv_flops(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, transposed: bool) -> int:
    spatial = w.dim() - 2
    batch = x.shape[0] if x.dim() == w.dim() else 1  # unbatched input
    shape = x.shape if transposed else out.shape
    return batch * w.numel() * math.prod(shape[-spatial:])


def _conv(transposed: bool) -> Callable:
    return lambda a, k, out: ("conv", _conv_flops(a[0], call_arg(a, k, 1, "weight"), out, transposed))


def _convolution(a: tuple, k: dict, out: torch.Tensor) -> tuple[str, int]:
    return "conv", _conv_flops(a[0], call_arg(a, k, 1, "weight"), out, bool(call_arg(a, k, 6, "transposed")))


def _matmul_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    return a.numel() * (b.shape[-1] if b.dim() > 1 else 1)


def _norm(weight_index: int) -> Callable:
    def rule(a: tuple, k: dict, out: torch.Tensor) -> tuple[str, int]:
        affine = call_arg(a, k, weight_index, "weight") is not None
        return "norm", a[0].numel() * (5 if affine else 4)

    return rule


def _batch_norm(weight_index: int) -> Callable:
    def rule(a: tuple, k: dict, out: torch.Tensor) -> tuple[str, int]:
        affine = call_arg(a, k, weight_index, "weight") is not None
        if call_arg(a, k, 5, "training", False):
            return "batch_norm", a[0].numel() * (5 if affine else 4)
        return "batch_norm", a[0].numel() * (2 if affine else 1)

    return rule


def _interpolate(a: tuple, k: dict, out: torch.Tensor) -> tuple[str, int]:
    x = a[0]
    mode = call_arg(a, k, 3, "mode", "nearest")
    if x.dim() != 4:
        return "upsample", 0  # upsample_*1d/3d and adaptive_avg_pool1d/3d have no fvcore rule
    if mode == "nearest":
        return "upsample_nearest2d", out.numel()
    if mode == "bilinear" and not call_arg(a, k, 6, "antialias", False):
        return "upsample_bilinear2d", 4 * out.numel()
    if mode == "area":  # F.interpolate calls adaptive_avg_pool2d
        return "adaptive_avg_pool2d", x.numel()
    return "upsample", 0  # bicubic, nearest-exact, antialiased bilinear: no fvcore rule


def einsum_flops(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """fvcore's einsum count: two bmm-like equations exactly, anything else via numpy's printed estimate."""
    equation = equation.replace(" ", "")
    letters = OrderedDict((c, None) for c in equation if c.isalpha())
    equation = equation.translate({ord(c): ord("a") + i for i, c in enumerate(letters)})
    if equation == "abc,abd->acd":
        n, c, t = shapes[0]
        return n * c * t * shapes[-1][-1]
    if equation == "abc,adc->adb":
        n, t, g = shapes[0]
        return n * t * g * shapes[-1][1]
    arrays = [np.broadcast_to(np.zeros((), dtype=np.float64), tuple(s)) for s in shapes]
    report = np.einsum_path(equation, *arrays, optimize="optimal")[1]
    for line in report.split("\n"):
        if "optimized flop" in line.lower():
            return int(math.floor(float(line.split(":")[-1]) / 2))
    raise SrnasError(f"cannot count einsum {equation!r}")  # pragma: no cover - numpy always prints it


def _einsum(a: tuple, k: dict, out: torch.Tensor) -> tuple[str, int]:
    equation, operands = a[0], a[1:]
    if not isinstance(equation, str):  # sublist format: no fvcore rule we can mirror
        return "einsum", 0
    if len(operands) == 1 and isinstance(operands[0], list | tuple):
        operands = operands[0]
    return "einsum", einsum_flops(equation, [t.shape for t in operands])


_FVCORE_RULES: dict[Any, Callable[[tuple, dict, Any], tuple[str, int]]] = {
    torch.conv1d: _conv(False),
    torch.conv2d: _conv(False),
    torch.conv3d: _conv(False),
    torch.conv_transpose1d: _conv(True),
    torch.conv_transpose2d: _conv(True),
    torch.conv_transpose3d: _conv(True),
    torch.convolution: _convolution,
    torch._convolution: _convolution,
    F.linear: lambda a, k, out: ("linear", a[0].numel() * call_arg(a, k, 1, "weight").shape[0]),
    torch.addmm: lambda a, k, out: ("addmm", _matmul_flops(a[1], a[2])),
    torch.Tensor.addmm: lambda a, k, out: ("addmm", _matmul_flops(a[1], a[2])),
    torch.einsum: _einsum,
    F.batch_norm: _batch_norm(3),
    torch.batch_norm: _batch_norm(1),
    F.layer_norm: _norm(2),
    torch.layer_norm: _norm(2),
    F.group_norm: _norm(2),
    torch.group_norm: _norm(2),
    F.instance_norm: _norm(3),
    torch.instance_norm: _norm(1),
    F.interpolate: _interpolate,
    torch._C._nn.upsample_nearest2d: lambda a, k, out: ("upsample_nearest2d", out.numel()),
    torch._C._nn.upsample_bilinear2d: lambda a, k, out: ("upsample_bilinear2d", 4 * out.numel()),
    F.adaptive_avg_pool2d: lambda a, k, out: ("adaptive_avg_pool2d", a[0].numel()),
    torch._C._nn.adaptive_avg_pool2d: lambda a, k, out: ("adaptive_avg_pool2d", a[0].numel()),
    F.grid_sample: lambda a, k, out: ("grid_sampler", 4 * out.numel()),
    torch.grid_sampler: lambda a, k, out: ("grid_sampler", 4 * out.numel()),
}
for _f in (torch.matmul, torch.Tensor.matmul, torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm):
    _FVCORE_RULES[_f] = lambda a, k, out: ("matmul", _matmul_flops(a[0], a[1]))
_FVCORE_RULES[torch.Tensor.__matmul__] = _FVCORE_RULES[torch.matmul]
_FVCORE_RULES[torch.Tensor.__rmatmul__] = lambda a, k, out: ("matmul", _matmul_flops(a[1], a[0]))


class FvcoreCounter(TorchFunctionMode):
    """Sees each torch-level call once (nested calls run with the mode popped) and applies fvcore's rules."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            rule = _FVCORE_RULES.get(func)
        except TypeError:  # an unhashable callable: nothing we count
            rule = None
        if rule is not None:
            name, flops = rule(args, kwargs, out)
            if flops:
                self.by_op[name] += int(flops)
        return out


# ---------------------------------------------------------------- counting one forward pass


def model_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def count_with(model: nn.Module, run: Callable[[], Any]) -> tuple[SummaryCounter, FvcoreCounter]:
    summary, fvcore = SummaryCounter(), FvcoreCounter()
    handles = summary.attach(model)
    try:
        with torch.inference_mode(), fvcore:
            run()
    finally:
        for h in handles:
            h.remove()
    return summary, fvcore


def count_on_meta(model: nn.Module, size: InputSize) -> tuple[SummaryCounter, FvcoreCounter]:
    state = {name: t.to("meta") for name, t in (*model.named_parameters(), *model.named_buffers())}
    x = torch.empty(1, *size, device="meta")
    return count_with(model, lambda: torch.func.functional_call(model, state, (x,)))


def count_on_device(model: nn.Module, size: InputSize) -> tuple[SummaryCounter, FvcoreCounter]:
    x = torch.rand(1, *size, generator=torch.Generator().manual_seed(0)).to(model_device(model))
    return count_with(model, lambda: model(x))
