"""An installed srnas (a built wheel in a fresh venv, run from an unrelated folder) finds its built-in search
spaces and zoo, and writes only where the user runs it (``./results`` or ``--results-dir``), never into the venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding only the srnas wheel; its dependencies come from the running environment (no download)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "-q", "-w", str(tmp / "dist")],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here (pip wheel: {build.stderr.strip().splitlines()[-1:]})")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([venv / "bin" / "python", "-c", purelib], text=True).strip())
    deps = [p for p in sys.path if p.endswith("site-packages")]  # torch & co. from this environment
    (site / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    wheel = next((tmp / "dist").glob("srnas-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", wheel],
        check=True,
        capture_output=True,
    )
    return venv


def _srnas(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRNAS_")}
    env["SRNAS_HOME"] = str(cwd / "home")
    return subprocess.run(
        [venv / "bin" / "srnas", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_installed_wheel_runs_the_default_search_where_the_user_is(installed, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    probe = subprocess.run(
        [installed / "bin" / "python", "-c", "import nas, search_spaces; print(nas.__file__)"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(installed) in probe.stdout  # the wheel's copy, not the source checkout
    venv_before = _files(installed)
    repo_results_before = _files(REPO_ROOT / "results")

    tiny = ("search", "--trials", "3", "--steps", "4", "--device", "cpu")
    res = _srnas(installed, work, *tiny)
    assert res.returncode == 0, res.stderr
    assert (work / "results" / "quick" / "pareto.csv").is_file()
    assert (work / "results" / "index.csv").is_file()

    elsewhere = tmp_path / "elsewhere"  # another working directory reads the run through --results-dir
    elsewhere.mkdir()
    res = _srnas(installed, elsewhere, "front", "quick", "--results-dir", str(work / "results"), "--json")
    assert res.returncode == 0, res.stderr
    assert (work / "results" / "quick" / "pareto.html").is_file() and not (elsewhere / "results").exists()

    assert _files(installed) == venv_before  # nothing written into the install tree
    assert _files(REPO_ROOT / "results") == repo_results_before  # nor into the source checkout
