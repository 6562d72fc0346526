"""The architecture spec: one plain-data description (YAML/JSON) of every model srnas builds.

A spec is a mapping::

    name: rfdn                 # free text
    scale: 4                   # upscaling factor
    in_channels: 3             # image channels in and out
    out_channels: 3
    input_range: 255           # the range the weights expect: 1 or 255 (models always take [0, 1] images)
    width: 50                  # trunk feature width
    head: {type: conv}         # shallow feature extraction (registry HEADS)
    blocks:                    # the trunk, one entry per block (registry BLOCKS); each gets ``channels=width``
      - {type: rfdb, distilled: 25, esa_channels: 12}
    fusion: {type: concat}     # optional global aggregation of all block outputs (registry FUSIONS), or null
    body_conv: true            # 3x3 conv after the trunk (RFDN's LR_conv)
    body_skip: true            # add the head output to the trunk output
    upsampler: {type: pixelshuffle}   # registry UPSAMPLERS
    global_skip: none          # none | bilinear | bicubic | repeat: image-space skip added to the output
    pruned: {...}              # optional: channel-pruning plan applied after building (nas.models.pruned)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from nas.errors import SpecError
from nas.io import atomic_write

GLOBAL_SKIPS = ("none", "bilinear", "bicubic", "repeat")
DEFAULTS: dict[str, Any] = {
    "name": "model",
    "scale": 4,
    "in_channels": 3,
    "out_channels": 3,
    "input_range": 1,
    "head": {"type": "conv"},
    "fusion": None,
    "body_conv": False,
    "body_skip": False,
    "upsampler": {"type": "pixelshuffle"},
    "global_skip": "none",
}
REQUIRED = ("width", "blocks")
ALLOWED = set(DEFAULTS) | set(REQUIRED) | {"description", "pruned"}


def _positive_int(spec: dict, key: str) -> None:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"spec key {key!r} must be a positive integer, got {value!r}")


def _component(spec: dict, key: str, optional: bool = False) -> None:
    value = spec[key]
    if value is None and optional:
        return
    if not isinstance(value, dict) or "type" not in value:
        raise SpecError(f"spec key {key!r} must be a mapping with a 'type' key, got {value!r}")


def check_keys(data: Any, allowed: Iterable[str], required: Iterable[str], what: str) -> None:
    """``data`` is a mapping with only ``allowed`` keys and every ``required`` one; SpecError names the key."""
    if not isinstance(data, dict):
        raise SpecError(f"{what} must be a mapping, got {type(data).__name__}")
    allowed = set(allowed)
    unknown = sorted(map(str, set(data) - allowed))
    if unknown:
        raise SpecError(f"unknown {what} key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in data:
            raise SpecError(f"{what} is missing the required key {key!r}")


def normalize_spec(spec: Any) -> dict[str, Any]:
    """Validate ``spec`` and fill in defaults; returns a new dict. Raises SpecError naming the bad key."""
    check_keys(spec, ALLOWED, REQUIRED, "spec")
    out = copy.deepcopy(DEFAULTS)
    out.update(copy.deepcopy(spec))
    for key in ("scale", "in_channels", "out_channels", "width"):
        _positive_int(out, key)
    if out["input_range"] not in (1, 255):
        raise SpecError(f"spec key 'input_range' must be 1 or 255, got {out['input_range']!r}")
    if not isinstance(out["blocks"], list) or not out["blocks"]:
        raise SpecError("spec key 'blocks' must be a non-empty list of block mappings")
    for i, block in enumerate(out["blocks"]):
        if not isinstance(block, dict) or "type" not in block:
            raise SpecError(f"blocks[{i}] must be a mapping with a 'type' key, got {block!r}")
    _component(out, "head")
    _component(out, "upsampler")
    _component(out, "fusion", optional=True)
    for key in ("body_conv", "body_skip"):
        if not isinstance(out[key], bool):
            raise SpecError(f"spec key {key!r} must be true or false, got {out[key]!r}")
    if out.get("pruned") is not None and not isinstance(out["pruned"], dict):
        raise SpecError(f"spec key 'pruned' must be a mapping (a pruning plan), got {out['pruned']!r}")
    if out["global_skip"] not in GLOBAL_SKIPS:
        raise SpecError(f"spec key 'global_skip' must be one of {', '.join(GLOBAL_SKIPS)}, got {out['global_skip']!r}")
    return out


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read a spec from a .yaml/.yml/.json file (safe loaders only) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot parse spec file {path}: {exc}") from exc
    if isinstance(data, dict) and "spec" in data and "blocks" not in data:
        data = data["spec"]  # a zoo entry or an exported model card
    try:
        return normalize_spec(data)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from exc


def save_spec(spec: dict[str, Any], path: str | Path) -> None:
    """Write ``spec`` as YAML (or JSON for a .json path) atomically."""
    path = Path(path)
    spec = normalize_spec(spec)
    atomic_write(path, json.dumps(spec, indent=2) if path.suffix == ".json" else yaml.safe_dump(spec, sort_keys=False))
