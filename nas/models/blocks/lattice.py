"""LatticeNet: the lattice block, its backward fusion module, and the MeanShift head and tail around them.

Official code: ymff0592/super-resolution model/latticenet.py (Luo et al., "LatticeNet: Towards Lightweight Image
Super-resolution with Lattice Block", ECCV 2020); MeanShift as in EDSR's model/common.py. Submodule names follow
the official ones so checkpoints map one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nas.errors import SpecError
from nas.models.blocks.common import Segments, conv, conv_segments, safe_sqrt
from nas.models.registry import BLOCKS, FUSIONS, HEADS, UPSAMPLERS

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """A 1x1 conv initialised to ``x + sign * rgb_range * mean`` (per channel, divided by ``std``).

    A real Conv2d as in EDSR/LatticeNet: its 2 * C + C^2 parameters count, and the official
    ``requires_grad = False`` on the module never froze them (the LatticeNet checkpoint holds trained values).
    Its channels are the image's: ``image_space`` tells the pruner never to prune them (``nas.models.pruned``).
    """

    image_space = True

    def __init__(
        self, rgb_range: float, rgb_mean: Sequence[float], rgb_std: Sequence[float] | None = None, sign: int = -1
    ) -> None:
        channels = len(rgb_mean)
        super().__init__(channels, channels, kernel_size=1)
        std = torch.tensor(rgb_std if rgb_std is not None else [1.0] * channels, dtype=torch.float32)
        mean = torch.tensor(rgb_mean, dtype=torch.float32)
        with torch.no_grad():
            self.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1) / std.view(channels, 1, 1, 1))
            self.bias.copy_(sign * rgb_range * mean / std)


def _mean_for(kind: str, channels: int, rgb_mean: Sequence[float] | None) -> list[float]:
    mean = list(DIV2K_MEAN) if rgb_mean is None else [float(v) for v in rgb_mean]
    if len(mean) != channels:
        raise SpecError(f"{kind}: rgb_mean has {len(mean)} values but the image has {channels} channels")
    return mean


class CombinationCoefficient(nn.Module):
    """CC: ``(sigmoid-MLP(channel mean) + sigmoid-MLP(channel std)) / 2``, one weight per channel.

    Args:
        channels: input width. hidden: width of the two 1x1 bottlenecks (LatticeNet: channels // 16).
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_mean = self._mlp(channels, hidden)
        self.conv_std = self._mlp(channels, hidden)

    @staticmethod
    def _mlp(channels: int, hidden: int) -> nn.Sequential:
        return nn.Sequential(conv(channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        mean = self.conv_mean(self.avg_pool(x))
        std = safe_sqrt(torch.var(x.reshape(b, c, -1), dim=2, keepdim=True)).view(b, c, 1, 1)
        std = self.conv_std(std)
        return (mean + std) / 2.0


def _three_convs(channels: int, mid: int, negative_slope: float) -> nn.Sequential:
    return nn.Sequential(
        conv(channels, mid, 3),
        nn.LeakyReLU(negative_slope),
        conv(mid, mid, 3),
        nn.LeakyReLU(negative_slope),
        conv(mid, channels, 3),
        nn.LeakyReLU(negative_slope),
    )


@BLOCKS.register("lattice")
class LatticeBlock(nn.Module):
    """Lattice block: two 3-conv branches combined butterfly-style by CC weights, then a 1x1 compress of both paths.

    Args:
        channels: block width (LatticeNet: 64).
        mid: inner width of the 3-conv branches (LatticeNet: channels - nDiff = 48).
        cc_channels: bottleneck width of the CC units (LatticeNet: channels // 16 = 4).
        negative_slope: LeakyReLU slope (0.05).
    """

    def __init__(
        self, channels: int, mid: int | None = None, cc_channels: int | None = None, negative_slope: float = 0.05
    ) -> None:
        super().__init__()
        mid = channels - channels // 4 if mid is None else mid
        cc_channels = max(1, channels // 16) if cc_channels is None else cc_channels
        if mid <= 0 or cc_channels <= 0:
            raise SpecError(f"lattice: mid and cc_channels must be positive, got {mid} and {cc_channels}")
        self.conv_block0 = _three_convs(channels, mid, negative_slope)
        self.fea_ca1 = CombinationCoefficient(channels, cc_channels)
        self.x_ca1 = CombinationCoefficient(channels, cc_channels)
        self.conv_block1 = _three_convs(channels, mid, negative_slope)
        self.fea_ca2 = CombinationCoefficient(channels, cc_channels)
        self.x_ca2 = CombinationCoefficient(channels, cc_channels)
        self.compress = conv(2 * channels, channels, 1)

    def channel_segments(self) -> Segments:
        """``compress`` reads the concat of the two paths (p3 from conv_block1, q3 from conv_block0)."""
        parts = [self.conv_block1[4].out_channels, self.conv_block0[4].out_channels]
        return conv_segments("compress", self.compress, inputs=parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # analysis unit: first butterfly
        short = self.conv_block0(x)
        p1 = x + self.fea_ca1(short) * short
        q1 = short + self.x_ca1(x) * x
        # synthesis unit: second butterfly
        long = self.conv_block1(p1)
        p3 = long + self.fea_ca2(q1) * q1
        q3 = q1 + self.x_ca2(long) * long
        return self.compress(torch.cat((p3, q3), dim=1))


def _tdm(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv(in_channels, out_channels, 1), nn.ReLU())


@FUSIONS.register("bfm")
class BackwardFusion(nn.Module):
    """LatticeNet's backward feature fusion: from the last block back to the first, fuse the running result
    (``t_tdm``, 1x1 + ReLU) with the previous block's output (``l_tdm``, 1x1 + ReLU) by concatenation.

    With n blocks there are n - 1 fusion steps; each step outputs ``channels`` (half from each side).
    """

    def __init__(self, channels: int, num_blocks: int) -> None:
        super().__init__()
        top = channels // 2
        if top == 0:
            raise SpecError(f"fusion 'bfm' needs a width of at least 2, got {channels}")
        self.t_tdm = nn.ModuleList(_tdm(channels, top) for _ in range(num_blocks - 1))
        self.l_tdm = nn.ModuleList(_tdm(channels, channels - top) for _ in range(num_blocks - 1))

    def channel_segments(self) -> Segments:
        """Every fusion step after the first reads the previous step's concat [t_tdm, l_tdm] in ``t_tdm``.

        The last step's concat is the fusion output: what reads it next (body conv, upsampler, body skip) sees
        it as plain trunk channels, so a narrower path puts its l_tdm half at other trunk positions than the
        widest one (a positional mismatch weight slicing cannot undo)."""
        found: Segments = {}
        for i in range(1, len(self.t_tdm)):
            parts = [self.t_tdm[i - 1][0].out_channels, self.l_tdm[i - 1][0].out_channels]
            found.update(conv_segments(f"t_tdm.{i}.0", self.t_tdm[i][0], inputs=parts))
        return found

    def forward(self, head: torch.Tensor, outputs: list[torch.Tensor], extras: list[tuple]) -> torch.Tensor:
        out = outputs[-1]
        for step, (t_tdm, l_tdm) in enumerate(zip(self.t_tdm, self.l_tdm, strict=True)):
            out = torch.cat((t_tdm(out), l_tdm(outputs[-2 - step])), dim=1)
        return out


@HEADS.register("lattice")
class LatticeHead(nn.Module):
    """MeanShift (subtract the dataset mean) -> ``conv1`` 3x3 -> ``conv2`` 3x3, no activation.

    Args:
        in_channels: image channels. channels: feature width.
        rgb_range: the data range the weights expect (255). rgb_mean: per-channel mean in [0, 1] (DIV2K).
    """

    def __init__(
        self, in_channels: int, channels: int, rgb_range: float = 255, rgb_mean: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, _mean_for("head 'lattice'", in_channels, rgb_mean), sign=-1)
        self.conv1 = conv(in_channels, channels, 3)
        self.conv2 = conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(self.sub_mean(x)))


@UPSAMPLERS.register("lattice_tail")
class LatticeTail(nn.Module):
    """3x3 conv -> 3x3 conv to out_channels * r^2 -> PixelShuffle(r) -> MeanShift (add the mean back).

    Args:
        channels: trunk width. out_channels: image channels. scale: r.
        rgb_range, rgb_mean: as for the ``lattice`` head.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        scale: int,
        rgb_range: float = 255,
        rgb_mean: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.tail = nn.Sequential(
            conv(channels, channels, 3), conv(channels, out_channels * scale * scale, 3), nn.PixelShuffle(scale)
        )
        self.add_mean = MeanShift(rgb_range, _mean_for("upsampler 'lattice_tail'", out_channels, rgb_mean), sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_mean(self.tail(x))
