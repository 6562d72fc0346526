"""What least-squares reconstruction (``srnas prune --reconstruct``) buys before any fine-tuning.

A case is ``IMPORTANCE:ROUNDS[:norec]`` (e.g. ``taylor:1``, ``l1:3``, ``taylor:1:norec``): RFDN's official
checkpoint pruned by ``srnas prune`` (run in-process) to 0.75x activations with ``--round-steps 0 --steps 0``,
so no weight is trained; reconstruction on unless ``norec``; ``--no-report`` (the report's 256x256 runtime
timing is what makes a shared 2-core machine slow; this script needs PSNR only). Then Set5 / Set14 Y PSNR of
the unpruned model, of the final masks on the *original* weights ("no refit", ``pruning.report``'s "after
pruning" stage) and of the saved model ("final": the refit weights when reconstruction is on) are measured
here, so a reconstruction case compares both at the same masks. Activations and params come from the pruner's
cost model at 256x256 (``state.json``). Wall seconds of the ``srnas prune`` call and of the refits alone are
recorded; the machine is shared, run it with ``nice``. Case folders go to ``results/runs/prune_reconstruct``.

    nice -n 10 .venv/bin/python scripts/bench_reconstruct.py                    # the default cases
    nice -n 10 .venv/bin/python scripts/bench_reconstruct.py --cases l1:1 l1:3  # some cases
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench_common import command_line, environment, make_parser, markdown_table, print_table, write_results

from nas import zoo
from nas.cli.main import main as srnas
from nas.errors import SrnasError
from nas.paths import REPO_ROOT
from nas.zoo.resolve import load_model
from pruning.config import IMPORTANCES
from pruning.gates import GatedModel
from pruning.report import benchmark_folders, psnr_scores
from pruning.shrink import shrink
from pruning.state import STATE_FILE, masks_from_data

NAME = "prune_reconstruct"
MODEL = "rfdn"
DEFAULT_CASES = ("taylor:1", "l1:1", "l1:3")
SETS = ("Set5", "Set14")


def parse_case(text: str) -> dict[str, Any]:
    """``IMPORTANCE:ROUNDS[:norec]`` -> ``{"name", "importance", "rounds", "reconstruct"}``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in IMPORTANCES or not parts[1].isdigit() or int(parts[1]) < 1:
        raise SrnasError(f"case {text!r}: expected IMPORTANCE:ROUNDS[:norec] with {'/'.join(IMPORTANCES)}, e.g. l1:3")
    if len(parts) == 3 and parts[2] != "norec":
        raise SrnasError(f"case {text!r}: the third part can only be 'norec'")
    rec = len(parts) == 2
    return {"name": text.replace(":", "-"), "importance": parts[0], "rounds": int(parts[1]), "reconstruct": rec}


def prune_args(case: dict[str, Any], folder: Path, args) -> list[str]:
    ckpt = zoo.checkpoint_path(MODEL)
    if ckpt is None:
        raise SrnasError(f"the reference kit has no checkpoint for {MODEL}")
    argv = ["prune", MODEL, "--weights", str(ckpt), "--target-activations", str(args.target), "--output", str(folder)]
    argv += ["--importance", case["importance"], "--rounds", str(case["rounds"]), "--round-steps", "0", "--steps", "0"]
    argv += ["--reconstruct" if case["reconstruct"] else "--no-reconstruct", "--repeats", "1"]
    argv += ["--no-report", "--device", "cpu"]
    if args.reconstruct_patches is not None:
        argv += ["--reconstruct-patches", str(args.reconstruct_patches)]
    return argv


