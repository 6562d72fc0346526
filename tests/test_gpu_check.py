"""scripts/gpu_check.sh: the dry run (CPU, tiny budgets) writes gpu.md with every step passed; time limits and a
missing CUDA device fail clearly; nothing is written into the repository."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from nas.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.sh"
STEPS = ("profile", "train", "search", "prune")


def _run(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k not in ("SRNAS_GPU_DRY_RUN", "SRNAS_GPU_LIMITS")}
    full = {**inherited, "SRNAS_PROGRESS": "off", **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], env=full, capture_output=True, text=True, timeout=timeout)


def _rows(md: str) -> dict[str, list[str]]:
    """step -> its cells in gpu.md's step table."""
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] in STEPS:
            rows[cells[0]] = cells
    return rows


@pytest.mark.slow
def test_dry_run_passes_every_step(tmp_path):
    out = tmp_path / "results"
    proc = _run("--dry-run", "--results-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (out / "bench" / "gpu.md").read_text()
    rows = _rows(md)
    assert set(rows) == set(STEPS)
    assert all(cells[1] == "pass" for cells in rows.values()), md
    assert "mode: dry run" in md and "torch " in md and "overall: pass" in md
    data = json.loads((out / "bench" / "gpu.json").read_text())
    assert [s["step"] for s in data["steps"]] == list(STEPS) and data["passed"]
    assert all(s["wall_s"] > 0 for s in data["steps"])
    assert len(data["profile"]) >= 10 and all(r[1] > 0 for r in data["profile"])  # every zoo model timed
    assert "3 complete" in rows["search"][4] and "steps/s" in rows["train"][4] and "x)" in rows["prune"][4]
    assert not (REPO_ROOT / "results" / "gpu_check").exists()


@pytest.mark.slow  # real subprocesses
def test_time_limits_fail_the_steps(tmp_path):
    """SRNAS_GPU_DRY_RUN=1 with 1-second limits: every step times out, gpu.md says so, the exit status is 1."""
    out = tmp_path / "results"
    proc = _run(env={"SRNAS_GPU_DRY_RUN": "1", "SRNAS_GPU_LIMITS": "1 1 1 1", "SRNAS_RESULTS_DIR": str(out)})
    assert proc.returncode == 1
    rows = _rows((out / "bench" / "gpu.md").read_text())
    assert set(rows) == set(STEPS)
    assert all(cells[1] == "FAIL" and "timed out after 1 s" in cells[4] for cells in rows.values())


@pytest.mark.slow  # real subprocesses
def test_without_cuda_exits_1_with_one_line(tmp_path):
    out = tmp_path / "results"
    proc = _run("--results-dir", str(out), env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert not out.exists()


def test_bad_arguments_are_refused(tmp_path):
    proc = _run("--nope")
    assert proc.returncode == 2 and "unknown argument --nope" in proc.stderr
    proc = _run("--dry-run", "--results-dir", str(tmp_path), env={"SRNAS_GPU_LIMITS": "10 x"})
    assert proc.returncode == 2 and "SRNAS_GPU_LIMITS" in proc.stderr and not (tmp_path / "gpu_check").exists()
