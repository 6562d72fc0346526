"""``srnas front``: the Pareto front of one or more search runs as a table, plots and a report."""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

from nas.cli.commands._common import print_json
from nas.errors import SrnasError
from nas.paths import results_dir
from nas.results.report import (
    axis_label,
    format_table,
    html_front,
    hypervolumes,
    labels,
    plot_front,
    table_rows,
    write_report,
)
from nas.results.runs import comparable_references, newest_complete_run, read_references, read_run, resolve_run

X_AXES = {
    "runtime": "runtime_ms",
    "activations": "activations",
    "flops": "flops",
    "flops_fvcore": "flops_fvcore",
    "params": "params",
}
Y_AXES = {"psnr": "psnr"}
REFERENCE_SETS = ("set5", "set14")


def register(sub) -> None:
    p = sub.add_parser(
        "front",
        help="Pareto fronts of search runs: table, plots, report",
        description="Print the Pareto front of search runs and write pareto.png, pareto.html (interactive) and "
        "report.md into the run folder (several runs: into results/compare/<names>/). Hypervolumes of runs "
        "shown together share one reference point.",
    )
    p.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="run folder, or run name under results/ (default: the newest complete run)",
    )
    p.add_argument("--x", default="runtime", choices=list(X_AXES), help="cost axis, minimised (default: runtime)")
    p.add_argument("--y", default="psnr", choices=list(Y_AXES), help="quality axis, maximised (default: psnr)")
    p.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw the zoo models of results/reference/zoo.csv measured under the same conditions",
    )
    p.add_argument(
        "--reference-set",
        choices=REFERENCE_SETS,
        default="set5",
        help="which PSNR of the zoo models to draw (default: set5)",
    )
    p.add_argument("--out", help="folder for the plots and report (default: the run folder / results/compare/...)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def compare_dir(root: Path, names: list[str]) -> Path:
    """``results/compare/<name1>+<name2>...`` (long names shortened with a hash)."""
    joined = re.sub(r"[^A-Za-z0-9._+-]", "_", "+".join(names))
    if len(joined) > 80:
        joined = f"{joined[:60]}-{hashlib.sha1(joined.encode()).hexdigest()[:8]}"
    return root / "compare" / joined


def run(args) -> int:
    root = results_dir()
    paths = [resolve_run(r, root) for r in args.runs] or [newest_complete_run(root)]
    runs = [read_run(p) for p in paths]
    x, y = X_AXES[args.x], Y_AXES[args.y]
    names = labels(runs)
    refs, notes = None, []
    if args.references:
        refs, notes = comparable_references(read_references(root), runs, x, f"{args.reference_set}_psnr_y", y)
    out = Path(args.out) if args.out else runs[0].path if len(runs) == 1 else compare_dir(root, names)
    title = f"{', '.join(names)}: {axis_label(y)} vs {axis_label(x)}"
    try:
        files = {
            "png": str(plot_front(runs, x, y, refs, out / "pareto.png", title=title)),
            "html": str(html_front(runs, x, y, refs, out / "pareto.html", title=title)),
            "report": str(write_report(runs, out / "report.md", x=x, y=y, references=refs, notes=notes)),
        }
    except OSError as exc:
        raise SrnasError(f"cannot write the plots/report into {out}: {exc} (choose another folder with --out)") from exc
    hvs, ref_point = hypervolumes(runs, x, y)
    for name, r in zip(names, runs, strict=True):
        for problem in r.problems:
            print(f"srnas front: warning: {name}: {problem}", file=sys.stderr)
    if args.json:
        print_json(
            {
                "x": x,
                "y": y,
                "reference_point": None if ref_point is None else {x: float(ref_point[0]), y: float(ref_point[1])},
                "runs": [
                    {
                        "run": name,
                        "path": str(r.path),
                        "state": r.state,
                        "problems": r.problems,
                        "counts": r.counts(),
                        "hypervolume": hv,
                        "front": table_rows(r.front(x, y)),
                    }
                    for name, r, hv in zip(names, runs, hvs, strict=True)
                ],
                "references": [] if refs is None else refs.to_dict(orient="records"),
                "reference_notes": notes,
                "files": files,
            }
        )
        return 0
    for name, r, hv in zip(names, runs, hvs, strict=True):
        counts = ", ".join(f"{k} {v}" for k, v in r.counts().items()) or "no trials"
        front = r.front(x, y)
        hv_text = "" if hv is None else f", hypervolume {hv:.6g}"
        print(
            f"run {name}: {r.state}, {len(r.trials)} trials ({counts}); front {y} vs {x}: {len(front)} models{hv_text}"
        )
        print(format_table(table_rows(front)) if len(front) else "  (no COMPLETE trials with finite metrics)")
        print()
    if ref_point is not None:
        print(f"hypervolume reference point: {x}={ref_point[0]:.6g}, {y}={ref_point[1]:.6g}")
    if refs is not None and len(refs):
        print(f"references shown ({args.reference_set} PSNR): {', '.join(refs['model'])}")
    for note in notes:
        print(f"references {note}" if note.startswith("not shown") else note)
    print(f"wrote {', '.join(Path(f).name for f in files.values())} in {out}")
    return 0
