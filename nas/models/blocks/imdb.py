"""Information multi-distillation block (IMDB) of IMDN (Zheng222/IMDN, AIM2019 constrained-SR winner).

c1 3x3 -> LeakyReLU -> split off ``distilled`` channels; the remaining ones go through c2 and c3 the same way;
c4 3x3 maps the last remainder to ``distilled`` channels; the four distilled parts are concatenated, optionally
re-weighted by contrast-aware channel attention (CCA), fused by c5 1x1 and added to the input.

Two official variants, one family:

- the paper's ``IMDModule`` (Zheng222/IMDN ``model/block.py``): ``{type: imdb}`` (with CCA);
- the AIM2019 / KAIR ``IMDBlock`` (``ofsoundof/NTIRE2022_ESR`` ``imdn_baseline.py``): ``{type: imdb, cca: false}``;
  its conv1..conv3 / conv4 / conv1x1 are c1..c3 / c4 / c5 here (the zoo importer renames them).

Both call LeakyReLU(0.05) modules after c1..c3 only (three counted activation calls).

For the pruner the block declares its three channel splits (``split_sizes``, see ``nas.models.pruned``):
a pruned IMDB is the same class with other sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.errors import SpecError
from nas.models.blocks.common import Segments, conv, conv_segments, safe_sqrt
from nas.models.registry import BLOCKS


def channel_std(x: torch.Tensor) -> torch.Tensor:
    """Per-channel standard deviation over H and W (the 'contrast' of CCA), shape Nx C x1x1."""
    area = x.size(2) * x.size(3)
    mean = x.sum(3, keepdim=True).sum(2, keepdim=True) / area
    var = (x - mean).pow(2).sum(3, keepdim=True).sum(2, keepdim=True) / area
    return safe_sqrt(var)


class CCALayer(nn.Module):
    """Contrast-aware channel attention: ``x * sigmoid(W2 relu(W1 (std(x) + mean(x))))``.

    Mirrors the official layout (``conv_du`` = conv 1x1, nn.ReLU, conv 1x1, nn.Sigmoid; mean by an
    ``nn.AdaptiveAvgPool2d`` module, counted by fvcore).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(channel_std(x) + self.avg_pool(x))


@BLOCKS.register("imdb")
class IMDB(nn.Module):
    """Information multi-distillation block.

    Args:
        channels: block input/output width (and the width of c1..c3 outputs).
        distilled: channels split off at each step (default ``channels // 4``).
        cca: contrast-aware channel attention before c5 (paper IMDN) or not (AIM2019 IMDN).
        cca_reduction: CCA bottleneck ratio (hidden width ``4 * distilled // cca_reduction``).
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        channels: int,
        distilled: int | None = None,
        cca: bool = True,
        cca_reduction: int = 16,
        negative_slope: float = 0.05,
    ) -> None:
        super().__init__()
        dc = max(1, channels // 4) if distilled is None else distilled
        if not 0 < dc < channels:
            raise SpecError(f"imdb: distilled must be in [1, {channels - 1}] at width {channels}, got {dc}")
        rc = channels - dc
        self.split_sizes: list[tuple[int, ...]] = [(dc, rc)] * 3  # [distilled, remaining] per split call
        self.c1 = conv(channels, channels, 3)
        self.c2 = conv(rc, channels, 3)
        self.c3 = conv(rc, channels, 3)
        self.c4 = conv(rc, dc, 3)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)
        self.c5 = conv(dc * 4, channels, 1)
        self.cca = CCALayer(dc * 4, cca_reduction) if cca else None

    def channel_segments(self) -> Segments:
        """c1..c3 outputs are split [distilled, remaining]; c5 (and CCA's convs, in and out) see the concat of the
        four distilled parts."""
        s1, s2, s3 = self.split_sizes
        parts = [s1[0], s2[0], s3[0], self.c4.out_channels]
        found = {
            **conv_segments("c1", self.c1, outputs=s1),
            **conv_segments("c2", self.c2, outputs=s2),
            **conv_segments("c3", self.c3, outputs=s3),
            **conv_segments("c5", self.c5, inputs=parts),
        }
        if self.cca is not None:
            found.update(conv_segments("cca.conv_du.0", self.cca.conv_du[0], inputs=parts))
            found.update(conv_segments("cca.conv_du.2", self.cca.conv_du[2], outputs=parts))
        return found

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1, s2, s3 = self.split_sizes
        d1, r1 = torch.split(self.act(self.c1(x)), s1, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), s2, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), s3, dim=1)
        out = torch.cat([d1, d2, d3, self.c4(r3)], dim=1)
        if self.cca is not None:
            out = self.cca(out)
        return self.c5(out) + x
