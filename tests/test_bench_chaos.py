"""scripts/bench_chaos.py: its checks see lost / corrupt results, and a tiny kill-and-resume run is all zeros."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from nas.paths import REPO_ROOT


@pytest.fixture
def chaos(tmp_path, monkeypatch):
    monkeypatch.setenv("SRNAS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    return importlib.import_module("bench_chaos")


def _folder(path, value: float):
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({"w": torch.full((2, 2), value)}, str(path / "weights.safetensors"))
    (path / "spec.yaml").write_text("width: 8\n")


def test_help(chaos, capsys):
    with pytest.raises(SystemExit) as exc:
        chaos.main(["--help"])
    assert exc.value.code == 0 and "SIGKILL" in capsys.readouterr().out


def test_folder_check_sees_equal_different_and_missing_weights(chaos, tmp_path):
    check = next(c for c in chaos.cases(4, 10, ray=False) if c.name == "train").check
    _folder(tmp_path / "ref" / "trained", 1.0)
    _folder(tmp_path / "same" / "trained", 1.0)
    _folder(tmp_path / "other" / "trained", 2.0)
    assert check(tmp_path / "same", tmp_path / "ref") == {"lost": 0, "duplicated": 0, "corrupt": 0}
    assert check(tmp_path / "other", tmp_path / "ref")["lost"] == 1
    assert check(tmp_path / "missing", tmp_path / "ref") == {"lost": 1, "duplicated": 0, "corrupt": 1}


def test_search_check_sees_a_missing_journal_and_unreadable_tables(chaos, tmp_path):
    run = tmp_path / "results" / "chaos"
    run.mkdir(parents=True)
    (run / "status.json").write_text("{not json")
    counts = chaos._check_search(tmp_path, trials=5)
    assert counts["lost"] == 5 and counts["corrupt"] >= 2


@pytest.mark.slow
def test_tiny_train_killed_and_resumed_equals_the_uninterrupted_run(chaos, tmp_path):
    assert chaos.main(["--only", "train", "--kills", "1", "--train-steps", "40", "--work", str(tmp_path / "w")]) == 0
    data = json.loads((tmp_path / "results" / "bench" / "chaos.json").read_text())
    (row,) = data["rows"]
    assert row["case"] == "train" and row["recoveries"] >= 1
    assert data["totals"] == {"lost": 0, "duplicated": 0, "corrupt": 0, "stray_processes": 0}
