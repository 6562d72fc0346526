"""``build(spec)``: the one network skeleton every srnas model is an instance of."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from nas.errors import SpecError
from nas.models import blocks  # noqa: F401  (registers every block family)
from nas.models.blocks.common import conv, global_skip
from nas.models.registry import BLOCKS, FUSIONS, HEADS, UPSAMPLERS
from nas.models.spec import normalize_spec


class SRNet(nn.Module):
    """head -> blocks -> [fusion] -> [body_conv] -> [+ head] -> upsampler -> [+ image skip].

    Takes LR images in [0, 1] and returns SR images in [0, 1]; weights trained on [0, 255] inputs
    (``input_range: 255``) get the scaling inside ``forward``.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        spec = normalize_spec(spec)
        self._spec = spec
        width, scale = spec["width"], spec["scale"]
        self.scale = scale
        self.input_range = float(spec["input_range"])
        self.global_skip = spec["global_skip"]
        self.body_skip = spec["body_skip"]
        self.head = HEADS.build(spec["head"], in_channels=spec["in_channels"], channels=width)
        self.body = nn.ModuleList(_build_block(i, cfg, width) for i, cfg in enumerate(spec["blocks"]))
        self.fusion = (
            FUSIONS.build(spec["fusion"], channels=width, num_blocks=len(spec["blocks"])) if spec["fusion"] else None
        )
        self.body_conv = conv(width, width, 3) if spec["body_conv"] else None
        self.upsampler = UPSAMPLERS.build(
            spec["upsampler"], channels=width, out_channels=spec["out_channels"], scale=scale
        )
        if spec.get("pruned"):
            from nas.models.pruned import apply_plan  # lazy: pruning builds on nas

            apply_plan(self, spec["pruned"])

    @property
    def spec(self) -> dict[str, Any]:
        """The plain-data spec this model was built from (a copy)."""
        return copy.deepcopy(self._spec)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The LR-space trunk: everything before the upsampler (x already scaled to input_range)."""
        fea = self.head(x)
        h = fea
        outputs: list[torch.Tensor] = []
        extras: list[tuple] = []
        for block in self.body:
            result = block(h)
            if isinstance(result, tuple):
                h, extra = result[0], tuple(result[1:])
            else:
                h, extra = result, ()
            outputs.append(h)
            extras.append(extra)
        if self.fusion is not None:
            h = self.fusion(fea, outputs, extras)
        if self.body_conv is not None:
            h = self.body_conv(h)
        if self.body_skip:
            h = h + fea
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_range != 1.0:
            x = x * self.input_range
        out = self.upsampler(self.forward_features(x))
        if self.global_skip != "none":
            out = out + global_skip(x, self.global_skip, self.scale)
        if self.input_range != 1.0:
            out = out / self.input_range
        return out


def _build_block(index: int, cfg: dict[str, Any], width: int) -> nn.Module:
    try:
        return BLOCKS.build(cfg, channels=width)
    except SpecError as exc:
        raise SpecError(f"blocks[{index}]: {exc}") from exc


def build(spec: dict[str, Any]) -> SRNet:
    """Build the model a spec describes (random weights)."""
    return SRNet(spec)
