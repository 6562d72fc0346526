"""Residual local feature block (RLFB) of RLFN (NTIRE2022 efficient-SR winner, team04 ``RLFN_cut``).

Three 3x3 convs with one ``nn.LeakyReLU(0.05)`` module after each (c1_r, c2_r, c3_r), an identity add around
them, c5 1x1 and the light ESA (``rlfn`` variant, 16 channels). The ESA needs maps of at least 15x15 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.models.blocks.common import conv
from nas.models.blocks.esa import ESA
from nas.models.registry import BLOCKS


@BLOCKS.register("rlfb")
class RLFB(nn.Module):
    """Residual local feature block.

    Args:
        channels: block input/output width.
        mid_channels: width of c1_r/c2_r outputs (default ``channels``; the official RLFN uses 48 at width 46).
        esa_channels: width inside the ESA.
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self, channels: int, mid_channels: int | None = None, esa_channels: int = 16, negative_slope: float = 0.05
    ) -> None:
        super().__init__()
        mid = channels if mid_channels is None else mid_channels
        self.c1_r = conv(channels, mid, 3)
        self.c2_r = conv(mid, mid, 3)
        self.c3_r = conv(mid, channels, 3)
        self.c5 = conv(channels, channels, 1)
        self.esa = ESA(channels, esa_channels, "rlfn")
        self.act = nn.LeakyReLU(negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c1_r(x))
        out = self.act(self.c2_r(out))
        out = self.act(self.c3_r(out))
        return self.esa(self.c5(out + x))
