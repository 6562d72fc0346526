"""Benchmark scripts: rank statistics, result writers, and each script's main() at its tiniest settings."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from nas import zoo
from nas.paths import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"
BENCHES = ("bench_profile", "bench_runtime", "bench_latency_noise", "bench_ranking", "bench_prune")


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """A temporary results folder; the scripts importable."""
    monkeypatch.setenv("SRNAS_RESULTS_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return tmp_path


def load(name: str):
    return importlib.import_module(name)


def read(results: Path, name: str) -> tuple[dict, str]:
    data = json.loads((results / "bench" / f"{name}.json").read_text())
    return data, (results / "bench" / f"{name}.md").read_text()


# ----------------------------------------------------------------------------- bench_common


def test_rank_statistics_on_hand_computed_cases(results):
    bc = load("bench_common")
    assert bc.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert bc.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert bc.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))  # tau-b with a tie
    assert bc.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert bc.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(bc.spearman([1, 2, 3], [5, 5, 5]))
    assert list(bc.ranks([3.0, 1.0, 3.0])) == [2.5, 1.0, 2.5]
    assert bc.coefficient_of_variation([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)
    x = np.arange(8)
    assert bc.permutation_pvalue(x, x, permutations=500) < 0.01
    assert bc.permutation_pvalue(x, -x, permutations=500) > 0.99


def test_rank_statistics_agree_with_scipy(results):
    stats = pytest.importorskip("scipy.stats")
    bc = load("bench_common")
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 30), rng.integers(0, 5, 30)  # many ties
    assert bc.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert bc.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_environment_and_atomic_writers(results):
    bc = load("bench_common")
    env = bc.environment(["cpu"])
    for key in ("date", "cpu", "torch_threads", "torch", "python", "numpy", "git_commit"):
        assert key in env
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    json_path, md_path = bc.write_results(
        "demo",
        title="Demo",
        env=env,
        command="cmd --x",
        arguments={"x": 1},
        results={"rows": [{"a": float("nan"), "b": np.int64(3), "g": "w1 | d2"}]},
        body=bc.markdown_table([{"a": 1.5, "g": "w1 | d2"}]),
    )
    assert json_path == results / "bench" / "demo.json" and md_path.name == "demo.md"
    data = json.loads(json_path.read_text())
    assert data["rows"] == [{"a": None, "b": 3, "g": "w1 | d2"}]
    assert data["environment"]["torch"] == torch.__version__
    md = md_path.read_text()
    assert md.startswith("# Demo") and "`cmd --x`" in md and "w1 \\| d2" in md
    assert not list((results / "bench").glob("*.tmp"))


@pytest.mark.parametrize("name", BENCHES)
def test_every_script_has_help(results, name, capsys):
    with pytest.raises(SystemExit) as exc:
        load(name).main(["--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the scripts


def test_bench_profile_matches_and_fails_on_a_mismatch(results, monkeypatch):
    bench = load("bench_profile")
    assert bench.main(["--models", "span", "rlfn"]) == 0
    data, md = read(results, "profile")
    assert [r["model"] for r in data["rows"]] == ["span", "rlfn"]
    assert all(r["match"] for r in data["rows"]) and data["summary"]["all_match"]
    assert "2 / 2 models match exactly" in md

    real = zoo.reference_profile
    monkeypatch.setattr(zoo, "reference_profile", lambda name: {**real(name), "params": 1})
    assert bench.main(["--models", "span"]) == 1
    data, md = read(results, "profile")
    assert data["rows"][0]["mismatched"] == "params" and "**NO**" in md


@pytest.mark.slow
def test_bench_runtime_tiny(results, monkeypatch):
    bench = load("bench_runtime")

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    args = ["--models", "span", "--sizes", "16", "--repeats", "1", "--warmup", "0", "--device", "cpu", "--compile"]
    assert bench.main([*args, "--name", "runtime_tiny"]) == 0  # a failing variant is reported, not fatal
    data, md = read(results, "runtime_tiny")
    assert not (results / "bench" / "runtime.json").exists()
    ok = [r for r in data["rows"] if r["status"] == "ok"]
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    variants = ("eager", "channels_last", *(["onnxruntime"] if has_ort else []))
    assert {(r["model"], r["variant"]) for r in ok} == {(m, v) for m in ("rfdn", "span") for v in variants}
    assert all(r["ratio_to_rfdn"] == 1.0 for r in ok if r["model"] == "rfdn")
    assert all(r["median_ms"] > 0 and r["input_size"] == [3, 16, 16] for r in ok)
    failed = [r for r in data["rows"] if r["variant"] == "compile"]
    assert failed and all(r["status"] == "failed" and "no compiler here" in r["reason"] for r in failed)
    if not has_ort:
        assert any("onnxruntime: not installed" in n for n in data["notes"])
    with pytest.raises(SystemExit):
        bench.main([*args, "--name", "../x"])
    assert "Official code path: not compared" in md and "(1.00x)" in md


def test_runtime_sizes_with_and_without_the_kit(results, reference, monkeypatch):
    bench = load("bench_runtime")
    sizes, notes = bench.parse_sizes(["set5", "24x20"])
    assert not notes
    assert [s for _, _, s in sizes] == [(3, 128, 128), (3, 72, 72), (3, 64, 64), (3, 70, 70), (3, 86, 57), (3, 24, 20)]
    monkeypatch.setenv("SRNAS_REFERENCE_DIR", str(results / "absent"))
    sizes, notes = bench.parse_sizes(["set5", "32"])
    assert [s for _, _, s in sizes] == [(3, 32, 32)] and "Set5 sizes skipped" in notes[0]


def test_bench_latency_noise_tiny(results):
    bench = load("bench_latency_noise")
    args = ["--models", "span", "--measurements", "2", "--passes", "2", "--warmup", "0", "--size", "16"]
    assert bench.main([*args, "--subnets", "4", "--device", "cpu"]) == 0
    data, md = read(results, "latency_noise")
    assert len(data["subnets"]) == 4 and len({json.dumps(s["choice"]) for s in data["subnets"]}) == 4
    assert all(s["runtime_a_ms"] > 0 and s["runtime_b_ms"] > 0 for s in data["subnets"])
    assert data["models"][0]["model"] == "span" and len(data["models"][0]["measurements_ms"]) == 2
    assert -1 <= data["summary"]["spearman_pass_a_vs_b"] <= 1
    assert {c["count"] for c in data["correlations"]} == {"activations", "flops", "flops_fvcore", "params", "num_conv"}
    assert "Spearman of counts vs runtime" in md


@pytest.mark.slow
def test_bench_ranking_tiny_and_resumed(results):
    bench = load("bench_ranking")
    args = ["--supernet-steps", "1", "--steps", "1", "--subnets", "6", "--pool", "6", "--batch-size", "1"]
    args += ["--patch-size", "16", "--val-max-size", "64", "--runtime-size", "16", "--permutations", "20"]
    args += ["--bootstrap", "200", "--remedies", "baseline", "sandwich+inplace", "--train", "sandwich_paths=1"]
    args += ["--device", "cpu"]
    assert bench.main(args) == 0
    data, md = read(results, "ranking")
    rows, summary = data["rows"], data["summary"]
    assert len(rows) == 6 and sorted(r["rank_standalone"] for r in rows) == [1, 2, 3, 4, 5, 6]
    assert len({r["id"] for r in rows}) == 6
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("psnr_baseline", "psnr_sandwich+inplace", "psnr_standalone"))
    assert [s["remedy"] for s in summary["supernets"]] == ["baseline", "sandwich+inplace"]
    assert summary["tercile_sizes"] == [2, 2, 2] and set(summary["size_rankers"]) == {"activations", "flops", "params"}
    for stats in [*summary["supernets"], *summary["size_rankers"].values()]:
        tau, low, high = stats["kendall_tau"], stats["ci_low"], stats["ci_high"]
        assert -1 <= low <= tau <= high <= 1
        assert len(stats["tercile_taus"]) == 3 and all(t in (-1.0, 1.0) or math.isnan(t) for t in stats["tercile_taus"])
    acts = summary["size_rankers"]["activations"]
    by_size = sorted(rows, key=lambda r: r["activations"])
    expected = [
        bench.kendall_tau([r["activations"] for r in g], [r["psnr_standalone"] for r in g])
        for g in (by_size[:2], by_size[2:4], by_size[4:])
    ]
    assert acts["tercile_taus"] == pytest.approx(expected, nan_ok=True)
    for stats in summary["supernets"]:
        assert stats["supernet"].startswith("supernet-quick-") and stats["train_s"] > 0
        assert -2 <= stats["gain_ci"][0] <= stats["gain_ci"][1] <= 2
    assert "sampling sandwich" in md and "Kendall tau-b" in md and "| supernet: sandwich+inplace" in md
    checkpoints = {r["id"]: results / "bench" / "ranking" / r["id"] / "checkpoint.pt" for r in rows}
    stamps = {k: p.stat().st_mtime_ns for k, p in checkpoints.items()}

    assert bench.main(args) == 0  # everything resumes: nothing is trained again
    again, _ = read(results, "ranking")
    assert [r["psnr_standalone"] for r in again["rows"]] == [r["psnr_standalone"] for r in rows]
    assert again["summary"]["supernets"] == summary["supernets"]  # seeded bootstrap: the same intervals
    assert {k: p.stat().st_mtime_ns for k, p in checkpoints.items()} == stamps


def test_bootstrap_interval_and_overrides(results):
    common, bench = load("bench_common"), load("bench_ranking")
    x = np.arange(30.0)
    low, high = common.bootstrap_interval(30, lambda i: common.kendall_tau(x[i], x[i]), resamples=50)
    assert low == high == 1.0
    rng = np.random.default_rng(0)
    y = x + rng.normal(0, 10, 30)
    low, high = common.bootstrap_interval(30, lambda i: common.kendall_tau(x[i], y[i]), resamples=500)
    assert -1 < low < common.kendall_tau(x, y) < high < 1
    assert math.isnan(common.bootstrap_interval(1, lambda i: 0.0)[0])
    assert bench.parse_overrides(["steps=5", "distill=inplace"]) == {"steps": 5, "distill": "inplace"}
    with pytest.raises(bench.SrnasError, match="KEY=VALUE"):
        bench.parse_overrides(["steps"])


def test_ranking_reads_a_search_run(results):
    from nas.models.checkpoint import save_weights
    from nas.search.space import load_space
    from nas.search.supernet import Supernet

    bench = load("bench_ranking")
    run = results / "myrun"
    run.mkdir()
    with pytest.raises(bench.SrnasError, match="not a search run"):
        bench.open_run(str(run))
    space = load_space(REPO_ROOT / "search_spaces" / "quick.yaml")
    config = {"space": {k: v for k, v in asdict(space).items() if k != "source"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(bench.SrnasError, match="supernet training has not finished"):
        bench.open_run("myrun")  # a name under the results folder
    save_weights(Supernet(space), run / "supernet.safetensors")
    opened, weights = bench.open_run("myrun")
    assert opened.widths == space.widths and weights == run / "supernet.safetensors"


def test_prune_cases_parse_and_reject_bad_ones(results):
    bench = load("bench_prune")
    assert bench.parse_case("rfdn:0.75") == {"name": "rfdn-a075", "model": "rfdn", "mode": "coupled", "target": 0.75}
    assert bench.parse_case("pan:fine:0.5")["name"] == "pan-fine-a050"
    runtime = bench.parse_case("span:r0.88")
    assert runtime == {"name": "span-r088", "model": "span", "mode": "coupled", "target": 0.88, "metric": "runtime"}
    assert bench.parse_case("rfdn:p0.5")["metric"] == "params" and bench.parse_case("rfdn:a0.5")["name"] == "rfdn-a050"
    for bad, match in [
        ("rfdn", "MODEL"),
        ("nope:0.5", "unknown zoo model"),
        ("rfdn:sideways:0.5", "unknown mode"),
        ("rfdn:half", "not a number"),
        ("rfdn:1.2", "fraction"),
        ("rfdn:x0.5", "not a number"),
        ("rfdn:tp-taylor:r0.8", "activations target only"),
    ]:
        with pytest.raises(bench.SrnasError, match=match):
            bench.parse_case(bad)


def test_prune_variants_get_their_own_folders_and_options(results, reference, tmp_path):
    bench = load("bench_prune")
    args = SimpleNamespace(**{**_prune_defaults(bench), "importance": "sensitivity", "reconstruct": True})
    args.data = tmp_path
    assert bench.variant_suffix(args) == "-sensitivity-rec-data"
    argv = bench.prune_args(bench.parse_case("rfdn:0.75"), tmp_path / "case", args)
    assert argv[argv.index("--importance") + 1] == "sensitivity" and "--reconstruct" in argv
    assert argv[argv.index("--data") + 1] == str(tmp_path)
    argv = bench.prune_args(bench.parse_case("span:r0.88"), tmp_path / "case", args)
    assert argv[argv.index("--target-runtime") + 1] == "0.88" and "--target-activations" not in argv
    args.steps = 5000
    assert bench.variant_suffix(args) == "-sensitivity-rec-data-s5000"
    plain = SimpleNamespace(**_prune_defaults(bench))
    assert bench.variant_suffix(plain) == ""
    plain_argv = bench.prune_args(bench.parse_case("rfdn:0.75"), tmp_path, plain)
    assert not {"--importance", "--reconstruct", "--data"} & set(plain_argv)


def _prune_defaults(bench) -> dict:
    keys = ("steps", "rounds", "round_steps", "score_batches", "importance", "data")
    return {**dict.fromkeys(keys), "device": "cpu", "sets": ",".join(bench.SETS), "reconstruct": False}


@pytest.mark.slow
def test_bench_prune_tiny_then_measure_only(results, reference):
    bench = load("bench_prune")
    args = ["--cases", "rfdn:0.9", "--rounds", "1", "--round-steps", "1", "--steps", "1", "--score-batches", "1"]
    args += ["--sets", "Set5", "--repeats", "1", "--warmup", "0", "--size", "24"]
    assert bench.main(args) == 0
    data, md = read(results, "prune")
    case, ntire = data["rows"]
    assert case["case"] == "rfdn-a090-s1" and case["activations_ratio"] <= 0.9
    assert case["params"] < 433_448 and case["runtime_ratio"] > 0 and case["prune_seconds"] > 0
    assert case["Set5_drop"] == pytest.approx(case["Set5_finetuned"] - case["Set5_before"])
    assert ntire["params"] == 289_888 and ntire["Set5_drop"] == pytest.approx(-0.0137, abs=1e-3)
    assert "srnas prune rfdn --weights" in md and "rfdn_pruned (official, reference)" in md
    weights = results / "bench" / "prune" / "rfdn-a090-s1" / "weights.safetensors"
    stamp = weights.stat().st_mtime_ns

    assert bench.main([*args, "--measure-only"]) == 0  # the finished case is reused, not pruned again
    assert weights.stat().st_mtime_ns == stamp
    assert read(results, "prune")[0]["rows"][0]["Set5_drop"] == case["Set5_drop"]


def test_git_commit_of_a_worktree_reads_the_main_repository_refs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    from bench_common import git_commit

    main_git = tmp_path / "main" / ".git"
    (main_git / "refs" / "heads").mkdir(parents=True)
    (main_git / "refs" / "heads" / "topic").write_text("a" * 40 + "\n")
    wt_git = main_git / "worktrees" / "wt"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/topic\n")
    (wt_git / "commondir").write_text("../..\n")
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text(f"gitdir: {wt_git}\n")
    assert git_commit(tmp_path / "wt") == "a" * 40
