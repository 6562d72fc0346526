"""The shared training loop (stand-alone training, supernets, pruning fine-tunes), resumable exactly.

``train(model, data, cfg, output_dir)`` (``nas.train.loop``) trains any module that maps [0, 1] LR
images to [0, 1] HR images; ``TrainConfig`` / ``TrainResult``, the losses and the schedule are in
``nas.train.config``; feature distillation (hooks matching a teacher's intermediate outputs) in
``nas.train.features``; checkpoints, RNG states and the CSV log in ``nas.train.state``.
"""

from nas.train.config import (
    BEST_FILE,
    CHECKPOINT_FILE,
    LOG_FILE,
    LOSSES,
    OPTIMIZERS,
    RESULT_FILE,
    SCHEDULES,
    TrainConfig,
    TrainResult,
    charbonnier_loss,
    l1_loss,
    l2_loss,
    loss_function,
    lr_at,
)
from nas.train.features import FeatureDistillation, FeatureLayer
from nas.train.loop import train

__all__ = [
    "BEST_FILE",
    "CHECKPOINT_FILE",
    "FeatureDistillation",
    "FeatureLayer",
    "LOG_FILE",
    "LOSSES",
    "OPTIMIZERS",
    "RESULT_FILE",
    "SCHEDULES",
    "TrainConfig",
    "TrainResult",
    "charbonnier_loss",
    "l1_loss",
    "l2_loss",
    "loss_function",
    "lr_at",
    "train",
]