def run_case(case: dict[str, Any], folder: Path, args) -> dict[str, Any]:
    """Prune one case from scratch and return its table row."""
    shutil.rmtree(folder, ignore_errors=True)
    argv = prune_args(case, folder, args)
    print(f"[bench_reconstruct] {case['name']}: srnas {' '.join(argv)}", flush=True)
    start = time.time()
    code = srnas(argv)
    wall = time.time() - start
    if code != 0 or not (folder / "spec.yaml").is_file():
        raise SrnasError(f"case {case['name']}: srnas prune exited with {code}; its folder {folder} is kept")
    state = json.loads((folder / STATE_FILE).read_text())
    psnr = stage_psnrs(folder, state)
    refits = [r["reconstruct"] for r in state["rounds"] if "reconstruct" in r]
    counts, base = state["rounds"][-1]["counts"], state["baseline"]
    row: dict[str, Any] = {
        "case": case["name"],
        "importance": case["importance"],
        "rounds": case["rounds"],
        "reconstruct": case["reconstruct"],
        "wall_s": round(wall, 1),
        "reconstruct_s": round(sum(r["seconds"] for r in refits), 1) if refits else None,
        "refit_convs": refits[-1]["refit"] if refits else None,
        "reverted": any(r.get("reverted") for r in refits) if refits else None,
        "reverted_on_val": any(r.get("reverted_on_val") for r in refits) if refits else None,
        "activations_ratio": counts["activations"] / base["activations"],
        "params": int(counts["params"]),
        "command": "srnas " + " ".join(prune_args(case, Path("DIR"), args)),
    }
    for name in SETS:
        if name in psnr["before"]:
            row[f"{name}_before"] = psnr["before"][name]
            row[f"{name}_no_refit"] = psnr["no_refit"][name]
            row[f"{name}_final"] = psnr["final"][name]
            row[f"{name}_drop"] = psnr["final"][name] - psnr["before"][name]
    return row


def stage_psnrs(folder: Path, state: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Set5 / Set14 Y PSNR of the unpruned model, the final masks on its weights, and the saved model."""
    teacher = zoo.build_zoo_model(MODEL, official=True).eval()
    gated = GatedModel(copy.deepcopy(teacher), state["config"]["mode"])
    masks_from_data(gated, state["rounds"][-1]["masks"])
    plain, _ = shrink(gated)
    sets = benchmark_folders(SETS, teacher.spec["scale"])
    models = {"before": teacher, "no_refit": plain.eval(), "final": load_model(folder).model.eval()}
    return {k: psnr_scores(m, teacher.spec["scale"], benchmarks=sets) for k, m in models.items()}


COLUMNS = ("case", "wall_s", "reconstruct_s", "refit_convs", "reverted_on_val", "activations_ratio", "params")
PSNR_COLUMNS = tuple(f"{s}_{k}" for s in SETS for k in ("before", "no_refit", "final", "drop"))


def display(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = {k: r.get(k) for k in COLUMNS}
        d["activations_ratio"] = round(r["activations_ratio"], 4)
        d.update({k: round(r[k], 3) if isinstance(r.get(k), float) else r.get(k) for k in PSNR_COLUMNS})
        out.append(d)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="IMPORTANCE:ROUNDS[:norec] ...")
    parser.add_argument("--target", type=float, default=0.75, help="activations fraction to keep")
    parser.add_argument("--reconstruct-patches", type=int, help="calibration patches (default: srnas prune's)")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "results" / "runs" / NAME, help="case folders")
    args = parser.parse_args(argv)
    cases = [parse_case(c) for c in args.cases]
    env = environment(["cpu"])
    rows = [run_case(case, args.work / case["name"], args) for case in cases]
    table = display(rows)
    print_table(table)
    commands = "\n".join(f"- `{r['case']}`: `{r['command']}`" for r in rows)
    body = (
        f"RFDN (official weights) pruned to {args.target}x activations (coupled mode), no fine-tuning "
        "(`--round-steps 0 --steps 0`). PSNR: Y, 4-pixel border. `no_refit`: the final masks on the original "
        "weights; `final`: the saved model (least-squares refit when reconstruction is on); `drop` = final - "
        "before. `wall_s`: the whole `srnas prune --no-report` call (scoring, refits, validation PSNR); "
        "`reverted_on_val`: the refit lowered the validation PSNR and was undone; `reconstruct_s`: the refits "
        "alone, summed over rounds; shared 2-core machine, `nice -n 10`."
        f"\n\n{markdown_table(table)}\n\nCommands (DIR = the case folder):\n\n{commands}\n"
    )
    write_results(
        NAME,
        title="Pruning: least-squares reconstruction before fine-tuning",
        env=env,
        command=command_line("bench_reconstruct.py", argv),
        arguments={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        results={"rows": rows},
        body=body,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
