"""Genotypes, run folders, plots/reports and the `srnas front` / `srnas show` commands on fake runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from nas import zoo
from nas.cli.main import main
from nas.errors import SrnasError
from nas.models.genotype import PrunedSummary, diagram, genotype
from nas.models.network import build
from nas.results.pareto import non_dominated
from nas.results.report import html_front, plot_front, write_report
from nas.results.runs import (
    comparable_references,
    index_row,
    newest_complete_run,
    read_index,
    read_references,
    read_run,
    update_index,
)
from nas.zoo.resolve import save_model
from pruning import GatedModel, shrink


def tiny_spec(width: int = 8, depth: int = 1) -> dict:
    return {"name": "tiny", "width": width, "blocks": [{"type": "residual"}] * depth, "global_skip": "bilinear"}


# trial, state, psnr, runtime_ms, width, depth: the runtime front is 0, 1, 3; 5 repeats 3's architecture
# (a front lists it once)
TRIALS = [
    (0, "COMPLETE", 27.0, 2.0, 8, 1),
    (1, "COMPLETE", 28.0, 4.0, 8, 2),
    (2, "COMPLETE", 27.5, 5.0, 12, 1),
    (3, "COMPLETE", 28.5, 8.0, 12, 2),
    (4, "FAIL", None, None, 16, 2),
    (5, "COMPLETE", 28.5, 8.0, 12, 2),
    (6, "RUNNING", None, None, 16, 1),
]


def make_run(
    root: Path,
    name: str,
    *,
    state: str | None = "complete",
    finished: str = "2024-01-02T00:00:00",
    device: str = "cpu",
    trials=TRIALS,
    psnr_shift: float = 0.0,
    export: tuple[int, ...] = (1,),
    extra_status: dict | None = None,
) -> Path:
    """A run folder written by hand, following the contract in nas/runs.py."""
    run = root / name
    run.mkdir(parents=True)
    if state is not None:
        status = {"state": state, "started": "2024-01-01T00:00:00", "finished": finished, "trials": len(trials)}
        (run / "status.json").write_text(json.dumps(status | (extra_status or {})))
    (run / "config.yaml").write_text(
        yaml.safe_dump({"name": "tiny_space", "widths": [8, 12, 16], "search": {"trials": len(trials)}})
    )
    rows = []
    for trial, st, psnr, runtime, width, depth in trials:
        spec = tiny_spec(width, depth)
        rows.append(
            {
                "trial": trial,
                "state": st,
                "psnr": None if psnr is None else psnr + psnr_shift,
                "runtime_ms": runtime,
                "activations": width * depth * 64 * 64 * 2,
                "params": width * width * 9 * 2 * depth,
                "flops": width * width * 9 * 64 * 64 * depth,
                "flops_fvcore": width * width * 9 * 64 * 64 * depth,
                "num_conv": 2 * depth + 2,
                "genotype": genotype(spec),
                "spec": json.dumps(spec),
                "device": device,
                "input_size": "3x64x64",
                "error": "CUDA out of memory" if st == "FAIL" else None,
                "duration_s": 1.5,
            }
        )
    df = pd.DataFrame(rows)
    df.to_csv(run / "trials.csv", index=False)
    df[non_dominated(df, {"psnr": "max", "runtime_ms": "min"})].to_csv(run / "pareto.csv", index=False)
    for trial in export:
        width, depth = next((w, d) for t, *_, w, d in trials if t == trial)
        spec = tiny_spec(width, depth)
        save_model(run / "models" / str(trial), build(spec), spec)
    return run


def write_zoo_csv(root: Path) -> None:
    (root / "reference").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        [
            {
                "model": "rfdn",
                "params": 433448,
                "activations": 1e6,
                "flops": 2e9,
                "runtime_ms": 6.0,
                "device": "cpu",
                "input_size": "(3, 64, 64)",
                "torch": "2.4",
                "set5_psnr_y": 28.2,
                "set14_psnr_y": 26.0,
            },
            {
                "model": "pan",
                "params": 272419,
                "activations": 2e6,
                "flops": 3e9,
                "runtime_ms": 3.0,
                "device": "cuda",
                "input_size": "3x64x64",
                "torch": "2.4",
                "set5_psnr_y": 28.1,
                "set14_psnr_y": 26.0,
            },
            {
                "model": "msrresnet",
                "params": 1517571,
                "activations": 3e6,
                "flops": 9e9,
                "runtime_ms": 9.0,
                "device": "cpu",
                "input_size": "3x64x64",
                "torch": "2.4",
                "set5_psnr_y": None,
                "set14_psnr_y": None,
            },
        ]
    ).to_csv(root / "reference" / "zoo.csv", index=False)


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    monkeypatch.setenv("SRNAS_RESULTS_DIR", str(root))
    return root


# ----------------------------------------------------------------------------------- genotype


def test_genotype_of_zoo_and_unknown_blocks() -> None:
    assert genotype(zoo.zoo_spec("rfdn")) == "w50 d4 | rfdb_dc25_esa12*4 | cat_lrelu_ns0.05+conv+res | ps4"
    assert (
        genotype(zoo.zoo_spec("msrresnet")) == "w64 d16 h:conv_lrelu_ns0.1 | res*16 | - | pss4_lrelu_ns0.1 | +bilinear"
    )
    assert genotype(zoo.zoo_spec("pan")) == "w40 d16 | scpa_b20*16 | conv+res | upa4_u24 | +bilinear"
    spec = {
        "width": 32,
        "scale": 4,
        "blocks": [
            {"type": "rfdb"},
            {"type": "rfdb"},
            {"type": "scpa"},
            {"type": "inverted_residual", "expand_ratio": 6, "norm": "none", "act": "lrelu"},
            {"type": "my_block", "some_option": 3, "flag": False, "sizes": [1, 2]},
        ],
        "fusion": {"type": "concat"},
        "upsampler": {"type": "pixelshuffle"},
        "global_skip": "bilinear",
    }
    assert genotype(spec) == (
        "w32 d5 | rfdb rfdb scpa ir_e6_nonorm_lrelu my_block_so3_noflag_sizes1-2 | cat | ps4 | +bilinear"
    )
    text = diagram(spec)
    assert "block 5" in text and "my_block (some_option=3" in text and "5x32 -> 32" in text and "32 -> 3" in text


RESIDUAL = {"width": 8, "scale": 2, "blocks": [{"type": "residual"}]}  # convs: head 8, 8, 8, upsampler 12


@pytest.mark.parametrize(
    "mode, convs, field, trunk",
    [
        # a private width: 32 of 36 conv output channels, the trunk keeps its width
        ("fine", {"body.0.conv1": {"out": "0-3", "in": "0-7"}, "body.0.conv2": {"out": "0-7", "in": "0-3"}}, "", 8),
        # the trunk (head output = residual target = upsampler input) narrowed to 6: 6 + 8 + 6 + 12 of 36
        (
            "coupled",
            {
                "head.conv": {"out": "0-5", "in": "0-2"},
                "body.0.conv1": {"out": "0-7", "in": "0-5"},
                "body.0.conv2": {"out": "0-5", "in": "0-7"},
                "upsampler.conv": {"out": "0-11", "in": "0-5"},
            },
            " w6",
            6,
        ),
    ],
)
def test_genotype_of_a_hand_written_plan(mode, convs, field, trunk) -> None:
    spec = {**RESIDUAL, "pruned": {"mode": mode, "convs": convs}}
    assert genotype(RESIDUAL) == "w8 d1 | res | - | ps2"
    assert genotype(spec) == f"w8 d1 | res | - | ps2 | pruned {mode} 89%ch{field}"
    text = diagram(spec)
    assert f"head       conv             3 -> {trunk}" in text and f"{trunk} -> {trunk}" in text
    assert f"pixelshuffle x2  {trunk} -> 3" in text
    summary = f"pruned ({mode} plan): 89% of the base model's conv output channels kept, {len(convs)} convs resized"
    assert text.splitlines()[-1] == summary + ("" if trunk == 8 else ", trunk width 6 of 8")
    assert "pruned" not in diagram(RESIDUAL)


@pytest.mark.parametrize("mode", ["coupled", "fine"])
def test_genotype_of_a_shrunk_model(mode) -> None:
    """The pruning field of a spec written by ``pruning.shrink``, checked against the real shrunk model."""
    base_spec = {
        "width": 8,
        "scale": 2,
        "blocks": [{"type": "rfdb"}, {"type": "rfdb"}],
        "fusion": {"type": "concat"},
        "body_conv": True,
        "body_skip": True,
    }
    torch.manual_seed(0)
    base = build(base_spec)
    gated = GatedModel(build(base_spec), mode)
    with torch.no_grad():
        for gate in gated.gates.values():  # drop the first 3 entries of every gate that has 6 or more
            if gate.size >= 6:
                gated.gate_mask[gate.start : gate.start + 3] = False
    small, spec = shrink(gated)
    gated.remove()

    def channels(model: torch.nn.Module) -> int:
        return sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))

    kept = channels(small) / channels(base)
    assert 0.3 < kept < 0.99
    with torch.no_grad():
        trunk = small.head(torch.zeros(1, 3, 16, 16)).shape[1]
    assert (trunk < 8) == (mode == "coupled")  # coupled pruning narrows the trunk, fine keeps its width
    field = f"pruned {mode} {round(100 * kept)}%ch" + (f" w{trunk}" if trunk < 8 else "")
    assert genotype(spec) == f"{genotype(base_spec)} | {field}"
    text = diagram(spec)
    assert f"3 -> {trunk}" in text and f"pixelshuffle x2  {trunk} -> 3" in text
    assert f"{round(100 * kept)}% of the base model's conv output channels kept" in text.splitlines()[-1]


def test_genotype_of_plans_it_cannot_count() -> None:
    assert PrunedSummary("fine", 1, 0.996).percent == "99%"  # never 100% once a channel is gone
    assert PrunedSummary("fine", 0, 1.0).percent == "100%" and PrunedSummary("fine", 3, 0.744).percent == "74%"
    plan = {"mode": "fine", "convs": {"a": {"out": "0", "in": "0"}, "b": {"out": "0", "in": "0"}}}
    unknown = {"width": 8, "blocks": [{"type": "my_block"}], "pruned": plan}
    assert genotype(unknown) == "w8 d1 | my_block | - | ps4 | pruned fine 2conv"
    assert diagram(unknown).splitlines()[-1].endswith("2 convs resized; widths above are the base model's")
    bad_plan = {**RESIDUAL, "pruned": {"convs": {"nothing.here": {"out": "0", "in": "0"}}}}
    assert genotype(bad_plan).endswith("| pruned fine 1conv")


# ----------------------------------------------------------------------------------- run folders


def test_read_run_front_and_counts(results: Path) -> None:
    run = read_run(make_run(results, "r1"))
    assert run.state == "complete" and run.problems == [] and run.space == "tiny_space"
    assert run.counts() == {"COMPLETE": 5, "FAIL": 1, "RUNNING": 1}
    assert run.front("runtime_ms", "psnr")["trial"].tolist() == [0, 1, 3]
    assert run.front("params", "psnr")["trial"].tolist() == [0, 1, 3]
    assert run.pareto is not None and sorted(run.pareto["trial"]) == [0, 1, 3, 5]  # pareto.csv as written
    assert run.conditions() == (["cpu"], ["3x64x64"])


def test_half_written_runs_are_read_with_problems(results: Path) -> None:
    run = read_run(make_run(results, "nostatus", state=None))
    assert run.state == "incomplete" and "half-written" in run.problems[0]
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = read_run(make_run(results, "stale", state="running", finished=None, extra_status={"pid": proc.pid}))
    assert stale.state == "stale" and any("interrupted" in p for p in stale.problems)
    (results / "broken").mkdir()
    (results / "broken" / "status.json").write_text("{not json")
    assert read_run(results / "broken").state == "incomplete"


def test_bad_run_paths_raise_clear_errors(results: Path) -> None:
    with pytest.raises(SrnasError, match="run folder not found"):
        read_run(results / "nope")
    (results / "file.txt").write_text("x")
    with pytest.raises(SrnasError, match="not a run folder"):
        read_run(results / "file.txt")
    (results / "empty").mkdir()
    with pytest.raises(SrnasError, match="neither status.json nor trials.csv"):
        read_run(results / "empty")
    (results / "bad").mkdir()
    (results / "bad" / "trials.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(SrnasError, match=r"trials.csv has no column\(s\) trial, state"):
        read_run(results / "bad")
    with pytest.raises(SrnasError, match="no complete run"):
        newest_complete_run(results)


def test_index_insert_replace_and_row(results: Path) -> None:
    run = read_run(make_run(results, "r1"))
    row = index_row(run)
    assert row["pareto"] == 4 and row["best_psnr"] == 28.5 and row["trials"] == 7 and row["device"] == "cpu"
    update_index(results, row)
    update_index(results, {"run": "r0", "state": "running", "extra": 1})
    update_index(results, row | {"state": "failed"})
    index = read_index(results)
    assert index["run"].tolist() == ["r0", "r1"] and index["state"].tolist() == ["running", "failed"]
    assert list(index.columns[:3]) == ["run", "space", "state"] and "extra" in index.columns
    assert not list(results.glob(".index.csv*.tmp")) and not (results / ".index.csv.lock").exists()


def test_references_shown_only_under_the_same_conditions(results: Path) -> None:
    write_zoo_csv(results)
    runs = [read_run(make_run(results, "r1"))]
    refs, notes = comparable_references(read_references(results), runs, "runtime_ms")
    assert refs["model"].tolist() == ["rfdn"] and refs["psnr"].tolist() == [28.2]
    assert any("pan" in n and "cuda" in n for n in notes) and any("msrresnet" in n for n in notes)
    refs, _ = comparable_references(read_references(results), runs, "params")
    assert refs["model"].tolist() == ["rfdn", "pan"]  # params do not depend on device or input size
    runs.append(read_run(make_run(results, "gpu", device="cuda")))
    refs, notes = comparable_references(read_references(results), runs, "runtime_ms")
    assert refs.empty and "different conditions" in notes[0]


# ----------------------------------------------------------------------------------- rendering


def test_plots_and_report_render(results: Path) -> None:
    write_zoo_csv(results)
    runs = [read_run(make_run(results, "r1")), read_run(make_run(results, "r2", psnr_shift=0.3))]
    refs, notes = comparable_references(read_references(results), runs, "runtime_ms")
    out = results / "out"
    png = plot_front(runs, "runtime_ms", "psnr", refs, out / "pareto.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    page = html_front(runs, "runtime_ms", "psnr", refs, out / "pareto.html").read_text()
    assert genotype(tiny_spec(12, 2)) in page and "r2 trial 3" in page and "rfdn" in page
    assert len(page) > 1_000_000 and 'src="https://cdn.plot.ly' not in page  # plotly.js embedded: works offline
    report = write_report(runs, out / "report.md", references=refs, notes=notes).read_text()
    assert "Comparison of 2 runs" in report and "Hypervolume" in report and "| COMPLETE | 5 |" in report
    assert "rfdn" in report and "tiny_space" in report
    single = write_report(runs[0], references=refs).read_text()
    assert (results / "r1" / "report.md").is_file() and "w12 d2" in single


# ----------------------------------------------------------------------------------- commands


def test_front_command_defaults_to_newest_complete_run(results: Path, capsys: pytest.CaptureFixture) -> None:
    write_zoo_csv(results)
    make_run(results, "old", finished="2024-01-01T10:00:00")
    make_run(results, "new", finished="2024-03-01T10:00:00", psnr_shift=1.0)
    make_run(results, "busy", state="running", finished=None)
    assert main(["front"]) == 0
    out = capsys.readouterr().out
    assert "run new: complete" in out and "references shown (set5 PSNR): rfdn" in out
    for name in ("pareto.png", "pareto.html", "report.md"):
        assert (results / "new" / name).is_file()
    assert main(["front", "old", "--x", "params", "--json", "--no-references"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["x"] == "params" and data["references"] == [] and len(data["runs"]) == 1
    run = data["runs"][0]
    assert run["run"] == "old" and [r["trial"] for r in run["front"]] == [0, 1, 3] and run["hypervolume"] > 0
    assert run["front"][0]["genotype"] == genotype(tiny_spec(8, 1))


def test_front_command_overlays_several_runs(results: Path, capsys: pytest.CaptureFixture) -> None:
    make_run(results, "a")
    make_run(results, "b", psnr_shift=0.5)
    assert main(["front", "a", str(results / "b"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    hv_a, hv_b = (r["hypervolume"] for r in data["runs"])
    assert hv_b > hv_a > 0 and set(data["reference_point"]) == {"runtime_ms", "psnr"}
    assert Path(data["files"]["png"]).parent == results / "compare" / "a+b"
    assert (results / "compare" / "a+b" / "report.md").is_file()


def test_front_command_bad_paths(results: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["front"]) == 1
    assert "no complete run" in capsys.readouterr().err
    assert main(["front", "missing_run"]) == 1
    assert "run 'missing_run' not found" in capsys.readouterr().err
    (tmp_path / "notarun").mkdir()
    assert main(["front", str(tmp_path / "notarun")]) == 1
    assert "is not a run folder" in capsys.readouterr().err


def test_front_command_half_written_run_warns(results: Path, capsys: pytest.CaptureFixture) -> None:
    make_run(results, "half", state=None)
    assert main(["front", "half", "--no-references"]) == 0
    captured = capsys.readouterr()
    assert "run half: incomplete" in captured.out and "half-written" in captured.err


def test_show_command(results: Path, capsys: pytest.CaptureFixture) -> None:
    write_zoo_csv(results)
    make_run(results, "r1", export=(1,))
    assert main(["show", "r1/1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model = build(tiny_spec(8, 2))
    assert data["model_dir"].endswith("models/1") and data["profile_source"].startswith("counted now")
    assert data["profile"]["params"] == sum(p.numel() for p in model.parameters())
    assert data["profile"]["input_size"] == [3, 64, 64]
    pos = data["position"]
    assert pos["on_front"] and pos["rank_by_x"] == 2 and pos["gap_to_best_db"] == pytest.approx(-0.5)
    assert pos["nearest_reference"]["model"] == "rfdn" and pos["nearest_reference"]["gap_db"] == pytest.approx(-0.2)
    # profile.json is preferred; a dominated, non-exported trial is shown from trials.csv
    (results / "r1" / "models" / "1" / "profile.json").write_text(json.dumps({"params": 123, "device": "cuda"}))
    assert main(["show", str(results / "r1" / "models" / "1"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["profile"]["params"] == 123
    assert main(["show", "r1/2"]) == 0
    out = capsys.readouterr().out
    assert "no exported model" in out and "dominated by trial(s) 1" in out and "-> block 1" in out
    assert main(["show", "r1/4"]) == 0
    assert "CUDA out of memory" in capsys.readouterr().out
    assert main(["show", "r1/99"]) == 1
    assert "has no trial 99" in capsys.readouterr().err
    assert main(["show", "r1"]) == 1
    assert "expected RUN/ID" in capsys.readouterr().err


def test_front_equals_brute_force_on_random_run(results: Path) -> None:
    rng = np.random.default_rng(0)
    trials = [
        (
            i,
            str(rng.choice(["COMPLETE", "COMPLETE", "FAIL"])),
            float(rng.integers(25, 30)),
            float(rng.integers(1, 10)),
            8 + i,  # 40 distinct architectures
            1,
        )
        for i in range(40)
    ]
    run = read_run(make_run(results, "rand", trials=trials, export=()))
    front = set(run.front()["trial"])
    done = [(t, p, r) for t, s, p, r, *_ in trials if s == "COMPLETE"]
    brute = {t for t, p, r in done if not any(p2 >= p and r2 <= r and (p2 > p or r2 < r) for _, p2, r2 in done)}
    assert front == brute
