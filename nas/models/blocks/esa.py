"""Enhanced Spatial Attention (ESA), the gate at the end of every RFDB and RLFB.

Two official variants share the layer names (so checkpoints map one to one):

- ``rfdn`` (njulj/RFDN, NTIRE2022 team40): conv1 1x1 -> conv2 3x3/s2 (no padding) -> max-pool 7/3 ->
  ReLU(conv_max) -> ReLU(conv3) -> conv3_ -> bilinear up -> + conv_f(conv1 out) -> conv4 1x1 -> sigmoid gate.
  The two ReLUs are one ``nn.ReLU`` module called twice (counted by the challenge FLOP counter).
- ``rlfn`` (RLFN, NTIRE2022 team04): the same without conv_max, conv3_ and the ReLUs:
  max-pool -> conv3 -> bilinear up.

Both upsample with ``F.interpolate(mode='bilinear', align_corners=False)`` to the input size and gate with an
``nn.Sigmoid`` module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nas.errors import DataError, SpecError

VARIANTS = ("rfdn", "rlfn")
MIN_SIZE = 15  # conv2 (3x3, stride 2, no padding) then a 7x7 max-pool must fit


class ESA(nn.Module):
    """Spatial attention gate ``x * sigmoid(mask(x))`` computed at ~1/6 resolution.

    Args:
        channels: input/output width.
        esa_channels: width inside the attention branch (RFDN: ``channels // 4``; RLFN: 16).
        variant: ``rfdn`` (conv_max + conv3 + conv3_ with ReLUs) or ``rlfn`` (conv3 only).
    """

    def __init__(self, channels: int, esa_channels: int, variant: str = "rfdn") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise SpecError(f"unknown ESA variant {variant!r}; known: {', '.join(VARIANTS)}")
        if esa_channels <= 0:
            raise SpecError(f"esa_channels must be positive, got {esa_channels}")
        f = esa_channels
        self.variant = variant
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        if variant == "rfdn":
            self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        if variant == "rfdn":
            self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)
        self.sigmoid = nn.Sigmoid()
        if variant == "rfdn":
            self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIZE:
            raise DataError(
                f"ESA needs feature maps of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {x.shape[-1]}x{x.shape[-2]} "
                "(input image too small for this model)"
            )
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        if self.variant == "rfdn":
            c3 = self.relu(self.conv3(self.relu(self.conv_max(v_max))))
            c3 = self.conv3_(c3)
        else:
            c3 = self.conv3(v_max)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        mask = self.sigmoid(self.conv4(c3 + self.conv_f(c1_)))
        return x * mask
