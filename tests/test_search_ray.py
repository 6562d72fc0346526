"""The Ray Tune backend of ``srnas search``: trials land in the run's Optuna study, failures are recorded,
and running the search again continues it (with Ray or with the local backend)."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import pytest
import ray

from nas.results.runs import TRIAL_COLUMNS
from nas.search.backends.ray import connect
from nas.search.evaluator import _key  # to poison one cached PSNR
from nas.search.options import SearchOptions
from nas.search.run import run_search, train_supernet
from nas.search.space import parse_space
from nas.search.study import STUDY_NAME, storage_for

pytestmark = pytest.mark.slow  # starts a Ray instance

SPACE = {
    "name": "raytiny",
    "scale": 4,
    "widths": [8],
    "depths": [1],
    "candidates": {"res": {"type": "residual"}, "ir": {"type": "inverted_residual", "expand_ratio": 2}},
    "fusions": {"none": None, "concat": {"type": "concat"}},
    "upsamplers": {"ps": {"type": "pixelshuffle"}},
    "global_skips": ["none", "bilinear"],
    # the reference is evaluated first; the test makes its PSNR NaN (a diverged architecture)
    "references": {
        "broken": {
            "width": 8,
            "depth": 1,
            "layers": ["res"],
            "fusion": "none",
            "upsampler": "ps",
            "global_skip": "none",
        }
    },
    "train": {"data": "embedded", "steps": 10, "batch_size": 4, "patch_size": 24, "ckpt_every": 10, "progress": False},
}
OPTS = SearchOptions(
    trials=4,
    backend="ray",
    workers=2,
    runtime_size=[3, 32, 32],
    runtime_repeats=2,
    val_max_size=64,
    device="cpu",
    export_pareto=False,
)
METRICS = ["psnr", "runtime_ms", "activations", "params", "flops", "flops_fvcore", "num_conv", "genotype", "spec"]


@pytest.fixture(scope="module")
def local_ray():
    assert connect(OPTS)  # the backend's own local start (loopback only, 2 CPUs)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def first_run(local_ray, tmp_path_factory) -> tuple[Path, object]:
    space = parse_space(SPACE)
    run_dir = tmp_path_factory.mktemp("results") / "raytiny"
    run_dir.mkdir()
    weights = train_supernet(space, run_dir, space.train, "cpu")
    assert weights.is_file()
    poisoned = space.to_spec(space.references["broken"])
    stat = weights.stat()
    cache = run_dir / "cache"
    cache.mkdir()
    (cache / f"{_key('psnr', poisoned, _key(stat.st_size, stat.st_mtime_ns))}.json").write_text('{"psnr": NaN}')
    result = run_search(space, run_dir, OPTS)
    return run_dir, result


def _trials(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "trials.csv")


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=storage_for(run_dir, None))


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results" / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("ray"))
    return copy


def test_trials_run_at_normal_priority(local_ray):
    """Ray would start its workers at niceness 15, starved by any other work on the machine."""

    @ray.remote
    def niceness() -> int:
        return os.nice(0)

    assert ray.get(niceness.remote()) == os.nice(0)


def test_ray_trials_fill_the_study_and_tables(first_run):
    run_dir, result = first_run
    df = _trials(run_dir)
    assert list(df.columns) == TRIAL_COLUMNS
    complete = df[df["state"] == "COMPLETE"]
    assert result.complete == len(complete) == OPTS.trials
    assert complete[METRICS].notna().all().all()
    assert (complete["device"] == "cpu").all() and (complete["input_size"] == "3x32x32").all()
    for spec in complete["spec"]:
        assert json.loads(spec)["width"] == 8
    pareto = pd.read_csv(run_dir / "pareto.csv")
    assert 1 <= len(pareto) <= len(complete)
    assert set(pareto["trial"]) <= set(complete["trial"])

    study = _study(run_dir)  # the same study (name, storage, parameters) the local backend uses
    trials = {t.number: t for t in study.get_trials()}
    assert set(trials) == set(df["trial"])
    for number in complete["trial"]:
        t = trials[number]
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.values == pytest.approx([t.user_attrs["psnr"], t.user_attrs["runtime_ms"]])
        assert {"depth", "width", "layer0", "fusion", "upsampler", "global_skip"} <= set(t.params)
        assert {"host", "pid", "worker", "choice", "eval_s"} <= set(t.user_attrs)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "complete" and status["complete"] == OPTS.trials
    assert {"ray_evaluate_s", "ray_overhead_s"} <= set(status["timings"])


def test_a_failing_trial_is_recorded_and_the_search_goes_on(first_run):
    run_dir, result = first_run
    df = _trials(run_dir).set_index("trial")
    assert df.loc[0, "state"] == "FAIL"  # the poisoned reference, asked first
    assert "PSNR is nan" in df.loc[0, "error"]
    failed = df[df["state"] == "FAIL"]
    assert result.failed == len(failed) and failed["error"].notna().all()
    assert _study(run_dir).trials[0].user_attrs["reference"] == "broken"


def test_running_again_continues_the_study(first_run, tmp_path):
    run_dir = _copy_run(first_run[0], tmp_path)
    before = _trials(run_dir)
    result = run_search(parse_space(SPACE), run_dir, replace(OPTS, trials=6))
    after = _trials(run_dir)
    assert result.complete == 6
    assert (after["state"] == "COMPLETE").sum() == 6
    kept = after.set_index("trial").loc[before["trial"]]
    assert kept["state"].tolist() == before["state"].tolist()
    assert kept["psnr"].tolist() == pytest.approx(before["psnr"].tolist(), nan_ok=True)


def test_the_local_backend_continues_a_ray_study(first_run, tmp_path):
    run_dir = _copy_run(first_run[0], tmp_path)
    before = _trials(run_dir)
    result = run_search(parse_space(SPACE), run_dir, replace(OPTS, trials=5, backend="optuna"))
    after = _trials(run_dir)
    assert result.complete == 5 and len(after) >= len(before) + 1
    new = after[~after["trial"].isin(before["trial"])]
    assert (new["state"] == "COMPLETE").sum() == 1  # exactly the one more trial asked for
    complete = after[after["state"] == "COMPLETE"]
    assert complete["psnr"].map(math.isfinite).all() and (complete["psnr"] > 5).all()
    trials = {t.number: t for t in _study(run_dir).get_trials()}
    for number in new["trial"]:  # measured in this process (local backend), not by a Ray worker
        assert "worker" not in trials[number].user_attrs and trials[number].user_attrs["pid"] == os.getpid()


def _choices(run_dir: Path) -> list[tuple[str, str]]:
    """(state, choice) of every trial, in order."""
    return [(t.state.name, t.user_attrs.get("choice")) for t in _study(run_dir).get_trials()]


def test_ray_trials_are_distinct_and_equal_a_local_search_of_the_same_seed(local_ray, tmp_path, small_space_data):
    """One worker: the same proposals, repeats and measurements as the local backend; two workers: still
    only distinct architectures (repeats are redrawn in the driver, in-flight ones included)."""
    space = parse_space(small_space_data)
    base = replace(OPTS, trials=6, sampler="random", seed=3, val_max_size=48, runtime_size=[3, 24, 24])
    local_dir, ray_dir, ray2_dir = (tmp_path / name for name in ("local", "ray1", "ray2"))
    local_dir.mkdir()
    weights = train_supernet(space, local_dir, space.train, "cpu")
    for folder in (ray_dir, ray2_dir):
        folder.mkdir()
        shutil.copy2(weights, folder / weights.name)
    run_search(space, local_dir, replace(base, backend="optuna"))
    run_search(space, ray_dir, replace(base, workers=1))
    assert _choices(ray_dir) == _choices(local_dir)
    assert any(state == "PRUNED" for state, _ in _choices(ray_dir))  # seeded: 6 of 8 architectures repeat some
    local, ray1 = (t[t["state"] == "COMPLETE"] for t in (_trials(local_dir), _trials(ray_dir)))
    assert ray1["trial"].tolist() == local["trial"].tolist()
    assert ray1["psnr"].tolist() == pytest.approx(local["psnr"].tolist())
    assert ray1["activations"].tolist() == local["activations"].tolist()
    result = run_search(space, ray2_dir, replace(base, trials=8, workers=2))
    df = _trials(ray2_dir)
    done = df[df["state"] == "COMPLETE"]
    assert result.complete == 8 and done["spec"].is_unique  # the whole space, each architecture once


@pytest.mark.slow
def test_a_resumed_ray_search_draws_new_architectures(local_ray, tmp_path, tiny_space_data):
    """The resumed driver's sampler is reseeded (as the local backend's): it does not replay the first start's
    proposals, which are all measured; the resume measures only new architectures."""
    space = parse_space({**tiny_space_data, "references": {}})
    opts = replace(OPTS, trials=3, workers=1, sampler="random", seed=5, val_max_size=48, runtime_size=[3, 24, 24])
    run_dir = tmp_path / "resume"
    run_search(space, run_dir, opts)
    first = _choices(run_dir)
    run_search(space, run_dir, replace(opts, trials=6))
    resumed = _choices(run_dir)[len(first) :]
    assert resumed[0][1] != first[0][1]  # without the reseed the resume redraws the first start's sequence
    measured = {choice for state, choice in first if state == "COMPLETE"}
    assert not {choice for state, choice in resumed if state == "COMPLETE"} & measured  # nothing measured twice
    done = [choice for state, choice in _choices(run_dir) if state == "COMPLETE"]
    assert len(done) == 6 and len(set(done)) == 6


def test_an_unreachable_ray_address_fails_fast_and_writes_nothing(tmp_path, results_env, capsys):
    """Nothing listens on port 1: one line naming the address within seconds, not Ray's minutes of retries."""
    import time

    import yaml

    from nas.cli.main import main

    space_file = tmp_path / "raytiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    t0 = time.perf_counter()
    code = main(["search", str(space_file), "--backend", "ray", "--ray-address", "127.0.0.1:1", "--device", "cpu"])
    assert time.perf_counter() - t0 < 30
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "127.0.0.1:1" in err, err
    assert not results_env.exists()
