"""The pruning report: complexity, measured runtime and PSNR of the model before pruning, right after pruning
(the final masks on the original weights), after the rounds (their refits and fine-tunes, when there are any
and a final fine-tune follows) and after fine-tuning, as ``report.json`` + ``report.md`` in the output folder.

- complexity: ``nas.measure.profiler.count_complexity`` at the report's input size (params, FLOPs in the
  ``model_summary`` convention, activations, #conv), each also as a fraction of the first stage;
- runtime: ``nas.measure.profiler.measure_runtime`` in one run, interleaved (every architecture is timed once per
  repeat, in turn) so drift on a shared machine hits all of them alike; the median per architecture and its
  ratio to the first stage. Stages that share an architecture share its timing;
- NTIRE efficient-SR score of every stage against the first (``nas.measure.score``, both challenge weightings);
- PSNR (Y, ``scale``-pixel border, uint8 outputs): the validation pairs (``nas.measure.evaluate.mean_psnr``) and the
  benchmark folders (``nas.measure.evaluate.evaluate_folder``): Set5/Set14 of the reference kit when present;
- ``stage_report``: the schedule's report, with the other pruning mode's architecture at the same target timed
  in the same run (``other_mode_model``).

(``write_prune_report`` writes a pruning run's report; ``nas.results.report`` renders search fronts.)
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.data import Pair
from nas.errors import SrnasError
from nas.io import atomic_write
from nas.measure.counting import DEFAULT_INPUT_SIZE
from nas.measure.evaluate import evaluate_folder, mean_psnr
from nas.measure.profiler import count_complexity
from nas.measure.score import esr_scores
from nas.measure.score import interleaved_runtimes as measure_runtimes  # the one interleaved timer
from nas.paths import reference_dir
from pruning.config import PruneConfig
from pruning.gates import GatedModel
from pruning.importance import l1_importance
from pruning.select import Selector
from pruning.shrink import shrink
from pruning.state import masks_from_data

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
AFTER_ROUNDS = "after the rounds"  # the rounds' refits and fine-tunes, before the final fine-tune
COUNT_KEYS = ("params", "flops", "activations", "num_conv")
BENCHMARKS = ("Set5", "Set14")


def benchmark_folders(names: Sequence[str], scale: int) -> dict[str, tuple[Path, Path | None]]:
    """``{name: (hr_dir, lr_dir or None)}`` for the named sets of the reference kit that are present; LR images
    come from ``LR_bicubic_X<scale>`` when the kit has them (else ``evaluate_folder`` makes them)."""
    ref = reference_dir()
    found: dict[str, tuple[Path, Path | None]] = {}
    for name in names:
        hr = ref / "images" / name if ref is not None else None
        if hr is not None and hr.is_dir():
            lr = hr / f"LR_bicubic_X{scale}"
            found[name] = (hr, lr if lr.is_dir() else None)
    return found


def psnr_scores(
    model: nn.Module,
    scale: int,
    *,
    val_pairs: Sequence[Pair] | None = None,
    benchmarks: Mapping[str, tuple[Path, Path | None]] | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """``{"val": ..., "Set5": ...}``: mean Y-PSNR on the validation pairs and each benchmark folder."""
    model = model.to(device)
    out: dict[str, float] = {}
    if val_pairs:
        out["val"] = mean_psnr(model, val_pairs, scale, device)
    for name, (hr, lr) in (benchmarks or {}).items():
        out[name] = evaluate_folder(model, hr, lr, scale, device=device, ssim=False, progress=False)["mean"]["psnr_y"]
    return out


def make_report(
    stages: Mapping[str, nn.Module],
    *,
    scale: int,
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    device: str = "cpu",
    val_pairs: Sequence[Pair] | None = None,
    benchmarks: Mapping[str, tuple[Path, Path | None]] | None = None,
    same_architecture: Mapping[str, str] | None = None,
    extra_runtime: Mapping[str, nn.Module] | None = None,
    repeats: int = 10,
    warmup: int = 3,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report (plain data). ``stages``: ordered name -> model, the first is the reference of every ratio.

    ``same_architecture``: stage -> an earlier stage with the same architecture (its runtime is reused);
    ``extra_runtime``: further architectures timed in the same run (e.g. the other pruning mode), reported
    under ``runtime_extra``; ``info``: free plain data copied into the report (model, target, rounds...).
    """
    same = dict(same_architecture or {})
    timed = {name: m for name, m in stages.items() if name not in same}
    timed.update({f"extra:{name}": m for name, m in (extra_runtime or {}).items()})
    runtimes = measure_runtimes(timed, input_size, device=device, repeats=repeats, warmup=warmup)
    rows = []
    for name, model in stages.items():
        counts = count_complexity(model, input_size)
        row: dict[str, Any] = {"stage": name, **{k: getattr(counts, k) for k in COUNT_KEYS}}
        row["flops_fvcore"] = counts.flops_fvcore
        row["runtime_ms"] = runtimes[same.get(name, name)]
        row["psnr_y"] = psnr_scores(model, scale, val_pairs=val_pairs, benchmarks=benchmarks, device=device)
        rows.append(row)
    first = rows[0]
    for row in rows:
        row["ratio"] = {k: _ratio(row[k], first[k]) for k in (*COUNT_KEYS, "runtime_ms")}
        row["psnr_y_change"] = {k: v - first["psnr_y"][k] for k, v in row["psnr_y"].items() if k in first["psnr_y"]}
        row["esr_score"] = esr_scores(_score_metrics(row), _score_metrics(first)) if first["runtime_ms"] else None
    extra = {
        name: {"runtime_ms": runtimes[f"extra:{name}"], "ratio": _ratio(runtimes[f"extra:{name}"], first["runtime_ms"])}
        for name in (extra_runtime or {})
    }
    return {
        **dict(info or {}),
        "stages": rows,
        "runtime_extra": extra,
        "measurement": {
            "input_size": list(input_size),
            "device": str(device),
            "repeats": repeats,
            "warmup": warmup,
            "runtime": "median of interleaved forward passes (ms)",
            "psnr": f"Y, {scale}-pixel border, uint8 outputs",
            "benchmarks": {k: [str(v[0]), str(v[1]) if v[1] else None] for k, v in (benchmarks or {}).items()},
        },
    }


