"""The one atomic writer: complete files or none, unique temporary names, nothing left behind on failure."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from nas.io import atomic_json, atomic_path, atomic_safetensors, atomic_torch_save, atomic_write


def test_writes_text_bytes_json_torch_and_safetensors(tmp_path):
    atomic_write(tmp_path / "a" / "t.txt", "héllo")
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    atomic_json(tmp_path / "c.json", {"x": [1, 2]})
    atomic_torch_save(tmp_path / "d.pt", {"w": torch.arange(3)})
    atomic_safetensors(tmp_path / "e.safetensors", {"w": torch.ones(2, 2).t()})  # non-contiguous input
    from safetensors.torch import load_file

    assert (tmp_path / "a" / "t.txt").read_text() == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    assert torch.equal(torch.load(tmp_path / "d.pt", weights_only=True)["w"], torch.arange(3))
    assert torch.equal(load_file(tmp_path / "e.safetensors")["w"], torch.ones(2, 2))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_concurrent_writers_never_share_a_temporary(tmp_path):
    target = tmp_path / "shared.txt"
    names: list[str] = []
    barrier = threading.Barrier(4)

    def write(i: int) -> None:
        with atomic_path(target) as tmp:
            names.append(tmp.name)
            barrier.wait(timeout=10)  # all four temporaries exist at once
            tmp.write_text(str(i) * 1000)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 4
    text = target.read_text()
    assert len(text) == 1000 and len(set(text)) == 1  # one whole write won, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_name_host_and_pid(tmp_path):
    import os

    from nas.io import _TEMP, _host

    with atomic_path(tmp_path / "w.safetensors") as tmp:
        m = _TEMP.match(tmp.name)
        assert m and m["target"] == "w.safetensors" and m["host"] == _host() and int(m["pid"]) == os.getpid()


def test_stale_temporaries_of_dead_writers_are_removed_others_kept(tmp_path):
    import os

    from nas.io import _host, remove_stale_temps, temp_prefix

    dead = _dead_pid()
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / f".a.json~{_host()}~{dead}~x1.tmp", tmp_path / "sub" / f".b.pt~{_host()}~{dead}~y2.tmp"]
    mine = tmp_path / f"{temp_prefix('c.csv')}z3.tmp"  # this (live) process's
    other_host = tmp_path / f".d.csv~elsewhere-node~{dead}~q4.tmp"  # cannot be checked from here
    unrelated = [tmp_path / ".hidden.tmp", tmp_path / "data.tmp"]
    for p in [*stale, mine, other_host, *unrelated]:
        p.write_text("half")
    assert int(str(mine.name).split("~")[2]) == os.getpid()
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in [mine, other_host, *unrelated]) and not any(p.exists() for p in stale)
    sub_stale = tmp_path / "sub" / f".e~{_host()}~{dead}~r5.tmp"
    sub_stale.write_text("")
    assert remove_stale_temps(tmp_path, recursive=False) == [] and sub_stale.exists()
    assert remove_stale_temps(tmp_path / "missing") == []


def test_a_killed_writer_leaves_a_recognisable_temporary_that_the_next_start_removes(tmp_path):
    import signal
    import subprocess
    import sys

    from nas.io import stale_temps

    code = (
        "import sys, time\nfrom nas.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_text('half')\n    print(tmp, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out.json")], stdout=subprocess.PIPE, text=True)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.exists() and stale_temps(tmp_path) == []  # its writer is alive
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert stale_temps(tmp_path) == [tmp]
    from nas.results.lock import run_lock

    with run_lock(tmp_path):  # a command starting on the folder
        assert not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
