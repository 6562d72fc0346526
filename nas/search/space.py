"""Search spaces: a validated YAML description of which architectures a supernet holds.

A search space (``search_spaces/*.yaml``, loaded with ``yaml.safe_load``)::

    name: quick
    description: free text
    scale: 4
    widths: [16, 24, 32]            # trunk width choices; shared by slicing the widest (see nas.search.supernet)
    depths: [2, 3, 4]               # number of active layers; the largest is the number of layers
    candidates:                     # block families a layer can choose, name -> block config (registry BLOCKS)
      rfdb: {type: rfdb}
      ir_e6: {type: inverted_residual, expand_ratio: 6}
    layers: all                     # candidates per layer: `all`, or a list (one list of names per layer)
    head: {type: conv}
    fusions:                        # global feature aggregation choices, name -> fusion config or null
      none: null
      concat: {type: concat}
    body_conv: true
    body_skip: true
    upsamplers:                     # name -> upsampler config (registry UPSAMPLERS)
      pixelshuffle: {type: pixelshuffle}
    global_skips: [none, bilinear]
    references:                     # optional: hand designs written as points of the space (a choice dict each)
      rfdn_like: {width: 32, depth: 4, layers: [rfdb, rfdb, rfdb, rfdb], fusion: concat, upsampler: pixelshuffle,
                  global_skip: none}
    train: {...}                    # supernet training: nas.search.options.SupernetTraining (TrainConfig, data, ...)
    search: {...}                   # the study: nas.search.options.SearchOptions (trials, sampler, objectives, ...)

A *choice* (what a trial samples) is ``{width, depth, layers: [name per active layer], fusion, upsampler,
global_skip}``; ``SearchSpace.to_spec(choice)`` turns it into an ordinary architecture spec.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.errors import SpecError
from nas.models import blocks  # noqa: F401  (registers the block families)
from nas.models.registry import BLOCKS, FUSIONS, HEADS, UPSAMPLERS
from nas.models.spec import GLOBAL_SKIPS, check_keys, normalize_spec, read_data_file
from nas.search.options import SearchOptions, SupernetTraining

SPACE_KEYS = {
    "name",
    "description",
    "scale",
    "in_channels",
    "out_channels",
    "widths",
    "depths",
    "candidates",
    "layers",
    "head",
    "fusions",
    "body_conv",
    "body_skip",
    "upsamplers",
    "global_skips",
    "references",
    "train",
    "search",
}
REQUIRED = ("widths", "depths", "candidates", "upsamplers")
CHOICE_KEYS = ("width", "depth", "layers", "fusion", "upsampler", "global_skip")


@dataclass
class SearchSpace:
    """A validated search space; see the module docstring for the YAML format."""

    name: str
    scale: int
    widths: list[int]
    depths: list[int]
    candidates: dict[str, dict[str, Any]]
    layers: list[list[str]]
    head: dict[str, Any]
    fusions: dict[str, dict[str, Any] | None]
    body_conv: bool
    body_skip: bool
    upsamplers: dict[str, dict[str, Any]]
    global_skips: list[str]
    in_channels: int = 3
    out_channels: int = 3
    description: str = ""
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: SupernetTraining = field(default_factory=SupernetTraining)
    search: SearchOptions = field(default_factory=SearchOptions)
    source: str = "<dict>"

    @property
    def max_width(self) -> int:
        return max(self.widths)

    @property
    def num_layers(self) -> int:
        return max(self.depths)

    def to_dict(self) -> dict[str, Any]:
        """The space as plain data (what ``parse_space`` reads back; no ``source``)."""
        d = asdict(self)
        d.pop("source")
        d.update(train=self.train.to_dict(), search=self.search.to_dict())
        return d

    def with_training(self, **overrides: Any) -> SearchSpace:
        """A copy whose ``train:`` options have ``overrides`` (``None`` values ignored), validated again."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, train=replace(self.train, **given)) if given else self

    def to_spec(self, choice: dict[str, Any]) -> dict[str, Any]:
        """The architecture spec of one point of the space (validated)."""
        self.check_choice(choice)
        fusion = self.fusions[choice["fusion"]]
        spec = {
            "name": f"{self.name}-subnet",
            "scale": self.scale,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "input_range": 1,
            "width": choice["width"],
            "head": copy.deepcopy(self.head),
            "blocks": [copy.deepcopy(self.candidates[n]) for n in choice["layers"]],
            "fusion": copy.deepcopy(fusion),
            "body_conv": self.body_conv,
            "body_skip": self.body_skip,
            "upsampler": copy.deepcopy(self.upsamplers[choice["upsampler"]]),
            "global_skip": choice["global_skip"],
        }
        return normalize_spec(spec)

    def check_choice(self, choice: dict[str, Any]) -> None:
        """Raise SpecError naming the first choice that is not in the space."""
        missing = [k for k in CHOICE_KEYS if k not in choice]
        if missing:
            raise SpecError(f"choice is missing {', '.join(missing)} (needs {', '.join(CHOICE_KEYS)})")
        _one_of("width", choice["width"], self.widths)
        _one_of("depth", choice["depth"], self.depths)
        names = choice["layers"]
        if not isinstance(names, list) or len(names) != choice["depth"]:
            raise SpecError(
                f"choice 'layers' must list {choice['depth']} block names (one per active layer), got {names!r}"
            )
        for i, name in enumerate(names):
            _one_of(f"layers[{i}]", name, self.layers[i])
        _one_of("fusion", choice["fusion"], list(self.fusions))
        _one_of("upsampler", choice["upsampler"], list(self.upsamplers))
        _one_of("global_skip", choice["global_skip"], self.global_skips)

    def size(self) -> int:
        """Number of distinct architectures in the space."""
        total = 0
        for depth in self.depths:
            n = 1
            for i in range(depth):
                n *= len(self.layers[i])
            total += n
        return total * len(self.widths) * len(self.fusions) * len(self.upsamplers) * len(self.global_skips)


