"""One run folder, one writer: ``<run>/.lock`` refuses a second search, is taken over when stale, and is
released on exit, exceptions included."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from nas.cli.main import main
from nas.errors import RunLockedError
from nas.results.lock import LOCK_FILE, run_lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from nas.results.lock import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()  # hold until told (or killed)
    """
)


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock of a run folder; yields (run_dir, process)."""
    procs = []

    def start(run_dir: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_a_second_search_on_a_running_run_is_refused_and_writes_nothing(
    tmp_path, results_env, tiny_space_data, holder, capsys
):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(tiny_space_data))
    run_dir = results_env / "busy"
    proc = holder(run_dir)
    owner = json.loads((run_dir / LOCK_FILE).read_text())
    assert owner["pid"] == proc.pid and owner["host"] == socket.gethostname() and owner["command"]
    before = _snapshot(results_env)
    for command in ("search", "pipeline"):
        assert main([command, str(space_file), "--run", "busy", "--device", "cpu", "--trials", "1"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"pid {proc.pid}" in err and socket.gethostname() in err and "in use" in err
    assert _snapshot(results_env) == before  # no status, no config, no index row
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=30) == 0
    assert not (run_dir / LOCK_FILE).exists()  # released on a clean exit


def test_a_lock_left_by_kill_9_is_stale_and_taken_over(tmp_path, holder, capsys):
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    with pytest.raises(RunLockedError, match=f"pid {proc.pid}"), run_lock(run_dir):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == proc.pid  # the dead owner is still named
    with run_lock(run_dir):
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert f"stale lock of pid {proc.pid}" in capsys.readouterr().err
    assert not (run_dir / LOCK_FILE).exists()


def test_the_lock_is_released_after_an_exception_and_nests_in_its_process(tmp_path, holder):
    run_dir = tmp_path / "run"
    with pytest.raises(ZeroDivisionError), run_lock(run_dir):
        with run_lock(run_dir):  # srnas pipeline around its search: the same process may take it again
            pass
        assert (run_dir / LOCK_FILE).exists()
        raise ZeroDivisionError("boom")
    assert not (run_dir / LOCK_FILE).exists()
    proc = holder(run_dir)  # another process can take it now
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == proc.pid


def test_a_lock_of_another_host_is_refused_unless_forced(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    owner = {"pid": 4242, "host": "gpu-node-7", "started": "2026-01-01T00:00:00+00:00", "command": "srnas search"}
    (run_dir / LOCK_FILE).write_text(json.dumps(owner))
    with pytest.raises(RunLockedError, match="pid 4242 on host gpu-node-7.*--force-unlock"), run_lock(run_dir):
        pass
    assert json.loads((run_dir / LOCK_FILE).read_text()) == owner  # refused: left as it was
    with run_lock(run_dir, force=True):
        assert json.loads((run_dir / LOCK_FILE).read_text())["host"] == socket.gethostname()
    assert "gpu-node-7" in capsys.readouterr().err
