"""PAN's self-calibrated block with pixel attention (SC-PA) and the pixel-attention layers it is built from.

Official code: zhaohengyuan1/PAN codes/models/archs/PAN_arch.py (Zhao et al., "Efficient Image Super-Resolution
Using Pixel Attention", ECCVW 2020). Submodule names follow the official ones so checkpoints map one to one.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.errors import SpecError
from nas.models.blocks.common import Segments, conv, conv_segments
from nas.models.registry import BLOCKS


class PixelAttention(nn.Module):
    """PA: ``x * sigmoid(conv1x1(x))`` (the sigmoid is a module, as in the official code)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv(channels, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """Pixel-attention convolution: ``k4(k3(x) * sigmoid(k2(x)))`` with 1x1 ``k2`` and bias-free k x k ``k3``/``k4``."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.k2 = conv(channels, channels, 1)
        self.sigmoid = nn.Sigmoid()
        self.k3 = conv(channels, channels, kernel_size, bias=False)
        self.k4 = conv(channels, channels, kernel_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * self.sigmoid(self.k2(x)))


@BLOCKS.register("scpa")
class SCPA(nn.Module):
    """SC-PA: two 1x1 branches (plain 3x3 / PAConv), LeakyReLU, 1x1 merge of their concat, identity skip.

    Args:
        channels: block input/output width (PAN: 40).
        branch: width of each of the two branches (PAN: channels // reduction = 20).
        kernel_size: size of the branch convolutions. negative_slope: LeakyReLU slope (0.2).
    """

    def __init__(
        self, channels: int, branch: int | None = None, kernel_size: int = 3, negative_slope: float = 0.2
    ) -> None:
        super().__init__()
        branch = channels // 2 if branch is None else branch
        if branch <= 0:
            raise SpecError(f"scpa: branch width must be positive, got {branch} (channels={channels})")
        self.conv1_a = conv(channels, branch, 1, bias=False)
        self.conv1_b = conv(channels, branch, 1, bias=False)
        self.k1 = nn.Sequential(conv(branch, branch, kernel_size, bias=False))
        self.PAConv = PAConv(branch, kernel_size)
        self.conv3 = conv(2 * branch, channels, 1, bias=False)
        self.lrelu = nn.LeakyReLU(negative_slope, inplace=True)

    def channel_segments(self) -> Segments:
        """``conv3`` reads the concat of the two branches."""
        return conv_segments("conv3", self.conv3, inputs=[self.k1[0].out_channels, self.PAConv.k4.out_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        b = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return self.conv3(torch.cat([a, b], dim=1)) + x
