#!/usr/bin/env bash
# One prepared check of srnas on a CUDA machine: four steps in sequence, each under its own time limit, then
# RESULTS/bench/gpu.md (+ gpu.json): the card, torch/CUDA versions, each step's wall time, numbers and pass/fail.
#
#   1. profile  srnas profile --zoo --runtime --device cuda   zoo runtime (median, AIM 2020 best-of-3 mean) and
#                                                             peak CUDA memory at 1x3x256x256
#   2. train    srnas train rfdn --amp --channels-last        300 float16-autocast, channels-last steps (embedded data)
#   3. search   srnas search quick --trials 20 --device cuda  supernet (500 steps) + 20 trials on the GPU
#   4. prune    srnas prune <step 2 model> --target-runtime   measured-runtime target 0.8 on the GPU
#
# Usage: scripts/gpu_check.sh [--dry-run] [--results-dir DIR]
#   --dry-run (or SRNAS_GPU_DRY_RUN=1): the same sequence on the CPU with tiny budgets (what the tests run; AMP and
#             channels-last are CUDA-only in srnas train, so they are passed but inactive there).
#   --results-dir DIR (or SRNAS_RESULTS_DIR): where gpu.md and the work folder go (default ./results); the work
#             folder DIR/gpu_check/ is removed and made afresh on every run.
#   SRNAS_GPU_LIMITS="P T S R": time limits in seconds of the four steps (default "90 90 240 150" on a GPU, 570 s in
#             all, to fit one 10-minute device call; "180 180 240 240" in a dry run).
# Exit status: 0 when every step passed, 1 when one failed or when there is no CUDA device (without --dry-run).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
DRY="${SRNAS_GPU_DRY_RUN:-0}"
RESULTS="${SRNAS_RESULTS_DIR:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --results-dir) RESULTS="${2:?--results-dir needs a folder}"; shift ;;
        --results-dir=*) RESULTS="${1#*=}" ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ "$DRY" = "0" ] || DRY=1
if [ "$DRY" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check.sh: no CUDA device here (torch.cuda.is_available() is False); --dry-run runs the sequence on CPU" >&2
    exit 1
fi
RESULTS="$(mkdir -p "${RESULTS:-$PWD/results}" && cd "${RESULTS:-$PWD/results}" && pwd)" || exit 1
export SRNAS_RESULTS_DIR="$RESULTS" SRNAS_PROGRESS=plain PYTHONUNBUFFERED=1
SRNAS=("$PY" -m nas.cli.main)

if [ "$DRY" = 1 ]; then
    DEV=cpu
    read -r L_PROFILE L_TRAIN L_SEARCH L_PRUNE <<< "${SRNAS_GPU_LIMITS:-180 180 240 240}"
    PROFILE=(--size 24 --repeats 1 --warmup 0)
    TRAIN=(--steps 3 --batch-size 2 --patch-size 24 --val-max-size 96)
    SEARCH=(--trials 3 --steps 3)
    # an activations target: a tiny CPU model's measured runtime is too noisy to prune to reliably (the dry run
    # checks the sequence; the GPU run prunes for measured runtime)
    PRUNE=(--target-activations 0.8 --rounds 1 --round-steps 2 --steps 2 --score-batches 1 --batch-size 2 --patch-size 24
           --val-max-size 96 --size 32 --repeats 2)
    TRIALS=3
else
    DEV=cuda
    read -r L_PROFILE L_TRAIN L_SEARCH L_PRUNE <<< "${SRNAS_GPU_LIMITS:-90 90 240 150}"
    PROFILE=(--size 256 --repeats 10 --warmup 3)
    TRAIN=(--steps 300 --batch-size 16 --patch-size 48)
    SEARCH=(--trials 20 --steps 500)
    PRUNE=(--target-runtime 0.8 --rounds 3 --round-steps 100 --steps 200)
    TRIALS=20
fi
for limit in "$L_PROFILE" "$L_TRAIN" "$L_SEARCH" "$L_PRUNE"; do
    if ! [[ "$limit" =~ ^[1-9][0-9]*$ ]]; then
        echo "gpu_check.sh: SRNAS_GPU_LIMITS must be four positive whole seconds, got '${SRNAS_GPU_LIMITS:-}'" >&2
        exit 2
    fi
done

WORK="$RESULTS/gpu_check"
rm -rf -- "$WORK"
mkdir -p "$WORK" "$RESULTS/bench"
: > "$WORK/steps.tsv"

# run_step NAME LIMIT COMMAND...: stdout (JSON) -> WORK/NAME.json, stderr -> WORK/NAME.log, "NAME rc wall_ms limit"
run_step() {
    local name=$1 limit=$2 start end rc
    shift 2
    echo "gpu_check: $name (limit ${limit}s): $*"
    start=$(date +%s%N)
    timeout --kill-after=15 "$limit" "$@" > "$WORK/$name.json" 2> "$WORK/$name.log"
    rc=$?
    end=$(date +%s%N)
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( (end - start) / 1000000 ))" "$limit" >> "$WORK/steps.tsv"
    echo "gpu_check: $name rc=$rc"
}

cd "$ROOT" || exit 1
run_step profile "$L_PROFILE" "${SRNAS[@]}" profile --zoo --runtime --device "$DEV" "${PROFILE[@]}" --json
run_step train "$L_TRAIN" "${SRNAS[@]}" train rfdn --data embedded --amp --channels-last --device "$DEV" \
    "${TRAIN[@]}" --output "$WORK/train" --json
