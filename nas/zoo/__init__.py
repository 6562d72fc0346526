"""The model zoo: one YAML file per reference model, holding its spec, checkpoint import rules and the
reference numbers it must reproduce (``nas/zoo/<name>.yaml``).

Entry format::

    spec: {...}                       # an architecture spec (nas.models.spec)
    checkpoint:                       # optional: the official checkpoint (found or fetched by nas.zoo.weights)
      file: rfdn_aim2020_x4.pth       # its file name in SRNAS_WEIGHTS_DIR, <reference>/checkpoints/ or the cache
      url: https://...                # public source, pinned to a commit; size (bytes) and sha256 are checked
      size: 1754927
      sha256: 11af8ec8...
      rename:                         # official key -> our key (nas.models.checkpoint.rename_keys)
        - {pattern: '^B(\\d+)\\.', replace: 'body.{1}.', offset: -1}
    reference:                        # official numbers at 3x256x256 and Set5/Set14 x4 Y-PSNR
      params: 433448
      flops: 27102622560              # model_summary convention
      flops_fvcore: 27046231296
      activations: 112034240
      num_conv: 64
      set5_psnr_y: 32.1589            # absent when no checkpoint exists
      set14_psnr_y: 28.6451
    reference_source:                 # where those numbers come from: a row of the reference kit's CSV
      file: results/measured_summary.csv
      key: rfdn_aim2020_x4
      columns: {params: params, flops: flops_model_summary, set5_psnr_y: Set5_repoLR_psnr_y, ...}
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from nas.errors import CheckpointError, SpecError
from nas.models.checkpoint import load_weights, read_state_dict, rename_keys
from nas.zoo import weights
from nas.zoo.weights import WeightsSource

ZOO_DIR = Path(__file__).resolve().parent


def list_zoo() -> list[str]:
    """Names of all zoo models."""
    return sorted(p.stem for p in ZOO_DIR.glob("*.yaml"))


@cache
def _entry(name: str) -> dict[str, Any]:
    path = ZOO_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpecError(f"unknown zoo model {name!r}; known: {', '.join(list_zoo())}")
    return yaml.safe_load(path.read_text())


def zoo_spec(name: str) -> dict[str, Any]:
    """The architecture spec of a zoo model."""
    import copy

    return copy.deepcopy(_entry(name)["spec"])


def reference_profile(name: str) -> dict[str, Any]:
    """The official numbers the zoo model must reproduce."""
    return dict(_entry(name).get("reference", {}))


def weights_source(name: str) -> WeightsSource | None:
    """Where the official checkpoint of a zoo model comes from (file, URL, size, sha256); None when it has none."""
    return WeightsSource.from_entry(name, _entry(name).get("checkpoint"))


def checkpoint_path(name: str) -> Path | None:
    """The verified local official checkpoint (``SRNAS_WEIGHTS_DIR``, the reference kit, the download cache),
    or None when the model has none or it is not present (``srnas zoo download NAME`` fetches it)."""
    source = weights_source(name)
    return weights.find(source) if source else None


def official_weights(name: str) -> Path:
    """The official checkpoint of a zoo model; CheckpointError naming the URL and ``--weights`` when absent."""
    source = weights_source(name)
    if source is None:
        raise CheckpointError(f"zoo model {name!r} has no official checkpoint; pass --weights FILE")
    path = weights.find(source)
    if path is None:
        raise CheckpointError(weights.missing_message(source))
    return path


def import_rules(name: str) -> list[dict[str, Any]]:
    return list((_entry(name).get("checkpoint") or {}).get("rename", []))


def build_zoo_model(name: str, weights: str | Path | None = None, official: bool = False):
    """Build a zoo model; load ``weights`` (an official or srnas checkpoint) or, with ``official``, the kit's."""
    from nas.models.network import build

    model = build(zoo_spec(name))
    if official:
        weights = official_weights(name)
    if weights is not None:
        import_weights(model, name, weights)
    return model


def import_weights(model, name: str, path: str | Path) -> None:
    """Load an official checkpoint (renamed by the zoo's rules) or one of our own into ``model``, strictly."""
    state = read_state_dict(path)
    own_keys = set(model.state_dict())
    if not set(state) <= own_keys:
        state = rename_keys(state, import_rules(name))
    load_weights(model, state, source=str(path))
