"""Residual feature distillation block (RFDB) of RFDN (njulj/RFDN, AIM2020 efficient-SR winner).

Three distillation steps, each a 1x1 "distilled" conv (c*_d) next to a 3x3 "refine" conv (c*_r) with a shallow
residual (SRB: ``act(conv3x3(x) + x)``), then c4 3x3 to the distilled width, concat of the four distilled
outputs, c5 1x1 back to ``channels`` and an ESA gate. Every activation is one ``nn.LeakyReLU(0.05)`` module
called seven times, as in the official code.

The NTIRE2022 pruned RFDN (team40 "MegSR") is ``{type: rfdb, shallow_residual: false, esa_channels: 12}``:
no identity adds in the refine steps, and an ESA width fixed at ``50 // 4`` whatever ``channels`` is.
The ESA needs feature maps of at least 15x15 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.errors import SpecError
from nas.models.blocks.common import Segments, conv, conv_segments
from nas.models.blocks.esa import ESA
from nas.models.registry import BLOCKS


@BLOCKS.register("rfdb")
class RFDB(nn.Module):
    """Residual feature distillation block.

    Args:
        channels: block input/output width (and the refine convs' width).
        distilled: width of each distilled branch (default ``channels // 2``).
        esa_channels: width inside the ESA (default ``channels // 4``).
        shallow_residual: add the identity inside each refine step (AIM RFDN) or not (pruned RFDN).
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        channels: int,
        distilled: int | None = None,
        esa_channels: int | None = None,
        shallow_residual: bool = True,
        negative_slope: float = 0.05,
    ) -> None:
        super().__init__()
        dc = max(1, channels // 2) if distilled is None else distilled
        if dc <= 0:
            raise SpecError(f"rfdb: distilled must be positive, got {dc}")
        self.shallow_residual = shallow_residual
        self.c1_d = conv(channels, dc, 1)
        self.c1_r = conv(channels, channels, 3)
        self.c2_d = conv(channels, dc, 1)
        self.c2_r = conv(channels, channels, 3)
        self.c3_d = conv(channels, dc, 1)
        self.c3_r = conv(channels, channels, 3)
        self.c4 = conv(channels, dc, 3)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        self.c5 = conv(dc * 4, channels, 1)
        self.esa = ESA(channels, max(1, channels // 4) if esa_channels is None else esa_channels, "rfdn")

    def channel_segments(self) -> Segments:
        """``c5`` reads the concat of the four distilled outputs."""
        parts = [self.c1_d.out_channels, self.c2_d.out_channels, self.c3_d.out_channels, self.c4.out_channels]
        return conv_segments("c5", self.c5, inputs=parts)

    def _refine(self, layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        out = layer(x)
        return self.act(out + x if self.shallow_residual else out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self._refine(self.c1_r, x)
        d2 = self.act(self.c2_d(r1))
        r2 = self._refine(self.c2_r, r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self._refine(self.c3_r, r2)
        r4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))