def _one_of(key: str, value: Any, allowed: list) -> None:
    if value not in allowed:
        raise SpecError(f"{key}: {value!r} is not in the space; allowed: {', '.join(map(str, allowed))}")


def _positive_int_list(data: dict, key: str) -> list[int]:
    value = data[key]
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value)
    ):
        raise SpecError(f"{key!r} must be a non-empty list of positive integers, got {value!r}")
    return sorted(set(value))


def _named_configs(data: dict, key: str, registry, allow_null: bool = False) -> dict[str, Any]:
    value = data[key]
    if not isinstance(value, dict) or not value:
        raise SpecError(f"{key!r} must be a non-empty mapping of name -> {registry.kind} config, got {value!r}")
    for name, cfg in value.items():
        if cfg is None and allow_null:
            continue
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise SpecError(f"{key}.{name} must be a mapping with a 'type' key, got {cfg!r}")
        if cfg["type"] not in registry:
            raise SpecError(
                f"{key}.{name}: unknown {registry.kind} {cfg['type']!r}; known: {', '.join(registry.names())}"
            )
    return copy.deepcopy(value)


def parse_space(data: Any, source: str = "<dict>") -> SearchSpace:
    """Validate a search-space mapping (see module docstring); errors name the key and the allowed values."""
    try:
        return _parse(data, source)
    except SpecError as exc:
        raise SpecError(f"search space {source}: {exc}") from exc


