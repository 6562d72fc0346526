"""Pareto-front plots (PNG, interactive HTML) and markdown reports of search runs.

Every function takes runs read by ``nas.results.runs.read_run``, the x (cost, minimised) and y (quality, maximised)
columns, and optionally reference models as a table with columns ``model``, x and y
(``nas.results.runs.comparable_references``). Several runs are overlaid in distinct colours; their hypervolumes share
one reference point (``nas.results.pareto.reference_point`` over all of them).
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from nas.io import atomic_write
from nas.models.genotype import genotype
from nas.results.pareto import eligible, hypervolume, reference_point
from nas.results.runs import Run, direction

# column -> (axis label, divisor for display)
AXES: dict[str, tuple[str, float]] = {
    "psnr": ("PSNR (dB, Y)", 1.0),
    "runtime_ms": ("runtime (ms)", 1.0),
    "activations": ("activations (M)", 1e6),
    "params": ("params (K)", 1e3),
    "flops": ("FLOPs (G)", 1e9),
    "flops_fvcore": ("FLOPs fvcore (G)", 1e9),
    "num_conv": ("#conv", 1.0),
}
TABLE = [  # (column, header, format) of front tables
    ("psnr", "PSNR", "{:.3f}"),
    ("runtime_ms", "runtime ms", "{:.2f}"),
    ("activations", "acts M", "{:.2f}"),
    ("params", "params K", "{:.1f}"),
    ("flops", "FLOPs G", "{:.2f}"),
    ("num_conv", "#conv", "{:.0f}"),
]


def axis_label(column: str) -> str:
    return AXES.get(column, (column, 1.0))[0]


def scaled(column: str, values: Any) -> np.ndarray:
    """``values`` of ``column`` in display units (M activations, K params, G FLOPs)."""
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float) / AXES.get(column, ("", 1.0))[1]


def labels(runs: Sequence[Run]) -> list[str]:
    """Unique display names: the folder name, or parent/name when two runs share a name."""
    names = [r.name for r in runs]
    return [f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]


def row_genotype(row: pd.Series) -> str:
    """The trial's genotype column, else one computed from its spec JSON, else ``?``."""
    text = row.get("genotype")
    if isinstance(text, str) and text.strip():
        return text.strip()
    spec = row_spec(row)
    return genotype(spec) if spec else "?"


def row_spec(row: pd.Series) -> dict[str, Any] | None:
    try:
        spec = json.loads(row.get("spec"))
    except (TypeError, ValueError):
        return None
    return spec if isinstance(spec, dict) else None


def hypervolumes(
    runs: Sequence[Run], x: str = "runtime_ms", y: str = "psnr", reference: Sequence[float] | None = None
) -> tuple[list[float | None], np.ndarray | None]:
    """Hypervolume of each run's COMPLETE trials in (x, y) against one shared reference point (default:
    ``nas.results.pareto.reference_point`` over all runs); (None, None) when no run has a finite trial."""
    objectives = {x: direction(x), y: direction(y)}
    points = [r.trials.loc[eligible(r.trials, objectives), [x, y]].to_numpy(dtype=float) for r in runs]
    if reference is None:
        if not any(len(p) for p in points):
            return [None] * len(runs), None
        reference = reference_point([p for p in points if len(p)], list(objectives.values()))
    ref = np.asarray(reference, dtype=float)
    return [hypervolume(p, ref, list(objectives.values())) for p in points], ref


def table_rows(front: pd.DataFrame) -> list[dict[str, Any]]:
    """Front rows as plain dicts (NaN -> None): trial, genotype and the TABLE metrics."""
    rows = []
    for _, row in front.iterrows():
        out: dict[str, Any] = {"trial": int(row["trial"]), "genotype": row_genotype(row)}
        for col, _, _ in TABLE:
            value = pd.to_numeric(row.get(col), errors="coerce")
            out[col] = None if pd.isna(value) else (int(value) if col in ("params", "num_conv") else float(value))
        for col in ("flops_fvcore", "device", "input_size"):
            value = row.get(col)
            out[col] = None if pd.isna(value) else (value.item() if hasattr(value, "item") else value)
        rows.append(out)
    return rows


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """A text (or markdown) table of ``table_rows``; genotype last so long ones do not break alignment."""
    headers = ["trial"] + [h for _, h, _ in TABLE] + ["genotype"]
    body = []
    for r in rows:
        cells = [str(r["trial"])]
        for col, _, fmt in TABLE:
            v = r.get(col)
            cells.append("-" if v is None else fmt.format(float(v) / AXES.get(col, ("", 1.0))[1]))
        cells.append(r["genotype"])
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---:|" * (len(headers) - 1) + "---|"]
        for cells in body:  # genotype as code (no emphasis from '*'), pipes escaped for the table
            cells = [*cells[:-1], f"`{cells[-1]}`"]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:  # numbers right-aligned, the genotype (last) left-aligned
        padded = [c.rjust(w) for c, w in zip(cells[:-1], widths, strict=False)] + [cells[-1]]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(c) for c in body)])


