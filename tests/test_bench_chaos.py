"""scripts/bench_chaos.py: its probes read progress from a run's files, its checks see lost / duplicated / corrupt /
left-over results, its kills take a whole process tree (escaped processes included), and a tiny kill-and-resume
run is all zeros."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from nas.paths import REPO_ROOT


@pytest.fixture
def chaos(tmp_path, monkeypatch):
    monkeypatch.setenv("SRNAS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    return importlib.import_module("bench_chaos")


@pytest.fixture
def cases(chaos):
    return importlib.import_module("chaos_cases")


@pytest.fixture
def watch(chaos):
    return importlib.import_module("chaos_watch")


def _folder(path, value: float):
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({"w": torch.full((2, 2), value)}, str(path / "weights.safetensors"))
    (path / "spec.yaml").write_text("width: 8\n")


def test_help(chaos, capsys):
    with pytest.raises(SystemExit) as exc:
        chaos.main(["--help"])
    assert exc.value.code == 0 and "SIGKILL" in capsys.readouterr().out


def test_every_command_is_a_case_with_stages(cases):
    named = {c.name: c.stages for c in cases.cases(cases.Settings())}
    assert set(named) == {"search", "ray", "train", "prune", "pipeline"}
    assert named["pipeline"] == ("supernet", "trials", "export", "prune rounds", "prune fine-tune", "final fine-tune")


def test_folder_check_sees_equal_different_and_missing_weights(cases, tmp_path):
    _folder(tmp_path / "ref" / "trained", 1.0)
    _folder(tmp_path / "same" / "trained", 1.0)
    _folder(tmp_path / "other" / "trained", 2.0)
    check = cases.check_folder
    assert check(tmp_path / "same", tmp_path / "ref", "trained")["not_identical"] == 0
    assert check(tmp_path / "other", tmp_path / "ref", "trained")["not_identical"] == 1
    assert check(tmp_path / "missing", tmp_path / "ref", "trained")["lost"] == 1


def test_study_check_sees_a_missing_journal(cases, tmp_path):
    counts = cases.study_counts(tmp_path / "run", trials=5)
    assert counts["lost"] == 5 and "error" in counts


def test_search_probe_follows_supernet_trials_and_export(cases, tmp_path):
    run = tmp_path / "run"
    (run / "supernet").mkdir(parents=True)
    (run / "supernet" / "train_log.csv").write_text("step,loss,lr,val_psnr\n20,0.1,0.001,\n")
    assert cases.search_probe(run, trials=4, steps=80) == (0, 0.25)
    (run / "supernet.safetensors").write_bytes(b"")
    (run / "trials.csv").write_text("trial,state,psnr\n0,COMPLETE,20\n1,FAIL,\n2,COMPLETE,21\n")
    assert cases.search_probe(run, trials=4, steps=80) == (1, 0.5)
    (run / "trials.csv").write_text("trial,state\n" + "".join(f"{i},COMPLETE\n" for i in range(4)))
    (run / "pareto.csv").write_text("trial\n0\n2\n")
    (run / "models" / "2").mkdir(parents=True)
    (run / "models" / "2" / "profile.json").write_text("{}")
    assert cases.search_probe(run, trials=4, steps=80) == (2, 0.5)
    (run / "status.json").write_text(json.dumps({"state": "complete"}))
    assert cases.search_probe(run, trials=4, steps=80) == (3, 0.0)
    case = next(c for c in cases.cases(cases.Settings()) if c.name == "search")
    assert case.progress(tmp_path / "nothing") == ("supernet", 0.0)


def test_leftovers_and_corrupt_files_are_found(watch, tmp_path):
    (tmp_path / "run" / "ray" / "tune").mkdir(parents=True)
    (tmp_path / "run" / "ok.json").write_text("{}")
    (tmp_path / "run" / "bad.json").write_text("{half")
    (tmp_path / "run" / "study.journal").write_bytes(b'{"op": 1}\n{"op": 2')  # torn last record
    (tmp_path / "run" / "ray" / "tune" / "result.json").write_text("{torn by Ray")  # Ray Tune's, not ours
    (tmp_path / "run" / ".a.json~host~1~x.tmp").write_text("")
    (tmp_path / "run" / ".lock").write_text("")
    os.symlink("nowhere", tmp_path / "run" / "study.journal.lock")  # a dangling lock symlink
    assert watch.corrupt_files(tmp_path) == ["run/bad.json: JSONDecodeError", "run/study.journal: ValueError"]
    assert watch.leftovers(tmp_path) == ["run/.a.json~host~1~x.tmp", "run/.lock", "run/study.journal.lock"]


TREE = """
import subprocess, sys, time
child = "import time; time.sleep(60)"
subprocess.Popen([sys.executable, "-c", child])  # in the tree
subprocess.Popen([sys.executable, "-c", child], start_new_session=True)  # left the group, still a descendant
subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
                  + repr(child) + "], start_new_session=True)"])  # re-parented to init when its parent exits
print("ready", flush=True)
time.sleep(60)
"""


def test_kill_tree_takes_every_tagged_process(watch, tmp_path):
    process = watch.start([sys.executable, "-c", TREE], tmp_path, tmp_path / "log.txt", "t-kill")
    deadline = time.monotonic() + 30
    while "ready" not in (tmp_path / "log.txt").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert len(watch.tagged("t-kill")) == 4
    watch.kill_tree(process, "t-kill")
    assert watch.strays("t-kill", grace_s=2.0) == 0 and watch.tagged("t-kill") == []


def test_strays_are_counted_and_cleaned(watch, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, watch.TAG_ENV: "t-stray"}
    )
    try:
        assert watch.strays("t-stray", grace_s=0.2) == 1
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert watch.tagged("t-stray") == []


@pytest.mark.slow
def test_tiny_train_killed_and_resumed_equals_the_uninterrupted_run(chaos, tmp_path):
    assert chaos.main(["--only", "train", "--kills", "2", "--train-steps", "60", "--work", str(tmp_path / "w")]) == 0
    data = json.loads((tmp_path / "results" / "bench" / "chaos.json").read_text())
    (row,) = data["rows"]
    assert row["case"] == "train" and row["kills"] == 2 and row["recoveries"] >= 2
    assert row["stages hit"].startswith("training")  # the second may land after the last step
    assert all(v == 0 for k, v in data["totals"].items() if k != "kills")