run_step search "$L_SEARCH" "${SRNAS[@]}" search quick --run search --device "$DEV" "${SEARCH[@]}" \
    --results-dir "$WORK" --json
run_step prune "$L_PRUNE" "${SRNAS[@]}" prune "$WORK/train" --device "$DEV" "${PRUNE[@]}" --bench none \
    --output "$WORK/prune" --json

"$PY" - "$WORK" "$RESULTS/bench" "$DRY" "$TRIALS" <<'PYTHON'
"""Summarise the four steps into gpu.md / gpu.json (atomically) and exit 1 when one failed."""
import json
import sys
from pathlib import Path

import torch
from tabulate import tabulate

from nas.io import atomic_write

work, out, dry, trials = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])


def load(name):
    try:
        return json.loads((work / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def last_line(name):
    lines = [ln for ln in (work / f"{name}.log").read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def profile_numbers(data):
    rows = [(r["model"], r.get("runtime_ms"), r.get("runtime_best3_mean_ms"), r.get("memory_mb")) for r in data]
    ok = len(rows) > 0 and all(r[1] is not None for r in rows) and (dry or all(r[3] is not None for r in rows))
    best = min(rows, key=lambda r: r[1]) if rows else None
    text = f"{len(rows)} zoo models timed; fastest {best[0]} {fmt(best[1])} ms" if best else "no rows"
    return ok, text, rows


def train_numbers(data):
    steps_s = data["steps"] / data["seconds"] if data.get("seconds") else None
    text = (
        f"{data['steps']} steps in {fmt(data['seconds'], 1)} s ({fmt(steps_s, 1)} steps/s), final loss "
        f"{fmt(data.get('final_loss'), 4)}, val PSNR {fmt(data.get('final_psnr'))} dB"
    )
    return data["steps"] > 0 and data.get("final_loss") is not None, text


def search_numbers(data):
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in data.get("timings", {}).items() if k.endswith("_s"))
    text = f"{data['complete']} complete, {data['failed']} failed, {data['pareto']} on the front; {timings}"
    return data["complete"] >= trials and data["pareto"] > 0, text


def prune_numbers(data):
    stages = (data.get("report") or {}).get("stages") or []
    if not stages:
        return False, "no report"
    last = stages[-1]
    psnr = ", ".join(f"{k} {v:+.2f} dB" for k, v in last.get("psnr_y_change", {}).items())
    metric, target = next(iter(data["target"].items()))  # e.g. ("runtime", 0.8)
    ratio = last["ratio"]["runtime_ms" if metric == "runtime" else metric]
    met = "met" if ratio is not None and ratio <= target else "not met"
    text = (
        f"target {metric} {target} ({met}): {fmt(stages[0]['runtime_ms'])} -> "
        f"{fmt(last['runtime_ms'])} ms ({fmt(ratio, 3)}x), params "
        f"{stages[0]['params']:,} -> {last['params']:,}; PSNR change {psnr or '-'}"
    )
    return True, text


steps, profile_rows = [], []
for line in (work / "steps.tsv").read_text().splitlines():
    name, rc, wall, limit = line.split("\t")
    rc, data = int(rc), load(name)
    row = {"step": name, "rc": rc, "wall_s": round(int(wall) / 1000, 1), "limit_s": int(limit)}
    if rc in (124, 137):
        row.update(status="FAIL", numbers=f"timed out after {limit} s")
    elif rc != 0 or data is None:
        row.update(status="FAIL", numbers=f"exit {rc}: {last_line(name)}")
    else:
        try:
            if name == "profile":
                ok, text, profile_rows = profile_numbers(data)
            else:
                ok, text = {"train": train_numbers, "search": search_numbers, "prune": prune_numbers}[name](data)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            ok, text = False, f"unexpected output: {type(exc).__name__}: {exc}"
        row.update(status="pass" if ok else "FAIL", numbers=text)
    steps.append(row)

cuda = torch.cuda.is_available() and not dry
env = {
    "mode": "dry run (CPU, tiny budgets)" if dry else "CUDA",
    "card": torch.cuda.get_device_name() if cuda else None,
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version() if cuda else None,
}
passed = all(s["status"] == "pass" for s in steps) and len(steps) == 4
md = [
    "# GPU check (scripts/gpu_check.sh)",
    "",
    f"- mode: {env['mode']}; card: {env['card'] or 'none'}; torch {env['torch']}, CUDA {env['cuda']}, "
    f"cuDNN {env['cudnn']}",
    f"- overall: {'pass' if passed else 'FAIL'}; logs and outputs: `{work}`",
    "",
    tabulate([[s["step"], s["status"], s["wall_s"], s["limit_s"], s["numbers"]] for s in steps],
             headers=["step", "status", "wall s", "limit s", "numbers"], tablefmt="pipe"),
    "",
]
if profile_rows:
    md += ["## Zoo runtime and peak memory (step 1)", "",
           tabulate([[m, fmt(a), fmt(b), fmt(c, 1)] for m, a, b, c in profile_rows],
                    headers=["model", "median ms", "AIM 2020 best-of-3 mean ms", "peak memory MB"],
                    tablefmt="pipe"), ""]
atomic_write(out / "gpu.md", "\n".join(md))
atomic_write(out / "gpu.json", json.dumps({"environment": env, "passed": passed, "steps": steps,
                                            "profile": profile_rows}, indent=2) + "\n")
print("\n".join(md))
sys.exit(0 if passed else 1)
PYTHON
