"""The shared training loop (stand-alone training, supernets, pruning fine-tunes), resumable exactly.

``train(model, data, cfg, output_dir)`` trains any module that maps [0, 1] LR images to [0, 1] HR
images on random patch batches (``nas.data.PatchBatches``: batch ``k`` depends only on the seed
and ``k``). ``output_dir`` receives:

- ``checkpoint.pt``: model, optimizer and AMP scaler state, step, RNG states, best PSNR, config;
  written atomically every ``ckpt_every`` steps and at the end; loads with ``weights_only=True``.
  Its ``model`` entry holds the final weights once training is done.
- ``best_weights.pt``: the state dict with the best validation PSNR (only with ``val_data``).
- ``train_log.csv``: ``step,loss,lr,val_psnr``; loss is the mean since the previous row.
- ``train_result.json``: the ``TrainResult`` and config, written when the last step is done.

Calling ``train`` again on the same ``output_dir`` continues from ``checkpoint.pt`` (or returns at
once when it is finished); on CPU the final weights are bitwise those of an uninterrupted run
(same torch build and thread count; CUDA kernels may not be deterministic).
The schedule is a pure function of the step (``lr_at``), so it needs no state of its own.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nas.data import Pair, PairedImages, PatchBatches
from nas.device import resolve_device  # noqa: F401  (re-exported)
from nas.errors import CheckpointError, SrnasError
from nas.io import atomic_json, atomic_torch_save, atomic_write
from nas.measure.images import to_uint8
from nas.measure.metrics import psnr

OPTIMIZERS = ("adam", "adamw")
LOSSES = ("l1", "l2", "charbonnier")
SCHEDULES = ("constant", "step", "cosine")
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best_weights.pt"
LOG_FILE = "train_log.csv"
RESULT_FILE = "train_result.json"
CHARBONNIER_EPS = 1e-3
# Config fields that may change between a run and its resumption (they do not change the weights).
_RESUMABLE_CHANGES = {"val_every", "ckpt_every", "log_every", "device", "num_workers", "progress"}


@dataclass
class TrainConfig:
    """Training hyper-parameters; ``patch_size`` is the LR patch side."""

    steps: int = 1000
    batch_size: int = 16
    patch_size: int = 48
    lr: float = 5e-4
    optimizer: str = "adam"  # adam | adamw (betas 0.9, 0.99)
    weight_decay: float = 0.0
    loss: str = "l1"  # l1 | l2 | charbonnier
    schedule: str = "cosine"  # constant | step (milestones, gamma) | cosine (to eta_min)
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    eta_min: float = 1e-7
    val_every: int = 0  # 0: validate only after the last step
    ckpt_every: int = 500
    log_every: int = 50
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    amp: bool = False  # float16 autocast + gradient scaling, CUDA only
    channels_last: bool = False  # CUDA only
    grad_clip: float | None = None  # max gradient norm
    num_workers: int = 0  # patch-loading processes
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        for name in ("steps", "batch_size", "patch_size", "ckpt_every", "log_every"):
            if int(getattr(self, name)) <= 0:
                raise SrnasError(f"training option {name} must be positive, got {getattr(self, name)}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("loss", LOSSES), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise SrnasError(f"unknown {name} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.val_every < 0 or self.num_workers < 0:
            raise SrnasError("training options lr must be > 0 and weight_decay, val_every, num_workers >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise SrnasError(f"grad_clip must be positive, got {self.grad_clip}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


@dataclass
class TrainResult:
    output_dir: str
    steps: int  # steps done
    final_loss: float | None  # mean loss of the last log interval
    final_psnr: float | None  # validation PSNR (Y) after the last step
    best_psnr: float | None
    best_step: int | None
    resumed_from: int  # 0 for a fresh run
    stopped_early: bool  # on_step asked to stop
    seconds: float  # wall time of this call

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- losses and schedules


def l1_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).abs().mean()


def l2_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).pow(2).mean()


def charbonnier_loss(out: torch.Tensor, target: torch.Tensor, eps: float = CHARBONNIER_EPS) -> torch.Tensor:
    return torch.sqrt((out - target).pow(2) + eps * eps).mean()


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return {"l1": l1_loss, "l2": l2_loss, "charbonnier": charbonnier_loss}[name]


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of the update made after ``step`` completed steps (0-based)."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(step >= m for m in cfg.milestones)
    t = min(step, cfg.steps) / cfg.steps
    return cfg.eta_min + (cfg.lr - cfg.eta_min) * 0.5 * (1.0 + math.cos(math.pi * t))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SrnasError("the model has no trainable parameters")
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def evaluate(model: nn.Module, pairs: Sequence[Pair], scale: int, device: torch.device | str | None = None) -> float:
    """Mean PSNR (Y, ``scale``-pixel border) of ``model`` on whole images, outputs rounded to uint8."""
    if not pairs:
        raise SrnasError("no validation images")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        values = []
        for p in pairs:
            lr = torch.from_numpy(np.ascontiguousarray(p.lr.transpose(2, 0, 1))).float().div(255.0)
            out = to_uint8(model(lr.unsqueeze(0).to(device)))
            if out.shape != p.hr.shape:
                raise SrnasError(f"model output {out.shape} for {p.name} does not match the HR size {p.hr.shape}")
            values.append(psnr(out, p.hr, crop_border=scale, test_y_channel=True))
    finally:
        model.train(was_training)
    return float(np.mean(values))


# ----------------------------------------------------------------------------- state


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
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
class _State:
    step: int = 0
    best_psnr: float | None = None
    best_step: int | None = None
    last_psnr: float | None = None
    last_loss: float | None = None
    loss_sum: float = 0.0  # since the last log row
    loss_count: int = 0


def _load_checkpoint(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: name it
        raise CheckpointError(f"cannot read training checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != "srnas-train":
        raise CheckpointError(f"{path} is not an srnas training checkpoint")
    old, new = ckpt["meta"], meta
    diff = sorted(
        k
        for k in set(old["config"]) | set(new["config"])
        if k not in _RESUMABLE_CHANGES and old["config"].get(k) != new["config"].get(k)
    )
    diff += [k for k in ("scale", "teacher_weight", "has_teacher") if old.get(k) != new.get(k)]
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


class _Log:
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


# ----------------------------------------------------------------------------- the loop


def train(
    model: nn.Module,
    train_data: PairedImages,
    cfg: TrainConfig,
    output_dir: str | Path,
    *,
    val_data: Sequence[Pair] | None = None,
    teacher: nn.Module | None = None,
    teacher_weight: float = 0.0,
    before_step: Callable[[int], None] | None = None,
    on_step: Callable[[int, dict[str, float]], bool | None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on patches of ``train_data``, resuming from ``output_dir``'s checkpoint.

    ``teacher`` (frozen, eval mode): the target becomes ``w * teacher(lr) + (1 - w) * hr`` with
    ``w = teacher_weight``. ``before_step(step)`` runs before each update (``step`` = 1..steps), e.g.
    to sample a supernet path with ``torch``'s RNG (restored on resume). ``on_step(step, stats)``
    runs after each update with ``stats = {"loss", "lr"}`` (+ ``"val_psnr"`` on validation steps);
    returning True stops training after a checkpoint.
    """
    start_time = time.time()
    if not 0.0 <= teacher_weight <= 1.0:
        raise SrnasError(f"teacher_weight must be in [0, 1], got {teacher_weight}")
    if teacher_weight > 0 and teacher is None:
        raise SrnasError("teacher_weight > 0 needs a teacher model")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    use_amp, channels_last = cfg.amp and cuda, cfg.channels_last and cuda
    scale = train_data.scale
    batches = PatchBatches(train_data, cfg.batch_size, cfg.patch_size, cfg.seed)
    meta = {
        "config": cfg.to_dict(),
        "scale": scale,
        "teacher_weight": float(teacher_weight),
        "has_teacher": teacher is not None and teacher_weight > 0,
    }

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = loss_function(cfg.loss)
    state = _State()

    ckpt_path = out_dir / CHECKPOINT_FILE
    if ckpt_path.is_file():
        ckpt = _load_checkpoint(ckpt_path, meta)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{ckpt_path} does not match the model: {exc}") from exc
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        state = _State(**ckpt["state"])
        _set_rng_state(ckpt["rng"])
        log = _Log(out_dir / LOG_FILE, resume_step=state.step)
    else:
        seed_everything(cfg.seed)
        log = _Log(out_dir / LOG_FILE, resume_step=None)
    resumed_from = state.step

    def checkpoint() -> None:
        _check_finite(model, state.step, out_dir)  # every save path: diverged weights are never written
        atomic_torch_save(
            ckpt_path,
            {
                "format": "srnas-train",
                "version": 1,
                "meta": meta,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "state": asdict(state),
                "rng": _rng_state(),
            },
        )

    def result(stopped: bool) -> TrainResult:
        return TrainResult(
            output_dir=str(out_dir),
            steps=state.step,
            final_loss=state.last_loss,
            final_psnr=state.last_psnr if state.step == cfg.steps else None,
            best_psnr=state.best_psnr,
            best_step=state.best_step,
            resumed_from=resumed_from,
            stopped_early=stopped,
            seconds=round(time.time() - start_time, 3),
        )

    if state.step >= cfg.steps:
        return result(stopped=False)

    model.train()
    loss_acc = torch.zeros((), device=device)
    bar = tqdm(total=cfg.steps, initial=state.step, desc="train", unit="step", disable=not cfg.progress)
    stopped = False
    try:
        for index, lr_batch, hr_batch in batches.iterate(state.step, cfg.steps, cfg.num_workers, pin_memory=cuda):
            step = index + 1
            lr_now = lr_at(cfg, index)
            for group in optimizer.param_groups:
                group["lr"] = lr_now
            lr_batch = lr_batch.to(device, non_blocking=True)
            hr_batch = hr_batch.to(device, non_blocking=True)
            if channels_last:
                lr_batch = lr_batch.contiguous(memory_format=torch.channels_last)
            if before_step is not None:
                before_step(step)

            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                out = model(lr_batch)
                target = hr_batch
                if teacher is not None and teacher_weight > 0:
                    with torch.no_grad():
                        target = teacher_weight * teacher(lr_batch).float() + (1 - teacher_weight) * hr_batch
            if out.shape != hr_batch.shape:
                raise SrnasError(
                    f"model output {tuple(out.shape)} does not match the HR patches {tuple(hr_batch.shape)}: "
                    f"is the model x{scale}?"
                )
            loss = loss_fn(out.float(), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            loss_acc += loss.detach()
            state.step = step
            state.loss_count += 1
            bar.update(1)

            last = step == cfg.steps
            val_due = val_data is not None and (last or (cfg.val_every > 0 and step % cfg.val_every == 0))
            logged = last or val_due or step % cfg.log_every == 0
            if logged:
                _check_finite(model, step, out_dir)  # before this step is evaluated, logged or saved as best
            val_psnr = evaluate(model, val_data, scale, device) if val_due else None
            if val_psnr is not None:
                state.last_psnr = val_psnr
                if state.best_psnr is None or val_psnr > state.best_psnr:
                    state.best_psnr, state.best_step = val_psnr, step
                    atomic_torch_save(out_dir / BEST_FILE, model.state_dict())
            if logged:
                state.loss_sum += float(loss_acc)
                loss_acc.zero_()
                state.last_loss = state.loss_sum / state.loss_count
                log.write(step, state.last_loss, lr_now, val_psnr)
                state.loss_sum, state.loss_count = 0.0, 0
                bar.set_postfix(_postfix(state), refresh=False)
            saved = last or step % cfg.ckpt_every == 0
            if saved:
                state.loss_sum += float(loss_acc)  # the partial log interval survives a resume
                loss_acc.zero_()
                checkpoint()
            stats = {"loss": float(loss.detach()), "lr": lr_now} if on_step is not None else {}
            if val_psnr is not None:
                stats["val_psnr"] = val_psnr
            if on_step is not None and on_step(step, stats):
                if not saved:
                    state.loss_sum += float(loss_acc)
                    loss_acc.zero_()
                    checkpoint()
                stopped = True
                break
    finally:
        bar.close()

    res = result(stopped)
    if not stopped:
        atomic_json(out_dir / RESULT_FILE, {**res.to_dict(), "config": meta["config"]})
    return res


def _check_finite(model: nn.Module, step: int, out_dir: Path) -> None:
    """Refuse to go on (or save) once the weights stopped being finite: the run diverged."""
    if any(not bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise SrnasError(
            f"training diverged by step {step}: the weights are no longer finite (NaN/inf); nothing of it was "
            f"saved and the last checkpoint in {out_dir} is kept. Lower the learning rate or set a gradient clip."
        )


def _postfix(state: _State) -> dict[str, str]:
    post = {"loss": f"{state.last_loss:.4g}"} if state.last_loss is not None else {}
    if state.last_psnr is not None:
        post["psnr"] = f"{state.last_psnr:.2f}"
    return post
