"""The pruner's results in one table: size, activations and CPU runtime ratios, and the PSNR cost, per case.

A case is ``MODEL[:MODE]:TARGET`` (MODE coupled (default) or fine; TARGET a fraction of the activations, or of
another metric with its letter in front: ``r`` measured runtime, ``p`` params, ``f`` FLOPs), e.g. ``rfdn:0.75``,
``rfdn:fine:0.75`` or ``span:r0.88``. Each case is pruned from the model's official checkpoint by ``srnas prune``
(the CLI, run in-process, fine-tuning on the embedded photos or ``--data``) into ``results/bench/prune/<case>/``.
MODE ``tp-magnitude`` or ``tp-taylor`` (e.g. ``rfdn:tp-magnitude:0.75``) is the Torch-Pruning peer at the same
activations with srnas prune's final fine-tune (``bench_prune_tp``; needs the ``bench`` extra). A finished case
folder is reused and an unfinished one continues where it stopped (the pruner is resumable), so the script can be run
again after a crash or with more cases. Then every pruned model is timed **in one run, interleaved with its
unpruned model** (``pruning.report.measure_runtimes`` at ``--size``), so the runtime ratios do not depend on
what else the machine did while each case was pruned. PSNR before / after pruning / after fine-tuning comes
from each case's ``report.json`` (Set5 / Set14 Y, the official checkpoints' protocol). When the reference kit
has NTIRE 2022's pruned RFDN (``rfdn_pruned``), it is measured beside RFDN as the field's reference point.

    .venv/bin/python scripts/bench_prune.py                                   # the default cases (~1 h on 2 cores)
    .venv/bin/python scripts/bench_prune.py --cases rfdn:0.82 --prune-only    # prune one case, measure later
    .venv/bin/python scripts/bench_prune.py --measure-only                    # table of the finished cases
    .venv/bin/python scripts/bench_prune.py --cases span:r0.88 --reconstruct --data ../shared/data/train \
        --name prune_data                           # a variant of the options: its own table, prune_data.md

A requested case whose folder is absent (``results/bench/prune/`` is not committed) but that has a row in the
previous ``results/bench/prune.json`` keeps that row, marked with the date of the run that measured it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import bench_dir, command_line, environment, make_parser, markdown_table, print_table, write_results
from bench_prune_tp import TP_MODES, run_tp_case, tp_seconds

from nas import zoo
from nas.cli.main import main as srnas
from nas.errors import SrnasError
from nas.measure.profiler import count_complexity
from nas.zoo.resolve import load_model
from pruning.report import REPORT_JSON, benchmark_folders, measure_runtimes, psnr_scores
from pruning.state import STATE_FILE

NAME = "prune"
DEFAULT_CASES = (
    "rfdn:0.82",
    "rfdn:0.75",
    "rfdn:fine:0.75",
    "rfdn:tp-magnitude:0.75",
    "rfdn:tp-taylor:0.75",
    "rfdn:0.5",
    "pan:0.75",
    "imdn:0.75",
)
MODES = ("coupled", "fine", *TP_MODES)
REFERENCE = {"rfdn": "rfdn_pruned"}  # pruned models of the field measured beside their base model
SETS = ("Set5", "Set14")
METRICS = {"a": "activations", "r": "runtime", "p": "params", "f": "flops"}  # a case's target letter
STAGES = ("before", "after pruning", "after fine-tuning")


def parse_case(text: str) -> dict[str, Any]:
    """``MODEL[:MODE]:TARGET`` -> ``{"name", "model", "mode", "target"}``; a clear error for anything else."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise SrnasError(f"case {text!r}: expected MODEL[:MODE]:TARGET, e.g. rfdn:0.75 or rfdn:tp-taylor:0.75")
    model, mode = parts[0], parts[1] if len(parts) == 3 else "coupled"
    if model not in zoo.list_zoo():
        raise SrnasError(f"case {text!r}: unknown zoo model {model!r} (known: {', '.join(zoo.list_zoo())})")
    if mode not in MODES:
        raise SrnasError(f"case {text!r}: unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    letter, number = (parts[-1][0], parts[-1][1:]) if parts[-1][:1] in METRICS else ("a", parts[-1])
    try:
        target = float(number)
    except ValueError:
        raise SrnasError(f"case {text!r}: target {parts[-1]!r} is not a number (or r0.88, p0.5, f0.5)") from None
    if not 0 < target < 1:
        raise SrnasError(f"case {text!r}: target must be a fraction in (0, 1), got {target}")
    if mode in TP_MODES and letter != "a":
        raise SrnasError(f"case {text!r}: the Torch-Pruning cases take an activations target only")
    mode_part = "" if mode == "coupled" else f"-{mode}"
    name = f"{model}{mode_part}-{letter}{round(target * 100):03d}"
    case = {"name": name, "model": model, "mode": mode, "target": target}
    return case if letter == "a" else {**case, "metric": METRICS[letter]}


def is_tp(case: dict[str, Any]) -> bool:
    """Whether the case is a Torch-Pruning peer (``bench_prune_tp``) rather than ``srnas prune``."""
    return case["mode"] in TP_MODES


def case_command(case: dict[str, Any], args) -> str:
    """How to reproduce a case (DIR = its folder), for the Markdown."""
    if not is_tp(case):
        return f"srnas {' '.join(prune_args(case, Path('DIR'), args))}"
    spec = f"{case['model']}:{case['mode']}:{case['target']}"
    extra = [
        f"--{o.replace('_', '-')} {getattr(args, o)}" for o in ("steps", "score_batches", "data") if getattr(args, o)
    ]
    return " ".join(["python scripts/bench_prune.py --cases", spec, *extra, "--prune-only"])


def prune_args(case: dict[str, Any], folder: Path, args) -> list[str]:
    """The ``srnas prune`` arguments of a case (also printed in the Markdown as its reproduction command)."""
    ckpt = zoo.checkpoint_path(case["model"])
    if ckpt is None:
        raise SrnasError(f"case {case['name']}: the reference kit has no checkpoint for {case['model']}")
    metric = case.get("metric", "activations")
    argv = ["prune", case["model"], "--weights", str(ckpt), f"--target-{metric}", str(case["target"])]
    argv += ["--mode", case["mode"], "--output", str(folder), "--device", args.device]
    for option in ("steps", "rounds", "round_steps", "score_batches"):
        if getattr(args, option) is not None:
            argv += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    if args.sets != ",".join(SETS):
        argv += ["--bench", args.sets]
    if args.importance:
        argv += ["--importance", args.importance]
    if args.reconstruct:
        argv += ["--reconstruct"]
    if args.data:
        argv += ["--data", str(args.data)]
    return argv


def variant_suffix(args, case: dict[str, Any] | None = None) -> str:
    """What the options add to each case's name (and folder), so variants of one case never share a folder
    (``--importance`` and ``--reconstruct`` are srnas prune's: TP cases ignore them)."""
    parts = ["", ""] if case is not None and is_tp(case) else [args.importance or "", "rec" if args.reconstruct else ""]
    parts.append("data" if args.data else "")
    parts.append(f"s{args.steps}" if args.steps is not None else "")
    return "".join(f"-{p}" for p in parts if p)


def finished(folder: Path) -> bool:
    """Whether ``folder`` holds a pruned model whose report was written."""
    return (folder / REPORT_JSON).is_file() and (folder / "spec.yaml").is_file()


def run_case(case: dict[str, Any], folder: Path, args) -> float:
    """Prune one case (continuing an unfinished folder); returns the wall seconds of this call."""
    if is_tp(case):
        return run_tp_case(case, folder, args)
    start = time.time()
    code = srnas(prune_args(case, folder, args))
    if code != 0 or not finished(folder):
        raise SrnasError(f"case {case['name']}: srnas prune exited with {code}; its folder {folder} is kept")
    return time.time() - start


def prune_seconds(folder: Path) -> float | None:
    """Seconds the pruner spent on a case (rounds + final fine-tune + report), from its state file."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    parts = [r.get("seconds", 0.0) for r in state.get("rounds", [])]
    parts += [(state.get("final") or {}).get("seconds", 0.0), (state.get("report") or {}).get("seconds", 0.0)]
    return round(sum(parts), 1)


def case_row(case: dict[str, Any], folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The table row of a finished case from its report (runtime columns are filled in by ``measure``)."""
    stages = {s["stage"]: s for s in report["stages"]}
    before, after = stages["before"], stages["after fine-tuning"]
    row: dict[str, Any] = {
        "case": case["name"],
        "model": case["model"],
        "mode": case["mode"],
        "target": case["target"],
        "metric": case.get("metric", "activations"),
        "params": after["params"],
        "params_ratio": after["params"] / before["params"],
        "flops_ratio": after["flops"] / before["flops"],
        "activations_ratio": after["activations"] / before["activations"],
        "prune_seconds": tp_seconds(folder) if is_tp(case) else prune_seconds(folder),
    }
    for name in SETS:
        if name in before["psnr_y"]:
            row[f"{name}_before"] = before["psnr_y"][name]
            row[f"{name}_pruned"] = stages["after pruning"]["psnr_y"][name]
            row[f"{name}_finetuned"] = after["psnr_y"][name]
            row[f"{name}_drop"] = after["psnr_y"][name] - before["psnr_y"][name]
    return row


def set_names(text: str) -> tuple[str, ...]:
    """``--sets`` as a tuple of set names (``none``: no sets)."""
    return () if text.strip().lower() in ("", "none") else tuple(s.strip() for s in text.split(","))


def reference_row(base: str, name: str, base_model, args) -> tuple[dict[str, Any], Any]:
    """A row for a pruned model of the field (official weights), PSNR measured here."""
    model = zoo.build_zoo_model(name, official=True).eval()
    c0, c1 = count_complexity(base_model), count_complexity(model)
    device = args.device
    sets = benchmark_folders(set_names(args.sets), model.spec["scale"])
    p0 = psnr_scores(base_model, model.spec["scale"], benchmarks=sets, device=device)
    p1 = psnr_scores(model, model.spec["scale"], benchmarks=sets, device=device)
    row: dict[str, Any] = {
        "case": f"{name} (official, reference)",
        "model": base,
        "mode": "reference",
        "params": c1.params,
        "params_ratio": c1.params / c0.params,
        "flops_ratio": c1.flops / c0.flops,
        "activations_ratio": c1.activations / c0.activations,
    }
    for s in sets:
        if s in p1:
            row[f"{s}_before"], row[f"{s}_finetuned"], row[f"{s}_drop"] = p0[s], p1[s], p1[s] - p0[s]
    return row, model


def measure(cases: list[dict[str, Any]], work: Path, args) -> list[dict[str, Any]]:
    """Rows of every finished case; runtimes timed per base model, interleaved with it, in this run."""
    rows: list[dict[str, Any]] = []
    for base in dict.fromkeys(c["model"] for c in cases):
        base_model = zoo.build_zoo_model(base, official=True).eval()
        timed: dict[str, Any] = {base: base_model}
        group: list[dict[str, Any]] = []
        for case in (c for c in cases if c["model"] == base):
            folder = work / case["name"]
            if not finished(folder):
                print(f"[bench_prune] {case['name']}: not pruned yet ({folder}); left out of the table")
                continue
            group.append(case_row(case, folder, json.loads((folder / REPORT_JSON).read_text())))
            timed[case["name"]] = load_model(folder).model.eval()
        if base in REFERENCE and zoo.checkpoint_path(REFERENCE[base]) is not None:
            ref_row, ref_model = reference_row(base, REFERENCE[base], base_model, args)
            group.append(ref_row)
            timed[ref_row["case"]] = ref_model
        if not group:
            continue
        print(f"[bench_prune] timing {base} and {len(group)} pruned models, interleaved ({args.repeats} repeats)")
        size = (3, args.size, args.size)
        with torch.inference_mode():
            ms = measure_runtimes(timed, size, device=args.device, repeats=args.repeats, warmup=args.warmup)
        for row in group:
            row["runtime_ms"], row["base_runtime_ms"] = ms[row["case"]], ms[base]
            row["runtime_ratio"] = ms[row["case"]] / ms[base]
        rows += group
    return rows


def previous_rows(name: str = NAME) -> tuple[dict[str, dict[str, Any]], str]:
    """The rows of the previous ``<name>.json`` by case name, and the date (YYYY-MM-DD) of the run that wrote it."""
    try:
        data = json.loads((bench_dir() / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}, ""
    date = str((data.get("environment") or {}).get("date", ""))[:10]
    return {r["case"]: r for r in data.get("rows", []) if "case" in r}, date


def with_previous(
    cases: list[dict[str, Any]], rows: list[dict[str, Any]], work: Path, previous: dict[str, Any], date: str
) -> list[dict[str, Any]]:
    """``rows`` in case order (each base model's reference last), plus the previous run's row of every case whose
    folder is absent, marked with that run's date in ``measured``; rows timed now say ``this run``."""
    now = {r["case"]: {**r, "measured": "this run"} for r in rows}
    out: list[dict[str, Any]] = []
    for base in dict.fromkeys(c["model"] for c in cases):
        names = [c["name"] for c in cases if c["model"] == base]
        if base in REFERENCE:
            names.append(f"{REFERENCE[base]} (official, reference)")
        for name in names:
            if name in now:
                out.append(now[name])
            elif name in previous and not finished(work / name):
                print(f"[bench_prune] {name}: no case folder; its row from the {date} run is kept")
                out.append({"measured": f"{date} run", **previous[name]})
    return out


def markdown_body(cases: list[dict[str, Any]], rows: list[dict[str, Any]], table: list[dict[str, Any]], args) -> str:
    """The Markdown of the table: what each case is, how it was measured, the table and the commands."""
    shown = {r["case"] for r in rows}
    commands = "\n".join(f"- `{c['name']}`: `{case_command(c, args)}`" for c in cases if c["name"] in shown)
    kept = sorted({r["measured"] for r in rows if r.get("measured", "this run") != "this run"})
    kept_note = (
        f" Rows whose `measured` is not `this run` ({', '.join(kept)}) had no case folder on disk here: they are "
        "kept from the previous `prune.json` as they were (runtime ratio timed in that run, its threads and "
        "load), not re-run."
        if kept
        else ""
    )
    return (
        "Each case: the official checkpoint pruned by `srnas prune` (coupled = channel groups through residuals "
        "and concatenations, fine = every conv independently; Taylor importance per activation unless "
        f"the case name says otherwise; distillation fine-tuning on {args.data or 'the embedded photos'}; "
        "`-aNNN` / `-rNNN` / `-pNNN` / `-fNNN`: the target, NNN % of the activations / measured runtime / params / "
        "FLOPs; `-rec`: `--reconstruct`; `-data`: `--data`; `-sN`: N final fine-tune steps). "
        "`tp-magnitude` / `tp-taylor`: the same checkpoint pruned by Torch-Pruning 1.6.1's DepGraph `MetaPruner` "
        "(one shot, one ratio for every channel group, `MagnitudeImportance` / `TaylorImportance`, the upsampler "
        "conv before PixelShuffle unpruned), its ratio bisected to the same activations (srnas's profiler), then "
        "srnas prune's final fine-tune (same steps, batch, patch, cosine LR, seed and distillation; no rounds). "
        "Ratios are of the pruned model to its unpruned model; CPU runtime "
        f"ratios timed in this run, interleaved with the unpruned model, {args.repeats} repeats at "
        f"{args.size}x{args.size} (median). PSNR: Y, 4-pixel border, from each case's report; Δ = after "
        "fine-tuning - before. `prune s`: the pruner's own wall time (rounds + final fine-tune + report; TP: "
        "ratio search + fine-tune + report), on whatever else the machine was doing then."
        f"{kept_note}\n\n{markdown_table(table)}\n\nCommands (DIR = the case folder):\n\n{commands}\n"
    )


COLUMNS = {
    "case": "case",
    "params": "params",
    "params_ratio": "params ×",
    "flops_ratio": "FLOPs ×",
    "activations_ratio": "activations ×",
    "runtime_ratio": "CPU runtime ×",
    "Set5_before": "Set5 before",
    "Set5_pruned": "Set5 pruned",
    "Set5_finetuned": "Set5 fine-tuned",
    "Set5_drop": "Set5 Δ",
    "Set14_drop": "Set14 Δ",
    "prune_seconds": "prune s",
    "measured": "measured",
}


def display(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with rounded, human-facing columns."""
    out = []
    for r in rows:
        d = {}
        for key, title in COLUMNS.items():
            v = r.get(key)
            if isinstance(v, float):
                v = round(v, 3) if key.endswith(("ratio", "drop", "before", "pruned", "finetuned")) else round(v, 1)
            d[title] = v
        out.append(d)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="MODEL[:MODE]:TARGET ...")
    parser.add_argument("--work", type=Path, help="case folders (default: results/bench/prune)")
    parser.add_argument("--steps", type=int, help="final fine-tuning steps (default: srnas prune's)")
    parser.add_argument("--rounds", type=int, help="prune / fine-tune rounds (default: srnas prune's)")
    parser.add_argument("--round-steps", type=int, help="fine-tuning steps per round (default: srnas prune's)")
    parser.add_argument("--score-batches", type=int, help="Taylor scoring batches (default: srnas prune's)")
    parser.add_argument("--sets", default=",".join(SETS), help="reference-kit sets in each case's report, or none")
    parser.add_argument("--importance", help="srnas prune --importance (default: srnas prune's)")
    parser.add_argument("--reconstruct", action="store_true", help="srnas prune --reconstruct (least-squares refits)")
    parser.add_argument("--data", type=Path, help="fine-tuning data: a folder tree of HR images (default: embedded)")
    parser.add_argument("--device", default="cpu", help="pruning and timing device")
    parser.add_argument("--size", type=int, default=256, help="LR side of the runtime input")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved timed passes (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--name", default=NAME, help="the table's name: results/bench/NAME.{md,json} (one per set of options)"
    )
    stage = parser.add_mutually_exclusive_group()
    stage.add_argument("--prune-only", action="store_true", help="prune the missing cases, write no table")
    stage.add_argument("--measure-only", action="store_true", help="table of the finished cases, prune nothing")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [parse_case(c) for c in args.cases]
    for case in cases:
        case["name"] += variant_suffix(args, case)
    work = args.work or bench_dir() / NAME
    if not args.measure_only:
        for case in cases:
            folder = work / case["name"]
            if finished(folder):
                print(f"[bench_prune] {case['name']}: finished earlier ({folder})")
                continue
            print(f"[bench_prune] {case['name']}: {case_command(case, args)}")
            print(f"[bench_prune] {case['name']}: done in {run_case(case, folder, args):.0f} s")
    if args.prune_only:
        return 0
    env = environment([args.device])  # before timing: its load figure is the machine's, not this script's
    previous, previous_date = previous_rows(args.name)
    rows = with_previous(cases, measure(cases, work, args), work, previous, previous_date)
    if not rows:
        raise SystemExit("bench_prune: no finished case to report")
    table = display(rows)
    print_table(table)
    write_results(
        args.name,
        title="Pruning: size, runtime and PSNR cost",
        env=env,
        command=command_line("bench_prune.py", argv),
        arguments={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        results={"rows": rows},
        body=markdown_body(cases, rows, table, args),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
