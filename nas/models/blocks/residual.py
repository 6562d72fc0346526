"""Plain residual block: conv 3x3 -> [BN] -> act -> conv 3x3 -> [BN] -> + x (SRResNet / EDSR lineage).

One family covers the three official variants (pick them with options):

- MSRResNet ``ResidualBlock_noBN``: ``{type: residual}`` (no norm, functional ReLU);
- NASNetBN ``ResidualBlockBN``: ``{type: residual, norm: bn}`` (functional ReLU);
- NASNetBN ``ResidualBlockLeakyBN``: ``{type: residual, norm: bn, act: lrelu, functional: false}``
  (an ``nn.LeakyReLU(0.2)`` module).

``functional`` matters only for complexity accounting: the challenge FLOP counter counts activation *module*
calls and ignores functional ones, so the official code's choice is mirrored here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nas.errors import SpecError
from nas.models.blocks.common import activation, conv
from nas.models.registry import BLOCKS

NORMS = ("none", "bn")
FUNCTIONAL_ACTS = ("relu", "lrelu", "relu6")


def norm_layer(norm: str, channels: int) -> nn.Module | None:
    """A BatchNorm2d for ``norm: bn``, None for ``norm: none``."""
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return None
    raise SpecError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")


def functional_activation(x: torch.Tensor, name: str, negative_slope: float) -> torch.Tensor:
    """The in-place functional form of a few activations (not counted by the challenge FLOP counter)."""
    if name == "relu":
        return F.relu(x, inplace=True)
    if name == "lrelu":
        return F.leaky_relu(x, negative_slope, inplace=True)
    return F.relu6(x, inplace=True)


@BLOCKS.register("residual")
class ResidualBlock(nn.Module):
    """conv1 -> [bn1] -> act -> conv2 -> [bn2] -> + x.

    Args:
        channels: block input/output width.
        mid_channels: width between the two convs (default ``channels``; smaller when pruned).
        kernel_size: size of both convs.
        norm: ``none`` or ``bn`` (BatchNorm2d after each conv).
        act: activation after the first conv (``relu``, ``lrelu``, ...).
        negative_slope: LeakyReLU slope for ``act: lrelu``.
        functional: apply the activation functionally (relu, lrelu, relu6 only) instead of as a module.
    """

    def __init__(
        self,
        channels: int,
        mid_channels: int | None = None,
        kernel_size: int = 3,
        norm: str = "none",
        act: str = "relu",
        negative_slope: float = 0.2,
        functional: bool = True,
    ) -> None:
        super().__init__()
        mid = channels if mid_channels is None else mid_channels
        if functional and act not in FUNCTIONAL_ACTS:
            raise SpecError(
                f"residual: functional activation must be one of {', '.join(FUNCTIONAL_ACTS)}, "
                f"got {act!r} (use functional: false)"
            )
        self.conv1 = conv(channels, mid, kernel_size)
        self.bn1 = norm_layer(norm, mid)
        self.act_name, self.negative_slope, self.functional = act, negative_slope, functional
        self.act = None if functional else activation(act, negative_slope=negative_slope, channels=mid)
        self.conv2 = conv(mid, channels, kernel_size)
        self.bn2 = norm_layer(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.bn1 is not None:
            out = self.bn1(out)
        if self.act is None:
            out = functional_activation(out, self.act_name, self.negative_slope)
        else:
            out = self.act(out)
        out = self.conv2(out)
        if self.bn2 is not None:
            out = self.bn2(out)
        return x + out
