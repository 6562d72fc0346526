import pickle
from collections import OrderedDict

import pytest
import torch
from torch import nn

from nas.errors import CheckpointError
from nas.models.checkpoint import load_weights, read_state_dict, rename_keys, save_weights


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1))


def test_unwraps_wrappers_and_module_prefix(tmp_path):
    sd = _net().state_dict()
    path = tmp_path / "wrapped.pth"
    torch.save({"net": OrderedDict((f"module.{k}", v) for k, v in sd.items()), "epoch": 7}, path)
    out = read_state_dict(path)
    assert set(out) == set(sd)


def test_safetensors_round_trip(tmp_path):
    net = _net()
    save_weights(net, tmp_path / "w.safetensors")
    other = _net()
    load_weights(other, read_state_dict(tmp_path / "w.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values(), strict=True))


def test_rename_rules_with_index_offset():
    sd = {"B1.c1.weight": torch.zeros(1), "B4.c1.bias": torch.zeros(1), "fea_conv.weight": torch.zeros(1)}
    rules = [
        {"pattern": r"^B(\d+)\.", "replace": "body.{1}.", "offset": -1},
        {"pattern": r"^fea_conv\.", "replace": "head.conv."},
    ]
    assert set(rename_keys(sd, rules)) == {"body.0.c1.weight", "body.3.c1.bias", "head.conv.weight"}
    with pytest.raises(CheckpointError, match="same key"):
        rename_keys({"a.x": torch.zeros(1), "b.x": torch.zeros(1)}, [{"pattern": "^[ab]", "replace": "c"}])


def test_mismatch_lists_missing_unexpected_and_misshaped():
    net = _net()
    sd = dict(net.state_dict())
    sd.pop("1.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 3, 3, 3)
    with pytest.raises(CheckpointError) as err:
        load_weights(net, sd, source="ckpt.pth")
    msg = str(err.value)
    assert "ckpt.pth does not match" in msg
    assert "1 missing: 1.bias" in msg and "1 unexpected: extra.weight" in msg
    assert "0.weight: checkpoint (5, 3, 3, 3) vs model (4, 3, 3, 3)" in msg


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    truncated = tmp_path / "trunc.pth"
    torch.save(_net().state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_state_dict(truncated)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(print))  # arbitrary object: refused by weights_only
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_state_dict(evil)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(CheckpointError, match="no tensors"):
        read_state_dict(empty)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        read_state_dict(bad_st)
