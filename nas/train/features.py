"""Feature distillation: match intermediate outputs of the trained model to its teacher's, by forward hooks.

``FeatureDistillation(layers, weight)`` names the modules to match; each entry is a module name present in both
networks, or a ``FeatureLayer``: a name per side (one of them may be wrapped, e.g. a gated model whose network
is its ``model`` attribute) and optionally the channels of each side to compare (those a pruned model kept).
``FeatureHooks`` captures those modules' outputs while ``capturing()`` -- during the teacher's pass (already run
for the image target) and the model's pass of one step -- and ``loss()`` is the mean over the matched layers of
the distance between the two. A layer whose outputs differ in shape (a width the model
pruned) is left out at the first step; none left is an error. A module returning a tuple is matched on its first
element (the trunk output of a block that also returns side outputs).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from nas.errors import SrnasError
from nas.train.config import l1_loss, l2_loss

DISTANCES = {"l1": l1_loss, "l2": l2_loss}


@dataclass(frozen=True)
class FeatureLayer:
    """One matched module: its name in the model and in the teacher, and optionally the channels of each side's
    output to compare (None: all), e.g. the channels a pruned model kept of the teacher's."""

    model: str
    teacher: str
    model_channels: tuple[int, ...] | None = None
    teacher_channels: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _layer(entry: str | FeatureLayer) -> FeatureLayer:
    if isinstance(entry, str):
        return FeatureLayer(entry, entry)
    channels = [None if c is None else tuple(int(i) for i in c) for c in (entry.model_channels, entry.teacher_channels)]
    return FeatureLayer(str(entry.model), str(entry.teacher), *channels)


@dataclass(frozen=True)
class FeatureDistillation:
    """What to match: ``layers`` (module names in both networks, or ``FeatureLayer``), the loss ``weight`` and the
    distance (``l1`` / ``l2``)."""

    layers: tuple[str | FeatureLayer, ...]
    weight: float
    distance: str = "l1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(_layer(entry) for entry in self.layers))
        if not self.layers:
            raise SrnasError("feature distillation needs at least one layer name")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise SrnasError(f"feature weight must be a finite number >= 0, got {self.weight}")
        if self.distance not in DISTANCES:
            raise SrnasError(f"unknown feature distance {self.distance!r}: expected one of {', '.join(DISTANCES)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the train checkpoint (a different value is a different run)."""
        layers = [layer.to_dict() for layer in self.layers]  # type: ignore[union-attr]
        return {"layers": layers, "weight": float(self.weight), "distance": self.distance}


def _modules(root: nn.Module, names: Sequence[str], what: str) -> list[nn.Module]:
    found = dict(root.named_modules())
    missing = [n for n in names if n not in found]
    if missing:
        known = [n for n in found if n][:6]
        raise SrnasError(
            f"feature distillation: the {what} has no module named {', '.join(map(repr, missing))} "
            f"(its modules are e.g. {', '.join(known)})"
        )
    return [found[n] for n in names]


def _tensor(output: Any) -> torch.Tensor:
    if isinstance(output, tuple | list) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise SrnasError(f"feature distillation: a matched module returned {type(output).__name__}, not a tensor")
    return output


class FeatureHooks:
    """Forward hooks on the matched modules of ``model`` and ``teacher``; ``remove()`` takes them all off."""

    def __init__(self, model: nn.Module, teacher: nn.Module, spec: FeatureDistillation) -> None:
        self.layers: list[FeatureLayer] = list(spec.layers)  # type: ignore[arg-type]
        self.names = [x.model if x.model == x.teacher else f"{x.model} ~ {x.teacher}" for x in self.layers]
        students = _modules(model, [x.model for x in self.layers], "model")
        teachers = _modules(teacher, [x.teacher for x in self.layers], "teacher")
        self.distance = DISTANCES[spec.distance]
        self.active: list[int] | None = None  # the layers whose shapes match, decided at the first step
        self._on = False
        self._out: dict[str, dict[int, torch.Tensor]] = {"model": {}, "teacher": {}}
        self._handles = [
            module.register_forward_hook(self._hook(side, i))
            for side, modules in (("model", students), ("teacher", teachers))
            for i, module in enumerate(modules)
        ]

    def _hook(self, side: str, index: int):
        layer = self.layers[index]
        channels = layer.model_channels if side == "model" else layer.teacher_channels

        def keep(module: nn.Module, args: tuple, output: Any) -> None:
            if self._on:
                out = _tensor(output)
                if channels is not None:
                    if out.dim() < 2 or max(channels, default=-1) >= out.shape[1]:
                        raise SrnasError(f"feature distillation: {self.names[index]} has no channel {max(channels)}")
                    out = out[:, list(channels)]
                self._out[side][index] = out

        return keep

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Capture the matched outputs inside the block; they are dropped on leaving it."""
        self._on = True
        try:
            yield
        finally:
            self._on = False
            for outputs in self._out.values():
                outputs.clear()

    def loss(self) -> torch.Tensor:
        """Mean distance of the captured model features to the teacher's (float32)."""
        model, teacher = self._out["model"], self._out["teacher"]
        if len(model) != len(self.names) or len(teacher) != len(self.names):
            raise SrnasError(
                "feature distillation: not every matched module ran in this step's passes of the model and teacher"
            )
        if self.active is None:
            self.active = [i for i in range(len(self.names)) if model[i].shape == teacher[i].shape]
            if not self.active:
                shapes = ", ".join(
                    f"{name}: {tuple(model[i].shape)} vs {tuple(teacher[i].shape)}" for i, name in enumerate(self.names)
                )
                raise SrnasError(f"feature distillation: no matched layer has the teacher's output shape ({shapes})")
        terms = [self.distance(model[i].float(), teacher[i].float()) for i in self.active]
        return torch.stack(terms).mean()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
