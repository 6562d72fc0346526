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

from nas.cli.main import main
from nas.errors import SpecError, SrnasError
from nas.paths import REPO_ROOT
from nas.search.options import SearchOptions
from nas.search.run import run_search
from nas.search.space import load_space, parse_space
from nas.search.study import open_study, trial_choice


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_spaces_are_valid_and_hold_their_references(path):
    space = load_space(path)
    assert space.size() > 100
    for choice in space.references.values():
        space.to_spec(choice)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"widthz": [8]}, "unknown space key(s) 'widthz'"),
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
def test_bad_spaces_name_the_key_and_allowed_values(tiny_space_data, change, fragment):
    with pytest.raises(SpecError) as err:
        parse_space({**tiny_space_data, **change}, "bad.yaml")
    assert fragment in str(err.value)
    assert "bad.yaml" in str(err.value)


def test_missing_key_and_unparsable_file(tmp_path, tiny_space_data):
    with pytest.raises(SpecError, match="missing the required key 'candidates'"):
        parse_space({k: v for k, v in tiny_space_data.items() if k != "candidates"})
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


@pytest.mark.parametrize(
    ("section", "options", "fragment"),
    [
        ("search", {"trails": 5}, "unknown search option(s) ['trails']"),
        ("search", {"sampler": "cmaes"}, "unknown sampler 'cmaes'"),
        ("search", {"runtime_size": [24, 24]}, "runtime_size must be [C, H, W]"),
        ("train", {"stepz": 3}, "unknown train option(s) ['stepz']"),
        ("train", {"sampling": "greedy"}, "unknown sampling 'greedy'"),
        ("train", {"lr": -1}, "lr must be > 0"),
    ],
)
def test_options_are_typed_and_checked_when_the_space_is_parsed(tiny_space_data, section, options, fragment):
    with pytest.raises(SpecError) as err:
        parse_space({**tiny_space_data, section: {**tiny_space_data[section], **options}}, "bad.yaml")
    assert fragment in str(err.value) and "bad.yaml" in str(err.value)


def test_typed_options_and_overrides_leave_the_space_alone(tiny_space):
    assert tiny_space.search.trials == 5 and tiny_space.search.objectives == ("psnr", "runtime_ms")
    assert tiny_space.train.steps == 6 and tiny_space.train.sampling == "fair" and tiny_space.train.data == "embedded"
    longer = tiny_space.with_training(steps=9, data=None)
    assert longer.train.steps == 9 and tiny_space.train.steps == 6
    more = tiny_space.search.with_overrides(trials=8, sampler=None)
    assert more.trials == 8 and more.sampler == "nsga2" and tiny_space.search.trials == 5
    assert parse_space(tiny_space.to_dict()).to_dict() == tiny_space.to_dict()  # config.yaml reads back


@pytest.mark.parametrize(
    "argv",
    [
        ["--sampler", "bogus"],
        ["--objectives", "psnr,joules"],
        ["--trials", "0"],
        ["--steps", "0"],
        ["--workers", "0"],
        ["--steps", "-5"],
        ["--data", "/typo"],
    ],
)
@pytest.mark.parametrize("command", ["search", "pipeline"])
def test_a_bad_option_fails_before_anything_is_written(tmp_path, results_env, tiny_space_data, argv, command, capsys):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(tiny_space_data))
    expected = 1 if argv[0] == "--data" else 2  # bad data / a usage error
    assert main([command, str(space_file), "--device", "cpu", *argv]) == expected
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # one line
    assert not results_env.exists()  # no run folder, no status.json, no index row


@pytest.mark.parametrize("name", ["../x", "/abs/path", "a/b", "..", ".hidden", "a\\b", ""])
@pytest.mark.parametrize("command", ["search", "pipeline"])
def test_a_run_name_is_a_plain_name(tmp_path, results_env, tiny_space_data, name, command, capsys):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(tiny_space_data))
    assert main([command, str(space_file), "--device", "cpu", "--run", name]) == 2  # a usage error
    err = capsys.readouterr().err
    assert "is not a run name" in err and len(err.strip().splitlines()) == 1
    assert not results_env.exists() and not (tmp_path / "x").exists() and not Path("/abs").exists()


