"""``srnas show RUN/ID``: one trial of a search run: spec, block diagram, profile and place on the front."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from nas.cli.commands._common import add_device_arg, print_json, resolve_device
from nas.cli.commands.front import REFERENCE_SETS, X_AXES
from nas.errors import SrnasError
from nas.measure.counting import DEFAULT_INPUT_SIZE
from nas.models.genotype import diagram, genotype
from nas.models.spec import load_spec, normalize_spec
from nas.paths import results_dir
from nas.results.report import AXES, axis_label, row_spec, table_rows
from nas.results.runs import (
    Run,
    comparable_references,
    direction,
    normalise_size,
    read_references,
    read_run,
    resolve_run,
)

SPEC_ORDER = [
    "name",
    "description",
    "scale",
    "in_channels",
    "out_channels",
    "input_range",
    "width",
    "head",
    "blocks",
    "fusion",
    "body_conv",
    "body_skip",
    "upsampler",
    "global_skip",
]


def register(sub) -> None:
    p = sub.add_parser(
        "show",
        help="one trial of a search run: spec, diagram, profile, place on the front",
        description="Show trial ID of a search run (RUN/ID, or the model folder results/<run>/models/<ID>): "
        "its spec, a block diagram, its profile (profile.json, else counted now) and where it sits on the front.",
    )
    p.add_argument("target", metavar="RUN/ID", help="run folder or name, a slash and the trial number")
    p.add_argument("--x", default="runtime", choices=list(X_AXES), help="cost axis of the front (default: runtime)")
    p.add_argument("--runtime", action="store_true", help="also time the model when profiling it now")
    p.add_argument("--reference-set", choices=REFERENCE_SETS, default="set5", help="zoo PSNR to compare with")
    add_device_arg(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def parse_target(text: str, root: Path) -> tuple[Path, int]:
    """``RUN/ID`` or ``.../<run>/models/<ID>`` -> (run folder, trial number)."""
    path = Path(text)
    if path.is_dir() and path.parent.name == "models" and path.name.isdigit():
        return path.parent.parent, int(path.name)
    head, sep, tail = text.rstrip("/").rpartition("/")
    if not sep or not head or not tail.isdigit():
        raise SrnasError(f"expected RUN/ID (a run folder or name, '/', a trial number), e.g. my_run/12; got {text!r}")
    return resolve_run(head, root), int(tail)


def _trial_row(run: Run, trial: int) -> pd.Series:
    rows = run.trials[run.trials["trial"] == trial]
    if rows.empty:
        have = f"trials {run.trials['trial'].min()}..{run.trials['trial'].max()}" if len(run.trials) else "no trials"
        raise SrnasError(f"run {run.name} has no trial {trial} ({have})")
    return rows.iloc[-1]


def _input_size(row: pd.Series) -> tuple[int, int, int]:
    numbers = normalise_size(row.get("input_size")).split("x") if not pd.isna(row.get("input_size")) else []
    return tuple(int(n) for n in numbers) if len(numbers) == 3 else DEFAULT_INPUT_SIZE  # type: ignore[return-value]


def _profile(folder: Path | None, spec: dict[str, Any] | None, row: pd.Series, args) -> tuple[dict | None, str]:
    """profile.json when the model folder has one, else the profiler run now; (profile, where it came from)."""
    if folder is not None and (folder / "profile.json").is_file():
        try:
            return json.loads((folder / "profile.json").read_text()), str(folder / "profile.json")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SrnasError(f"cannot read {folder / 'profile.json'}: {exc}") from exc
    if spec is None:
        return None, "no spec to build the model from"
    from nas.measure.profiler import profile_model

    if folder is not None and (folder / "weights.safetensors").is_file():
        from nas.zoo.resolve import load_model

        model = load_model(folder).model
    else:
        from nas.models.network import build

        model = build(spec)
    device = resolve_device(args.device)
    prof = profile_model(model, _input_size(row), device=str(device), runtime=args.runtime)
    return prof.to_dict(), f"counted now on {device}" + (", timed" if args.runtime else "")


def _position(run: Run, row: pd.Series, x: str, y: str, refs: pd.DataFrame) -> dict[str, Any]:
    """Where the trial sits: on the front (rank by x) or dominated (by which), gap to the best PSNR and to the
    nearest reference on the x axis."""
    out: dict[str, Any] = {"x": x, "y": y}
    front = run.front(x, y)
    trial = int(row["trial"])
    xv, yv = pd.to_numeric(pd.Series([row[x], row[y]]), errors="coerce")
    if row["state"] != "COMPLETE" or not (math.isfinite(xv) and math.isfinite(yv)):
        out["on_front"] = False
        out["note"] = f"trial is {row['state']} or has no finite {x}/{y}: not on any front"
        return out
    on = front["trial"].tolist()
    out["on_front"] = trial in on
    out["front_size"] = len(front)
    if trial in on:
        out["rank_by_x"] = on.index(trial) + 1
    else:
        better_x = front[x] <= xv if direction(x) == "min" else front[x] >= xv
        out["dominated_by"] = [int(t) for t in front.loc[better_x & (front[y] >= yv), "trial"]]
    done = run.complete_trials().dropna(subset=[y])
    best = done.loc[done[y].idxmax()]
    out.update(best_trial=int(best["trial"]), best_psnr=float(best[y]), gap_to_best_db=float(yv - best[y]))
    if len(refs) and xv > 0:
        distance = (refs[x].astype(float) / xv).map(lambda r: abs(math.log(r)) if r > 0 else math.inf)
        near = refs.loc[distance.idxmin()]
        out["nearest_reference"] = {
            "model": str(near["model"]),
            x: float(near[x]),
            y: float(near[y]),
            "gap_db": float(yv - near[y]),
        }
    return out


def run(args) -> int:
    root = results_dir()
    run_path, trial = parse_target(args.target, root)
    r = read_run(run_path)
    row = _trial_row(r, trial)
    folder = r.model_dir(trial) if r.model_dir(trial).is_dir() else None
    spec = None
    if folder is not None and (folder / "spec.yaml").is_file():
        spec = load_spec(folder / "spec.yaml")
    elif row_spec(row) is not None:
        spec = normalize_spec(row_spec(row))
    profile, source = _profile(folder, spec, row, args)
    x = X_AXES[args.x]
    refs, notes = comparable_references(read_references(root), [r], x, f"{args.reference_set}_psnr_y")
    position = _position(r, row, x, "psnr", refs)
    metrics = table_rows(pd.DataFrame([row]))[0]
    gen = genotype(spec) if spec else metrics["genotype"]
    error = row.get("error")
    result = {
        "run": r.name,
        "path": str(r.path),
        "trial": trial,
        "state": row["state"],
        "genotype": gen,
        "error": None if pd.isna(error) else str(error),
        "model_dir": str(folder) if folder else None,
        "metrics": metrics,
        "spec": spec,
        "profile": profile,
        "profile_source": source,
        "position": position,
        "reference_notes": notes,
        "problems": r.problems,
    }
    if args.json:
        print_json(result)
        return 0
    _print(result, spec)
    return 0


def _fmt(column: str, value: Any) -> str:
    label, div = AXES.get(column, (column, 1.0))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{label} -"
    return f"{label} {float(value) / div:.4g}"


def _print(res: dict[str, Any], spec: dict[str, Any] | None) -> None:
    print(
        f"run {res['run']}, trial {res['trial']} ({res['state']})"
        + (f", model folder {res['model_dir']}" if res["model_dir"] else ", no exported model (only Pareto ones are)")
    )
    for problem in res["problems"]:
        print(f"warning: {problem}")
    if res["error"]:
        print(f"error: {res['error']}")
    print(f"genotype: {res['genotype']}")
    m = res["metrics"]
    print(
        "search metrics: "
        + ", ".join(_fmt(c, m.get(c)) for c in ("psnr", "runtime_ms", "activations", "params", "flops", "num_conv"))
        + f" (device {m.get('device') or '?'}, input {m.get('input_size') or '?'})"
    )
    if spec:
        print("\nblock diagram:")
        print(diagram(spec))
    prof = res["profile"]
    print(f"\nprofile ({res['profile_source']}):")
    if prof:
        print(
            "  "
            + ", ".join(
                _fmt(c, prof.get(c))
                for c in ("params", "flops", "flops_fvcore", "activations", "num_conv", "runtime_ms")
            )
            + f" (device {prof.get('device', '?')}, input {prof.get('input_size', '?')})"
        )
    pos = res["position"]
    x = pos["x"]
    print(f"\nfront ({axis_label(pos['y'])} vs {axis_label(x)}):")
    if "note" in pos:
        print(f"  {pos['note']}")
    else:
        if pos["on_front"]:
            print(f"  on the front: #{pos['rank_by_x']} of {pos['front_size']} by {x} (1 = cheapest)")
        else:
            print(f"  dominated by trial(s) {', '.join(map(str, pos['dominated_by']))}")
        print(
            f"  PSNR gap to the best trial ({pos['best_trial']}, {pos['best_psnr']:.3f} dB): "
            f"{pos['gap_to_best_db']:+.3f} dB"
        )
        near = pos.get("nearest_reference")
        if near:
            print(
                f"  nearest reference by {x}: {near['model']} ({_fmt(x, near[x])}, {near['psnr']:.3f} dB): "
                f"{near['gap_db']:+.3f} dB"
            )
    for note in res["reference_notes"]:
        print(f"  references {note}" if note.startswith("not shown") else f"  {note}")
    if spec:
        print("\nspec:")
        ordered = {k: spec[k] for k in SPEC_ORDER if k in spec} | spec
        print(yaml.safe_dump(ordered, sort_keys=False).rstrip())
