"""Module surgery: turn a freshly built base model into the pruned architecture a plan describes.

A plan is plain data (the ``pruned`` key of a spec, written by ``pruning.shrink``)::

    pruned:
      mode: fine                      # fine | coupled (how it was pruned; informative)
      convs:                          # every nn.Conv2d whose shape changes, by module path
        body.0.c1_r:
          out: 0-7,9,12-15            # kept output channels of the original conv (index list)
          in: 0-15                    # kept input channels
          scatter: {width: 16, index: 0-7,9,12-15}   # optional: write the outputs into a zero tensor this
                                                       # wide, at these positions (a residual target that
                                                       # keeps its full width)
          gather: 0-3,5               # optional: read only these positions of the input tensor
      norms:                          # BatchNorm2d / PReLU(C) by path: kept channels (+ optional scatter)
        body.0.bn1: {keep: 0-7}
      splits:                         # channel splits of modules that declare split_sizes (IMDB):
        body.0: [[4, 10], [3, 11], [4, 9]]  # the sizes of each split call, in forward order

Index lists are written as compact range strings (``"0-7,9,12-15"``) or plain integer lists. Depthwise
convs list the same ``in`` and ``out``; their ``groups`` follows. Weights are not part of the plan: they
load strictly into the result (``nas.zoo.resolve.load_model``).

**What a block family declares for the pruner** (in its own file; ``pruning`` knows no family by name):

- ``image_space = True`` (class attribute) on a layer that maps the image to the image channel by channel,
  e.g. LatticeNet's ``MeanShift`` conv: its channels are the image's and are never pruned (``is_image_space``);
- ``split_sizes``: a module whose forward splits channels with ``torch.split(x, self.split_sizes[i], dim=1)``
  (``i``: the i-th split call in forward order; IMDB) holds the sizes of every call as a list of tuples.
  The pruner resizes exactly those splits (any other channel split freezes its channels) and ``apply_plan``
  sets ``split_sizes`` to the plan's ``splits`` entry (``declared_splits``, ``set_split_sizes``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nas.errors import SpecError

MODES = ("fine", "coupled")
PLAN_KEYS = {"mode", "convs", "norms", "splits"}


# ---------------------------------------------------------------- index lists


def encode_indices(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (sorted, unique)."""
    parts = []
    items = sorted(set(int(i) for i in indices))
    start = prev = None
    for i in items:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ",".join(parts)


def decode_indices(value: Any, where: str, limit: int | None = None) -> list[int]:
    """A range string or an integer list -> sorted unique indices; SpecError naming ``where`` when malformed."""
    if isinstance(value, bool):
        raise SpecError(f"{where}: expected an index list, got {value!r}")
    if isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        items = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            lo, sep, hi = part.partition("-")
            try:
                items.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
            except ValueError:
                raise SpecError(f"{where}: bad index range {part!r} in {value!r}") from None
    elif isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        items = list(value)
    else:
        raise SpecError(f"{where}: expected an index list like '0-7,9' or [0, 1], got {value!r}")
    if len(set(items)) != len(items) or items != sorted(items):
        raise SpecError(f"{where}: indices must be increasing and unique, got {value!r}")
    if items and (items[0] < 0 or (limit is not None and items[-1] >= limit)):
        raise SpecError(f"{where}: index out of range 0..{(limit or 1) - 1} in {value!r}")
    return items


# ---------------------------------------------------------------- pruned modules


