"""scripts/bench_standalone.py: the model selection, the domination rule on hand-made numbers, and a tiny run."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nas.paths import REPO_ROOT
from nas.search.space import parse_space

SCRIPTS = REPO_ROOT / "scripts"


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """The script's module, writing into a temporary results folder."""
    monkeypatch.setenv("SRNAS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module("bench_standalone")


def _row(model: str, kind: str, runtime: float, set5: float, val: float) -> dict:
    return {"model": model, "kind": kind, "runtime_ms": runtime, "Set5_psnr": set5, "val_psnr": val}


def test_dominance_on_hand_made_numbers(bench):
    rows = [
        _row("fast_good", "searched", 10.0, 30.0, 29.0),
        _row("fast_bad", "searched", 5.0, 25.0, 31.0),
        _row("slow_best", "searched", 50.0, 35.0, 35.0),
        _row("tie", "searched", 20.0, 28.0, 27.0),
        _row("ref_a", "reference", 20.0, 28.0, 28.0),  # fast_good (better, faster) and tie (equal, equal) dominate
        _row("ref_b", "reference", 8.0, 26.0, 30.0),  # only fast_bad is faster, and it is worse on Set5
        _row("ref_c", "reference", 60.0, 36.0, 20.0),  # nobody reaches 36 dB on Set5
    ]
    dom = {d["reference"]: d for d in bench.dominance(rows, "Set5_psnr")}
    a, b, c = dom["ref_a"], dom["ref_b"], dom["ref_c"]
    assert a["dominated_by"] == "fast_good" and a["its_Set5_psnr"] == 30.0 and a["its_runtime_ms"] == 10.0
    assert a["dominating_on_Set5_psnr"] == ["fast_good", "tie"]  # >= and <= : an equal model counts
    assert a["it_dominates_on_val"] is True and a["dominating_on_val"] == ["fast_good", "fast_bad"]
    assert b["dominated_by"] == "none" and b["it_dominates_on_val"] is None and b["dominating_on_val"] == ["fast_bad"]
    assert c["dominated_by"] == "none" and c["dominating_on_val"] == ["fast_good", "fast_bad", "slow_best", "tie"]
    summary = bench.goal(list(dom.values()))
    assert summary["dominated"] == 1 and summary["references"] == 3
    assert not summary["every_reference_dominated"] and summary["every_reference_dominated_on_val"]
    rows[1]["Set5_psnr"], rows[2]["Set5_psnr"] = 26.0, 36.0  # now every reference has a dominating model
    assert bench.goal(bench.dominance(rows, "Set5_psnr"))["every_reference_dominated"]
    assert not bench.goal([])["every_reference_dominated"]


def test_spread_keeps_the_ends_and_picks_near_even_runtimes(bench):
    assert bench.spread([1.0, 2.0, 3.0], 5) == [0, 1, 2]
    assert bench.spread([1.0, 2.0, 4.9, 5.2, 9.0, 10.0], 3) == [0, 3, 5]
    assert bench.spread([3.0, 1.0, 2.0, 10.0], 2) == [1, 3]  # returned in runtime order
    assert bench.spread([1.0, 1.0, 1.0], 2) == [0, 1]


def _choice(layers: list[str]) -> dict:
    return {
        "width": 8,
        "depth": len(layers),
        "layers": layers,
        "fusion": "none",
        "upsampler": "ps",
        "global_skip": "bilinear",
    }


def write_run(folder: Path, space_data: dict) -> Path:
    """A search run as bench_standalone reads it: config.yaml and trials.csv (hand-made numbers)."""
    space = parse_space(space_data)
    trials = [  # trial, choice, psnr, runtime_ms, state, reference
        (0, space.references["two_res"], 20.0, 3.0, "COMPLETE", "two_res"),
        (1, _choice(["ir"]), 21.0, 1.0, "COMPLETE", None),
        (2, _choice(["res", "ir"]), 22.0, 2.0, "COMPLETE", None),
        (3, _choice(["res", "ir"]), 22.0, 2.0, "COMPLETE", None),  # a repeat: one point
        (4, _choice(["ir", "ir"]), 20.5, 2.5, "COMPLETE", None),  # dominated by trial 2
        (5, space.references["two_res"], 30.0, 0.5, "COMPLETE", None),  # the reference again: left out
        (6, _choice(["res"]), 40.0, 0.1, "FAIL", None),
    ]
    rows = [
        {"trial": t, "state": st, "psnr": p, "runtime_ms": r, "spec": json.dumps(space.to_spec(c)), "reference": ref}
        for t, c, p, r, st, ref in trials
    ]
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)
    (folder / "config.yaml").write_text(yaml.safe_dump({"space_file": "tiny.yaml", "space": space_data}))
    return folder


