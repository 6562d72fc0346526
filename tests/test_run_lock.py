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


def test_file_lock_excludes_waits_and_leaves_no_file(tmp_path):
    import threading
    import time

    from nas.results.lock import file_lock

    path = tmp_path / ".index.csv.lock"
    inside: list[int] = []
    overlap: list[bool] = []

    def work(i: int) -> None:
        for _ in range(20):
            with file_lock(path):
                inside.append(i)
                overlap.append(len(inside) > 1)
                time.sleep(0.001)
                inside.remove(i)

    # threads each open their own fd, so flock excludes them as it does processes
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(overlap) == 80 and not any(overlap)
    assert not path.exists()  # removed on release


def test_file_lock_waiter_retries_when_the_file_it_locked_was_removed(tmp_path):
    from nas.results.lock import _flock_current, file_lock

    path = tmp_path / "x.lock"
    with file_lock(path):
        first_inode = path.stat().st_ino
        stale = os.open(path, os.O_RDWR)  # a waiter that opened the file before the holder released it
    # the holder has removed the file; flocking the old fd succeeds but it no longer names the file on disk
    assert not path.exists()
    import fcntl

    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert os.fstat(stale).st_ino == first_inode
    fd = _flock_current(path, blocking=False)  # a fresh locker gets the new file, not blocked by the stale fd
    assert fd is not None and os.fstat(fd).st_ino == path.stat().st_ino
    os.close(fd)
    os.close(stale)


def test_file_lock_is_released_by_kill_9(tmp_path):
    from nas.results.lock import file_lock

    path = tmp_path / "k.lock"
    code = (
        "import sys, time\nfrom nas.results.lock import file_lock\n"
        "with file_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.kill()
    proc.wait()
    assert path.exists()  # the dead holder's file is still there, but not locked
    with file_lock(path):
        pass
    assert not path.exists()