def _score_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A report row as ``nas.measure.score`` metrics (fvcore FLOPs, the NTIRE 2024+ counter)."""
    return {"runtime": row["runtime_ms"], "flops": row["flops_fvcore"], "params": row["params"]}


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _big(value: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= div:
            return f"{value / div:.3f}{unit}"
    return f"{value:g}"


def to_markdown(report: Mapping[str, Any]) -> str:
    """A readable Markdown rendering of ``make_report``'s result (plus the schedule's ``info`` keys)."""
    lines = [f"# Pruning report: {report.get('model', 'model')}", ""]
    for key, label in (("mode", "mode"), ("target", "target"), ("importance", "importance"), ("cost", "cost")):
        if key in report:
            value = report[key]
            if isinstance(value, Mapping):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            lines.append(f"- {label}: {value}")
    meas = report["measurement"]
    size = "x".join(str(s) for s in meas["input_size"])
    lines += [
        f"- measured on {meas['device']}, input 1x{size}, runtime = {meas['runtime']} over {meas['repeats']} repeats",
        f"- PSNR: {meas['psnr']}",
        "",
    ]
    psnr_keys = list(dict.fromkeys(k for row in report["stages"] for k in row["psnr_y"]))
    header = ["stage", "params", "FLOPs", "activations", "#conv", "runtime ms", *[f"PSNR {k}" for k in psnr_keys]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["stages"]:
        r = row["ratio"]
        cells = [row["stage"]]
        for key in COUNT_KEYS:
            value = _big(row[key]) if key != "num_conv" else str(row[key])
            cells.append(f"{value} ({_num(r[key] * 100 if r[key] is not None else None, 1)}%)")
        cells.append(f"{_num(row['runtime_ms'])} ({_num(r['runtime_ms'], 3)}x)")
        for k in psnr_keys:
            value, change = row["psnr_y"].get(k), row["psnr_y_change"].get(k)
            cells.append(f"{_num(value, 3)}" + (f" ({change:+.3f})" if change else ""))
        lines.append("| " + " | ".join(cells) + " |")
    scored = [row for row in report["stages"][1:] if row.get("esr_score")]
    if scored:
        first = report["stages"][0]["stage"]
        lines += [
            "",
            f"NTIRE ESR score against {first} (runtime, fvcore FLOPs, params; {first} = e^2 = 7.389, lower is better):",
            "",
        ]
        for row in scored:
            lines.append(f"- {row['stage']}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["esr_score"].items()))
    if report.get("runtime_extra"):
        lines.append("")
        for name, extra in report["runtime_extra"].items():
            lines.append(f"- {name}: {_num(extra['runtime_ms'])} ms ({_num(extra['ratio'], 3)}x of the unpruned model)")
    if report.get("mode_comparison"):
        lines += ["", f"**Modes:** {report['mode_comparison']}"]
    rounds = report.get("rounds") or []
    if rounds:
        lines += [
            "",
            "## Rounds",
            "",
            "| round | goal | achieved | runtime ms | val PSNR pruned | val PSNR fine-tuned | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for rd in rounds:
            lines.append(
                f"| {rd['round']} | {_num(rd.get('goal_fraction'), 4)} | {_num(rd.get('fraction'), 4)} | "
                f"{_num(rd.get('runtime_ms'))} | {_num(rd.get('val_psnr_pruned'), 3)} | "
                f"{_num(rd.get('val_psnr'), 3)} | {_num(rd.get('seconds'), 1)} |"
            )
    if report.get("notes"):
        lines += ["", *[f"- {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"


def write_prune_report(folder: str | Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """``report.json`` and ``report.md`` in ``folder``, each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / REPORT_JSON, folder / REPORT_MD
    for path, text in zip(paths, (json.dumps(report, indent=2) + "\n", to_markdown(report)), strict=True):
        atomic_write(path, text)
    return paths