def test_models_are_the_searched_front_and_the_references(bench, tmp_path, tiny_space_data):
    run = write_run(tmp_path / "run", tiny_space_data)
    _, space, models, front_size = bench.select_models(str(run), 8)
    assert front_size == 2 and [m["model"] for m in models] == ["trial 1", "trial 2", "two_res"]
    assert [m["kind"] for m in models] == ["searched", "searched", "reference"]
    assert models[2]["spec"] == space.to_spec(space.references["two_res"]) and models[2]["search_psnr"] == 20.0
    _, _, fastest, _ = bench.select_models(str(run), 1)
    assert [m["model"] for m in fastest] == ["trial 1", "two_res"]
    (run / "trials.csv").unlink()
    with pytest.raises(bench.SrnasError, match="trials.csv"):
        bench.select_models(str(run), 8)


def test_tiny_run_writes_the_report_and_resumes(bench, tmp_path, tiny_space_data, reference):
    run = write_run(tmp_path / "run", tiny_space_data)
    argv = ["--run", str(run), "--max-front", "1", "--steps", "2", "--batch-size", "2", "--patch-size", "8"]
    argv += ["--data", "embedded", "--val-max-size", "32", "--sets", "Set5", "--repeats", "2", "--warmup", "0"]
    argv += ["--runtime-size", "16"]
    assert bench.main(argv) == 0
    out = tmp_path / "results" / "bench"
    data = json.loads((out / "standalone.json").read_text())
    md = (out / "standalone.md").read_text()
    assert (out / "standalone.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = data["rows"]
    assert [(r["model"], r["kind"]) for r in rows] == [("trial 1", "searched"), ("two_res", "reference")]
    for r in rows:
        assert r["params"] > 0 and r["activations"] > 0 and r["runtime_ms"] > 0
        assert 5 < r["val_psnr"] < 60 and 5 < r["Set5_psnr"] < 60 and "Set14_psnr" not in r
        assert (out / "standalone" / r["id"] / "train_result.json").is_file()
    (dom,) = data["dominance"]
    ref, searched = rows[1], rows[0]
    beats = searched["Set5_psnr"] >= ref["Set5_psnr"] and searched["runtime_ms"] <= ref["runtime_ms"]
    assert dom["reference"] == "two_res" and dom["dominated_by"] == ("trial 1" if beats else "none")
    summary = data["summary"]
    assert summary["every_reference_dominated"] == beats and summary["front_size"] == 2
    assert summary["steps"] == 2 and data["train"]["batch_size"] == 2 and data["train"]["schedule"] == "cosine"
    assert f"every reference dominated (Set5 PSNR, runtime): {'yes' if beats else 'no'}" in md
    assert "| two_res" in md and "## Every model" in md and "(given by --data)" in md
    stamp = (out / "standalone" / rows[0]["id"] / "checkpoint.pt").stat().st_mtime_ns
    assert bench.main(argv) == 0  # finished models are reused, not trained again
    assert (out / "standalone" / rows[0]["id"] / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert [r["id"] for r in json.loads((out / "standalone.json").read_text())["rows"]] == [r["id"] for r in rows]


def test_bad_options_are_usage_errors(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--run", "x", "--criterion", "Set14", "--sets", "Set5"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--run", "x", "--steps", "0"])
    assert bench.parse_args(["--run", "x", "--sets", "none", "--criterion", "val"]).criterion == "val_psnr"
