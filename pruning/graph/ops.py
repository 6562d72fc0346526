"""The op table of the channel tracer: how each torch function acts on the channel dimension, plus small
helpers to read a call's arguments."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas.measure.counting import call_arg

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
# reductions that keep the reduced dimension whatever ``keepdim`` says
SHAPE_KEEPING = frozenset({"softmax", "log_softmax", "softmin", "cumsum", "cumprod"})
# channelwise ops that combine all their tensor operands (the others read only their first tensor)
COMBINING = _words(
    """
    add sub mul div truediv floordiv rsub radd rmul rdiv rtruediv rfloordiv remainder pow rpow maximum minimum
    fmax fmin where lerp addcmul addcdiv atan2 hypot copysign eq ne lt le gt ge logical_and logical_or
    logical_xor and or xor masked_fill copy clamp clip max min
    """
)
VIEWS = _words("reshape view view_as reshape_as flatten unflatten squeeze unsqueeze expand expand_as repeat")
PERMUTES = frozenset({"permute", "transpose", "swapaxes", "swapdims"})
SELECTS = frozenset({"split", "split_with_sizes", "chunk", "tensor_split", "narrow", "getitem"})
RESIZABLE_SELECTS = frozenset({"split", "split_with_sizes"})  # what a split declaration (split_sizes) covers
CATS = frozenset({"cat", "concat", "concatenate"})
INPLACE_DUNDERS = {"iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "truediv", "idiv": "div", "ipow": "pow"}


def op_name(func: Any) -> str:
    """The plain name of a torch function or tensor method (``__iadd__`` -> ``add``, ``_foo`` -> ``foo``)."""
    name = getattr(func, "__name__", "") or ""
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        return INPLACE_DUNDERS.get(name, name)
    return name.strip("_")


def tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) argument structure, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, list | tuple):
        return [t for o in obj for t in tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in tensors(o)]
    return []


def norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def reduced_dims(name: str, args: tuple, kwargs: dict, ndim: int) -> tuple[set[int] | None, bool]:
    """(the dims a reduction reduces -- None for all of them --, whether it keeps them)."""
    dim = call_arg(args, kwargs, 2 if name == "norm" else 1, "dim")
    keepdim_at = 3 if name in ("std", "var", "std_mean", "var_mean", "norm") else 2
    keepdim = bool(call_arg(args, kwargs, keepdim_at, "keepdim", False)) or name in SHAPE_KEEPING
    if isinstance(dim, int) and not isinstance(dim, bool):
        return {norm_dim(dim, ndim)}, keepdim
    if isinstance(dim, list | tuple) and dim and all(isinstance(d, int) for d in dim):
        return {norm_dim(d, ndim) for d in dim}, keepdim
    return None, keepdim


def keeps_channel_axis(name: str, args: tuple, kwargs: dict, x: torch.Tensor, out: torch.Tensor) -> bool:
    """Does a view/permute keep dims 0 and 1 (batch, channels) where they are?"""
    if out.dim() < 2 or x.dim() < 2 or tuple(out.shape[:2]) != tuple(x.shape[:2]):
        return False
    if name == "permute":
        dims = args[1:] if len(args) > 2 else call_arg(args, kwargs, 1, "dims")
        return [norm_dim(d, x.dim()) for d in dims][:2] == [0, 1]
    if name in PERMUTES:
        d0, d1 = (norm_dim(d, x.dim()) for d in (args[1], args[2]))
        return d0 == d1 or min(d0, d1) >= 2
    return True


def getitem_channels(index: Any, x: torch.Tensor) -> tuple[int, int, int] | str | None:
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
