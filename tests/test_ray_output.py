"""Ray's output off the terminal: while the Ray backend runs, Ray's prints, warnings, tracebacks and C-level writes
(and those of processes it starts) land in ``<run>/ray/driver.log``; srnas' own lines reach the terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from nas.search.backends.ray_output import DRIVER_LOG, ray_output

CHILD = "import sys; print('child stdout'); print('child stderr', file=sys.stderr)"


def test_everything_but_the_terminal_streams_goes_to_the_log(tmp_path, capfd):
    logger = logging.getLogger("ray.test_probe")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        with ray_output(tmp_path / "ray") as term:
            os.write(1, b"c-level stdout\n")
            os.write(2, b"c-level stderr\n")
            print("tune banner")
            print("python stderr", file=sys.stderr)
            logger.warning("token warning")
            subprocess.run([sys.executable, "-c", CHILD], check=True)
            print("srnas progress", file=term.err)
            term.failure("search: trial 3 failed: DataError: too small")
        assert handler.stream is sys.stderr  # restored
    finally:
        logger.removeHandler(handler)
    out, err = capfd.readouterr()
    log = (tmp_path / "ray" / DRIVER_LOG).read_text()
    for ray_text in ("c-level stdout", "c-level stderr", "tune banner", "python stderr", "token warning", "child"):
        assert ray_text in log and ray_text not in out + err
    assert "srnas progress" in err and f"trial 3 failed: DataError: too small (Ray's trace: {term.log})" in err
    assert "srnas progress" not in log
    print("after")  # the streams are back
    assert capfd.readouterr().out == "after\n"


def test_a_cli_process_keeps_its_terminal_on_fds_1_and_2(tmp_path):
    """In a real command sys.stdout/stderr are fds 1/2: they are diverted, the terminal streams are new files."""
    code = textwrap.dedent(
        f"""
        import os, subprocess, sys
        from nas.search.backends.ray_output import ray_output
        with ray_output(sys.argv[1]) as term:
            print("ray banner"); os.write(2, b"ray warning\\n")
            subprocess.run([sys.executable, "-c", {CHILD!r}])
            print("progress line", file=term.err); print("result line", file=term.out)
            raise SystemExit(3)
        """
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "result line\n" and done.stderr == "progress line\n"
    log = (tmp_path / DRIVER_LOG).read_text()
    assert "ray banner" in log and "ray warning" in log and "child stderr" in log and "progress" not in log


SPACE = {
    "name": "rayout",
    "widths": [8],
    "depths": [1],
    # rfdb fails at this validation size (ESA needs 15x15 features): one clear line per failure on the terminal
    "candidates": {"res": {"type": "residual"}, "rfdb": {"type": "rfdb"}},
    "fusions": {"none": None, "concat": {"type": "concat"}},
    "upsamplers": {"ps": {"type": "pixelshuffle"}},
    "global_skips": ["none", "bilinear"],
    "references": {
        "bad": {"width": 8, "depth": 1, "layers": ["rfdb"], "fusion": "none", "upsampler": "ps", "global_skip": "none"}
    },
    "train": {"data": "embedded", "steps": 4, "batch_size": 2, "patch_size": 24, "ckpt_every": 10, "progress": False},
    "search": {"runtime_size": [3, 32, 32], "runtime_repeats": 1, "val_max_size": 48, "export_pareto": False},
}


@pytest.mark.slow  # starts a local Ray instance (127.0.0.1)
def test_a_ray_search_prints_only_srnas_lines(tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    argv = [sys.executable, "-m", "nas.cli", "search", "space.yaml", "--results-dir", "results", "--device", "cpu"]
    argv += ["--trials", "2", "--backend", "ray", "--workers", "1"]
    env = {**os.environ, "SRNAS_PROGRESS": "plain", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    terminal = done.stdout + done.stderr
    log = Path(tmp_path / "results" / "rayout" / "ray" / DRIVER_LOG).read_text()
    for ray_text in ("Traceback", "Configuration for experiment", "Token authentication", "tune_controller"):
        assert ray_text not in terminal, terminal
    assert "Traceback" in log and "Configuration for experiment" in log
    failures = [line for line in terminal.splitlines() if " failed: " in line]
    assert failures and all("DataError: ESA needs" in line and DRIVER_LOG in line for line in failures), terminal
    assert "search (ray): trial 0/2" in terminal and done.stdout.startswith("run ")  # srnas' progress and summary
