"""The one-shot, weight-sharing supernet.

Each layer holds every candidate block of the search space, built once at the widest width. A path (one
architecture of the space) is run with the weights of the widest modules *sliced*: every tensor of the
path's own modules takes the leading ``[:n0, :n1, ...]`` block of the shared tensor of the same name
(OFA-style width sharing). The path is executed by ``torch.func.functional_call`` on a template of the
stand-alone model, so ``extract(choice)`` — the same template holding copies of those slices — gives an
``nn.Module`` whose output equals the supernet's output for that path, for every block family, with no
per-family slicing code. Depth keeps the first ``depth`` layers. The upsampler (tail) has separate weights
per image-skip mode (``tail_key``). BatchNorm statistics are recalibrated
per subnet on extraction (``recalibrate_bn``).

**Segments.** A leading slice is wrong for an axis that reads a channel concatenation (RFDB's ``c5`` reads
``d1, d2, d3, r4``) or whose output is split (IMDB's ``c1``): there, segment ``i`` of the path takes the first
``k_i`` channels of segment ``i`` of the widest (a path of depth ``d`` uses the first ``d`` segments of a
concat over blocks). Each family declares such axes in its own file, ``channel_segments()`` (see
``nas.models.blocks.common``); this module names no block class. The index of every segmented axis is computed
once per template from the path module's and the widest module's declarations and applied with
``index_select`` (gradients flow back into exactly those entries); every other axis stays a leading slice (a view).
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from nas.errors import SpecError
from nas.models.blocks.common import Segments, conv, declared_segments
from nas.models.network import SRNet, build
from nas.models.registry import BLOCKS, FUSIONS, HEADS, UPSAMPLERS
from nas.search.space import SearchSpace

TEMPLATE_CACHE = 64


def tail_key(upsampler: str, global_skip: str) -> str:
    """Upsamplers are not shared across image-skip modes: with a skip the tail predicts a residual, without
    one the whole image, and one set of weights cannot serve both."""
    return f"{upsampler}+{global_skip}"


class PathSlot(NamedTuple):
    """How one tensor of a path is cut from the shared tensor: a leading slice of ``shape`` on every axis but
    those in ``index`` (axis -> the entries of the shared axis, in order)."""

    shared: str
    shape: torch.Size
    index: dict[int, torch.Tensor]


def segment_index(small: list[int], big: list[int], where: str) -> torch.Tensor:
    """The entries of a shared axis of segments ``big`` that a path axis of segments ``small`` reads: the first
    ``small[i]`` channels of segment ``i``."""
    if len(small) > len(big) or any(s > b for s, b in zip(small, big, strict=False)):
        raise SpecError(f"{where}: path segments {small} do not fit the shared segments {big}")
    offsets = [0]
    for b in big[:-1]:
        offsets.append(offsets[-1] + b)
    return torch.cat([torch.arange(o, o + s) for o, s in zip(offsets, small, strict=False)])


def choice_key(choice: dict[str, Any]) -> str:
    """A canonical string for a choice (cache key, study attribute)."""
    return json.dumps(choice, sort_keys=True)


class Supernet(nn.Module):
    """All candidates of a search space at the widest width; ``forward(x, choice)`` runs one path."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        width, layers = space.max_width, space.num_layers
        self.head = HEADS.build(space.head, in_channels=space.in_channels, channels=width)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {name: _build(BLOCKS, f"candidates.{name}", space.candidates[name], channels=width) for name in names}
            )
            for names in space.layers
        )
        self.fusions = nn.ModuleDict(
            {
                name: _build(FUSIONS, f"fusions.{name}", cfg, channels=width, num_blocks=layers)
                for name, cfg in space.fusions.items()
                if cfg is not None
            }
        )
        self.body_conv = conv(width, width, 3) if space.body_conv else None
        self.upsamplers = nn.ModuleDict(
            {
                tail_key(name, skip): _build(
                    UPSAMPLERS,
                    f"upsamplers.{name}",
                    cfg,
                    channels=width,
                    out_channels=space.out_channels,
                    scale=space.scale,
                )
                for name, cfg in space.upsamplers.items()
                for skip in space.global_skips
            }
        )
        self._segments = declared_segments(self)
        self._templates: OrderedDict[str, tuple[SRNet, dict[str, PathSlot]]] = OrderedDict()

    # -- paths -------------------------------------------------------------------------------------------
    def _template(self, choice: dict[str, Any]) -> tuple[SRNet, dict[str, PathSlot]]:
        """A stand-alone model of the path (its own weights unused) and how each of its tensors is cut."""
        key = choice_key(choice)
        if key in self._templates:
            self._templates.move_to_end(key)
            return self._templates[key]
        model = build(self.space.to_spec(choice))
        path_segments = declared_segments(model)
        shared = self.state_dict(keep_vars=True)
        slots = {}
        for name, small in model.state_dict().items():
            shared_name = self._shared_name(name, choice)
            slots[name] = self._slot(name, small, shared_name, shared.get(shared_name), path_segments.get(name, {}))
        model.to(next(self.parameters()).device)
        self._templates[key] = (model, slots)
        if len(self._templates) > TEMPLATE_CACHE:
            self._templates.popitem(last=False)
        return model, slots

    def _slot(
        self, name: str, small: torch.Tensor, shared_name: str, big: torch.Tensor | None, segments: Segments
    ) -> PathSlot:
        """Check that path tensor ``name`` fits its shared tensor and compute its segment indices."""
        widest = self._segments.get(shared_name, {})
        where = f"path tensor {name} {tuple(small.shape)}"
        if big is None or small.dim() != big.dim() or any(s > b for s, b in zip(small.shape, big.shape, strict=True)):
            raise SpecError(
                f"{where} does not fit the shared tensor {shared_name} {None if big is None else tuple(big.shape)}"
            )
        if set(segments) != set(widest):
            raise SpecError(
                f"{where}: segmented axes {sorted(segments)} differ from those of {shared_name} {sorted(widest)}"
            )
        index = {}
        for axis, sizes in segments.items():
            if sum(sizes) != small.shape[axis] or sum(widest[axis]) != big.shape[axis]:
                raise SpecError(
                    f"{where}: axis {axis} segments {sizes} / shared {widest[axis]} do not add up to the tensor sizes "
                    f"{small.shape[axis]} / {big.shape[axis]}"
                )
            index[axis] = segment_index(sizes, widest[axis], f"{where} axis {axis}").to(big.device)
        return PathSlot(shared_name, small.shape, index)

    @staticmethod
    def _shared_name(name: str, choice: dict[str, Any]) -> str:
        top, _, rest = name.partition(".")
        if top == "body":
            index, _, rest = rest.partition(".")
            return f"layers.{index}.{choice['layers'][int(index)]}.{rest}"
        if top == "fusion":
            return f"fusions.{choice['fusion']}.{rest}"
        if top == "upsampler":
            return f"upsamplers.{tail_key(choice['upsampler'], choice['global_skip'])}.{rest}"
        return name

    def path_tensors(self, choice: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The shared tensors cut to a path, keyed by the stand-alone model's names: leading slices (views) and,
        on segmented axes, ``index_select`` gathers; all with grad."""
        _, slots = self._template(choice)
        shared = self.state_dict(keep_vars=True)
        out = {}
        for name, slot in slots.items():
            big = shared[slot.shared]
            if not slot.shape:
                out[name] = big
                continue
            cut = big[tuple(slice(None) if a in slot.index else slice(0, n) for a, n in enumerate(slot.shape))]
            for axis, entries in slot.index.items():
                cut = cut.index_select(axis, entries.to(cut.device))
            out[name] = cut
        return out

    def forward(self, x: torch.Tensor, choice: dict[str, Any]) -> torch.Tensor:
        model, _ = self._template(choice)
        model.train(self.training)
        # strict=False: non-persistent buffers (constants, e.g. a mean to subtract) stay the template's own
        return functional_call(model, self.path_tensors(choice), (x,), strict=False)

    def extract(self, choice: dict[str, Any]) -> SRNet:
        """A stand-alone model of the path holding copies of the inherited weights."""
        model = build(self.space.to_spec(choice))
        with torch.no_grad():
            model.load_state_dict({k: v.detach().clone() for k, v in self.path_tensors(choice).items()}, strict=True)
        return model.to(next(self.parameters()).device)


def sample_choice(space: SearchSpace, seed: int, step: int, mode: str = "uniform") -> dict[str, Any]:
    """The path trained at ``step``: a pure function of (seed, step), so a resumed run samples the same paths.

    ``uniform`` draws every choice independently; ``fair`` (FairNAS) makes each layer visit each of its
    candidates exactly once per cycle of ``len(candidates)`` steps, in a shuffled order.
    """
    if mode not in ("uniform", "fair"):
        raise SpecError(f"unknown sampling {mode!r}; known: uniform, fair")
    rng = random.Random(f"{seed}:{step}")
    depth = rng.choice(space.depths)
    layers = []
    for i in range(depth):
        names = space.layers[i]
        if mode == "uniform":
            layers.append(rng.choice(names))
        else:
            cycle, pos = divmod(step, len(names))
            order = list(names)
            random.Random(f"{seed}:{i}:{cycle}").shuffle(order)
            layers.append(order[pos])
    return {
        "width": rng.choice(space.widths),
        "depth": depth,
        "layers": layers,
        "fusion": rng.choice(list(space.fusions)),
        "upsampler": rng.choice(list(space.upsamplers)),
        "global_skip": rng.choice(space.global_skips),
    }


def _build(registry, where: str, cfg: dict[str, Any], **context: Any) -> nn.Module:
    try:
        return registry.build(cfg, **context)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from exc


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate BatchNorm running statistics of a subnet on LR batches (cumulative average); returns #batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    n = 0
    for x in batches:
        model(x)
        n += 1
    for m, momentum in saved:
        m.momentum = momentum
    model.train(was_training)
    return n
