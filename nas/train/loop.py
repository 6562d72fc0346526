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

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.data import Pair, PairedImages, PatchBatches
from nas.device import resolve_device
from nas.errors import SrnasError
from nas.io import atomic_json, atomic_torch_save, remove_stale_temps
from nas.measure.evaluate import mean_psnr
from nas.progress import progress
from nas.train.config import (
    BEST_FILE,
    CHECKPOINT_FILE,
    LOG_FILE,
    RESULT_FILE,
    TrainConfig,
    TrainResult,
    loss_function,
    lr_at,
    make_optimizer,
)
from nas.train.features import FeatureDistillation, FeatureHooks
from nas.train.state import (
    TrainLog,
    TrainState,
    check_finite,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    seed_everything,
)

BeforeStep = Callable[[int], None]
OnStep = Callable[[int, dict[str, float]], "bool | None"]
# step_losses(step, lr_batch, target) -> iterator of losses, one per forward pass of the step (e.g. one per
# supernet path); each is back-propagated before the next is drawn, and their gradients add up to one update
StepLosses = Callable[[int, torch.Tensor, torch.Tensor], Iterator[torch.Tensor]]


def train(
    model: nn.Module,
    train_data: PairedImages,
    cfg: TrainConfig,
    output_dir: str | Path,
    *,
    val_data: Sequence[Pair] | None = None,
    teacher: nn.Module | None = None,
    teacher_weight: float = 0.0,
    features: FeatureDistillation | None = None,
    before_step: BeforeStep | None = None,
    on_step: OnStep | None = None,
    step_losses: StepLosses | None = None,
) -> TrainResult:
    """Train ``model`` in place on patches of ``train_data``, resuming from ``output_dir``'s checkpoint.

    ``teacher`` (frozen, eval mode): the target becomes ``w * teacher(lr) + (1 - w) * hr`` with
    ``w = teacher_weight``. ``features`` (``nas.train.features``; weight > 0 needs the teacher and the single-loss
    step): the loss gains ``weight *`` the mean distance of the named modules' outputs to the teacher's, captured
    by forward hooks in the same passes (the teacher's pass also makes the image target), removed on return.
    ``before_step(step)`` runs before each update (``step`` = 1..steps), e.g.
    to sample a supernet path with ``torch``'s RNG (restored on resume). ``on_step(step, stats)``
    runs after each update with ``stats = {"loss", "lr"}`` (+ ``"val_psnr"`` on validation steps);
    returning True stops training after a checkpoint. ``step_losses`` replaces the step's single
    ``loss(model(lr), target)`` by several losses whose gradients accumulate into one optimizer step
    (e.g. the sandwich rule: several supernet paths per step); the logged loss is their mean. It must be a
    pure function of ``step`` and the batch (with ``torch``'s RNG) for a resume to stay exact.
    """
    start_time = time.time()
    if not 0.0 <= teacher_weight <= 1.0:
        raise SrnasError(f"teacher_weight must be in [0, 1], got {teacher_weight}")
    if teacher_weight > 0 and teacher is None:
        raise SrnasError("teacher_weight > 0 needs a teacher model")
    features = features if features is not None and features.weight > 0 else None
    if features is not None and (teacher is None or step_losses is not None):
        raise SrnasError("feature distillation needs a teacher model and the default single-loss step")
    run = _Run(model, train_data, cfg, Path(output_dir), teacher, teacher_weight, features)
    try:
        if step_losses is not None:
            run.step_losses = step_losses
        resumed_from = run.state.step
        if resumed_from >= cfg.steps:
            return run.result(resumed_from, False, start_time)
        stopped = run.loop(val_data, before_step, on_step)
    finally:
        if run.hooks is not None:
            run.hooks.remove()
    res = run.result(resumed_from, stopped, start_time)
    if not stopped:
        atomic_json(run.out_dir / RESULT_FILE, {**res.to_dict(), "config": run.meta["config"]})
    return res


