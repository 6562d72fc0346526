"""srnas pipeline end to end on a tiny space: search -> pick -> prune -> fine-tune -> final front; resumes."""

import json

import pandas as pd
import pytest
import yaml

from nas.cli.main import main
from nas.cli.pipeline import PipelineOptions, pick_models, run_pipeline
from nas.errors import SrnasError
from nas.results.pareto import non_dominated
from nas.results.runs import read_run
from nas.zoo.resolve import load_model


def test_pick_models_spreads_along_runtime_and_honours_constraints():
    pareto = pd.DataFrame(
        {"trial": [4, 1, 7, 2, 9], "psnr": [20, 21, 22, 23, 24], "runtime_ms": [1.0, 2.0, 3.0, 4.0, 5.0]}
    )
    assert pick_models(pareto, PipelineOptions(pick=3)) == [4, 7, 9]
    assert pick_models(pareto, PipelineOptions(pick=10)) == [4, 1, 7, 2, 9]
    assert pick_models(pareto, PipelineOptions(pick=2, min_psnr=22, max_runtime_ms=4.5)) == [7, 2]
    with pytest.raises(SrnasError, match="no Pareto model meets"):
        pick_models(pareto, PipelineOptions(min_psnr=30))


@pytest.mark.parametrize(
    ("argv", "fragment", "code"),
    [
        (["--target-params", "1.5"], "target params must be a fraction", 2),
        (["--target-flops", "0.5", "--target-runtime", "0.5"], "give exactly one pruning target", 2),
        (["--pick", "0"], "--pick must be at least 1", 1),  # nas.cli.pipeline raises a plain SrnasError
        (["--sampler", "bogus"], "unknown sampler", 2),
    ],
)
def test_bad_pipeline_options_fail_before_anything_is_written(
    tmp_path, results_env, tiny_space_data, capsys, argv, fragment, code
):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(tiny_space_data))
    assert main(["pipeline", str(space_file), "--device", "cpu", *argv]) == code  # usage errors exit 2
    assert fragment in capsys.readouterr().err
    assert not results_env.exists()


def test_pipeline_targets_as_srnas_prune(tmp_path, results_env, tiny_space_data, monkeypatch):
    """Every --target-* of srnas prune reaches the pruner (parsed by its own target parser)."""
    import nas.cli.pipeline as pipeline

    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda space, run_dir, search, opts, **kw: seen.append(opts) or [])
    monkeypatch.setattr(pipeline, "summary", lambda df: [])
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(tiny_space_data))
    for metric in ("activations", "params", "flops", "runtime"):
        assert main(["pipeline", str(space_file), f"--target-{metric}", "0.6", "--json"]) == 0
    assert main(["pipeline", str(space_file), "--json"]) == 0
    assert [(o.target_metric, o.target) for o in seen] == [
        ("activations", 0.6),
        ("params", 0.6),
        ("flops", 0.6),
        ("runtime", 0.6),
        ("activations", 0.7),
    ]


@pytest.mark.slow
def test_pipeline_end_to_end_and_rerun(tmp_path, tiny_space, tiny_options):
    run_dir = tmp_path / "tiny"
    opts = PipelineOptions(
        pick=2,
        target_metric="params",
        target=0.7,
        prune_rounds=1,
        prune_round_steps=2,
        prune_final_steps=2,
        final_steps=3,
    )
    # the CLI's default device name, resolved at every stage; a front of PSNR vs activations
    search = tiny_options.with_overrides(device="auto", objectives=["psnr", "activations"])
    df = run_pipeline(tiny_space, run_dir, search, opts)
    picks = json.loads((run_dir / "pipeline" / "picks.json").read_text())["trials"]
    assert list(df.trial) == picks and 1 <= len(picks) <= 2
    searched = pd.read_csv(run_dir / "trials.csv").set_index("trial").loc[picks]
    assert (df.params.to_numpy() <= 0.7 * searched.params.to_numpy() + 1).all()
    assert (df.activations.to_numpy() <= df.search_activations.to_numpy()).all()
    final = run_dir / "final"
    final_run = read_run(final)
    assert final_run.state == "complete" and final_run.problems == []
    assert final_run.config["pipeline"]["target"] == 0.7 and final_run.config["pipeline"]["target_metric"] == "params"
    assert final_run.status["space"] == "tiny (pipeline)" and final_run.status["trials"] == len(picks)
    # the final front uses the search's objectives (PSNR vs activations), not a hard-coded runtime
    mask = non_dominated(final_run.trials, {"psnr": "max", "activations": "min"})
    assert sorted(final_run.pareto.trial) == sorted(final_run.trials.trial[mask])
    index = pd.read_csv(tmp_path / "index.csv").set_index("run")
    assert index.loc["tiny/final", "device"] in ("cpu", "cuda")  # resolved, not "auto"
    assert index.loc["tiny/final", "state"] == "complete" and index.loc["tiny/final", "trials"] == len(picks)
    for trial in picks:
        loaded = load_model(final / "models" / str(trial))
        assert "pruned" in loaded.spec
        assert json.loads((final / "models" / str(trial) / "profile.json").read_text())["params"] == int(
            df.set_index("trial").loc[trial, "params"]
        )
    again = run_pipeline(tiny_space, run_dir, search, opts)  # everything resumes, nothing redone
    assert list(again.trial) == picks
    assert again.activations.tolist() == df.activations.tolist()
    assert again.psnr.tolist() == pytest.approx(df.psnr.tolist())
    assert main(["front", str(final), str(run_dir), "--json", "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "pareto.png").is_file()
