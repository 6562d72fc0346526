"""A real PostgreSQL study: two `srnas search --storage postgresql://...` processes share one study, one is
killed with SIGKILL mid-search, and the study still completes with nothing lost or measured twice.

The server is Debian's PostgreSQL (``apt-get install postgresql``; the test skips with the reason where its
binaries or psycopg are missing), started on 127.0.0.1 in a temporary folder and stopped afterwards.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

TRIALS = 10


def _pg_bin() -> Path | None:
    """The server's bin folder (Debian keeps initdb, pg_ctl and createdb together only there)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    return Path(os.path.realpath(found[-1])).parent if found[-1] else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1 (run as user postgres when the tests run as root)."""
    pytest.importorskip("psycopg", reason="psycopg (3) is not installed (pip install -e '.[test]')")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (Debian: apt-get install postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="srnas-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
        as_user = ["runuser", "-u", "postgres", "--"]
        root.chmod(0o755)
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()

    def pg(tool: str, *args: str) -> None:
        done = subprocess.run([*as_user, str(bindir / tool), *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{tool} failed: {done.stderr.strip()}"

    pg("initdb", "-D", str(data), "-U", "srnas", "-A", "trust", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "srnas", "srnas")
        yield f"postgresql://srnas@127.0.0.1:{port}/srnas"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _search(space: Path, results: Path, url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "SRNAS_PROGRESS": "off"}
    argv = [sys.executable, "-m", "nas.cli", "search", str(space), "--results-dir", str(results)]
    argv += ["--storage", url, "--device", "cpu", "--trials", str(TRIALS)]
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _trials(url: str) -> list:
    import optuna

    return optuna.load_study(study_name="srnas", storage=url).get_trials(deepcopy=False)


def test_two_searches_share_a_postgres_study_and_survive_a_kill(postgres_url, tmp_path, tiny_space_data):
    from optuna.trial import TrialState

    # bigger runtime input and repeats: trials take long enough to be caught mid-search by the kill
    tiny_space_data["search"] = {**tiny_space_data["search"], "runtime_size": [3, 96, 96], "runtime_repeats": 15}
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(tiny_space_data))
    t0 = time.monotonic()
    victim = _search(space, tmp_path / "a", postgres_url, tmp_path / "a.log")
    other = _search(space, tmp_path / "b", postgres_url, tmp_path / "b.log")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and victim.poll() is None:
        try:
            mine = [t for t in _trials(postgres_url) if t.user_attrs.get("pid") == victim.pid]
        except Exception:  # the study is not created yet
            mine = []
        if any(t.state == TrialState.COMPLETE for t in mine):
            break
        time.sleep(0.2)
    assert victim.poll() is None, "ended before the kill: " + (tmp_path / "a.log").read_text()
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert other.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
    restart = _search(space, tmp_path / "a", postgres_url, tmp_path / "a2.log")  # recovers what the kill left
    assert restart.wait(timeout=300) == 0, (tmp_path / "a2.log").read_text()

    trials = _trials(postgres_url)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    choices = [json.dumps(json.loads(t.user_attrs["choice"]), sort_keys=True) for t in complete]
    assert not [t for t in trials if t.state == TrialState.RUNNING]  # nothing left hanging
    assert len(complete) >= TRIALS
    assert len(set(choices)) == len(choices)  # no architecture measured twice
    assert {t.user_attrs["pid"] for t in complete} >= {victim.pid, other.pid}  # both processes did work
    stale = [t for t in trials if "stale" in str(t.user_attrs.get("error", ""))]
    assert all(t.user_attrs["pid"] == victim.pid for t in stale)  # only the killed one's trials were failed
    for run in ("a", "b"):
        table = (tmp_path / run / "tiny" / "trials.csv").read_text()
        assert table.count("COMPLETE") >= TRIALS
    print(f"postgres: {len(complete)} complete, {len(stale)} re-queued, {time.monotonic() - t0:.1f} s")
