"""SPAN: the swift parameter-free attention block (SPAB), SPAN's normalising head and its concat fusion.

Official code: Amazingren/NTIRE2024_ESR models/team38_SPAN.py, ``SPAN30`` (Wan et al., "Swift Parameter-free
Attention Network for Efficient Super-Resolution", NTIRE 2024 ESR winner). The official 3x3 convs are
re-parameterisable (``Conv3XC``); we keep only their deployed single-conv form (``eval_conv``), which is what
the released checkpoint stores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nas.errors import SpecError
from nas.models.blocks.common import Segments, conv, conv_segments
from nas.models.blocks.lattice import DIV2K_MEAN
from nas.models.registry import BLOCKS, FUSIONS, HEADS


@BLOCKS.register("spab")
class SPAB(nn.Module):
    """Three 3x3 convs with SiLU between them; parameter-free attention ``(c3 + x) * (sigmoid(c3) - 0.5)``.

    Returns ``(out, act1, att)``: ``act1`` is the SiLU-activated first conv output (the official block returns
    the first conv output after its in-place SiLU, i.e. this tensor), ``att`` the attention map.

    Args:
        channels: block width (SPAN: 28). mid_channels: width after the first and second conv (default channels).
    """

    def __init__(self, channels: int, mid_channels: int | None = None) -> None:
        super().__init__()
        mid = channels if mid_channels is None else mid_channels
        if mid <= 0:
            raise SpecError(f"spab: mid_channels must be positive, got {mid}")
        self.c1_r = conv(channels, mid, 3)
        self.c2_r = conv(mid, mid, 3)
        self.c3_r = conv(mid, channels, 3)
        self.act1 = nn.SiLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out1 = self.act1(self.c1_r(x))
        out3 = self.c3_r(self.act1(self.c2_r(out1)))
        att = torch.sigmoid(out3) - 0.5
        return (out3 + x) * att, out1, att


@HEADS.register("span")
class SPANHead(nn.Module):
    """``conv((x - mean) * img_range)``: SPAN normalises [0, 1] input inside the network (the output is not rescaled).

    Args:
        in_channels: image channels. channels: feature width.
        img_range: factor after the mean subtraction (255). rgb_mean: per-channel mean in [0, 1] (DIV2K).
    """

    def __init__(
        self, in_channels: int, channels: int, img_range: float = 255.0, rgb_mean: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        mean = list(DIV2K_MEAN) if rgb_mean is None else [float(v) for v in rgb_mean]
        if len(mean) != in_channels:
            raise SpecError(f"head 'span': rgb_mean has {len(mean)} values but the image has {in_channels} channels")
        self.img_range = float(img_range)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.conv = conv(in_channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv((x - self.mean.to(x.dtype)) * self.img_range)


def _check_indices(kind: str, indices: Sequence[int], num_blocks: int) -> list[int]:
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -num_blocks <= i < num_blocks:
            raise SpecError(
                f"fusion 'span_cat': {kind} index {i!r} is not a block index (0..{num_blocks - 1} or negative)"
            )
        out.append(i)
    return out


@FUSIONS.register("span_cat")
class SPANFusion(nn.Module):
    """``conv_cat`` 1x1 over the concat of [head output, conv_2(last block output), chosen block outputs,
    chosen blocks' first extra] (SPAN30: block 0's output and the last block's SiLU-activated first conv).

    Args:
        channels: width. num_blocks: number of trunk blocks.
        outputs: indices of the blocks whose outputs are concatenated (SPAN: [0]).
        extras: indices of the blocks whose first extra (``act1`` for SPAB) is concatenated (SPAN: [-1]).
    """

    def __init__(
        self, channels: int, num_blocks: int, outputs: Sequence[int] = (0,), extras: Sequence[int] = (-1,)
    ) -> None:
        super().__init__()
        self.outputs = _check_indices("outputs", outputs, num_blocks)
        self.extras = _check_indices("extras", extras, num_blocks)
        self.conv_2 = conv(channels, channels, 3)
        self.conv_cat = conv(channels * (2 + len(self.outputs) + len(self.extras)), channels, 1)

    def channel_segments(self) -> Segments:
        """``conv_cat`` reads the concat of its 2 + len(outputs) + len(extras) parts, all of the same width."""
        n = 2 + len(self.outputs) + len(self.extras)
        return conv_segments("conv_cat", self.conv_cat, inputs=[self.conv_cat.in_channels // n] * n)

    def forward(self, head: torch.Tensor, outputs: list[torch.Tensor], extras: list[tuple]) -> torch.Tensor:
        parts = [head, self.conv_2(outputs[-1])]
        parts += [outputs[i] for i in self.outputs]
        for i in self.extras:
            if not extras[i]:
                raise SpecError(f"fusion 'span_cat': block {i} returns no extra output to concatenate")
            parts.append(extras[i][0])
        return self.conv_cat(torch.cat(parts, dim=1))
