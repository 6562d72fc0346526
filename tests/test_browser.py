"""A tiny search's results seen in a real browser (headless Chromium via Playwright): ``pareto.html`` and
optuna-dashboard on the run's journal (``scripts/check_browser.py``). Skips with the reason where Chromium,
Playwright or optuna-dashboard are missing (``scripts/test.sh`` installs Chromium from Debian when it can)."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import yaml

from nas.cli.main import main
from nas.paths import REPO_ROOT

pytestmark = pytest.mark.slow

REFERENCES = ["pan", "rfdn", "span"]  # zoo models in the committed results/reference/zoo.csv, drawn on params


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[test]')")
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(REPO_ROOT / "scripts"))
    module = importlib.import_module("check_browser")
    mp.undo()
    if module.find_chromium() is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; scripts/test.sh tries it as root)")
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real tiny search (5 trials) and its `srnas front --x params` with the zoo references drawn."""
    from conftest import TINY_SPACE  # the tiny space of the shared fixtures (tests/ is on sys.path)

    root = tmp_path_factory.mktemp("browser")
    results = root / "results"
    (results / "reference").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "results" / "reference" / "zoo.csv", results / "reference" / "zoo.csv")
    space = root / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    mp = pytest.MonkeyPatch()
    mp.setenv("SRNAS_RESULTS_DIR", str(results))
    try:
        assert main(["search", str(space), "--device", "cpu"]) == 0
        assert main(["front", "tiny", "--x", "params"]) == 0
    finally:
        mp.undo()
    return results / "tiny"


def test_pareto_html_shows_points_references_and_hover_text(checker, run_dir):
    summary = checker.check_pareto_html(run_dir, checker.find_chromium(), REFERENCES)
    assert set(REFERENCES) <= set(summary["reference_labels"])
    assert "spec:" in summary["hover"] and "&quot;" not in summary["hover"]
    assert Path(summary["screenshot"]).stat().st_size > 10_000  # a real picture next to report.md


def test_pareto_check_fails_when_a_reference_is_missing(checker, run_dir):
    with pytest.raises(checker.CheckFailed, match="lacks the reference markers msrresnet_x"):
        checker.check_pareto_html(run_dir, checker.find_chromium(), ["rfdn", "msrresnet_x"])


def test_optuna_dashboard_serves_the_journal_with_names_and_attributes(checker, run_dir):
    summary = checker.check_dashboard(run_dir, checker.find_chromium(), ["psnr", "runtime_ms"])
    assert summary["study"] == "srnas" and summary["trials"] >= 5
    assert Path(summary["screenshot"]).stat().st_size > 10_000


def test_dashboard_check_fails_on_wrong_objective_names(checker, run_dir):
    with pytest.raises(checker.CheckFailed, match="objective names"):
        checker.check_dashboard(run_dir, checker.find_chromium(), ["psnr", "joules"])
