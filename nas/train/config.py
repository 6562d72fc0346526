"""Training options and what a run returns; losses, the learning-rate schedule and the optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from nas.errors import SrnasError

OPTIMIZERS = ("adam", "adamw")
LOSSES = ("l1", "l2", "charbonnier")
SCHEDULES = ("constant", "step", "cosine")
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best_weights.pt"
LOG_FILE = "train_log.csv"
RESULT_FILE = "train_result.json"
CHARBONNIER_EPS = 1e-3
# Config fields that may change between a run and its resumption (they do not change the weights).
# Config fields that may change between a run and its resumption (they do not change the weights).
RESUMABLE_CHANGES = frozenset({"val_every", "ckpt_every", "log_every", "device", "num_workers", "progress"})


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
