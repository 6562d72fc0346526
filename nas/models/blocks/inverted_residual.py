"""MobileNetV2 inverted residual: expand 1x1 -> depthwise k x k -> project 1x1 (linear) -> + x.

Variants (options of one family):

- NASNetBN ``InvertedResidualBN(nf, expand_ratio=3|6)``: ``{type: inverted_residual, expand_ratio: 3}``
  (the defaults: BatchNorm after every conv, bias-free convs, ``nn.ReLU6`` modules);
- without BN for the search space: ``{type: inverted_residual, norm: none, act: relu6 | lrelu}`` (convs get a
  bias). Its layout (``conv.0`` expand, ``conv.2`` depthwise, ``conv.4`` project) is also MobileSR's ResBlock
  with ``act: lrelu, negative_slope: 0.2``.

Submodules live in one ``conv`` Sequential indexed like torchvision/NASNetBN (with BN: ``conv.{0,3,6}`` convs,
``conv.{1,4,7}`` BatchNorms). ``expand_ratio: 1`` drops the expansion conv (depthwise on the input directly).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.errors import SpecError
from nas.models.blocks.common import activation, conv
from nas.models.blocks.residual import norm_layer
from nas.models.registry import BLOCKS


@BLOCKS.register("inverted_residual")
class InvertedResidual(nn.Module):
    """expand 1x1 -> [BN] -> act -> depthwise -> [BN] -> act -> project 1x1 -> [BN] -> + x.

    Args:
        channels: block input/output width.
        expand_ratio: hidden width = ``round(channels * expand_ratio)`` (e.g. 3 or 6).
        hidden: explicit hidden width (overrides ``expand_ratio``; what the pruner writes).
        kernel_size: depthwise conv size.
        norm: ``bn`` (BatchNorm2d after each conv) or ``none``.
        act: activation module after the expansion and the depthwise conv (``relu6``, ``lrelu``, ...).
        negative_slope: LeakyReLU slope for ``act: lrelu``.
        bias: conv biases (default: only without norm).
    """

    def __init__(
        self,
        channels: int,
        expand_ratio: float = 6,
        hidden: int | None = None,
        kernel_size: int = 3,
        norm: str = "bn",
        act: str = "relu6",
        negative_slope: float = 0.2,
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, int | float) or expand_ratio <= 0:
            raise SpecError(f"inverted_residual: expand_ratio must be a positive number, got {expand_ratio!r}")
        hidden = round(channels * expand_ratio) if hidden is None else hidden
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden <= 0:
            raise SpecError(f"inverted_residual: hidden must be a positive integer, got {hidden!r}")
        expand = expand_ratio != 1
        if not expand and hidden != channels:
            raise SpecError(
                f"inverted_residual: expand_ratio 1 has no expansion conv, so hidden must equal "
                f"channels ({channels}), got {hidden}"
            )
        bias = norm == "none" if bias is None else bias
        self.hidden = hidden
        layers: list[nn.Module] = []

        def add(layer: nn.Module, width: int, act_name: str | None) -> None:
            layers.append(layer)
            bn = norm_layer(norm, width)
            if bn is not None:
                layers.append(bn)
            if act_name is not None:
                layers.append(activation(act_name, negative_slope=negative_slope, channels=width))

        if expand:
            add(conv(channels, hidden, 1, bias=bias), hidden, act)
        add(conv(hidden, hidden, kernel_size, bias=bias, groups=hidden), hidden, act)
        add(conv(hidden, channels, 1, bias=bias), channels, None)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)
