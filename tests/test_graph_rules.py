"""The channel rules of ``pruning.graph``, one pattern per test, on tiny hand-made modules (as Torch-Pruning
tests its dependency graph), plus the block-declaration protocol (``image_space``, ``split_sizes``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nas.errors import SpecError
from nas.models.pruned import apply_plan, declared_splits
from pruning import GatedModel, analyze


def conv(cin: int, cout: int, k: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = conv(3, 4), conv(3, 5), conv(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1))


def test_concat_places_each_input_at_its_offset():
    g = analyze(Concat())
    a, b, c = (g.convs[n] for n in "abc")
    np.testing.assert_array_equal(c.in_units, np.concatenate([a.out_units, b.out_units]))
    assert g.unit_private[a.out_units].all() and g.unit_private[b.out_units].all()
    assert g.space_of("a") is not g.space_of("b")  # a concat links no channels
    assert ("c", "in", 0, 4) in g.space_of("a").members and ("c", "in", 4, 5) in g.space_of("b").members


class Split(nn.Module):
    """``torch.split`` / ``chunk`` on channels; with ``declare`` the module declares its split sizes."""

    def __init__(self, declare: bool, op: str = "split", sizes: tuple[int, int] = (2, 4)) -> None:
        super().__init__()
        self.a, self.b, self.c = conv(3, 6), conv(2, 3), conv(4, 3)
        self.op = op
        if declare:
            self.split_sizes = [sizes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if self.op == "chunk":
            p, q = torch.chunk(y, 2, dim=1)
            return self.b(p[:, :2]) + self.c(torch.cat([q, q[:, :1]], 1))
        sizes = self.split_sizes[0] if hasattr(self, "split_sizes") else (2, 4)
        p, q = torch.split(y, sizes, dim=1)
        return self.b(p) + self.c(q)


def test_split_without_declaration_freezes_its_channels():
    g = analyze(Split(declare=False))
    a = g.convs["a"].out_units
    assert g.unit_frozen[a].all() and not g.splits
    assert any("declares no split_sizes" in r for u in a for r in g.reasons[u])


def test_declared_split_is_recorded_and_prunable():
    g = analyze(Split(declare=True))
    a, b, c = (g.convs[n] for n in "abc")
    assert not g.unit_frozen[a.out_units].any()
    (split,) = g.splits
    assert split.module == "" and [len(s) for s in split.segments] == [2, 4]
    np.testing.assert_array_equal(b.in_units, a.out_units[:2])
    np.testing.assert_array_equal(c.in_units, a.out_units[2:])
    assert "a:out" in GatedModel(Split(declare=True), "fine", graph=g).gates


def test_split_that_differs_from_its_declaration_is_frozen():
    module = Split(declare=True)
    module.split_sizes = [(2, 4), (2, 4)]  # declares two split calls; its forward makes one
    g = analyze(module)
    a = g.convs["a"].out_units
    assert g.unit_frozen[a].all() and not g.splits
    assert any("differ from its split_sizes" in r for u in a for r in g.reasons[u])


def test_chunk_and_channel_slices_freeze():
    g = analyze(Split(declare=False, op="chunk"))
    assert g.unit_frozen[g.convs["a"].out_units].all()
    assert g.unknown_ops["channel chunk"] == 1 and g.unknown_ops["channel getitem"] >= 1


def test_apply_plan_sets_declared_split_sizes():
    module = Split(declare=True)
    assert declared_splits(module) == [(2, 4)]
    apply_plan(module, {"mode": "coupled", "splits": {"": [[1, 3]]}})
    assert module.split_sizes == [(1, 3)]
    with pytest.raises(SpecError, match=r"splits 1 time\(s\) into \[2\] pieces"):
        apply_plan(module, {"splits": {"": [[1, 1, 2]]}})
    with pytest.raises(SpecError, match="not a module whose channel splits can be resized"):
        apply_plan(Concat(), {"splits": {"": [[1, 3]]}})


class Shuffle(nn.Module):
    def __init__(self, r: int = 2) -> None:
        super().__init__()
        self.a, self.b = conv(3, 3 * r * r, 3), conv(3, 3, 3)
        self.shuffle = nn.PixelShuffle(r)
        self.mid = conv(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.mid(self.shuffle(self.a(x))))


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_groups_of_r_squared(r):
    g = analyze(Shuffle(r))
    groups = g.convs["a"].out_units.reshape(-1, r * r)
    assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 3
    assert g.unit_channels[groups[:, 0]].tolist() == [r * r] * 3
    np.testing.assert_array_equal(g.convs["mid"].in_units, groups[:, 0])


class Attention(nn.Module):
    """``x * sigmoid(w(mean(x)))`` (channel attention [N, C, 1, 1]) and ``x * s`` with s [N, 1, H, W]."""

    def __init__(self, spatial: bool) -> None:
        super().__init__()
        self.a, self.c = conv(3, 4), conv(4, 3)
        self.w = conv(4, 1) if spatial else conv(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        s = self.w(y) if self.w.out_channels == 1 else self.w(y.mean((2, 3), keepdim=True))
        return self.c(y * torch.sigmoid(s))


def test_channel_attention_product_is_shared():
    g = analyze(Attention(spatial=False))
    a, w = g.convs["a"].out_units, g.convs["w"].out_units
    np.testing.assert_array_equal(a, w)
    assert g.unit_shared[a].all() and not g.unit_frozen[a].any()


def test_spatial_attention_broadcasts_over_channels():
    g = analyze(Attention(spatial=True))
    a, w = g.convs["a"].out_units, g.convs["w"].out_units
    assert not np.isin(w, a).any() and g.unit_private[a].all()


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head, self.body1, self.body2, self.tail = conv(3, 4), conv(4, 6, 3), conv(6, 4, 3), conv(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(h + self.body2(torch.relu(self.body1(h))))


def test_residual_add_couples_and_shares_the_trunk():
    g = analyze(Residual())
    trunk = g.convs["head"].out_units
    np.testing.assert_array_equal(g.convs["body2"].out_units, trunk)
    np.testing.assert_array_equal(g.convs["tail"].in_units, trunk)
    assert g.unit_shared[trunk].all() and g.unit_private[g.convs["body1"].out_units].all()
    fine, coupled = GatedModel(Residual(), "fine", graph=g), GatedModel(Residual(), "coupled", graph=g)
    assert {"body1:out", "body2:out"} <= set(fine.gates)  # fine: body2 may stop writing to trunk channels
    assert len(coupled.gates) == 2  # coupled: the trunk and body1's output, one gate each


class Reduce(nn.Module):
    def __init__(self, dims: tuple[int, ...], op: str) -> None:
        super().__init__()
        self.a, self.b = conv(3, 4), conv(4, 3)
        self.dims, self.op = dims, op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        stat = getattr(torch, self.op)(y, dim=self.dims, keepdim=True)
        return self.b(y - stat)


@pytest.mark.parametrize("op", ["mean", "std", "var", "amax"])
def test_spatial_reductions_act_per_channel(op):
    g = analyze(Reduce((2, 3), op))
    a = g.convs["a"].out_units
    assert not g.unit_frozen[a].any() and g.unit_private[a].all()


@pytest.mark.parametrize("op", ["mean", "std", "sum"])
def test_reductions_over_channels_freeze(op):
    g = analyze(Reduce((1,), op))
    a = g.convs["a"].out_units
    assert g.unit_frozen[a].all() and any(f"{op} over dims [1]" in r for u in a for r in g.reasons[u])


class ImageLayer(nn.Conv2d):
    image_space = True  # what LatticeNet's MeanShift declares

    def __init__(self) -> None:
        super().__init__(3, 3, 1)


class WithImageLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shift, self.a, self.b = ImageLayer(), conv(3, 4), conv(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(self.shift(x)))


def test_image_space_layer_keeps_the_image():
    g = analyze(WithImageLayer())
    shift = g.convs["shift"]
    assert shift.kind == "fixed" and g.unit_image[shift.out_units].all()
    np.testing.assert_array_equal(g.convs["a"].in_units, shift.in_units)
    plain = WithImageLayer()
    plain.shift = conv(3, 3)  # the same layer without the declaration is an ordinary prunable conv
    assert analyze(plain).convs["shift"].kind == "conv"


def test_pruner_knows_no_block_family_by_name():
    root = Path(__file__).resolve().parents[1] / "pruning"
    pattern = re.compile(r"lattice|imdb|MeanShift", re.IGNORECASE)
    hits = [
        f"{p.relative_to(root)}:{i}"
        for p in root.rglob("*.py")
        for i, line in enumerate(p.open(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits
