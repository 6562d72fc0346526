"""The persisted state of a pruning run (``DIR/state.json``): what lets ``prune`` continue after a kill.

It records the configuration, a fingerprint of the model, the baseline counts and every round's masks (plain
data: kept entries per gate, ``nas.models.pruned.encode_indices``) as soon as they are chosen, then the round's
results once its fine-tune is done. Written atomically (``nas.io``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.errors import SrnasError
from nas.io import atomic_json, atomic_torch_save
from nas.models.pruned import decode_indices, encode_indices
from nas.train import CHECKPOINT_FILE
from pruning.config import PruneConfig
from pruning.gates import GatedModel

STATE_FILE = "state.json"
FORMAT = "srnas-prune"
RECONSTRUCTED_FILE = "reconstructed.pt"  # a round's weights right after its least-squares refit
# fields that may change when a run is continued (they do not change the result)
RESUMABLE = frozenset({"progress", "device", "report", "benchmarks"})


class PruneStateError(SrnasError):
    """A state file that cannot be continued: damaged, another model's, or other settings."""


def fingerprint(model: nn.Module, spec: dict[str, Any]) -> str:
    """A short hash of the spec and the weights, so a folder is never continued with another model."""
    h = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def new_state(cfg: PruneConfig, fingerprint: str, source: str | None, baseline: dict[str, float]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": 1,
        "fingerprint": fingerprint,
        "source": source,
        "config": cfg.to_dict(),
        "baseline": {k: float(v) for k, v in baseline.items()},
        "rounds": [],
        "final": None,
    }


def load_state(path: Path, cfg: PruneConfig, fingerprint: str) -> dict[str, Any] | None:
    """The state in ``path`` (None when there is none), checked against this model and configuration.

    Options a state predates (absent from its config) count as their defaults, so older runs continue."""
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PruneStateError(f"cannot read pruning state {path}: {exc}; use a new output folder") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PruneStateError(f"{path} is not an srnas pruning state; use a new output folder")
    if state.get("fingerprint") != fingerprint:
        raise PruneStateError(
            f"{path} belongs to a pruning run of another model or other weights; use a new output folder"
        )
    defaults = {f.name: f.default for f in dataclasses.fields(PruneConfig) if f.default is not dataclasses.MISSING}
    old, new = state["config"], cfg.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k not in RESUMABLE and old.get(k, defaults.get(k)) != new.get(k))
    if diff:
        details = ", ".join(f"{k}: {old.get(k, defaults.get(k))!r} -> {new.get(k)!r}" for k in diff)
        raise PruneStateError(f"{path} was written with other pruning settings ({details}); use a new output folder")
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_json(path, state, indent=1)


def masks_to_data(gated: GatedModel) -> dict[str, str]:
    """Per gate: the kept entries as an index range string (``nas.models.pruned.encode_indices``)."""
    return {name: encode_indices(np.flatnonzero(keep.cpu().numpy())) for name, keep in gated.masks().items()}


def masks_from_data(gated: GatedModel, data: dict[str, str]) -> None:
    """Set the gates' masks from ``masks_to_data``'s result."""
    if set(data) != set(gated.gates):
        raise PruneStateError("the saved masks do not match the model's gates; use a new output folder")
    masks = {}
    for name, text in data.items():
        keep = np.zeros(gated.gates[name].size, dtype=bool)
        keep[decode_indices(text, f"masks.{name}", len(keep))] = True
        masks[name] = torch.from_numpy(keep)
    gated.set_masks(masks)


def round_dir(out: Path, k: int) -> Path:
    """Where round ``k`` keeps its fine-tune checkpoint (and its refit weights)."""
    return out / f"round_{k}"


def save_reconstructed(gated: GatedModel, out: Path, k: int) -> None:
    """The gated model's weights right after round ``k``'s least-squares refit."""
    atomic_torch_save(round_dir(out, k) / RECONSTRUCTED_FILE, gated.state_dict())


def load_weights(gated: GatedModel, path: Path, what: str) -> None:
    """Load a saved gated state dict (a train checkpoint's ``model`` entry, or a plain state dict)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        gated.load_state_dict(ckpt["model"] if "model" in ckpt and isinstance(ckpt["model"], dict) else ckpt)
    except Exception as exc:  # a missing or damaged file: name it
        raise PruneStateError(f"cannot restore {what} from {path}: {exc}") from exc


def restore_round(gated: GatedModel, out: Path, record: dict[str, Any], cfg: PruneConfig) -> None:
    """Masks and weights at the end of a finished round."""
    masks_from_data(gated, record["masks"])
    k = record["round"]
    if cfg.round_steps > 0:
        load_weights(gated, round_dir(out, k) / CHECKPOINT_FILE, f"round {k}")
    elif cfg.reconstruct:
        load_weights(gated, round_dir(out, k) / RECONSTRUCTED_FILE, f"round {k}'s refit weights")
    # else nothing was trained: the weights are the original ones
