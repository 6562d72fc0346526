"""Search spaces (validation), the local Optuna search end to end, and resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nas.errors import SpecError, SrnasError
from nas.paths import REPO_ROOT
from nas.search.run import SearchOptions, open_study, run_search
from nas.search.space import load_space, parse_space

TINY_SPACE = {
    "name": "tiny",
    "widths": [8],
    "depths": [1, 2],
    "candidates": {
        "res": {"type": "residual"},
        "ir": {"type": "inverted_residual", "expand_ratio": 3, "norm": "none"},
    },
    "fusions": {"none": None, "concat": {"type": "concat"}},
    "upsamplers": {"ps": {"type": "pixelshuffle"}},
    "global_skips": ["none", "bilinear"],
    "references": {
        "two_res": {
            "width": 8,
            "depth": 2,
            "layers": ["res", "res"],
            "fusion": "none",
            "upsampler": "ps",
            "global_skip": "none",
        }
    },
    "train": {"data": "embedded", "steps": 6, "batch_size": 2, "patch_size": 16, "ckpt_every": 3, "progress": False},
    "search": {"trials": 5, "runtime_size": [3, 24, 24], "runtime_repeats": 1, "val_max_size": 48},
}
OPTS = {"trials": 5, "runtime_size": [3, 24, 24], "runtime_repeats": 1, "val_max_size": 48, "device": "cpu"}


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_spaces_are_valid_and_hold_their_references(path):
    space = load_space(path)
    assert space.size() > 100
    for choice in space.references.values():
        space.to_spec(choice)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"widthz": [8]}, "unknown key(s) 'widthz'"),
        ({"widths": []}, "'widths' must be a non-empty list of positive integers"),
        ({"widths": [8, -1]}, "'widths' must be a non-empty list"),
        ({"depths": "3"}, "'depths' must be a non-empty list"),
        ({"candidates": {"x": {"type": "transformer"}}}, "candidates.x: unknown block 'transformer'"),
        ({"candidates": {"x": {"type": "residual", "colour": 2}}}, "candidates.x: block 'residual': unknown option"),
        ({"layers": [["res"], ["nope"]]}, "layers[1]: 'nope' is not in the space; allowed: res, ir"),
        ({"layers": [["res"]]}, "'layers' must be 'all' or a list of 2 lists"),
        ({"upsamplers": {"u": {"type": "deconv"}}}, "upsamplers.u: unknown upsampler 'deconv'"),
        ({"global_skips": ["lanczos"]}, "global_skips: 'lanczos' is not in the space"),
        ({"scale": 5}, "'scale' must be 2, 3 or 4"),
        (
            {
                "references": {
                    "r": {
                        "width": 64,
                        "depth": 1,
                        "layers": ["res"],
                        "fusion": "none",
                        "upsampler": "ps",
                        "global_skip": "none",
                    }
                }
            },
            "references.r: width: 64 is not in the space",
        ),
    ],
)
def test_bad_spaces_name_the_key_and_allowed_values(change, fragment):
    with pytest.raises(SpecError) as err:
        parse_space({**TINY_SPACE, **change}, "bad.yaml")
    assert fragment in str(err.value)
    assert "bad.yaml" in str(err.value)


def test_missing_key_and_unparsable_file(tmp_path):
    with pytest.raises(SpecError, match="missing the required key 'candidates'"):
        parse_space({k: v for k, v in TINY_SPACE.items() if k != "candidates"})
    bad = tmp_path / "s.yaml"
    bad.write_text("widths: [8\n")
    with pytest.raises(SpecError, match="cannot parse"):
        load_space(bad)
    with pytest.raises(SpecError, match="not found"):
        load_space(tmp_path / "missing.yaml")


def test_bad_search_options():
    with pytest.raises(SrnasError, match="unknown sampler"):
        SearchOptions(sampler="cmaes-typo")
    with pytest.raises(SrnasError, match="objectives must start with psnr"):
        SearchOptions(objectives=["runtime_ms"])
    with pytest.raises(SrnasError, match="unknown objective"):
        SearchOptions(objectives=["psnr", "joules"])


def test_local_search_end_to_end_and_rerun_continues(tmp_path):
    space = parse_space(TINY_SPACE)
    run_dir = tmp_path / "tiny"
    result = run_search(space, run_dir, SearchOptions(**OPTS))
    assert result.complete == 5
    trials = pd.read_csv(run_dir / "trials.csv")
    done = trials[trials.state == "COMPLETE"]
    assert len(done) == 5
    for col in ("psnr", "runtime_ms", "activations", "params", "flops", "flops_fvcore", "num_conv"):
        assert done[col].notna().all() and (done[col] > 0).all(), col
    specs = [json.loads(s) for s in done["spec"]]
    assert all(s["width"] == 8 for s in specs)
    # the reference design was evaluated in the same supernet, first
    first = json.loads(trials.loc[trials.trial == 0, "spec"].iloc[0])
    assert [b["type"] for b in first["blocks"]] == ["residual", "residual"]
    pareto = pd.read_csv(run_dir / "pareto.csv")
    assert set(pareto.trial) <= set(done.trial) and len(pareto) >= 1
    for t in pareto.trial:  # nothing on the front is dominated by any complete trial
        p = done[done.trial == t].iloc[0]
        dominated = (
            (done.psnr >= p.psnr)
            & (done.runtime_ms <= p.runtime_ms)
            & ((done.psnr > p.psnr) | (done.runtime_ms < p.runtime_ms))
        )
        assert not dominated.any()
    for t in pareto.trial:
        assert (run_dir / "models" / str(t) / "weights.safetensors").is_file()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "complete" and status["timings"]["supernet_train_s"] >= 0
    index = pd.read_csv(tmp_path / "index.csv")
    assert list(index.run) == ["tiny"] and index.state.iloc[0] == "complete"
    # the same command again: more trials continue the same study, nothing is redone
    result = run_search(space, run_dir, SearchOptions(**{**OPTS, "trials": 7}))
    assert result.complete == 7
    assert len(open_study(run_dir, SearchOptions(**OPTS)).trials) >= 7
    with pytest.raises(SrnasError, match="different search space"):
        run_search(parse_space({**TINY_SPACE, "widths": [8, 16]}), run_dir, SearchOptions(**OPTS))


def _count_complete(path: Path) -> int:
    try:
        return int((pd.read_csv(path).state == "COMPLETE").sum())
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def test_kill_9_then_resume_loses_only_trials_in_flight(tmp_path):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump({**TINY_SPACE, "search": {**TINY_SPACE["search"], "trials": 12}}))
    env = {**os.environ, "SRNAS_RESULTS_DIR": str(tmp_path / "results")}
    cmd = [sys.executable, "-m", "nas.cli.main", "search", str(space_file), "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials_csv = tmp_path / "results" / "tiny" / "trials.csv"
    deadline = time.time() + 240
    while _count_complete(trials_csv) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "search finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _count_complete(trials_csv)
    assert before >= 2
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = pd.read_csv(trials_csv)
    assert (trials.state == "COMPLETE").sum() == 12
    assert not (trials.state == "RUNNING").any()
    status = json.loads((trials_csv.parent / "status.json").read_text())
    assert status["state"] == "complete"
