"""Turn what a user types as MODEL (zoo name, spec file, model folder) into a model with weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from nas import zoo
from nas.errors import CheckpointError, SpecError
from nas.models.checkpoint import load_weights, read_state_dict, save_weights
from nas.models.network import build
from nas.models.spec import load_spec, save_spec
from nas.paths import results_dir

SPEC_FILE = "spec.yaml"
WEIGHTS_FILE = "weights.safetensors"
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class LoadedModel:
    model: nn.Module
    spec: dict[str, Any]
    source: str  # "zoo:<name>", a spec path or a model folder
    zoo_name: str | None = None
    weights: str | None = None  # the file the weights came from, None for random init


def load_model(ref: str | Path, weights: str | Path | None = None, pretrained: bool = False) -> LoadedModel:
    """Resolve ``ref`` and load ``weights`` (or the folder's own weights) strictly.

    ``ref`` is a zoo name (``srnas zoo`` lists them), a spec file (.yaml/.yml/.json) or a folder holding
    ``spec.yaml`` and ``weights.safetensors`` (what ``srnas train``/``prune``/``search`` export).
    ``pretrained``: the caller needs trained weights (sr, eval, prune, export): without ``weights`` a zoo name
    takes its official checkpoint (``nas.zoo.weights``: local or downloaded, hash-checked) and a bare spec
    file is an error instead of a randomly initialised model.
    """
    text = str(ref)
    path = Path(text)
    if not path.exists() and text not in zoo.list_zoo() and (results_dir() / text).is_dir():
        path = results_dir() / text  # RUN/models/ID, as `srnas show` names it
    if text in zoo.list_zoo() and not path.exists():
        model = build(zoo.zoo_spec(text))
        if weights is None and pretrained:
            weights = zoo.official_weights(text)
        if weights is not None:
            zoo.import_weights(model, text, weights)
        return LoadedModel(model, model.spec, f"zoo:{text}", text, str(weights) if weights else None)
    if path.is_dir():
        spec_file = path / SPEC_FILE
        if not spec_file.is_file():
            raise SpecError(f"model folder {path} has no {SPEC_FILE}")
        model = _build_file(spec_file)
        weights = weights if weights is not None else path / WEIGHTS_FILE
        if not Path(weights).is_file():
            raise CheckpointError(f"model folder {path} has no {WEIGHTS_FILE} (pass --weights)")
        _load_plain(model, weights)
        return LoadedModel(model, model.spec, str(path), None, str(weights))
    if path.suffix in SPEC_SUFFIXES:
        model = _build_file(path)
        if weights is None and pretrained:
            raise CheckpointError(f"{path} is a spec without weights: this command needs trained weights (--weights)")
        if weights is not None:
            _load_plain(model, weights)
        return LoadedModel(model, model.spec, str(path), None, str(weights) if weights else None)
    raise SpecError(
        f"{text!r} is not a zoo model ({', '.join(zoo.list_zoo())}), a spec file ({'/'.join(SPEC_SUFFIXES)}) "
        "or a model folder"
    )


def _build_file(spec_file: Path) -> nn.Module:
    """The model of a spec file; a spec that does not build (unknown block, bad option) names the file."""
    spec = load_spec(spec_file)
    try:
        return build(spec)
    except SpecError as exc:
        raise SpecError(f"{spec_file}: {exc}") from exc


def _load_plain(model: nn.Module, weights: str | Path) -> None:
    load_weights(model, read_state_dict(weights), source=str(weights))


def save_model(folder: str | Path, model: nn.Module, spec: dict[str, Any]) -> Path:
    """Write ``spec.yaml`` + ``weights.safetensors`` into ``folder``; the folder is then a MODEL for every command."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / WEIGHTS_FILE)
    save_spec(spec, folder / SPEC_FILE)
    return folder
