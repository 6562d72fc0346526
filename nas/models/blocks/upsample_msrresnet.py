"""MSRResNet-style upsampler: PixelShuffle steps of x2 (or one x3) with activations, then HRconv + conv_last.

x4: two steps of [conv 3x3 C -> 4C, PixelShuffle(2), act]; x3: one step with 9C and PixelShuffle(3); x2: one
step. Then HRconv 3x3 + act and conv_last 3x3 -> out_channels. Used by MSRResNet and NASNetBN (LeakyReLU 0.1
*modules*, as in the official code).
"""

from __future__ import annotations

import torch
from torch import nn

from nas.errors import SpecError
from nas.models.blocks.common import activation, conv
from nas.models.registry import UPSAMPLERS


def shuffle_factors(scale: int) -> list[int]:
    """Per-step PixelShuffle factors: x2 while possible, then one step for the rest (x3: [3], x6: [2, 3])."""
    factors = []
    while scale % 2 == 0:
        factors.append(2)
        scale //= 2
    if scale > 1:
        factors.append(scale)
    return factors


class ShuffleStep(nn.Module):
    """conv k x k in -> out * r^2, PixelShuffle(r), activation module."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        factor: int,
        kernel_size: int,
        act: str | None,
        negative_slope: float,
    ) -> None:
        super().__init__()
        self.conv = conv(in_channels, out_channels * factor * factor, kernel_size)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = activation(act, negative_slope=negative_slope, channels=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


@UPSAMPLERS.register("pixelshuffle_steps")
class PixelShuffleStepsUpsampler(nn.Module):
    """PixelShuffle steps (each with an activation module), HRconv + activation, conv_last.

    Args:
        channels: trunk width. out_channels: image channels. scale: total upscaling factor.
        step_channels: feature width after each shuffle step (default ``channels`` for every step).
        hr_channels: HRconv output width (default: the last step's width).
        kernel_size: size of every conv. act / negative_slope: activation module after each step and HRconv.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        scale: int,
        step_channels: list[int] | None = None,
        hr_channels: int | None = None,
        kernel_size: int = 3,
        act: str | None = "lrelu",
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        factors = shuffle_factors(scale)
        if not factors:
            raise SpecError(f"upsampler 'pixelshuffle_steps' needs scale >= 2, got {scale}")
        widths = [channels] * len(factors) if step_channels is None else list(step_channels)
        if len(widths) != len(factors):
            raise SpecError(
                f"upsampler 'pixelshuffle_steps': step_channels needs {len(factors)} widths for "
                f"x{scale} (steps {factors}), got {widths!r}"
            )
        ins = [channels, *widths[:-1]]
        self.steps = nn.ModuleList(
            ShuffleStep(i, o, r, kernel_size, act, negative_slope) for i, o, r in zip(ins, widths, factors, strict=True)
        )
        hr = widths[-1] if hr_channels is None else hr_channels
        self.hr_conv = conv(widths[-1], hr, kernel_size)
        self.hr_act = activation(act, negative_slope=negative_slope, channels=hr)
        self.conv_last = conv(hr, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return self.conv_last(self.hr_act(self.hr_conv(x)))
