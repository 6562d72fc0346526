"""Torch-Pruning peer cases of ``bench_prune``: ``MODEL:tp-magnitude:TARGET`` and ``MODEL:tp-taylor:TARGET``.

A TP case prunes the official checkpoint (loaded by the zoo loader) with Torch-Pruning's DepGraph pruner
(``tp.pruner.MetaPruner``, one shot, TP's default local pruning: the same ratio in every coupled channel group)
ranking channels by ``MagnitudeImportance`` (L2 norm of each group's weights) or ``TaylorImportance``
(|w * dL/dw|, L the ground-truth L1 loss summed over ``score_batches`` patch batches: the batches srnas's Taylor
scoring draws in its first round). The convs beside a ``PixelShuffle`` (the upsampler) are left unpruned, as
Torch-Pruning's issues #420 and #523 advise: their outputs are the image's r² sub-pixel groups. TP's pruning ratio is
bisected until the activations counted by srnas's profiler (``count_complexity`` at the pruner's input size) are
at most the target. The pruned model then gets exactly srnas prune's final fine-tune
(``pruning.schedule.final_fine_tune_config``: steps, batch, patch, cosine LR and seed; distillation from the
unpruned model; the shared loop ``nas.train.train``) and the srnas cases' report (``pruning.report.make_report``:
before / after pruning / after fine-tuning, Set5/Set14 Y PSNR with a scale-pixel border, runtime interleaved).

The case folder holds ``pruned/`` (the TP-pruned model before fine-tuning: a resumed case skips the search),
``final/`` (the fine-tune's resumable train folder), ``spec.yaml`` + ``weights.safetensors`` (the fine-tuned
model, weights only: TP's kept channels become the spec's ``pruned`` plan, ``nas.models.pruned``, so
``load_model`` rebuilds it; checked against TP's own module when it is made), ``report.json`` / ``report.md``
and ``tp_state.json`` (options, ratio search, seconds).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas import zoo
from nas.data import EMBEDDED, Pair, PairedImages, PatchBatches, has_split, open_pairs, validation_pairs
from nas.errors import SrnasError
from nas.io import atomic_json
from nas.measure.profiler import count_complexity
from nas.models.checkpoint import load_weights
from nas.models.network import build
from nas.models.pruned import encode_indices
from nas.train import l1_loss, train
from nas.zoo.resolve import load_model, save_model
from pruning.config import PruneConfig
from pruning.report import benchmark_folders, make_report, write_prune_report
from pruning.schedule import FINAL_DIR, final_fine_tune_config

TP_MODES = ("tp-magnitude", "tp-taylor")
TP_VERSION = "1.6.1"  # the version the bench was run with (pyproject's bench extra)
TP_STATE = "tp_state.json"
PRUNED_DIR = "pruned"
MAX_RATIO = 0.9  # upper end of the ratio search
RATIO_STEPS = 12  # bisection steps below the highest ratio that reaches the target (resolution < 0.9 / 2**12)
TAYLOR_SEED_OFFSET = 7919  # srnas's first-round scoring batches (pruning.schedule._scores, round 1)
VAL_MAX_SIZE = 256  # srnas prune's default --val-max-size
EXAMPLE_SIDE = 16  # LR side of TP's tracing input
Keep = dict[str, dict[str, list[int]]]  # conv path -> {"out": kept channels, "in": kept channels} of the original


def require_tp() -> Any:
    """The ``torch_pruning`` module, or a one-line error saying how to install it."""
    try:
        import torch_pruning
    except ImportError:
        raise SrnasError(
            f"Torch-Pruning cases need torch-pruning: .venv/bin/pip install -e '.[bench]' (torch-pruning=={TP_VERSION})"
        ) from None
    return torch_pruning


def tp_config(args: Any, target: float) -> PruneConfig:
    """srnas prune's options for ``target`` with the bench's overrides (final steps, scoring batches, device)."""
    kw: dict[str, Any] = {"target": target, "device": args.device}
    if getattr(args, "steps", None) is not None:
        kw["final_steps"] = args.steps
    if getattr(args, "score_batches", None) is not None:
        kw["score_batches"] = args.score_batches
    sets = getattr(args, "sets", "Set5,Set14")
    kw["benchmarks"] = () if sets.strip().lower() in ("", "none") else tuple(s.strip() for s in sets.split(","))
    return PruneConfig(**kw)


def upsampler_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The convs that share a parent module with a ``PixelShuffle`` (the upsampler's), which TP must not prune."""
    found: list[nn.Conv2d] = []
    for parent in model.modules():
        children = list(parent.children())
        if any(isinstance(c, nn.PixelShuffle) for c in children):
            found += [c for c in children if isinstance(c, nn.Conv2d)]
    if not found:
        raise SrnasError("Torch-Pruning case: the model has no PixelShuffle upsampler conv to leave unpruned")
    return found