class _Run:
    """One call of ``train``: the model, optimizer and counters, set up fresh or restored from the checkpoint."""

    def __init__(
        self,
        model: nn.Module,
        train_data: PairedImages,
        cfg: TrainConfig,
        out_dir: Path,
        teacher: nn.Module | None,
        teacher_weight: float,
        features: FeatureDistillation | None = None,
    ) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir, recursive=False)  # a killed run's half-written checkpoint or log
        self.model, self.cfg, self.out_dir, self.scale = model, cfg, out_dir, train_data.scale
        self.device = resolve_device(cfg.device)
        cuda = self.device.type == "cuda"
        self.use_amp, self.channels_last = cfg.amp and cuda, cfg.channels_last and cuda
        self.batches = PatchBatches(train_data, cfg.batch_size, cfg.patch_size, cfg.seed)
        self.teacher = teacher if teacher is not None and (teacher_weight > 0 or features is not None) else None
        self.teacher_weight = teacher_weight
        self.features = features
        self.meta = {
            "config": cfg.to_dict(),
            "scale": self.scale,
            "teacher_weight": float(teacher_weight),
            "has_teacher": self.teacher is not None,
        }
        if features is not None:  # absent without: checkpoints of runs without it still match
            self.meta["features"] = features.to_dict()
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(self.device).eval().requires_grad_(False)
        self.optimizer = make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.loss_fn = loss_function(cfg.loss)
        self.step_losses: StepLosses = self.single_loss
        self.ckpt_path = out_dir / CHECKPOINT_FILE
        if self.ckpt_path.is_file():
            ckpt = load_checkpoint(self.ckpt_path, self.meta)
            self.state = restore_checkpoint(ckpt, self.ckpt_path, model, self.optimizer, self.scaler)
            self.log = TrainLog(out_dir / LOG_FILE, resume_step=self.state.step)
        else:
            self.state = TrainState()
            seed_everything(cfg.seed)
            self.log = TrainLog(out_dir / LOG_FILE, resume_step=None)
        self.loss_acc = torch.zeros((), device=self.device)  # the losses since the last log row, on the device
        self.hooks = FeatureHooks(model, self.teacher, features) if features is not None else None

    def loop(self, val_data: Sequence[Pair] | None, before_step: BeforeStep | None, on_step: OnStep | None) -> bool:
        """Run the remaining steps; True when ``on_step`` stopped the run (after a checkpoint)."""
        cfg, state = self.cfg, self.state
        self.model.train()
        bar = progress(cfg.steps, initial=state.step, desc="train", unit="step", enabled=cfg.progress)
        try:
            batches = self.batches.iterate(
                state.step, cfg.steps, cfg.num_workers, pin_memory=self.device.type == "cuda"
            )
            for index, lr_batch, hr_batch in batches:
                step = index + 1
                lr_now = lr_at(cfg, index)
                loss = self._update(step, lr_now, lr_batch, hr_batch, before_step)
                bar.update(1)
                val_psnr, saved = self._after_update(step, lr_now, val_data, bar)
                if on_step is None:
                    continue
                stats = {"loss": float(loss.detach()), "lr": lr_now}
                if val_psnr is not None:
                    stats["val_psnr"] = val_psnr
                if on_step(step, stats):
                    if not saved:
                        self._flush_loss()
                        self._checkpoint()
                    return True
        finally:
            bar.close()
        return False

    def _update(
        self,
        step: int,
        lr_now: float,
        lr_batch: torch.Tensor,
        hr_batch: torch.Tensor,
        before_step: BeforeStep | None,
    ) -> torch.Tensor:
        """One optimizer step on one batch; returns the (undetached) loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr_now
        lr_batch = lr_batch.to(self.device, non_blocking=True)
        hr_batch = hr_batch.to(self.device, non_blocking=True)
        if self.channels_last:
            lr_batch = lr_batch.contiguous(memory_format=torch.channels_last)
        if before_step is not None:
            before_step(step)
        with self.hooks.capturing() if self.hooks is not None else contextlib.nullcontext():
            target = self._target(lr_batch, hr_batch)
            self.optimizer.zero_grad(set_to_none=True)
            total, count = self._backward(self.step_losses(step, lr_batch, target))
        if count == 0:
            raise SrnasError(f"step {step}: step_losses yielded no loss")
        loss = total / count
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.loss_acc += loss.detach()
        self.state.step = step
        self.state.loss_count += 1
        return loss

    def _target(self, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> torch.Tensor:
        """The step's target: the HR patches, mixed with the teacher's output when it has a share."""
        if self.teacher is None:
            return hr_batch
        with torch.no_grad(), self._autocast():
            out = self.teacher(lr_batch).float()  # also the pass that captures the teacher's features
            w = self.teacher_weight
            return w * out + (1 - w) * hr_batch if w > 0 else hr_batch

    def _backward(self, losses: Iterator[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Back-propagate each loss as it is drawn; (their detached sum, how many)."""
        total, count = torch.zeros((), device=self.device), 0
        while True:
            with self._autocast():  # the forward pass of the next loss; its backward pass outside autocast
                loss = next(losses, None)
            if loss is None:
                return total, count
            self.scaler.scale(loss).backward()
            total, count = total + loss.detach(), count + 1

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp)

    def single_loss(self, step: int, lr_batch: torch.Tensor, target: torch.Tensor) -> Iterator[torch.Tensor]:
        """The default step: one forward pass of the model, one loss."""
        out = self.model(lr_batch)
        if out.shape != target.shape:
            raise SrnasError(
                f"model output {tuple(out.shape)} does not match the HR patches {tuple(target.shape)}: "
                f"is the model x{self.scale}?"
            )
        loss = self.loss_fn(out.float(), target)
        if self.hooks is not None and self.features is not None:
            loss = loss + self.features.weight * self.hooks.loss()
        yield loss

    def _after_update(
        self, step: int, lr_now: float, val_data: Sequence[Pair] | None, bar: Any
    ) -> tuple[float | None, bool]:
        """Validate, log and checkpoint when due; returns (validation PSNR or None, whether it was saved)."""
        cfg, state = self.cfg, self.state
        last = step == cfg.steps
        val_due = val_data is not None and (last or (cfg.val_every > 0 and step % cfg.val_every == 0))
        logged = last or val_due or step % cfg.log_every == 0
        if logged:
            check_finite(self.model, step, self.out_dir)  # before this step is evaluated, logged or saved as best
        val_psnr = mean_psnr(self.model, val_data, self.scale, self.device) if val_due else None
        if val_psnr is not None:
            state.last_psnr = val_psnr
            if state.best_psnr is None or val_psnr > state.best_psnr:
                state.best_psnr, state.best_step = val_psnr, step
                atomic_torch_save(self.out_dir / BEST_FILE, self.model.state_dict())
        if logged:
            self._flush_loss()
            state.last_loss = state.loss_sum / state.loss_count
            self.log.write(step, state.last_loss, lr_now, val_psnr)
            state.loss_sum, state.loss_count = 0.0, 0
            bar.set_postfix(_postfix(state), refresh=False)
        saved = last or step % cfg.ckpt_every == 0
        if saved:
            self._flush_loss()  # the partial log interval survives a resume
            self._checkpoint()
        return val_psnr, saved

    def _flush_loss(self) -> None:
        self.state.loss_sum += float(self.loss_acc)
        self.loss_acc.zero_()

    def _checkpoint(self) -> None:
        save_checkpoint(self.ckpt_path, self.meta, self.model, self.optimizer, self.scaler, self.state)

    def result(self, resumed_from: int, stopped: bool, start_time: float) -> TrainResult:
        state = self.state
        return TrainResult(
            output_dir=str(self.out_dir),
            steps=state.step,
            final_loss=state.last_loss,
            final_psnr=state.last_psnr if state.step == self.cfg.steps else None,
            best_psnr=state.best_psnr,
            best_step=state.best_step,
            resumed_from=resumed_from,
            stopped_early=stopped,
            seconds=round(time.time() - start_time, 3),
        )


def _postfix(state: TrainState) -> dict[str, str]:
    post = {"loss": f"{state.last_loss:.4g}"} if state.last_loss is not None else {}
    if state.last_psnr is not None:
        post["psnr"] = f"{state.last_psnr:.2f}"
    return post