def _parse(data: Any, source: str) -> SearchSpace:
    check_keys(data, SPACE_KEYS, REQUIRED, "space")
    widths = _positive_int_list(data, "widths")
    depths = _positive_int_list(data, "depths")
    candidates = _named_configs(data, "candidates", BLOCKS)
    num_layers = max(depths)
    layers_cfg = data.get("layers", "all")
    if layers_cfg == "all":
        layers = [list(candidates) for _ in range(num_layers)]
    elif isinstance(layers_cfg, list) and len(layers_cfg) == num_layers:
        layers = []
        for i, names in enumerate(layers_cfg):
            names = list(candidates) if names == "all" else names
            if not isinstance(names, list) or not names:
                raise SpecError(f"layers[{i}] must be 'all' or a non-empty list of candidate names")
            for name in names:
                _one_of(f"layers[{i}]", name, list(candidates))
            layers.append(list(names))
    else:
        raise SpecError(f"'layers' must be 'all' or a list of {num_layers} lists (one per layer), got {layers_cfg!r}")
    fusions = _named_configs(data, "fusions", FUSIONS, allow_null=True) if "fusions" in data else {"none": None}
    upsamplers = _named_configs(data, "upsamplers", UPSAMPLERS)
    head = data.get("head", {"type": "conv"})
    if not isinstance(head, dict) or head.get("type") not in HEADS:
        raise SpecError(f"'head' must be a mapping with a known head 'type' ({', '.join(HEADS.names())}), got {head!r}")
    global_skips = data.get("global_skips", ["none"])
    if not isinstance(global_skips, list) or not global_skips:
        raise SpecError("'global_skips' must be a non-empty list")
    for skip in global_skips:
        _one_of("global_skips", skip, list(GLOBAL_SKIPS))
    for key in ("body_conv", "body_skip"):
        if not isinstance(data.get(key, True), bool):
            raise SpecError(f"{key!r} must be true or false, got {data[key]!r}")
    for key in ("train", "search", "references"):
        if not isinstance(data.get(key) or {}, dict):
            raise SpecError(f"{key!r} must be a mapping, got {data[key]!r}")
    scale = data.get("scale", 4)
    if scale not in (2, 3, 4):
        raise SpecError(f"'scale' must be 2, 3 or 4, got {scale!r}")
    space = SearchSpace(
        name=str(data.get("name", Path(source).stem)),
        scale=scale,
        widths=widths,
        depths=depths,
        candidates=candidates,
        layers=layers,
        head=copy.deepcopy(head),
        fusions=fusions,
        body_conv=data.get("body_conv", True),
        body_skip=data.get("body_skip", True),
        upsamplers=upsamplers,
        global_skips=list(global_skips),
        in_channels=data.get("in_channels", 3),
        out_channels=data.get("out_channels", 3),
        description=str(data.get("description", "")),
        references=copy.deepcopy(data.get("references") or {}),
        train=SupernetTraining.parse(copy.deepcopy(data.get("train"))),
        search=SearchOptions.parse(copy.deepcopy(data.get("search"))),
        source=source,
    )
    _check_buildable(space)
    for name, choice in space.references.items():
        try:
            space.to_spec(choice)
        except SpecError as exc:
            raise SpecError(f"references.{name}: {exc}") from exc
    return space


def _check_buildable(space: SearchSpace) -> None:
    """Build every component once at the smallest width so bad options fail here, naming the key."""
    width = min(space.widths)
    checks = [(f"candidates.{n}", BLOCKS, c, {"channels": width}) for n, c in space.candidates.items()]
    checks += [
        (f"fusions.{n}", FUSIONS, c, {"channels": width, "num_blocks": space.num_layers})
        for n, c in space.fusions.items()
        if c is not None
    ]
    checks += [
        (
            f"upsamplers.{n}",
            UPSAMPLERS,
            c,
            {"channels": width, "out_channels": space.out_channels, "scale": space.scale},
        )
        for n, c in space.upsamplers.items()
    ]
    checks.append(("head", HEADS, space.head, {"in_channels": space.in_channels, "channels": width}))
    for where, registry, cfg, context in checks:
        try:
            registry.build(cfg, **context)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from exc


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    data = read_data_file(path, "search space")  # safe YAML, size and depth limits: one SpecError
    return parse_space(data, str(path))