def tp_prune(model: nn.Module, importance: str, ratio: float) -> tuple[nn.Module, Keep]:
    """A deep copy of ``model`` pruned by TP at ``ratio`` (gradients copied for Taylor) and its kept channels."""
    tp = require_tp()
    pruned = copy.deepcopy(model)
    for p, q in zip(model.parameters(), pruned.parameters(), strict=True):
        q.grad = p.grad.clone() if p.grad is not None else None
    convs = {name: m for name, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    names = {id(m): name for name, m in convs.items()}
    keep = {n: {"out": list(range(m.out_channels)), "in": list(range(m.in_channels))} for n, m in convs.items()}
    imp = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    device = next(pruned.parameters()).device
    example = torch.rand(1, model.spec["in_channels"], EXAMPLE_SIDE, EXAMPLE_SIDE, device=device)
    pruner = tp.pruner.MetaPruner(
        pruned, example, importance=imp, pruning_ratio=ratio, ignored_layers=upsampler_convs(pruned)
    )
    graph = pruner.DG
    for group in pruner.step(interactive=True):  # each group's indices are of the convs as they are now
        for dep, idxs in group:
            name = names.get(id(dep.target.module))
            out = graph.is_out_channel_pruning_fn(dep.handler)
            if name is None or not (out or graph.is_in_channel_pruning_fn(dep.handler)):
                continue
            side, drop = ("out" if out else "in"), {int(i) for i in idxs}
            keep[name][side] = [c for j, c in enumerate(keep[name][side]) if j not in drop]
        group.prune()
    pruned.zero_grad(set_to_none=True)
    return pruned, keep


def pruned_spec(model: nn.Module, keep: Keep) -> dict[str, Any]:
    """The base spec plus the ``pruned`` plan of TP's kept channels (only the convs whose shape changed)."""
    if model.spec.get("pruned"):
        raise SrnasError("Torch-Pruning case: the model is pruned already; start from the official checkpoint")
    modules = dict(model.named_modules())
    convs = {
        name: {"out": encode_indices(k["out"]), "in": encode_indices(k["in"])}
        for name, k in keep.items()
        if len(k["out"]) != modules[name].out_channels or len(k["in"]) != modules[name].in_channels
    }
    return {**copy.deepcopy(model.spec), "pruned": {"mode": "coupled", "convs": convs, "norms": {}}}


def rebuild(pruned: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """``build(spec)`` with TP's pruned weights loaded strictly; its output is checked against TP's module."""
    model = build(spec)
    load_weights(model, {k: v.detach().cpu() for k, v in pruned.state_dict().items()}, source="Torch-Pruning model")
    device = next(pruned.parameters()).device
    model.to(device).eval()
    x = torch.rand(1, spec["in_channels"], EXAMPLE_SIDE, EXAMPLE_SIDE, device=device)
    with torch.no_grad():
        diff = (model(x) - pruned.eval()(x)).abs().max().item()
    if not diff <= 1e-5:
        raise SrnasError(f"Torch-Pruning case: the rebuilt model differs from TP's by {diff:.3g}")
    return model


def taylor_gradients(model: nn.Module, data: PairedImages, cfg: PruneConfig) -> None:
    """Sum dL/dw of the ground-truth L1 loss over ``cfg.score_batches`` patch batches into ``.grad`` (eval mode)."""
    model.eval().zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    batches = PatchBatches(data, cfg.batch_size, cfg.patch_size, cfg.seed + TAYLOR_SEED_OFFSET)
    for _, lr, hr in batches.iterate(0, cfg.score_batches):
        l1_loss(model(lr.to(device)), hr.to(device)).backward()


def search_ratio(model: nn.Module, importance: str, cfg: PruneConfig) -> tuple[nn.Module, Keep, dict[str, Any]]:
    """Bisect TP's ratio for the smallest one whose activations are at most ``cfg.target`` of the original's."""
    base = count_complexity(model, cfg.input_size).activations

    def attempt(ratio: float) -> tuple[nn.Module, Keep, float]:
        pruned, keep = tp_prune(model, importance, ratio)
        return pruned, keep, count_complexity(pruned, cfg.input_size).activations / base

    trace: list[dict[str, float]] = []
    for top in range(round(MAX_RATIO * 10), 0, -1):  # TP skips a group it would empty: high ratios may prune less
        lo, hi = 0.0, top / 10
        best = attempt(hi)
        trace.append({"ratio": hi, "activations_ratio": best[2]})
        if best[2] <= cfg.target:
            break
    else:
        raise SrnasError(f"Torch-Pruning reaches {cfg.target} of the activations at no ratio in (0, {MAX_RATIO}]")
    for _ in range(RATIO_STEPS):
        mid = (lo + hi) / 2
        candidate = attempt(mid)
        trace.append({"ratio": mid, "activations_ratio": candidate[2]})
        if candidate[2] <= cfg.target:
            hi, best = mid, candidate
        else:
            lo = mid
    return best[0], best[1], {"ratio": hi, "activations_ratio": best[2], "trace": trace}


def case_options(case: dict[str, Any], cfg: PruneConfig, data: str, weights: Path) -> dict[str, Any]:
    """What a case folder was made with; a resumed case must match it."""
    tcfg = final_fine_tune_config(cfg).to_dict()
    tcfg.pop("progress")
    tcfg.pop("device")
    return {
        "model": case["model"],
        "weights": str(weights),
        "mode": case["mode"],
        "target": cfg.target,
        "data": data,
        "score_batches": cfg.score_batches,
        "input_size": list(cfg.input_size),
        "gt_weight": cfg.gt_weight,
        "fine_tune": tcfg,
    }


def load_state(folder: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The case's ``tp_state.json`` (a fresh one when absent); an error when it was made with other options."""
    path = folder / TP_STATE
    if not path.is_file():
        return {"options": options}
    try:
        state = json.loads(path.read_text())
    except ValueError:
        raise SrnasError(f"{path} is not valid JSON; remove the case folder {folder} to start it again") from None
    if state.get("options") != options:
        raise SrnasError(f"{folder} holds a Torch-Pruning case made with other options; remove it or use --work")
    return state


def val_pairs(data: str, scale: int) -> list[Pair] | None:
    """srnas prune's default validation pairs: the val split of ``data`` when it has one, centre-cropped."""
    if not has_split(data, "val"):
        return None
    return validation_pairs(open_pairs(data, scale, "val"), max_size=VAL_MAX_SIZE)


def prune_stage(
    teacher: nn.Module, case: dict[str, Any], cfg: PruneConfig, folder: Path, data: PairedImages, state: dict
) -> nn.Module:
    """The TP-pruned model before fine-tuning: loaded from ``pruned/``, or searched, checked and saved there."""
    if (folder / PRUNED_DIR / "spec.yaml").is_file() and "prune" in state:
        return load_model(folder / PRUNED_DIR).model.to(teacher_device(teacher)).eval()
    t0 = time.time()
    importance = case["mode"].removeprefix("tp-")
    source = copy.deepcopy(teacher).requires_grad_(True)
    if importance == "taylor":
        taylor_gradients(source, data, cfg)
    pruned, keep, search = search_ratio(source, importance, cfg)
    spec = pruned_spec(teacher, keep)
    model = rebuild(pruned, spec)
    save_model(folder / PRUNED_DIR, model.cpu(), spec)
    state["prune"] = {**search, "seconds": round(time.time() - t0, 2), "importance": importance}
    atomic_json(folder / TP_STATE, state)
    print(f"[bench_prune] {case['name']}: TP ratio {search['ratio']:.4f} -> {search['activations_ratio']:.4f}x act.")
    return model.to(teacher_device(teacher)).eval()


def teacher_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def run_tp_case(case: dict[str, Any], folder: Path, args: Any) -> float:
    """Prune, fine-tune and report one TP case in ``folder`` (continuing it); the wall seconds of this call."""
    start = time.time()
    require_tp()
    cfg = tp_config(args, case["target"])
    weights = zoo.checkpoint_path(case["model"])
    if weights is None:
        raise SrnasError(f"case {case['name']}: the reference kit has no checkpoint for {case['model']}")
    data = str(args.data) if getattr(args, "data", None) else EMBEDDED
    folder.mkdir(parents=True, exist_ok=True)
    state = load_state(folder, case_options(case, cfg, data, weights))
    teacher = load_model(case["model"], weights, pretrained=True).model.to(cfg.device).eval()
    scale = teacher.spec["scale"]
    train_data, val = open_pairs(data, scale, "train"), val_pairs(data, scale)
    pruned = prune_stage(teacher, case, cfg, folder, train_data, state)
    small = copy.deepcopy(pruned)
    t0 = time.time()
    weight = 1.0 - cfg.gt_weight
    result = train(
        small,
        train_data,
        final_fine_tune_config(cfg),
        folder / FINAL_DIR,
        val_data=val,
        teacher=teacher if weight > 0 else None,
        teacher_weight=weight,
    )
    spec = load_model(folder / PRUNED_DIR).spec
    save_model(folder, small.cpu(), spec)
    state["final"] = {"seconds": round(state.get("final", {}).get("seconds", 0) + time.time() - t0, 2)}
    state["final"]["val_psnr"] = result.final_psnr
    atomic_json(folder / TP_STATE, state)
    write_report(case, cfg, folder, teacher, pruned, small, val, state)
    return time.time() - start


def write_report(
    case: dict[str, Any],
    cfg: PruneConfig,
    folder: Path,
    teacher: nn.Module,
    pruned: nn.Module,
    small: nn.Module,
    val: list[Pair] | None,
    state: dict[str, Any],
) -> None:
    """The srnas cases' report (before / after pruning / after fine-tuning) into ``report.json`` / ``report.md``."""
    t0 = time.time()
    device = teacher_device(teacher)
    prune_info = {k: v for k, v in state["prune"].items() if k != "trace"}
    report = make_report(
        {"before": teacher, "after pruning": pruned, "after fine-tuning": small.to(device).eval()},
        scale=teacher.spec["scale"],
        input_size=cfg.input_size,
        device=str(device),
        val_pairs=val,
        benchmarks=benchmark_folders(cfg.benchmarks, teacher.spec["scale"]),
        same_architecture={"after fine-tuning": "after pruning"},
        repeats=cfg.repeats,
        warmup=cfg.warmup,
        info={
            "model": case["model"],
            "mode": case["mode"],
            "target": {"activations": cfg.target},
            "importance": f"Torch-Pruning {prune_info['importance']}",
            "torch_pruning": prune_info,
            "final": state["final"],
            "notes": ["pruned by Torch-Pruning's MetaPruner (one shot), upsampler convs unpruned"],
        },
    )
    state["report"] = {"seconds": round(time.time() - t0, 2)}
    atomic_json(folder / TP_STATE, state)
    write_prune_report(folder, report)


def tp_seconds(folder: Path) -> float | None:
    """Seconds a TP case took (ratio search + fine-tune + report), from its state file."""
    try:
        state = json.loads((folder / TP_STATE).read_text())
    except (OSError, ValueError):
        return None
    return round(sum((state.get(k) or {}).get("seconds", 0.0) for k in ("prune", "final", "report")), 1)
