"""The shared training loop (stand-alone training, supernets, pruning fine-tunes), resumable exactly.

``train(model, data, cfg, output_dir)`` (``nas.train.loop``) trains any module that maps [0, 1] LR
images to [0, 1] HR images; ``TrainConfig`` / ``TrainResult``, the losses and the schedule are in
``nas.train.config``; checkpoints, RNG states and the CSV log in ``nas.train.state``.
"""

# Transitional, not part of the API: pruning/report.py, pruning/schedule.py, nas/cli/pipeline.py and
# scripts/bench_ranking.py (other owners' files) still import these two from here. Delete both imports once they
# import nas.measure.evaluate.mean_psnr and nas.device.resolve_device.
from nas.device import resolve_device  # noqa: F401
from nas.measure.evaluate import mean_psnr as evaluate  # noqa: F401
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
from nas.train.loop import train

__all__ = [
    "BEST_FILE",
    "CHECKPOINT_FILE",
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