def stage_report(
    teacher: nn.Module,
    small: nn.Module,
    masks: dict[str, str],
    state: dict[str, Any],
    cfg: PruneConfig,
    minimum: dict[str, Any],
    device: torch.device,
    val_data: Sequence[Pair] | None,
    source: str | None,
    *,
    after_rounds: nn.Module | None = None,
) -> dict[str, Any]:
    """The report of a schedule: before / after pruning (the final masks on the original weights) / after the
    rounds (``after_rounds``, when given: their refits and fine-tunes, before the final fine-tune) / after
    fine-tuning, plus the other mode's architecture at the same target (``other_mode_model``) timed beside."""
    teacher = teacher.to(device)
    spec = teacher.spec
    # after pruning, before any fine-tuning: the final masks on the original weights
    gated = GatedModel(copy.deepcopy(teacher), cfg.mode)
    masks_from_data(gated, masks)
    pruned, _ = shrink(gated)
    gated.remove()
    other = "fine" if cfg.mode == "coupled" else "coupled"
    achieved = state["rounds"][-1]["counts"][cfg.proxy_metric] / state["baseline"][cfg.proxy_metric]
    alt, notes = other_mode_model(teacher, cfg, other, achieved)
    extra = {f"{other} mode, same {cfg.proxy_metric}": alt} if alt is not None else {}
    stages = {"before": teacher, "after pruning": pruned}
    if after_rounds is not None:
        stages[AFTER_ROUNDS] = after_rounds.to(device)
    stages["after fine-tuning"] = small.to(device)
    rounds = [{k: v for k, v in r.items() if k != "masks"} for r in state["rounds"]]
    info = {
        "model": source or spec.get("name", "model"),
        "mode": cfg.mode,
        "target": {cfg.metric: cfg.target},
        "importance": cfg.importance,
        "cost": cfg.cost_metric,
        "reachable_minimum": minimum["fraction"],
        "rounds": rounds,
        "final": state.get("final"),
        "config": cfg.to_dict(),
    }
    report = make_report(
        stages,
        scale=spec["scale"],
        input_size=cfg.input_size,
        device=str(device),
        val_pairs=val_data,
        benchmarks=benchmark_folders(cfg.benchmarks, spec["scale"]),
        same_architecture={"after fine-tuning": "after pruning", AFTER_ROUNDS: "after pruning"},
        extra_runtime=extra,
        repeats=cfg.repeats,
        warmup=cfg.warmup,
        info=info,
    )
    if extra:
        ((name, row),) = report["runtime_extra"].items()
        mine = report["stages"][-1]["runtime_ms"]
        faster = cfg.mode if mine <= row["runtime_ms"] else other
        report["mode_comparison"] = (
            f"{faster} mode ran faster on {device}: {cfg.mode} (this run) {mine:.2f} ms, {other} "
            f"{row['runtime_ms']:.2f} ms (a one-shot L1-ranked {other} pruning to the same {cfg.proxy_metric}, "
            "timed in the same run; architecture only)"
        )
    report["notes"] = notes
    return report


def other_mode_model(
    teacher: nn.Module, cfg: PruneConfig, other: str, achieved: float
) -> tuple[nn.Module | None, list[str]]:
    """The ``other`` mode's architecture at the same proxy fraction (one-shot, L1-ranked: architecture only),
    or None with a note saying why there is none."""
    notes = []
    try:
        other_gated = GatedModel(copy.deepcopy(teacher), other)
        other_cfg = PruneConfig(**{**cfg.to_dict(), "mode": other, "importance": "l1", "target": 0.5})
        sel = Selector(other_gated, other_cfg)
        nz = sel.select(l1_importance(other_gated).numpy(), achieved * sel.cost(sel.nonzero()))
        reached = sel.cost(nz) / sel.cost(sel.nonzero())
        model = None
        if reached <= achieved * 1.001:
            with torch.no_grad():
                other_gated.gate_mask.copy_(torch.from_numpy(nz))
            model = shrink(other_gated)[0]
        else:
            notes.append(f"{other} mode cannot reach {achieved:.3f} of the {cfg.proxy_metric} (minimum {reached:.3f})")
        other_gated.remove()
        return model, notes
    except SrnasError as exc:
        return None, [f"{other} mode comparison skipped: {exc}"]
