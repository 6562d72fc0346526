"""What every benchmark script shares: the environment record, result writers, tables and rank statistics.

A benchmark ``NAME`` writes ``results/bench/NAME.json`` (environment, arguments, rows, summary) and
``results/bench/NAME.md`` (the same for people), both atomically, under ``nas.paths.results_dir()``
(``SRNAS_RESULTS_DIR`` overrides it), and prints a short table. Timings are only compared as ratios
measured in one run on one machine; the environment record says which machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tabulate import tabulate

from nas.io import atomic_write
from nas.paths import REPO_ROOT, results_dir
from nas.search.space import SearchSpace
from nas.search.supernet import choice_key, sample_choice

BENCH_DIR = "bench"
BUSY_LOAD = 0.5  # 1-min load per CPU above which the Markdown warns that CPU timings are unreliable


def bench_dir() -> Path:
    """``<results>/bench``: where every benchmark writes."""
    return results_dir(default=REPO_ROOT / "results") / BENCH_DIR


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and each option's default unless its help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not hidden and "default" not in text:
            text += " (default: %(default)s)"
        return text


def make_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose ``--help`` shows the script's docstring and the defaults."""
    return argparse.ArgumentParser(description=doc, formatter_class=_HelpFormatter)


# ----------------------------------------------------------------------------- environment


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The checked-out commit, read from ``.git`` files (no git process); None outside a repository."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: PATH"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        common = git / "commondir"  # a worktree keeps its HEAD here, the branches in the main repository
        base = (git / common.read_text().strip()).resolve() if common.is_file() else git
        for ref_file in (git / ref, base / ref):
            if ref_file.is_file():
                return ref_file.read_text().strip()
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except OSError:
        return None
    return None


def environment(devices: Iterable[str] = ("cpu",)) -> dict[str, Any]:
    """Date, machine, CPU/GPU, thread count, library versions and commit: what a number depends on."""
    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "git_commit": git_commit(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "devices": sorted(set(devices)),
    }
    if any(str(d).startswith("cuda") for d in devices) and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def environment_markdown(env: Mapping[str, Any]) -> str:
    """The environment as one Markdown bullet list."""
    gpu = f"; GPU {env['gpu']} (CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')})" if env.get("gpu") else ""
    commit = (env.get("git_commit") or "unknown")[:12]
    load, cpus = env.get("load_average_1m"), env.get("cpu_count") or 1
    load_text = "unknown" if load is None else f"{load:.2f}"
    busy = (
        f"- **warning: the machine was busy (1-min load {load:.2f} on {cpus} CPUs) when this started; "
        "CPU timings are inflated and noisy.**\n"
        if load is not None and load > BUSY_LOAD * cpus
        else ""
    )
    return (
        f"- date: {env['date']}; commit `{commit}`; host `{env['host']}`; 1-min load {load_text}\n"
        f"- CPU: {env['cpu']} ({env['cpu_count']} logical CPUs, torch threads {env['torch_threads']}){gpu}\n"
        f"- Python {env['python']}, torch {env['torch']}, numpy {env['numpy']}, pandas {env['pandas']}; "
        f"{env['platform']}\n" + busy
    )


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The shell command that reproduces this run."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join([".venv/bin/python", f"scripts/{script}", *args])


# ----------------------------------------------------------------------------- writers


def clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, paths to str, NaN/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(
    name: str,
    *,
    title: str,
    env: Mapping[str, Any],
    command: str,
    arguments: Mapping[str, Any],
    results: Mapping[str, Any],
    body: str,
) -> tuple[Path, Path]:
    """Write ``<bench>/NAME.json`` and ``NAME.md`` atomically; returns both paths."""
    out = bench_dir()
    payload = {
        "benchmark": name,
        "title": title,
        "command": command,
        "environment": dict(env),
        "arguments": dict(arguments),
        **results,
    }
    json_path = atomic_write(out / f"{name}.json", json.dumps(clean(payload), indent=2) + "\n")
    md = f"# {title}\n\n{environment_markdown(env)}\nReproduce: `{command}`\n\n{body.strip()}\n"
    md_path = atomic_write(out / f"{name}.md", md)
    return json_path, md_path


# ----------------------------------------------------------------------------- tables


def _cells(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> tuple[list[str], list[list[Any]]]:
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    return cols, [[r.get(c) for c in cols] for r in rows]


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = "g") -> str:
    """A GitHub Markdown table of ``rows`` (missing cells empty, ``|`` in text escaped)."""
    cols, cells = _cells(rows, columns)
    cells = [[c.replace("|", "\\|") if isinstance(c, str) else c for c in row] for row in cells]
    return tabulate(cells, headers=cols, tablefmt="pipe", floatfmt=floatfmt, missingval="")


def print_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = "g", file=None
) -> None:
    """Print ``rows`` as a plain aligned table."""
    cols, cells = _cells(rows, columns)
    print(tabulate(cells, headers=cols, tablefmt="simple", floatfmt=floatfmt, missingval="-"), file=file)


# ----------------------------------------------------------------------------- rank statistics


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    return pd.Series(np.asarray(values, dtype=float)).rank(method="average").to_numpy()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson of average ranks); NaN for fewer than 2 points or a constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} vs {len(y)} values")
    if len(x) < 2:
        return math.nan
    return _pearson(ranks(x), ranks(y))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected); NaN for fewer than 2 points or a constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"kendall_tau: {len(x)} vs {len(y)} values")
    if len(x) < 2:
        return math.nan
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denom = math.sqrt(float(np.count_nonzero(dx)) * float(np.count_nonzero(dy)))
    return float((dx * dy).sum() / denom) if denom > 0 else math.nan


def permutation_pvalue(
    x: Sequence[float],
    y: Sequence[float],
    statistic: Callable[[Sequence[float], Sequence[float]], float] = kendall_tau,
    *,
    permutations: int = 10000,
    seed: int = 0,
) -> float:
    """One-sided p-value of ``statistic(x, y)`` being this large by chance (y shuffled), add-one estimate."""
    observed = statistic(x, y)
    if math.isnan(observed):
        return math.nan
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    hits = sum(statistic(x, rng.permutation(y)) >= observed - 1e-12 for _ in range(permutations))
    return (hits + 1) / (permutations + 1)


def bootstrap_interval(
    n: int,
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` items resampled with replacement.

    ``statistic`` gets an index array (so paired statistics resample both series together); resamples where
    it is NaN (e.g. all one item) are dropped. The same ``seed`` draws the same resamples for every statistic.
    """
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)], dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation over mean; NaN for fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or v.mean() == 0:
        return math.nan
    return float(v.std(ddof=1) / v.mean())


# ----------------------------------------------------------------------------- search-space samples


def distinct_choices(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` distinct choices of ``sample_choice(space, seed, step)`` for step = 0, 1, ..."""
    if n > space.size():
        raise ValueError(f"{n} distinct architectures asked of {space.name}, which has {space.size()}")
    seen: dict[str, dict[str, Any]] = {}
    step = 0
    while len(seen) < n:
        choice = sample_choice(space, seed, step, "uniform")
        seen.setdefault(choice_key(choice), choice)
        step += 1
    return list(seen.values())
