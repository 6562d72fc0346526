"""Read checkpoints safely and load them into srnas models with a clear report of any mismatch."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from nas.errors import CheckpointError
from nas.io import atomic_safetensors

# Wrappers that training frameworks put around the state dict (BasicSR, NTIRE kits, our own trainer).
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model_state_dict", "net", "model")
MAX_LISTED = 12


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch checkpoint on the CPU; never unpickles arbitrary objects.

    Unwraps ``{'net': ..., 'optimizer': ...}``-style wrappers and strips DataParallel ``module.`` prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _finite(load_file(str(path), device="cpu"), path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {_first_line(exc)}") from exc
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_problem(exc)}") from exc
    return _finite(_as_state_dict(data, path), path)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _load_problem(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, without PyTorch's advice to load it unsafely."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)|Unsupported operand \d+|Unsupported class ([\w.]+)", text)
    if found or "weights_only" in text.lower() or "WeightsUnpickler" in text:
        what = f" ({found.group(1) or found.group(2) or found.group(0)})" if found else ""
        return (
            f"it holds pickled Python objects{what}, not only tensors: only plain tensor checkpoints are accepted "
            "(nothing in it was executed; convert it to a state dict of tensors or .safetensors)"
        )
    return f"{_first_line(exc)} (not a readable torch checkpoint: truncated or not a checkpoint?)"


def _finite(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """``state``, unless a floating-point tensor holds NaN/inf (diverged training): scores would be meaningless."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"checkpoint {path}: tensor {key!r} has NaN or infinite values (diverged training?)")
    return state


def _as_state_dict(data: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(data, Mapping) and not any(isinstance(v, torch.Tensor) for v in data.values()):
        for key in WRAPPER_KEYS:
            if isinstance(data.get(key), Mapping):
                return _as_state_dict(data[key], path)
    if not isinstance(data, Mapping) or not data:
        raise CheckpointError(f"{path} holds no state dict (found {type(data).__name__})")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors (keys: {', '.join(list(map(str, data))[:8])})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def rename_keys(state: Mapping[str, torch.Tensor], rules: Sequence[Mapping]) -> dict[str, torch.Tensor]:
    """Apply renaming rules in order to every key.

    A rule is ``{pattern: REGEX, replace: TEMPLATE, offset: N}``: the template uses ``{1}``, ``{2}``... for the
    groups (``{0}`` is the whole match); numeric groups are shifted by ``offset`` (default 0), so ``B(\\d+)`` ->
    ``body.{1}`` with offset -1 maps ``B1`` to ``body.0``.
    """
    compiled = [(re.compile(r["pattern"]), r["replace"], int(r.get("offset", 0))) for r in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for regex, template, offset in compiled:
            key = regex.sub(lambda m, t=template, o=offset: _fill(m, t, o), key)
        if key in out:
            raise CheckpointError(f"two checkpoint tensors map to the same key {key!r}")
        out[key] = value
    return out


def _fill(match: re.Match, template: str, offset: int) -> str:
    groups = [match.group(0), *match.groups()]
    shifted = [
        str(int(g) + offset) if g is not None and g.isdigit() and i > 0 else (g or "") for i, g in enumerate(groups)
    ]
    return template.format(*shifted)


def check_compatible(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped tensors; silent when they match exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = [f"{source} does not match the architecture"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = "; ".join(items[:MAX_LISTED])
                more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
                parts.append(f"{len(items)} {title}: {shown}{more}")
        raise CheckpointError("; ".join(parts))


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load ``state`` into ``model`` (every tensor used, none missing, all shapes equal)."""
    check_compatible(model, state, source)
    model.load_state_dict(dict(state), strict=True)


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write the model's state dict as safetensors, atomically."""

    atomic_safetensors(path, model.state_dict())
