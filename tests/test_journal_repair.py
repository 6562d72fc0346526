"""A journal torn mid-write (crash, full disk) is repaired on open: the study keeps every complete record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from nas.errors import SrnasError
from nas.search.journal import complete_length, repair_journal
from nas.search.options import SearchOptions
from nas.search.study import JOURNAL, STUDY_NAME, open_study, storage_for

OPTS = SearchOptions(sampler="random", seed=0)


def _complete(run_dir: Path) -> dict[int, tuple[dict, list[float]]]:
    """The COMPLETE trials, read through srnas's storage (which repairs the journal first)."""
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage_for(run_dir, None))
    return {t.number: (t.params, t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}


def _add_trials(run_dir: Path, n: int) -> None:
    study = open_study(run_dir, OPTS)
    for _ in range(n):
        trial = study.ask()
        x = trial.suggest_categorical("width", [8, 16, 24])
        trial.set_user_attr("psnr", 20.0 + x / 8)
        study.tell(trial, [20.0 + x / 8, float(x)])


@pytest.fixture(scope="module")
def journal(tmp_path_factory) -> Path:
    """A run folder whose journal holds 4 COMPLETE trials; its last record completes the last one."""
    run_dir = tmp_path_factory.mktemp("whole")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _add_trials(run_dir, 4)
    return run_dir


def _copy(journal: Path, dest: Path, size: int) -> Path:
    dest.mkdir()
    shutil.copy2(journal / JOURNAL, dest / JOURNAL)
    with open(dest / JOURNAL, "r+b") as fh:
        fh.truncate(size)
    return dest


def test_every_tear_inside_the_last_record_reopens_with_the_complete_trials(journal, tmp_path, capfd):
    data = (journal / JOURNAL).read_bytes()
    assert data.endswith(b"\n") and complete_length(data) == len(data)
    start = data.rfind(b"\n", 0, len(data) - 1) + 1  # the last record: data[start:-1] + newline
    whole = _complete(journal)
    before = _complete(_copy(journal, tmp_path / "prefix", start))  # the untouched records alone
    assert len(whole) == 4 and len(before) == 3  # the last record is the one that completes trial 3
    for size in range(start + 1, len(data) - 1):  # a real tear: part of the record is missing
        run_dir = _copy(journal, tmp_path / f"torn{size}", size)
        aside = repair_journal(run_dir / JOURNAL)
        assert (run_dir / JOURNAL).read_bytes() == data[:start], size  # cut back to the last complete record
        assert aside.read_bytes() == data[start:size], size  # the torn bytes are kept, not deleted
        assert "torn last record" in capfd.readouterr().err
        assert _complete(run_dir) == before, size
    run_dir = _copy(journal, tmp_path / "opened", len(data) - 5)  # the study's opening function repairs by itself
    study = open_study(run_dir, OPTS)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert len(list(run_dir.glob(f"{JOURNAL}.torn-*"))) == 1
    # only the newline missing: the record is whole and is kept
    run_dir = _copy(journal, tmp_path / "nonewline", len(data) - 1)
    assert repair_journal(run_dir / JOURNAL) is None and (run_dir / JOURNAL).read_bytes() == data
    assert _complete(run_dir) == whole
    assert not list(run_dir.glob(f"{JOURNAL}.torn-*"))


def test_a_repaired_journal_takes_new_trials_and_reopens(journal, tmp_path):
    data = (journal / JOURNAL).read_bytes()
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    run_dir = _copy(journal, tmp_path / "torn", start + (len(data) - start) // 2)
    _add_trials(run_dir, 2)  # the next start writes after the repair, never onto the partial line
    complete = _complete(run_dir)  # and every later start still reads the study
    assert len(complete) == 3 + 2


def test_without_the_repair_the_next_append_loses_the_study(journal, tmp_path):
    """What the repair prevents (Optuna alone): a write onto the partial line makes the journal unreadable."""
    data = (journal / JOURNAL).read_bytes()
    run_dir = _copy(journal, tmp_path / "raw", len(data) - 10)
    backend = JournalFileBackend(str(run_dir / JOURNAL))  # the next start's writes, without srnas's repair
    backend.append_logs([json.loads(line) for line in data.splitlines()[-3:-1]])
    with pytest.raises(json.JSONDecodeError):
        list(backend.read_logs(0))
    with pytest.raises(SrnasError, match="corrupted before its last record"):  # one line, naming the run
        open_study(run_dir, OPTS)
