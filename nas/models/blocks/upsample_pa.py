"""PAN's U-PA upsampler: per stage nearest upsampling -> conv -> pixel attention -> LeakyReLU -> conv -> LeakyReLU.

Official code: zhaohengyuan1/PAN codes/models/archs/PAN_arch.py. x2 and x3 use one stage, x4 two x2 stages
(as the official code); other powers of two get one x2 stage per factor of two.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nas.errors import SpecError
from nas.models.blocks.common import conv
from nas.models.blocks.scpa import PixelAttention
from nas.models.registry import UPSAMPLERS


def stage_factors(scale: int) -> list[int]:
    """The nearest-upsampling factor of each U-PA stage: [3] for x3, [2, 2, ...] for powers of two."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    raise SpecError(f"upsampler 'upa' supports x3 and powers of two, got x{scale}")


class UPAStage(nn.Module):
    """One U-PA stage: nearest x``factor`` -> ``upconv`` -> PA -> LeakyReLU -> ``hrconv`` -> LeakyReLU."""

    def __init__(
        self, in_channels: int, channels: int, factor: int, negative_slope: float, attention: bool = True
    ) -> None:
        super().__init__()
        self.factor = factor
        self.upconv = conv(in_channels, channels, 3)
        self.att = PixelAttention(channels) if attention else nn.Identity()
        self.hrconv = conv(channels, channels, 3)
        self.lrelu = nn.LeakyReLU(negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upconv(F.interpolate(x, scale_factor=self.factor, mode="nearest"))
        x = self.lrelu(self.att(x))
        return self.lrelu(self.hrconv(x))


@UPSAMPLERS.register("upa")
class UPAUpsampler(nn.Module):
    """U-PA stages followed by ``conv_last`` (3x3 to out_channels).

    Args:
        channels: trunk width. out_channels: image channels. scale: upscaling factor.
        up_channels: width of the HR-space stages (PAN: 24). negative_slope: LeakyReLU slope (0.2).
        attention: pixel attention in each stage (PAN); ``false`` gives the plain nearest + conv upsampler.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        scale: int,
        up_channels: int = 24,
        negative_slope: float = 0.2,
        attention: bool = True,
    ) -> None:
        super().__init__()
        factors = stage_factors(scale)
        self.stages = nn.ModuleList(
            UPAStage(channels if i == 0 else up_channels, up_channels, f, negative_slope, attention)
            for i, f in enumerate(factors)
        )
        self.conv_last = conv(up_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.conv_last(x)
