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
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from nas.errors import SpecError
from nas.models.blocks.common import conv
from nas.models.network import SRNet, build
from nas.models.registry import BLOCKS, FUSIONS, HEADS, UPSAMPLERS
from nas.search.space import SearchSpace

TEMPLATE_CACHE = 64


def tail_key(upsampler: str, global_skip: str) -> str:
    """Upsamplers are not shared across image-skip modes: with a skip the tail predicts a residual, without
    one the whole image, and one set of weights cannot serve both."""
    return f"{upsampler}+{global_skip}"


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
        self._templates: OrderedDict[str, tuple[SRNet, dict[str, str]]] = OrderedDict()

    # -- paths -------------------------------------------------------------------------------------------
    def _template(self, choice: dict[str, Any]) -> tuple[SRNet, dict[str, str]]:
        """A stand-alone model of the path (its own weights unused) and its tensor-name map into the supernet."""
        key = choice_key(choice)
        if key in self._templates:
            self._templates.move_to_end(key)
            return self._templates[key]
        model = build(self.space.to_spec(choice))
        names = {name: self._shared_name(name, choice) for name in model.state_dict()}
        shared = self.state_dict(keep_vars=True)
        for name, shared_name in names.items():
            small, big = model.state_dict()[name], shared.get(shared_name)
            if (
                big is None
                or small.dim() != big.dim()
                or any(s > b for s, b in zip(small.shape, big.shape, strict=True))
            ):
                raise SpecError(
                    f"path tensor {name} {tuple(small.shape)} does not fit the shared tensor "
                    f"{shared_name} {None if big is None else tuple(big.shape)}"
                )
        model.to(next(self.parameters()).device)
        self._templates[key] = (model, names)
        if len(self._templates) > TEMPLATE_CACHE:
            self._templates.popitem(last=False)
        return model, names

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
        """The sliced shared tensors of a path, keyed by the stand-alone model's names (views, with grad)."""
        model, names = self._template(choice)
        shared = self.state_dict(keep_vars=True)
        out = {}
        for name, small in model.state_dict().items():
            big = shared[names[name]]
            out[name] = big[tuple(slice(0, n) for n in small.shape)] if small.dim() else big
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
