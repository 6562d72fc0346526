"""``srnas train``: train a model on patches of an SR dataset; the output folder is itself a MODEL."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nas import zoo
from nas.cli.commands._common import (
    check_output_dir,
    device_name,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    resolve_device,
    share,
    val_pairs_from_args,
)
from nas.data import EMBEDDED, open_pairs
from nas.errors import CheckpointError, SpecError, SrnasError
from nas.models.network import build
from nas.train import LOSSES, OPTIMIZERS, RESULT_FILE, SCHEDULES, TrainConfig, train
from nas.zoo.resolve import load_model, save_model

_DEFAULTS = TrainConfig()


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (zoo name, spec file or model folder) on SR data",
        description=(
            "Train MODEL on random LR/HR patches. --data is 'embedded' (photos bundled with scikit-image, "
            "no download), a folder in the DIV2K layout (HR images + LR_bicubic/X<s>) or a folder tree of HR "
            "images (every image in its subfolders); missing LR images are made with MATLAB bicubic and cached "
            "in the user cache (SRNAS_HOME, ~/.cache/srnas), never in DIR. Running the same command again "
            "with the same --output resumes from its checkpoint. The output folder holds spec.yaml + "
            "weights.safetensors (usable as MODEL by every command), checkpoint.pt, train_log.csv and "
            "train_result.json."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="zoo name, spec file (.yaml/.json) or model folder")
    p.add_argument("--weights", help="initial weights (default: the folder's own weights, or random init)")
    p.add_argument(
        "--data",
        default=EMBEDDED,
        help="training data: 'embedded' (default), a DIV2K-layout folder or a folder tree of HR images",
    )
    p.add_argument(
        "--val",
        help="validation data: DIR, 'embedded' or 'none' (default: the val split of --data, else embedded)",
    )
    p.add_argument(
        "--val-max-size",
        type=non_negative_int,
        default=256,
        help="centre-crop validation HR images to this side (0: whole)",
    )
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor (default: the model's)")
    p.add_argument("--steps", type=positive_int, default=_DEFAULTS.steps)
    p.add_argument("--batch-size", type=positive_int, default=_DEFAULTS.batch_size)
    p.add_argument("--patch-size", type=positive_int, default=_DEFAULTS.patch_size, help="LR patch side")
    p.add_argument("--lr", type=positive_float, default=_DEFAULTS.lr, help="peak learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=_DEFAULTS.optimizer)
    p.add_argument("--weight-decay", type=non_negative_float, default=_DEFAULTS.weight_decay)
    p.add_argument("--loss", choices=LOSSES, default=_DEFAULTS.loss)
    p.add_argument("--schedule", choices=SCHEDULES, default=_DEFAULTS.schedule)
    p.add_argument(
        "--milestones", type=positive_int, nargs="*", default=[], help="steps where 'step' multiplies lr by gamma"
    )
    p.add_argument("--gamma", type=positive_float, default=_DEFAULTS.gamma)
    p.add_argument(
        "--val-every", type=non_negative_int, default=_DEFAULTS.val_every, help="0: only after the last step"
    )
    p.add_argument("--ckpt-every", type=positive_int, default=_DEFAULTS.ckpt_every)
    p.add_argument("--grad-clip", type=positive_float, help="max gradient norm")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument(
        "--device", default="auto", type=device_name, help="auto (cuda when available), cpu, cuda, cuda:1, ..."
    )
    p.add_argument("--amp", action="store_true", help="float16 mixed precision (CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (CUDA only)")
    p.add_argument("--workers", type=non_negative_int, default=0, help="patch-loading processes")
    p.add_argument(
        "--teacher",
        metavar="MODEL",
        help="distil from this model (zoo name, spec or folder; e.g. the unpruned model of a pruned one): the "
        "target is (1 - gt_weight) * teacher(LR) + gt_weight * HR",
    )
    p.add_argument("--teacher-weights", help="the teacher's weights (default: the folder's own, or the zoo's official)")
    p.add_argument(
        "--gt-weight", type=share, default=0.0, help="with --teacher: share of the ground truth in the target"
    )
    p.add_argument("--output", required=True, help="output folder (resumed when it has a checkpoint)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def load_teacher(args, spec: dict) -> torch.nn.Module:
    """The frozen ``--teacher`` model with trained weights; it must upscale like the student."""
    if not 0.0 <= args.gt_weight < 1.0:
        raise SrnasError(f"--gt-weight must be in [0, 1) with --teacher, got {args.gt_weight}")
    weights = args.teacher_weights
    if weights is None and args.teacher in zoo.list_zoo():
        weights = zoo.checkpoint_path(args.teacher)
    teacher = load_model(args.teacher, weights)
    if teacher.weights is None:
        raise CheckpointError(f"the teacher {args.teacher} has no trained weights: pass --teacher-weights")
    t_spec = teacher.spec
    if t_spec["scale"] != spec["scale"] or t_spec.get("in_channels", 3) != spec.get("in_channels", 3):
        raise SpecError(
            f"the teacher {args.teacher} (x{t_spec['scale']}) does not upscale like the model (x{spec['scale']})"
        )
    return teacher.model.eval().requires_grad_(False)


def run(args) -> int:
    check_output_dir(args.output, ("--data", args.data), ("--val", args.val))
    resolve_device(args.device)  # a missing GPU fails before anything is written
    torch.manual_seed(args.seed)  # random init is reproducible too
    loaded = load_model(args.model, args.weights)
    model, spec = loaded.model, loaded.spec
    scale = args.scale or spec["scale"]
    if scale != spec["scale"]:
        if loaded.weights:
            raise SpecError(f"--scale {scale} differs from the scale {spec['scale']} of the weights {loaded.weights}")
        spec = {**spec, "scale": scale}
        model = build(spec)

    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        loss=args.loss,
        schedule=args.schedule,
        milestones=tuple(args.milestones),
        gamma=args.gamma,
        val_every=args.val_every,
        ckpt_every=args.ckpt_every,
        grad_clip=args.grad_clip,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        num_workers=args.workers,
        progress=not args.json,
    )
    teacher = load_teacher(args, spec) if args.teacher else None
    # All data is opened and checked before anything is written.
    train_data = open_pairs(args.data, scale, "train")
    val = val_pairs_from_args(args, scale)
    teacher_weight = 1.0 - args.gt_weight if teacher is not None else 0.0
    result = train(model, train_data, cfg, args.output, val_data=val, teacher=teacher, teacher_weight=teacher_weight)
    save_model(args.output, model.cpu(), spec)

    info = {**result.to_dict(), "model": loaded.source, "data": str(args.data), "scale": scale}
    if teacher is not None:
        info.update(teacher=args.teacher, gt_weight=args.gt_weight)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        psnr = f", val PSNR-Y {result.final_psnr:.3f} dB" if result.final_psnr is not None else ""
        if result.resumed_from == result.steps:
            done = f"already trained ({result.steps} steps)"
        elif result.resumed_from:
            done = f"trained {result.steps} steps (resumed at step {result.resumed_from})"
        else:
            done = f"trained {result.steps} steps"
        print(f"{done}{psnr}; model saved to {Path(args.output)}")
        print(f"log: {Path(args.output) / 'train_log.csv'}, summary: {Path(args.output) / RESULT_FILE}")
    return 0
