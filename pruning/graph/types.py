"""The result types of the channel analysis: units, spaces and where every conv's channels live."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ConvInfo:
    """One ``nn.Conv2d`` module: the unit of each of its input and output channels.

    kind: ``conv`` (prunable in and out), ``depthwise`` (per-channel: in = out, no gates of its own) or
    ``fixed`` (grouped, or an ``image_space`` layer: never changed). ``norm``: the BatchNorm that alone consumes the
    conv's output; the output gate sits after it (so a zero gate removes the channel, BN shift included).
    """

    name: str
    kind: str
    in_units: np.ndarray
    out_units: np.ndarray
    norm: str | None = None
    calls: int = 1


@dataclass
class NormInfo:
    """A per-channel module (``batchnorm`` or ``prelu``) and the unit of each of its channels."""

    name: str
    kind: str
    units: np.ndarray


@dataclass
class SplitInfo:
    """A channel split inside an adapter module (the ``index``-th call in its forward): its output segments."""

    module: str
    index: int
    segments: list[np.ndarray]


@dataclass
class CallInfo:
    """One call of a module the challenge FLOP counter counts (conv, activation module, BatchNorm, Linear)."""

    module: str
    kind: str  # conv | act | bn | linear
    index: int  # n-th call of this module
    units: np.ndarray | None  # the unit of each channel of the call's output (None for linear)


@dataclass
class Space:
    """Units linked through unification (see the module docstring).

    members: ``(module, role, offset, length)`` runs: ``length`` consecutive channels of the module's ``role``
    (``in``/``out`` for convs, ``norm`` for BN/PReLU/depthwise) starting at ``offset`` belong to this space.
    private: every unit has one producer and reaches only conv inputs (through unary ops, cat/split and
    pixel shuffle); frozen/image: some unit can never be pruned.
    """

    id: int
    units: list[int]
    members: list[tuple[str, str, int, int]] = field(default_factory=list)
    private: bool = False
    frozen: bool = False
    image: bool = False

    @property
    def size(self) -> int:
        return len(self.units)


@dataclass
class ChannelGraph:
    """The result of ``analyze``: units, spaces, and where every conv's channels live."""

    num_units: int
    unit_space: np.ndarray
    unit_image: np.ndarray
    unit_frozen: np.ndarray
    unit_shared: np.ndarray
    unit_channels: np.ndarray  # channels per unit in the producer (r^2 for pixel-shuffle groups)
    reasons: dict[int, list[str]]
    spaces: list[Space]
    convs: dict[str, ConvInfo]
    norms: dict[str, NormInfo]
    splits: list[SplitInfo]
    calls: list[CallInfo]
    unknown_ops: Counter
    # per module path: the unit of each channel of its first call's output (the first tensor of a tuple)
    module_outputs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def unit_private(self) -> np.ndarray:
        return ~(self.unit_shared | self.unit_frozen | self.unit_image)

    @property
    def unit_prunable(self) -> np.ndarray:
        return ~(self.unit_frozen | self.unit_image)

    def space_of(self, module: str, role: str = "out") -> Space:
        """The space of the first channel of a conv's input (``in``) or output (``out``)."""
        info = self.convs[module]
        units = info.in_units if role == "in" else info.out_units
        return self.spaces[int(self.unit_space[units[0]])]

    def summary(self) -> str:
        """A printable listing of spaces, their members and every frozen unit's reason."""
        lines = [f"{len(self.spaces)} spaces, {self.num_units} units, {len(self.convs)} convs"]
        for s in self.spaces:
            flags = [f for f, on in (("image", s.image), ("frozen", s.frozen), ("private", s.private)) if on]
            lines.append(f"space {s.id}: {s.size} units{' [' + ', '.join(flags) + ']' if flags else ''}")
            for module, role, offset, length in s.members:
                lines.append(f"    {module}.{role}[{offset}:{offset + length}]")
            reasons = sorted({r for u in s.units for r in self.reasons.get(u, [])})
            lines.extend(f"    frozen: {r}" for r in reasons)
        if self.unknown_ops:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.unknown_ops.items()))
            lines.append(f"unknown ops on the channel dimension (their channels are frozen): {ops}")
        return "\n".join(lines)