def test_a_rejected_search_leaves_nothing_and_the_corrected_one_runs(tmp_path, results_env, tiny_space_data):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump({**tiny_space_data, "references": {}}))
    argv = ["search", str(space_file), "--device", "cpu", "--run", "fixed", "--trials", "1", "--steps", "2"]
    assert main([*argv, "--data", "/typo"]) == 1
    assert not results_env.exists()
    assert main(argv) == 0
    index = pd.read_csv(results_env / "index.csv")
    assert index.run.tolist() == ["fixed"] and index.state.tolist() == ["complete"]
    assert not (results_env / "fixed" / ".lock").exists()  # released


def test_a_bad_option_in_the_space_file_fails_before_anything_is_written(tmp_path, results_env, tiny_space_data):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump({**tiny_space_data, "train": {"steps": 6, "batch_sise": 2}}))
    assert main(["search", str(space_file)]) == 1
    assert not results_env.exists()


def test_local_search_end_to_end_and_rerun_continues(tmp_path, tiny_space, tiny_space_data, tiny_options):
    run_dir = tmp_path / "tiny"
    result = run_search(tiny_space, run_dir, tiny_options)
    assert result.complete == 5 and result.trials == 5 + result.failed
    trials = pd.read_csv(run_dir / "trials.csv")
    done = trials[trials.state == "COMPLETE"]
    assert len(done) == 5
    for col in ("psnr", "runtime_ms", "activations", "params", "flops", "flops_fvcore", "num_conv"):
        assert done[col].notna().all() and (done[col] > 0).all(), col
    assert (done.psnr > 5).all() and (done.psnr < 60).all()  # a PSNR in dB of a barely trained net, not 0/inf
    assert (done.flops > done.params).all() and (done.activations > 0).all()
    specs = [json.loads(s) for s in done["spec"]]
    assert all(s["width"] == 8 for s in specs)
    # the reference design was evaluated in the same supernet, first
    first = json.loads(trials.loc[trials.trial == 0, "spec"].iloc[0])
    assert [b["type"] for b in first["blocks"]] == ["residual", "residual"]
    pareto = pd.read_csv(run_dir / "pareto.csv")
    assert set(pareto.trial) <= set(done.trial) and len(pareto) >= 1
    for _, p in done.iterrows():  # exactly the non-dominated trials are on the front
        dominated = (
            (done.psnr >= p.psnr)
            & (done.runtime_ms <= p.runtime_ms)
            & ((done.psnr > p.psnr) | (done.runtime_ms < p.runtime_ms))
        )
        assert dominated.any() != (p.trial in set(pareto.trial)), p.trial
    study = open_study(run_dir, tiny_options)
    stored = {t.number: t for t in study.trials}
    for t in pareto.trial:  # each exported model is the architecture its trial stored
        folder = run_dir / "models" / str(t)
        assert (folder / "weights.safetensors").is_file()
        exported = yaml.safe_load((folder / "spec.yaml").read_text())
        assert exported["blocks"] == tiny_space.to_spec(trial_choice(stored[int(t)]))["blocks"]
        profile = json.loads((folder / "profile.json").read_text())
        assert profile["psnr_val"] == pytest.approx(float(pareto.loc[pareto.trial == t, "psnr"].iloc[0]))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "complete" and status["trials"] == len(trials) and status["pareto"] == len(pareto)
    timings = status["timings"]
    assert 0 < timings["supernet_train_s"] < timings["total_s"] and 0 < timings["trials_s"] < timings["total_s"]
    assert timings["trials_new"] == len(trials)
    index = pd.read_csv(tmp_path / "index.csv")
    assert list(index.run) == ["tiny"] and index.state.iloc[0] == "complete"
    assert index.pareto.iloc[0] == len(pareto) and index.best_psnr.iloc[0] == pytest.approx(pareto.psnr.max())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["search"]["objectives"] == ["psnr", "runtime_ms"] and config["space"]["train"]["steps"] == 6
    # the same command again: more trials continue the same study, nothing is redone
    weights = (run_dir / "supernet.safetensors").stat().st_mtime_ns
    result = run_search(tiny_space, run_dir, tiny_options.with_overrides(trials=7))
    assert result.complete == 7 and result.timings["supernet_train_s"] < timings["supernet_train_s"]
    assert (run_dir / "supernet.safetensors").stat().st_mtime_ns == weights
    again = pd.read_csv(run_dir / "trials.csv")
    kept = again.set_index("trial").loc[trials.trial]
    assert kept.state.tolist() == trials.state.tolist() and kept.psnr.tolist() == pytest.approx(trials.psnr.tolist())
    with pytest.raises(SrnasError, match="different search space"):
        run_search(parse_space({**tiny_space_data, "widths": [8, 16]}), run_dir, tiny_options)
    with pytest.raises(SrnasError, match="different search space"):
        run_search(tiny_space, run_dir, tiny_options.with_overrides(sampler="random"))
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"  # refused: nothing written


