"""The one atomic writer: complete files or none, unique temporary names, nothing left behind on failure."""

from __future__ import annotations

import json
import threading

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