class PrunedConv2d(nn.Conv2d):
    """A conv that reads only some channels of its input (``gather``) and/or writes its outputs into a wider
    zero tensor (``scatter``): a residual target or attention product that keeps its full width."""

    def __init__(
        self,
        *args: Any,
        gather: Sequence[int] | None = None,
        scatter: Sequence[int] | None = None,
        scatter_width: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        device = self.weight.device
        self.scatter_width = scatter_width
        self.register_buffer("gather_index", _index(gather, device), persistent=False)
        self.register_buffer("scatter_index", _index(scatter, device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather_index is not None:
            x = x.index_select(1, self.gather_index)
        y = self._conv_forward(x, self.weight, self.bias)
        return _scatter(y, self.scatter_index, self.scatter_width)

    def extra_repr(self) -> str:
        extra = super().extra_repr()
        if self.gather_index is not None:
            extra += f", gather={len(self.gather_index)}"
        if self.scatter_index is not None:
            extra += f", scatter_to={self.scatter_width}"
        return extra


class PrunedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm over the kept channels whose output is scattered into a wider zero tensor."""

    def __init__(self, *args: Any, scatter: Sequence[int], scatter_width: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scatter_width = scatter_width
        self.register_buffer("scatter_index", _index(scatter, self.running_mean.device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _scatter(super().forward(x), self.scatter_index, self.scatter_width)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scatter_to={self.scatter_width}"


def _index(values: Sequence[int] | None, device: torch.device) -> torch.Tensor | None:
    return None if values is None else torch.tensor(list(values), dtype=torch.long, device=device)


def _scatter(y: torch.Tensor, index: torch.Tensor | None, width: int | None) -> torch.Tensor:
    if index is None:
        return y
    out = y.new_zeros((y.shape[0], width, *y.shape[2:]))
    return out.index_copy(1, index, y)


# ---------------------------------------------------------------- block declarations (module docstring)


def is_image_space(module: nn.Module) -> bool:
    """Does the layer declare that its channels are the image's (``image_space = True``)?"""
    return bool(getattr(module, "image_space", False))


def declared_splits(module: nn.Module | None) -> list[tuple[int, ...]] | None:
    """The ``split_sizes`` a module declares (one size tuple per split call of its forward), or None."""
    sizes = getattr(module, "split_sizes", None)
    if sizes is None:
        return None
    return [tuple(int(v) for v in s) for s in sizes]


def set_split_sizes(module: nn.Module, sizes: list[list[int]], where: str) -> None:
    """Give a module that declares ``split_sizes`` new sizes: as many calls, as many pieces per call."""
    current = declared_splits(module)
    if current is None:
        raise SpecError(f"{where}: {type(module).__name__} declares no channel splits (split_sizes) to resize")
    if not isinstance(sizes, list) or not all(
        isinstance(s, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in s) for s in sizes
    ):
        raise SpecError(f"{where}: expected a list of size lists, got {sizes!r}")
    if [len(s) for s in sizes] != [len(s) for s in current]:
        raise SpecError(
            f"{where}: {type(module).__name__} splits {len(current)} time(s) into {[len(s) for s in current]} "
            f"pieces, got sizes {sizes!r}"
        )
    module.split_sizes = [tuple(s) for s in sizes]


# ---------------------------------------------------------------- apply


def apply_plan(model: nn.Module, plan: Mapping[str, Any]) -> nn.Module:
    """Replace the modules ``plan`` names by their pruned versions (in place); returns ``model``."""
    if not isinstance(plan, Mapping):
        raise SpecError(f"spec key 'pruned' must be a mapping, got {type(plan).__name__}")
    unknown = sorted(set(plan) - PLAN_KEYS)
    if unknown:
        raise SpecError(f"pruned: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(PLAN_KEYS))}")
    if plan.get("mode", "fine") not in MODES:
        raise SpecError(f"pruned.mode must be one of {', '.join(MODES)}, got {plan.get('mode')!r}")
    modules = dict(model.named_modules())
    for path, entry in _section(plan, "convs").items():
        _replace(model, path, _pruned_conv(_module(modules, path, "convs", nn.Conv2d), entry, f"pruned.convs.{path}"))
    for path, entry in _section(plan, "norms").items():
        module = _module(modules, path, "norms", nn.BatchNorm2d | nn.PReLU)
        _replace(model, path, _pruned_norm(module, entry, f"pruned.norms.{path}"))
    for path, sizes in _section(plan, "splits").items():
        module = modules.get(path)
        if declared_splits(module) is None:
            raise SpecError(f"pruned.splits: {path!r} is not a module whose channel splits can be resized")
        set_split_sizes(module, sizes, f"pruned.splits.{path}")
    return model


def _section(plan: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    section = plan.get(key) or {}
    if not isinstance(section, Mapping):
        raise SpecError(f"pruned.{key} must be a mapping of module path -> entry, got {section!r}")
    return section


def _module(modules: dict[str, nn.Module], path: str, section: str, kind: Any) -> nn.Module:
    module = modules.get(path)
    if module is None or not isinstance(module, kind):
        found = "nothing" if module is None else type(module).__name__
        raise SpecError(f"pruned.{section}: {path!r} names {found}, not a prunable module of the base model")
    return module


def _entry(entry: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise SpecError(f"{where} must be a mapping, got {entry!r}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return entry


def _scatter_of(entry: Mapping[str, Any], count: int, where: str) -> tuple[list[int] | None, int | None]:
    scatter = entry.get("scatter")
    if scatter is None:
        return None, None
    if not isinstance(scatter, Mapping) or set(scatter) != {"width", "index"}:
        raise SpecError(f"{where}.scatter must be {{width: N, index: positions}}, got {scatter!r}")
    width = scatter["width"]
    if isinstance(width, bool) or not isinstance(width, int) or width < count:
        raise SpecError(f"{where}.scatter.width must be an integer >= {count}, got {width!r}")
    index = decode_indices(scatter["index"], f"{where}.scatter.index", width)
    if len(index) != count:
        raise SpecError(f"{where}.scatter.index has {len(index)} positions for {count} channels")
    return index, width


def _pruned_conv(module: nn.Conv2d, entry: Any, where: str) -> nn.Conv2d:
    if type(module) not in (nn.Conv2d, PrunedConv2d):
        raise SpecError(f"{where}: cannot prune a {type(module).__name__}")
    entry = _entry(entry, where, {"out", "in", "scatter", "gather"})
    for key in ("out", "in"):
        if key not in entry:
            raise SpecError(f"{where}: missing key {key!r}")
    out = decode_indices(entry["out"], f"{where}.out", module.out_channels)
    inp = decode_indices(entry["in"], f"{where}.in", module.in_channels)
    depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
    if depthwise and out != inp:
        raise SpecError(f"{where}: a depthwise conv keeps the same input and output channels")
    if module.groups > 1 and not depthwise:
        raise SpecError(f"{where}: grouped convs (groups={module.groups}) cannot be pruned")
    if not out or not inp:
        raise SpecError(f"{where}: a conv must keep at least one input and one output channel")
    scatter, width = _scatter_of(entry, len(out), where)
    gather = entry.get("gather")
    if gather is not None:
        gather = decode_indices(gather, f"{where}.gather")
        if len(gather) != len(inp):
            raise SpecError(f"{where}.gather has {len(gather)} positions for {len(inp)} input channels")
    kwargs = dict(
        kernel_size=module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=len(out) if depthwise else 1,
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
        device=module.weight.device,
        dtype=module.weight.dtype,
    )
    if scatter is None and gather is None:
        return nn.Conv2d(len(inp), len(out), **kwargs)
    return PrunedConv2d(len(inp), len(out), gather=gather, scatter=scatter, scatter_width=width, **kwargs)


def _pruned_norm(module: nn.Module, entry: Any, where: str) -> nn.Module:
    entry = _entry(entry, where, {"keep", "scatter"})
    if "keep" not in entry:
        raise SpecError(f"{where}: missing key 'keep'")
    if isinstance(module, nn.PReLU):
        if module.num_parameters == 1:
            raise SpecError(f"{where}: a PReLU with one parameter has no channels to prune")
        keep = decode_indices(entry["keep"], f"{where}.keep", module.num_parameters)
        if entry.get("scatter") is not None:
            raise SpecError(f"{where}: PReLU takes no scatter")
        return nn.PReLU(len(keep), device=module.weight.device, dtype=module.weight.dtype)
    if type(module) not in (nn.BatchNorm2d, PrunedBatchNorm2d):
        raise SpecError(f"{where}: cannot prune a {type(module).__name__}")
    keep = decode_indices(entry["keep"], f"{where}.keep", module.num_features)
    scatter, width = _scatter_of(entry, len(keep), where)
    ref = module.running_mean if module.running_mean is not None else module.weight
    kwargs = dict(
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
        device=ref.device if ref is not None else None,
        dtype=ref.dtype if ref is not None else None,
    )
    if scatter is None:
        return nn.BatchNorm2d(len(keep), **kwargs)
    return PrunedBatchNorm2d(len(keep), scatter=scatter, scatter_width=width, **kwargs)


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, new)