def _count_complete(path: Path) -> int:
    try:
        return int((pd.read_csv(path).state == "COMPLETE").sum())
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


@pytest.mark.slow
def test_kill_9_then_resume_loses_only_trials_in_flight(tmp_path, tiny_space_data):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump({**tiny_space_data, "search": {**tiny_space_data["search"], "trials": 12}}))
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


def test_a_run_folder_of_the_previous_format_continues(tmp_path, tiny_space, tiny_space_data, tiny_options):
    """config.yaml written before the options were typed (raw train/search sections) still matches."""
    from nas.search.run import check_restart

    run_dir = tmp_path / "old"
    run_dir.mkdir()
    old_space = {**tiny_space.to_dict(), "train": tiny_space_data["train"], "search": tiny_space_data["search"]}
    config = {"space_file": "<dict>", "space": old_space, "search": tiny_options.to_dict()}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    check_restart(tiny_space, run_dir, tiny_options.with_overrides(trials=9, device="auto"))  # resumable changes
    with pytest.raises(SrnasError, match="different search space"):
        check_restart(tiny_space.with_training(steps=7), run_dir, tiny_options)
    with pytest.raises(SrnasError, match="different search space"):
        check_restart(tiny_space, run_dir, tiny_options.with_overrides(population=10))


def _distinct(trials: pd.DataFrame) -> None:
    """COMPLETE trials measure distinct architectures (specs compared as JSON)."""
    done = trials[trials.state == "COMPLETE"]
    assert done.spec.map(lambda s: json.dumps(json.loads(s), sort_keys=True)).is_unique


@pytest.mark.slow
def test_trials_measure_distinct_architectures_and_repeats_are_not_spent(tmp_path, small_space_data, tiny_options):
    space = parse_space(small_space_data)
    assert space.size() == 8
    run_dir = tmp_path / "small"
    opts = tiny_options.with_overrides(trials=8, sampler="random")
    result = run_search(space, run_dir, opts)
    trials = pd.read_csv(run_dir / "trials.csv")
    assert result.complete == 8 and (trials.state == "COMPLETE").sum() == 8  # the whole space, each once
    _distinct(trials)
    study = {t.number: t for t in open_study(run_dir, opts).trials}
    repeats = [t for t in study.values() if t.state.name == "PRUNED"]
    assert repeats, "8 random draws from 8 architectures repeat some (seeded)"
    for t in repeats:  # each repeat names the measured trial of its architecture, and was not measured
        first = study[t.user_attrs["duplicate_of"]]
        assert first.state.name == "COMPLETE" and trial_choice(first) == trial_choice(t)
        assert "psnr" not in t.user_attrs
    assert len(pd.read_csv(run_dir / "pareto.csv").spec.unique()) == len(pd.read_csv(run_dir / "pareto.csv"))
    # asking for more than the space holds: the search stops once proposals only repeat, nothing re-measured
    result = run_search(space, run_dir, opts.with_overrides(trials=9))
    assert result.complete == 8
    _distinct(pd.read_csv(run_dir / "trials.csv"))
