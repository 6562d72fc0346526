"""srnas pipeline end to end on a tiny space: search -> pick -> prune -> fine-tune -> final front; resumes."""

import json

import pandas as pd
import pytest

from nas.cli.pipeline import PipelineOptions, pick_models, run_pipeline
from nas.errors import SrnasError
from nas.search.run import SearchOptions
from nas.search.space import parse_space
from nas.zoo.resolve import load_model
from tests.test_search import OPTS, TINY_SPACE


def test_pick_models_spreads_along_runtime_and_honours_constraints():
    pareto = pd.DataFrame(
        {"trial": [4, 1, 7, 2, 9], "psnr": [20, 21, 22, 23, 24], "runtime_ms": [1.0, 2.0, 3.0, 4.0, 5.0]}
    )
    assert pick_models(pareto, PipelineOptions(pick=3)) == [4, 7, 9]
    assert pick_models(pareto, PipelineOptions(pick=10)) == [4, 1, 7, 2, 9]
    assert pick_models(pareto, PipelineOptions(pick=2, min_psnr=22, max_runtime_ms=4.5)) == [7, 2]
    with pytest.raises(SrnasError, match="no Pareto model meets"):
        pick_models(pareto, PipelineOptions(min_psnr=30))


def test_pipeline_end_to_end_and_rerun(tmp_path):
    space = parse_space(TINY_SPACE)
    run_dir = tmp_path / "tiny"
    opts = PipelineOptions(pick=2, target=0.7, prune_rounds=1, prune_round_steps=2, prune_final_steps=2, final_steps=3)
    search = SearchOptions(**{**OPTS, "device": "auto"})  # the CLI's default device name, resolved at every stage
    df = run_pipeline(space, run_dir, search, opts)
    picks = json.loads((run_dir / "pipeline" / "picks.json").read_text())["trials"]
    assert list(df.trial) == picks and 1 <= len(picks) <= 2
    assert (df.activations <= 0.7 * df.search_activations + 1).all()
    final = run_dir / "final"
    assert json.loads((final / "status.json").read_text())["state"] == "complete"
    from nas.results.runs import read_run

    final_run = read_run(final)
    assert final_run.problems == [] and final_run.config["pipeline"]["target"] == 0.7
    index = pd.read_csv(tmp_path / "index.csv").set_index("run")
    assert index.loc["tiny/final", "device"] in ("cpu", "cuda")  # resolved, not "auto"
    for trial in picks:
        loaded = load_model(final / "models" / str(trial))
        assert "pruned" in loaded.spec
    again = run_pipeline(space, run_dir, search, opts)  # everything resumes, nothing redone
    assert list(again.trial) == picks
    assert again.activations.tolist() == df.activations.tolist()
    from nas.cli.main import main

    assert main(["front", str(final), str(run_dir), "--json", "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "pareto.png").is_file()
