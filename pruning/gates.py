"""``GatedModel``: learnable per-channel gates on any SRNet, the pruner's working representation.

Gates hold one value per *entry*; a unit whose effective gate (``value * mask``) is zero is pruned, exactly:
``pruning.shrink`` then builds a smaller model with the same output.

- **fine** mode: every prunable conv (``groups == 1``) has an output gate (one entry per output unit, applied
  after the conv or after the BatchNorm that alone follows it) and an input gate (one entry per input unit,
  applied before the conv). Units of channels feeding a PixelShuffle span r^2 channels, so those gates are
  tied in groups of r^2. *Shared* units (residual targets, attention products: see ``pruning.graph``) always
  keep their full width: a zero output gate there only stops that conv from contributing to the channel.
  A *private* unit (one producer, read only by convs) is alive while its producer's output gate and at least
  one consumer's input gate are nonzero; dead units are removed everywhere.
- **coupled** mode: one gate vector per channel space, one entry per unit; the value scales every producer
  of the unit; a zero entry removes the unit from every conv, norm and tensor (the trunk shrinks).

In both modes a conv's input is also multiplied by the 0/1 *alive* mask of its units, so a removed channel
cannot reach the output through a BatchNorm shift or a bias. Units of the image and frozen units have no gates.
Depthwise convs, BatchNorm and PReLU are per-channel: they follow their units and carry no gates of their own.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nas.errors import SrnasError
from nas.models.pruned import MODES  # the plan format owns the mode names
from pruning.graph import EXAMPLE_SIZE, ChannelGraph, analyze


@dataclass(frozen=True)
class Gate:
    """One gate vector: ``name`` (``<conv>:out``, ``<conv>:in`` or ``space<N>``), its ``role`` (out/in/space),
    the conv it belongs to (fine mode), the unit of each entry, and its slice of ``GatedModel.gate_values``."""

    name: str
    role: str
    module: str | None
    units: np.ndarray
    start: int

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


def _unique(units: np.ndarray) -> np.ndarray:
    _, first = np.unique(units, return_index=True)
    return units[np.sort(first)]


class GatedModel(nn.Module):
    """Wraps ``model`` (an SRNet) with gates; ``forward`` is the gated model's output.

    Args:
        model: the network (its modules get hooks; ``remove()`` takes them off).
        mode: ``fine`` or ``coupled`` (see the module docstring).
        graph: a precomputed ``pruning.graph.analyze(model)``.
        example_size: H, W of the analysis input.
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str = "fine",
        graph: ChannelGraph | None = None,
        example_size: Sequence[int] = EXAMPLE_SIZE,
    ) -> None:
        super().__init__()
        if getattr(model, "_pruning_gated", False):
            raise SrnasError("the model already carries gates; call remove() on its GatedModel first")
        if mode not in MODES:
            raise SrnasError(f"unknown pruning mode {mode!r}; known: {', '.join(MODES)}")
        self.model = model
        self.mode = mode
        self.graph = graph if graph is not None else analyze(model, example_size)
        self.gates: dict[str, Gate] = {}
        self._build_gates()
        total = sum(g.size for g in self.gates.values())
        self.num_entries = total
        self.gate_values = nn.Parameter(torch.ones(total))
        self.register_buffer("gate_mask", torch.ones(total, dtype=torch.bool))
        self.entry_unit = np.concatenate([g.units for g in self.gates.values()] or [np.zeros(0, np.int64)])
        self.entry_role = np.concatenate([[g.role] * g.size for g in self.gates.values()] or [np.zeros(0, str)])
        self._index_ports()
        self._hooks_enabled = True
        self._ext = self._alive = None
        self._handles: list = []
        self._attach()
        device = next((p.device for p in model.parameters()), None)
        if device is not None:
            self.to(device)

    # ------------------------------------------------------------------ construction

    def _build_gates(self) -> None:
        g = self.graph
        prunable = g.unit_prunable
        start = 0

        def add(name: str, role: str, module: str | None, units: np.ndarray) -> None:
            nonlocal start
            if len(units):
                self.gates[name] = Gate(name, role, module, units.astype(np.int64), start)
                start += len(units)

        if self.mode == "coupled":
            for space in g.spaces:
                add(f"space{space.id}", "space", None, np.array([u for u in space.units if prunable[u]], np.int64))
            return
        for conv in g.convs.values():
            if conv.kind == "conv":
                add(f"{conv.name}:out", "out", conv.name, _unique(conv.out_units[prunable[conv.out_units]]))
                add(f"{conv.name}:in", "in", conv.name, _unique(conv.in_units[prunable[conv.in_units]]))

    def _entries(self, units: np.ndarray, gate: Gate | None) -> np.ndarray:
        """Flat entry of each channel's unit (``num_entries`` -- the constant 1 -- where ungated)."""
        lookup = np.full(self.graph.num_units, self.num_entries, dtype=np.int64)
        if self.mode == "coupled":
            lookup[self.entry_unit] = np.arange(self.num_entries)
        elif gate is not None:
            lookup[gate.units] = np.arange(gate.start, gate.start + gate.size)
        return lookup[units]

    def _index_ports(self) -> None:
        """Per conv: the flat entry of every output and input channel (numpy + device buffers)."""
        self.ports: dict[str, dict[str, np.ndarray]] = {}
        for i, conv in enumerate(c for c in self.graph.convs.values() if c.kind == "conv"):
            port = {
                "out": self._entries(conv.out_units, self.gates.get(f"{conv.name}:out")),
                "in": self._entries(conv.in_units, self.gates.get(f"{conv.name}:in")),
            }
            self.ports[conv.name] = port
            self.register_buffer(f"_out{i}", torch.from_numpy(port["out"]), persistent=False)
            self.register_buffer(f"_in{i}", torch.from_numpy(port["in"]), persistent=False)
            self.register_buffer(f"_inu{i}", torch.from_numpy(conv.in_units), persistent=False)
        # alive bookkeeping (see unit_alive)
        private = self.graph.unit_private
        role = self.entry_role
        for kind in ("out", "in"):
            sel = np.flatnonzero((role == kind) & private[self.entry_unit]) if len(role) else np.zeros(0, np.int64)
            self.register_buffer(f"_{kind}_entries", torch.from_numpy(sel), persistent=False)
            self.register_buffer(f"_{kind}_units", torch.from_numpy(self.entry_unit[sel]), persistent=False)
        self.register_buffer("_private", torch.from_numpy(private), persistent=False)
        self.register_buffer("_entry_unit", torch.from_numpy(self.entry_unit), persistent=False)

    def _attach(self) -> None:
        self.model._pruning_gated = True
        modules = dict(self.model.named_modules())
        prunable = self.graph.unit_prunable
        # hooks are partials of bound methods, so a deepcopy of the GatedModel gates its own copy
        self._handles.append(self.model.register_forward_pre_hook(self._prepare))
        self._handles.append(self.model.register_forward_hook(self._release))
        for i, conv in enumerate(c for c in self.graph.convs.values() if c.kind == "conv"):
            port = self.ports[conv.name]
            if (port["out"] < self.num_entries).any():
                target = modules[conv.norm or conv.name]
                self._handles.append(target.register_forward_hook(functools.partial(self._scale_out, i)))
            if prunable[conv.in_units].any():
                self._handles.append(modules[conv.name].register_forward_pre_hook(functools.partial(self._scale_in, i)))

    # ------------------------------------------------------------------ forward

    def _prepare(self, module: nn.Module, args: tuple) -> None:
        if not self._hooks_enabled:
            return
        eff = self.gate_values * self.gate_mask
        self._ext = torch.cat([eff, eff.new_ones(1)])
        with torch.no_grad():
            self._alive = self._unit_alive_torch(eff != 0)

    def _release(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        self._ext = self._alive = None  # no autograd graph kept on the module between passes

    def _unit_alive_torch(self, nz: torch.Tensor) -> torch.Tensor:
        n = self.graph.num_units
        alive = torch.ones(n, dtype=torch.bool, device=nz.device)
        if self.mode == "coupled":
            alive[self._entry_unit] = nz
            return alive
        counts = []
        for kind in ("out", "in"):
            entries, units = getattr(self, f"_{kind}_entries"), getattr(self, f"_{kind}_units")
            c = torch.zeros(n, device=nz.device).index_add_(0, units, nz[entries].float())
            counts.append(c > 0)
        return torch.where(self._private, counts[0] & counts[1], alive)

    def _scale_out(self, i: int, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        if not self._hooks_enabled:
            return None
        return out * self._ext[getattr(self, f"_out{i}")].view(1, -1, 1, 1)

    def _scale_in(self, i: int, module: nn.Module, args: tuple) -> tuple | None:
        if not self._hooks_enabled:
            return None
        alive = self._alive[getattr(self, f"_inu{i}")].to(args[0].dtype)
        mult = alive * self._ext[getattr(self, f"_in{i}")] if self.mode == "fine" else alive
        return (args[0] * mult.view(1, -1, 1, 1), *args[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @contextlib.contextmanager
    def hooks_disabled(self) -> Iterator[nn.Module]:
        """Run ``self.model`` as the ungated network inside the block."""
        self._hooks_enabled = False
        try:
            yield self.model
        finally:
            self._hooks_enabled = True

    def remove(self) -> nn.Module:
        """Take the hooks off and return the wrapped (ungated, unfolded) model."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.model._pruning_gated = False
        return self.model

    # ------------------------------------------------------------------ gates and masks

    def gate_names(self) -> list[str]:
        return list(self.gates)

    def gate(self, name: str) -> torch.Tensor:
        """The current values of gate ``name`` (a detached copy; set them with ``set_gate``)."""
        return self.gate_values.detach()[self._gate(name).slice].clone()

    def set_gate(self, name: str, values: torch.Tensor | Sequence[float]) -> None:
        with torch.no_grad():
            values = torch.as_tensor(values, dtype=self.gate_values.dtype, device=self.gate_values.device)
            self.gate_values[self._gate(name).slice] = values

    def effective(self) -> torch.Tensor:
        """All entries' effective gates ``value * mask`` (flat, detached)."""
        return (self.gate_values * self.gate_mask).detach()

    def masks(self) -> dict[str, torch.Tensor]:
        """Per gate: True where the entry is kept (effective gate nonzero)."""
        nz = self.effective() != 0
        return {name: nz[g.slice].clone() for name, g in self.gates.items()}

    def set_mask(self, name: str, keep: torch.Tensor | Sequence[bool]) -> None:
        """Prune (False) or keep (True) each entry of gate ``name``; a re-kept entry whose value is 0 gets 1."""
        gate = self._gate(name)
        keep = torch.as_tensor(keep, dtype=torch.bool, device=self.gate_mask.device)
        if keep.shape != (gate.size,):
            raise SrnasError(f"mask for gate {name!r} needs {gate.size} entries, got shape {tuple(keep.shape)}")
        with torch.no_grad():
            self.gate_mask[gate.slice] = keep
            values = self.gate_values[gate.slice]
            values[keep & (values == 0)] = 1.0

    def prune(self, entries: Sequence[int] | torch.Tensor) -> None:
        """Mask the given flat entries (indices into ``gate_values``)."""
        with torch.no_grad():
            self.gate_mask[torch.as_tensor(entries, dtype=torch.long, device=self.gate_mask.device)] = False

    def set_masks(self, masks: Mapping[str, torch.Tensor | Sequence[bool]]) -> None:
        for name, keep in masks.items():
            self.set_mask(name, keep)

    def unit_alive(self, nz: np.ndarray | None = None) -> np.ndarray:
        """Per unit: does it survive shrinking (numpy bool), for the current gates or a given nonzero pattern
        of the flat entries."""
        if nz is None:
            nz = (self.effective() != 0).cpu().numpy()
        n = self.graph.num_units
        alive = np.ones(n, dtype=bool)
        if self.mode == "coupled":
            alive[self.entry_unit] = nz
            return alive
        private = self.graph.unit_private
        counts = []
        for kind in ("out", "in"):
            sel = (self.entry_role == kind) & private[self.entry_unit]
            counts.append(np.bincount(self.entry_unit[sel], weights=nz[sel], minlength=n) > 0)
        return np.where(private, counts[0] & counts[1], alive)

    def live_entries(self) -> torch.Tensor:
        """Per flat entry: nonzero *and* its unit alive (an input gate of a dead private unit is not live)."""
        nz = (self.effective() != 0).cpu()
        return nz & torch.from_numpy(self.unit_alive(nz.numpy())[self.entry_unit])

    def _gate(self, name: str) -> Gate:
        if name not in self.gates:
            raise SrnasError(
                f"unknown gate {name!r}; the model has {len(self.gates)} gates, e.g. {list(self.gates)[:4]}"
            )
        return self.gates[name]

    def extra_repr(self) -> str:
        pruned = int((self.effective() == 0).sum())
        return f"mode={self.mode}, gates={len(self.gates)}, entries={self.num_entries}, pruned={pruned}"