# ----------------------------------------------------------------------------------- plots


def _use_log(values: np.ndarray) -> bool:
    values = values[np.isfinite(values)]
    return len(values) > 1 and values.min() > 0 and values.max() / values.min() > 20


def plot_front(
    runs: Sequence[Run],
    x: str = "runtime_ms",
    y: str = "psnr",
    references: pd.DataFrame | None = None,
    path: str | Path = "pareto.png",
    title: str | None = None,
) -> Path:
    """A PNG: every COMPLETE trial (dominated ones faded), each run's front as a step line, references as
    labelled stars. Returns ``path``."""
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["tab10"]
    hvs, _ = hypervolumes(runs, x, y)
    all_x = []
    for i, (run, name, hv) in enumerate(zip(runs, labels(runs), hvs, strict=True)):
        colour = colours(i % 10)
        done = run.trials[eligible(run.trials, {x: "min", y: "max"})]
        front = run.front(x, y)
        rest = done.drop(front.index)
        all_x.append(scaled(x, done[x]))
        ax.scatter(scaled(x, rest[x]), scaled(y, rest[y]), s=14, color=colour, alpha=0.25, linewidths=0)
        fx, fy = scaled(x, front[x]), scaled(y, front[y])
        if len(fx):
            right = np.nanmax(scaled(x, done[x]))
            ax.step(np.append(fx, right), np.append(fy, fy[-1]), where="post", color=colour, linewidth=1.5)
        hv_text = "" if hv is None else f", HV {hv:.4g}"
        ax.scatter(
            fx,
            fy,
            s=40,
            color=colour,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            label=f"{name}: {len(front)} on front / {len(done)} complete{hv_text}",
        )
        names = done["reference"] if "reference" in done else pd.Series(index=done.index, dtype=object)
        designs = done[names.notna() & (names.astype(str) != "")]
        if len(designs):
            ax.scatter(
                scaled(x, designs[x]),
                scaled(y, designs[y]),
                marker="D",
                s=80,
                facecolors="none",
                edgecolors=colour,
                linewidths=1.4,
                zorder=4,
                label=f"{name}: hand designs in the same supernet",
            )
            for label, px, py in zip(designs["reference"], scaled(x, designs[x]), scaled(y, designs[y]), strict=True):
                ax.annotate(str(label), (px, py), textcoords="offset points", xytext=(6, -10), fontsize=8, color=colour)
    if references is not None and len(references):
        rx, ry = scaled(x, references[x]), scaled(y, references[y])
        all_x.append(rx)
        ax.scatter(rx, ry, marker="*", s=160, color="black", zorder=4, label="reference models")
        for name, px, py in zip(references["model"], rx, ry, strict=True):
            ax.annotate(str(name), (px, py), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if all_x and _use_log(np.concatenate(all_x)):
        ax.set_xscale("log")
    ax.set_xlabel(axis_label(x) + " (lower is better)")
    ax.set_ylabel(axis_label(y) + " (higher is better)")
    ax.set_title(title or f"Pareto front: {axis_label(y)} vs {axis_label(x)}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write(path, buf.getvalue())


def _escape(text: str) -> str:
    """Plotly hover text is a small HTML subset that does not decode ``&quot;``: escape ``&<>`` only."""
    return html.escape(text, quote=False)


def _hover(name: str, row: pd.Series, on_front: bool) -> str:
    lines = [
        f"<b>{_escape(name)} trial {int(row['trial'])}</b>{' (Pareto)' if on_front else ''}",
        _escape(row_genotype(row)),
    ]
    for col, header, fmt in TABLE:
        value = pd.to_numeric(row.get(col), errors="coerce")
        if not pd.isna(value):
            lines.append(f"{header}: {fmt.format(value / AXES.get(col, ('', 1.0))[1])}")
    spec = row_spec(row)
    if spec:
        lines.append("<br>spec:")
        for key, value in spec.items():
            if key == "blocks" and isinstance(value, list):
                lines.append("blocks:")
                lines += [f"&nbsp;&nbsp;{_escape(json.dumps(b))}" for b in value]
            else:
                lines.append(f"{_escape(key)}: {_escape(json.dumps(value))}")
    return "<br>".join(lines)


def html_front(
    runs: Sequence[Run],
    x: str = "runtime_ms",
    y: str = "psnr",
    references: pd.DataFrame | None = None,
    path: str | Path = "pareto.html",
    title: str | None = None,
) -> Path:
    """An interactive plotly page (plotly.js embedded, opens offline); hovering a trial shows its genotype,
    metrics and spec. Returns ``path``."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    fig = go.Figure()
    hvs, _ = hypervolumes(runs, x, y)
    for i, (run, name, hv) in enumerate(zip(runs, labels(runs), hvs, strict=True)):
        colour = qualitative.D3[i % len(qualitative.D3)]
        done = run.trials[eligible(run.trials, {x: "min", y: "max"})]
        front = run.front(x, y)
        rest = done.drop(front.index)
        for part, is_front in ((rest, False), (front, True)):
            fig.add_trace(
                go.Scatter(
                    x=scaled(x, part[x]),
                    y=scaled(y, part[y]),
                    mode="lines+markers" if is_front else "markers",
                    line={"shape": "hv", "color": colour},
                    legendgroup=name,
                    marker={
                        "color": colour,
                        "size": 10 if is_front else 7,
                        "opacity": 1.0 if is_front else 0.3,
                        "line": {"width": 1 if is_front else 0, "color": "black"},
                    },
                    name=f"{name} front" + ("" if hv is None else f" (HV {hv:.4g})") if is_front else f"{name} trials",
                    text=[_hover(name, r, is_front) for _, r in part.iterrows()],
                    hovertemplate="%{text}<extra></extra>",
                )
            )
    if references is not None and len(references):
        fig.add_trace(
            go.Scatter(
                x=scaled(x, references[x]),
                y=scaled(y, references[y]),
                mode="markers+text",
                name="reference models",
                text=[str(m) for m in references["model"]],
                textposition="top right",
                marker={"symbol": "star", "size": 14, "color": "black"},
                hovertemplate="<b>%{text}</b><br>"
                + f"{axis_label(x)}: %{{x}}<br>{axis_label(y)}: %{{y}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"Pareto front: {axis_label(y)} vs {axis_label(x)}",
        xaxis_title=axis_label(x),
        yaxis_title=axis_label(y),
        hoverlabel={"align": "left"},
        template="plotly_white",
    )
    return atomic_write(path, fig.to_html(include_plotlyjs=True, full_html=True))


# ----------------------------------------------------------------------------------- markdown


def versus_references(
    front: pd.DataFrame, references: pd.DataFrame, x: str = "runtime_ms", y: str = "psnr"
) -> list[dict[str, Any]]:
    """For each reference: the best front PSNR at no more cost (and its gap in dB), and the cheapest front
    model at no less PSNR (and its cost as a fraction of the reference's)."""
    out = []
    for _, ref in references.iterrows():
        rx, ry = float(ref[x]), float(ref[y])
        row: dict[str, Any] = {"model": str(ref["model"]), x: rx, y: ry}
        cheaper = front[front[x] <= rx]
        if len(cheaper):
            best = cheaper.loc[cheaper[y].idxmax()]
            row.update(best_trial=int(best["trial"]), best_gap_db=float(best[y]) - ry)
        better = front[front[y] >= ry]
        if len(better):
            cheap = better.loc[better[x].idxmin()]
            row.update(cheapest_trial=int(cheap["trial"]), cost_ratio=float(cheap[x]) / rx if rx else None)
        out.append(row)
    return out


def _versus_table(rows: list[dict[str, Any]], x: str, y: str) -> str:
    lines = [
        f"| reference | {axis_label(x)} | {axis_label(y)} | best front model at <= its cost | "
        "cheapest front model at >= its PSNR |",
        "|---|---:|---:|---|---|",
    ]
    for r in rows:
        best = f"trial {r['best_trial']}: {r['best_gap_db']:+.3f} dB" if "best_trial" in r else "none that cheap"
        ratio = r.get("cost_ratio")
        cheap = (
            f"trial {r['cheapest_trial']}: {ratio:.2f}x the cost"
            if "cheapest_trial" in r and ratio is not None
            else "none that good"
        )
        lines.append(f"| {r['model']} | {float(scaled(x, [r[x]])[0]):.3g} | {r[y]:.3f} | {best} | {cheap} |")
    return "\n".join(lines)


def _run_section(
    run: Run,
    name: str,
    hv: float | None,
    ref_point: np.ndarray | None,
    x: str,
    y: str,
    references: pd.DataFrame | None,
    level: str,
) -> list[str]:
    status = run.status
    lines = [
        f"{level} Run `{name}`",
        "",
        f"- folder: `{run.path}`",
        f"- state: **{run.state}** (started {status.get('started', '?')}, finished {status.get('finished') or '-'})",
        f"- search space: {run.space or '?'}",
    ]
    devices, sizes = run.conditions()
    lines.append(f"- measured on: {', '.join(devices) or '?'}, input {', '.join(sizes) or '?'}")
    lines += [f"- **warning**: {p}" for p in run.problems]
    lines += ["", "| state | trials |", "|---|---:|"]
    lines += [f"| {state} | {n} |" for state, n in run.counts().items()]
    lines.append(f"| total | {len(run.trials)} |")
    front = run.front(x, y)
    lines += ["", f"Pareto front ({axis_label(y)} vs {axis_label(x)}): {len(front)} models."]
    if hv is not None and ref_point is not None:
        lines.append(f"Hypervolume: **{hv:.6g}** (reference point {x}={ref_point[0]:.6g}, {y}={ref_point[1]:.6g}).")
    if run.pareto is not None:
        lines.append(f"The search's own pareto.csv (its objectives) lists {len(run.pareto)} models.")
    lines += ["", format_table(table_rows(front), markdown=True) if len(front) else "_no COMPLETE trials_"]
    if references is not None and len(references) and len(front):
        lines += [
            "",
            "Against the reference models (trial PSNR is on the run's validation set, reference PSNR "
            "as in results/reference/zoo.csv: compare with care):",
            "",
            _versus_table(versus_references(front, references, x, y), x, y),
        ]
    return lines


def write_report(
    runs: Run | Sequence[Run],
    path: str | Path | None = None,
    *,
    x: str = "runtime_ms",
    y: str = "psnr",
    references: pd.DataFrame | None = None,
    notes: Sequence[str] = (),
    images: Sequence[str] = ("pareto.png", "pareto.html"),
) -> Path:
    """``report.md``: per run its state, trial counts, front table, hypervolume and the comparison with the
    reference models, then the configuration. ``path`` defaults to ``<run>/report.md`` for one run."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    if path is None:
        if len(runs) != 1:
            raise ValueError("write_report needs a path for several runs")
        path = runs[0].path / "report.md"
    names = labels(runs)
    hvs, ref_point = hypervolumes(runs, x, y)
    title = f"Search run `{names[0]}`" if len(runs) == 1 else f"Comparison of {len(runs)} runs"
    lines = [f"# {title}", ""]
    png, page = images
    lines += [f"![Pareto front]({png})", "", f"Interactive version (hover for specs): [{page}]({page})", ""]
    if len(runs) > 1:
        lines += [
            "| run | state | trials | complete | front | hypervolume | best PSNR |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for run, name, hv in zip(runs, names, hvs, strict=True):
            done = run.complete_trials()
            best = done[y].max() if len(done) else float("nan")
            lines.append(
                f"| {name} | {run.state} | {len(run.trials)} | {len(done)} | {len(run.front(x, y))} | "
                f"{'-' if hv is None else f'{hv:.6g}'} | {'-' if pd.isna(best) else f'{best:.3f}'} |"
            )
        lines.append("")
    if references is not None or notes:
        shown = ", ".join(map(str, references["model"])) if references is not None and len(references) else "none"
        lines += ["Reference models:", "", f"- shown: {shown}"] + [f"- {n}" for n in notes] + [""]
    level = "##"
    for run, name, hv in zip(runs, names, hvs, strict=True):
        lines += _run_section(run, name, hv, ref_point, x, y, references, level) + [""]
    for run, name in zip(runs, names, strict=True):
        if run.config:
            lines += [
                f"{level} Configuration of `{name}`",
                "",
                "```yaml",
                yaml.safe_dump(run.config, sort_keys=False).rstrip(),
                "```",
                "",
            ]
    return atomic_write(path, "\n".join(lines))
