"""What makes a run resumable exactly: RNG states, the loop's counters, the checkpoint file and the CSV log."""

from __future__ import annotations

import csv
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.errors import CheckpointError, SrnasError
from nas.io import atomic_torch_save, atomic_write
from nas.train.config import RESUMABLE_CHANGES

CHECKPOINT_FORMAT = "srnas-train"


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    step: int = 0
    best_psnr: float | None = None
    best_step: int | None = None
    last_psnr: float | None = None
    last_loss: float | None = None
    loss_sum: float = 0.0  # since the last log row
    loss_count: int = 0


def load_checkpoint(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: name it
        raise CheckpointError(f"cannot read training checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an srnas training checkpoint")
    old, new = ckpt["meta"], meta
    diff = sorted(
        k
        for k in set(old["config"]) | set(new["config"])
        if k not in RESUMABLE_CHANGES and old["config"].get(k) != new["config"].get(k)
    )
    diff += [k for k in ("scale", "teacher_weight", "has_teacher", "features") if old.get(k) != new.get(k)]
    if diff:
        details = ", ".join(
            f"{k}: {old['config'].get(k, old.get(k))!r} -> {new['config'].get(k, new.get(k))!r}" for k in diff
        )
        raise CheckpointError(f"{path} was written with other training settings ({details}); use a new output folder")
    return ckpt


def _read_log(path: Path, upto: int) -> list[list[str]]:
    """Rows of an existing log up to step ``upto`` (later rows will be redone)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in list(csv.reader(f))[1:]:
            if len(row) == 4 and row[0].isdigit() and int(row[0]) <= upto:
                rows.append(row)
    return rows


class TrainLog:
    HEADER = ("step", "loss", "lr", "val_psnr")

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows = _read_log(path, resume_step) if resume_step is not None else []
        lines = [",".join(self.HEADER)] + [",".join(r) for r in rows]
        atomic_write(path, "\n".join(lines) + "\n")

    def write(self, step: int, loss: float | None, lr: float, val_psnr: float | None) -> None:
        fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
        with open(self.path, "a", newline="") as f:
            f.write(f"{step},{fmt(loss, '.6g')},{lr:.6g},{fmt(val_psnr, '.4f')}\n")


def check_finite(model: nn.Module, step: int, out_dir: Path) -> None:
    """Refuse to go on (or save) once the weights stopped being finite: the run diverged."""
    if any(not bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise SrnasError(
            f"training diverged by step {step}: the weights are no longer finite (NaN/inf); nothing of it was "
            f"saved and the last checkpoint in {out_dir} is kept. Lower the learning rate or set a gradient clip."
        )


def save_checkpoint(
    path: Path,
    meta: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: TrainState,
) -> None:
    """Write the training checkpoint atomically; diverged (non-finite) weights are never written."""
    check_finite(model, state.step, path.parent)
    atomic_torch_save(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "meta": meta,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "state": asdict(state),
            "rng": rng_state(),
        },
    )


def restore_checkpoint(
    ckpt: dict[str, Any],
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> TrainState:
    """Load a checkpoint read by ``load_checkpoint`` into the model, optimizer, scaler and the global RNGs."""
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the model: {exc}") from exc
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return TrainState(**ckpt["state"])
