"""Small layers shared by the block families, plus the generic head/fusion/upsampler choices.

**Channel segments** (for the weight-sharing supernet, ``nas.search.supernet``): a module whose tensor axis
reads a channel concatenation, or whose output is split, declares it with a method
``channel_segments(self) -> Segments``: tensor name relative to the module (``"c5.weight"``) ->
``{axis: [segment sizes]}`` (the sizes add up to the axis length). ``conv_segments`` writes the entries of
one conv (weight and bias); ``declared_segments(model)`` collects every module's, by full tensor name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from nas.errors import SpecError
from nas.models.registry import FUSIONS, HEADS, UPSAMPLERS

Segments = dict[str, dict[int, list[int]]]

ACTIVATIONS = ("relu", "lrelu", "relu6", "prelu", "silu", "gelu", "sigmoid")


def safe_sqrt(var: torch.Tensor) -> torch.Tensor:
    """``sqrt(var)`` exactly, with a zero (not infinite, hence NaN) gradient where ``var == 0``: a constant
    channel, e.g. one a pruning gate switched off, has a standard deviation that training can pass through."""
    positive = var > 0
    return torch.where(positive, var, torch.ones_like(var)).sqrt() * positive


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    bias: bool = True,
    groups: int = 1,
    stride: int = 1,
    dilation: int = 1,
) -> nn.Conv2d:
    """A 'same'-padded convolution (padding = dilation * (k - 1) / 2)."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=dilation * (kernel_size - 1) // 2,
        bias=bias,
        groups=groups,
        dilation=dilation,
    )


def conv_segments(
    name: str, layer: nn.Conv2d, *, inputs: Sequence[int] | None = None, outputs: Sequence[int] | None = None
) -> Segments:
    """The segment entries of conv ``name``: ``inputs`` are the parts of the concatenation it reads (weight
    axis 1), ``outputs`` the parts its output is split into (weight axis 0 and the bias)."""
    weight: dict[int, list[int]] = {}
    if outputs is not None:
        weight[0] = [int(v) for v in outputs]
    if inputs is not None:
        weight[1] = [int(v) for v in inputs]
    entries = {f"{name}.weight": weight}
    if outputs is not None and layer.bias is not None:
        entries[f"{name}.bias"] = {0: [int(v) for v in outputs]}
    return entries


def declared_segments(model: nn.Module) -> Segments:
    """Every ``channel_segments`` declaration of ``model``'s modules, keyed by the full tensor name."""
    found: Segments = {}
    for path, module in model.named_modules():
        declare = getattr(module, "channel_segments", None)
        if not callable(declare):
            continue
        for rel, axes in declare().items():
            name = f"{path}.{rel}" if path else rel
            entry = found.setdefault(name, {})
            for axis, sizes in axes.items():
                if entry.get(axis, sizes) != sizes:
                    raise SpecError(
                        f"tensor {name} axis {axis}: conflicting channel segments {entry[axis]} and {sizes}"
                    )
                entry[axis] = list(sizes)
    return found


def activation(name: str | None, *, negative_slope: float = 0.05, channels: int = 1) -> nn.Module:
    """An activation *module* (the challenge FLOP counter counts module calls, not functional ones)."""
    if name is None or name == "none":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "lrelu":
        return nn.LeakyReLU(negative_slope, inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "gelu":
        return nn.GELU()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise SpecError(f"unknown activation {name!r}; known: none, {', '.join(ACTIVATIONS)}")


@HEADS.register("conv")
class ConvHead(nn.Module):
    """Shallow feature extraction: one k x k conv, optionally followed by an activation module.

    Args:
        in_channels: image channels. channels: feature width. kernel_size: conv size.
        act: activation after the conv (MSRResNet uses ``lrelu`` with slope 0.1), or None.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int = 3,
        act: str | None = None,
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv = conv(in_channels, channels, kernel_size)
        self.act = activation(act, negative_slope=negative_slope, channels=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Global feature aggregation (RFDN/IMDN): concat every block output, 1x1 conv back to the width, activation."""

    def __init__(self, channels: int, num_blocks: int, act: str | None = "lrelu", negative_slope: float = 0.05) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.conv = conv(channels * num_blocks, channels, 1)
        self.act = activation(act, negative_slope=negative_slope, channels=channels)

    def channel_segments(self) -> Segments:
        """``conv`` reads the concat of the ``num_blocks`` block outputs."""
        return conv_segments("conv", self.conv, inputs=[self.conv.in_channels // self.num_blocks] * self.num_blocks)

    def forward(self, head: torch.Tensor, outputs: list[torch.Tensor], extras: list[tuple]) -> torch.Tensor:
        return self.act(self.conv(torch.cat(outputs, dim=1)))


@UPSAMPLERS.register("pixelshuffle")
class PixelShuffleUpsampler(nn.Module):
    """One-step sub-pixel upsampler: k x k conv to out_channels * r^2, then PixelShuffle(r) (RFDN, IMDN, RLFN)."""

    def __init__(self, channels: int, out_channels: int, scale: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = conv(channels, out_channels * scale * scale, kernel_size)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def global_skip(x: torch.Tensor, mode: str, scale: int) -> torch.Tensor:
    """The image-space skip added to the network output: bilinear/bicubic upsampling or pixel repetition."""
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)
    if mode == "repeat":
        return F.pixel_shuffle(x.repeat_interleave(scale * scale, dim=1), scale)
    raise SpecError(f"unknown global_skip {mode!r}; known: none, bilinear, bicubic, repeat")
