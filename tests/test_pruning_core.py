"""Channel graph, gates, shrinking, cost model and importance of the pruner (pruning/)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from nas.errors import SpecError, SrnasError
from nas.measure.profiler import count_complexity, profile_model
from nas.models.network import build
from nas.models.pruned import PrunedConv2d
from nas.models.registry import BLOCKS, FUSIONS, HEADS, UPSAMPLERS
from nas.search.space import load_space
from nas.zoo import build_zoo_model, list_zoo, zoo_spec
from nas.zoo.resolve import load_model, save_model
from pruning import (
    GatedModel,
    TaylorImportance,
    analyze,
    cost_of,
    decode_indices,
    empty_convs,
    encode_indices,
    l1_importance,
    normalized,
    per_gate,
    shrink,
    unit_costs,
)

SIZE = (20, 22)  # LR input H, W of the equality checks (ESA needs >= 15)
MODES = ("fine", "coupled")

# tiny SRNets covering every registered block family, head, fusion and upsampler
FAMILY_SPECS = {
    "residual": {
        "blocks": [{"type": "residual"}, {"type": "residual", "norm": "bn", "act": "lrelu", "functional": False}],
        "upsampler": {"type": "pixelshuffle_steps"},
        "global_skip": "bilinear",
    },
    "inverted_residual": {
        "blocks": [
            {"type": "inverted_residual", "expand_ratio": 2},
            {"type": "inverted_residual", "expand_ratio": 1},
            {"type": "inverted_residual", "expand_ratio": 2, "norm": "none", "act": "prelu"},
        ],
        "head": {"type": "conv", "act": "prelu"},
        "fusion": {"type": "concat"},
        "body_conv": True,
        "body_skip": True,
    },
    "rfdb": {
        "blocks": [{"type": "rfdb"}, {"type": "rfdb", "shallow_residual": False}],
        "fusion": {"type": "concat"},
        "body_conv": True,
        "body_skip": True,
    },
    "rlfb": {"blocks": [{"type": "rlfb", "mid_channels": 6}, {"type": "rlfb"}], "body_conv": True, "body_skip": True},
    "imdb": {
        "blocks": [{"type": "imdb"}, {"type": "imdb", "cca": False}],
        "fusion": {"type": "concat"},
        "body_conv": True,
        "body_skip": True,
    },
    "scpa": {
        "blocks": [{"type": "scpa"}, {"type": "scpa", "branch": 3}],
        "body_conv": True,
        "body_skip": True,
        "upsampler": {"type": "upa", "up_channels": 6},
        "global_skip": "repeat",
    },
    "lattice": {
        "blocks": [{"type": "lattice"}, {"type": "lattice", "mid": 5, "cc_channels": 2}],
        "head": {"type": "lattice"},
        "fusion": {"type": "bfm"},
        "body_skip": True,
        "upsampler": {"type": "lattice_tail"},
        "input_range": 255,
    },
    "spab": {
        "blocks": [{"type": "spab", "mid_channels": 6}, {"type": "spab"}],
        "head": {"type": "span"},
        "fusion": {"type": "span_cat", "outputs": [0], "extras": [-1]},
    },
}


def tiny_spec(family: str, width: int = 8) -> dict:
    return {"name": f"tiny-{family}", "width": width, **FAMILY_SPECS.get(family, {"blocks": [{"type": family}] * 2})}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics/shifts and PReLU slopes, so a pruned channel's BN shift would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen))
    return model.eval()


def random_gates(gated: GatedModel, prune: float = 0.4, seed: int = 0) -> None:
    """Gate values in [0.5, 1.5], about ``prune`` of the entries masked, no conv left empty."""
    gen = torch.Generator().manual_seed(seed)
    n = gated.num_entries
    with torch.no_grad():
        gated.gate_values.copy_(0.5 + torch.rand(n, generator=gen))
        gated.gate_mask.copy_(torch.rand(n, generator=gen) > prune)
        for _ in range(20):
            bad = empty_convs(gated)
            if not bad:
                break
            for name in bad:  # re-keep one input and one output unit of each emptied conv
                conv = gated.graph.convs[name]
                for units in (conv.in_units, conv.out_units):
                    units = units[np.isin(units, gated.entry_unit)]
                    if len(units):
                        gated.gate_mask[torch.from_numpy(gated.entry_unit == units[seed % len(units)])] = True
    assert not empty_convs(gated)
    assert (gated.effective() == 0).any()


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def check_shrink(model: nn.Module, mode: str, graph=None, seed: int = 0, costs: bool = True) -> nn.Module:
    gated = GatedModel(model, mode, graph=graph)
    random_gates(gated, seed=seed)
    x = torch.rand(1, model.spec["in_channels"], *SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = gated(x)
        small, spec = shrink(gated)
        assert_same(small.eval()(x), expected)
    assert "pruned" in spec and spec["pruned"]["mode"] == mode
    assert not any(isinstance(m, GatedModel) for m in small.modules())
    if costs:
        counts = count_complexity(small, (3, *SIZE))
        for metric in ("params", "flops", "activations", "num_conv"):
            assert cost_of(gated, metric, (3, *SIZE)) == getattr(counts, metric), metric
    gated.remove()
    return small


# ---------------------------------------------------------------- channel graph


def _members(space) -> set[tuple[str, str]]:
    return {(m, r) for m, r, _, _ in space.members}


def test_graph_rfdn_concat_and_residual_spaces():
    g = analyze(build(tiny_spec("rfdb")))
    trunk = g.space_of("head.conv")
    assert trunk.size == 8 and not trunk.private and not trunk.frozen
    assert {("body.0.c1_r", "in"), ("body.0.c1_r", "out"), ("body_conv", "out"), ("upsampler.conv", "in")} <= _members(
        trunk
    )
    # distilled branches are private and land at their offsets of c5's input
    for i, name in enumerate(("c1_d", "c2_d", "c3_d", "c4")):
        space = g.space_of(f"body.0.{name}")
        assert space.private and ("body.0.c5", "in", 4 * i, 4) in space.members
    # global aggregation: fusion.conv reads both block outputs at offsets 0 and 8
    block0, block1 = g.space_of("body.0.c5"), g.space_of("body.1.c5")
    assert ("fusion.conv", "in", 0, 8) in block0.members and ("fusion.conv", "in", 8, 8) in block1.members
    assert g.space_of("body.0.esa.conv4") is block0  # x * sigmoid(conv4(...)) unifies them
    image = g.space_of("upsampler.conv")
    assert image.image and image.size == 3 and g.unit_channels[image.units].tolist() == [16] * 3
    assert not g.unknown_ops and not g.unit_frozen.any()
    assert "space" in g.summary() and "[image]" in g.summary()


def test_graph_imdn_split_and_channel_attention():
    g = analyze(build(tiny_spec("imdb", width=12)))
    c1, c2, c3, c4, c5 = (g.convs[f"body.0.{n}"] for n in ("c1", "c2", "c3", "c4", "c5"))
    d = 3  # distilled = width // 4
    np.testing.assert_array_equal(c2.in_units, c1.out_units[d:])  # split: the remainder feeds c2
    np.testing.assert_array_equal(
        c5.in_units, np.concatenate([c1.out_units[:d], c2.out_units[:d], c3.out_units[:d], c4.out_units])
    )
    # with CCA the distilled channels are multiplied by the attention (shared); the remainders stay private
    assert g.unit_shared[c1.out_units[:d]].all() and g.unit_private[c1.out_units[d:]].all()
    # without CCA (block 1) every distilled unit is private
    assert g.unit_private[g.convs["body.1.c1"].out_units].all()
    splits = [s for s in g.splits if s.module == "body.0"]
    assert [[len(p) for p in s.segments] for s in splits] == [[3, 9]] * 3


def test_graph_msrresnet_pixelshuffle_groups_and_residual_trunk():
    spec = tiny_spec("residual")
    spec["blocks"] = [{"type": "residual"}] * 2
    g = analyze(build(spec))
    step = g.convs["upsampler.steps.0.conv"].out_units.reshape(-1, 4)
    assert (step == step[:, :1]).all() and len(set(step[:, 0])) == 8  # r^2 = 4 channels per unit
    np.testing.assert_array_equal(g.convs["upsampler.steps.1.conv"].in_units, step[:, 0])
    trunk = g.convs["head.conv"].out_units
    for conv in ("body.0.conv1", "body.1.conv1", "upsampler.steps.0.conv"):
        np.testing.assert_array_equal(g.convs[conv].in_units, trunk)
    np.testing.assert_array_equal(g.convs["body.1.conv2"].out_units, trunk)
    assert g.unit_shared[trunk].all() and g.unit_private[g.convs["body.0.conv1"].out_units].all()
    assert g.unit_image[g.convs["upsampler.conv_last"].out_units].all()


def test_graph_pan_pixel_attention_is_shared():
    g = analyze(build(tiny_spec("scpa")))
    pa = "body.0.PAConv"
    np.testing.assert_array_equal(g.convs[f"{pa}.k2"].out_units, g.convs[f"{pa}.k3"].out_units)
    assert g.unit_shared[g.convs[f"{pa}.k3"].out_units].all()
    np.testing.assert_array_equal(
        g.convs["upsampler.stages.0.upconv"].out_units, g.convs["upsampler.stages.0.att.conv"].out_units
    )
    # global_skip 'repeat' is repeat_interleave over channels: unknown, frozen, never wrong
    assert "repeat_interleave" in g.summary()


class _Flip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x)).flip(1))


def test_unknown_channel_op_freezes_and_is_listed():
    g = analyze(_Flip())
    assert g.unit_frozen[g.convs["b"].out_units].all() and not g.unit_frozen[g.convs["a"].out_units].any()
    assert "flip" in g.summary() and g.unknown_ops["flip"] == 1
    gated = GatedModel(_Flip(), "fine", graph=g)
    assert "b:out" not in gated.gates and "c:in" not in gated.gates and "b:in" in gated.gates


class _Ops(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.c, self.d = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = self.a(x), self.b(x)
        p = p * torch.sigmoid(p.mean((2, 3), keepdim=True))  # attention on itself: p stays private
        q = q.to(p) + 1  # .to(other) does not tie q to p
        s = torch.softmax(q, dim=1)  # mixes channels: q is frozen
        return self.d(self.c(p)) + s.mean(1, keepdim=True)  # a [N, 1, H, W] term broadcasts


def test_channel_rules_on_common_ops():
    g = analyze(_Ops())
    a, b, c = (g.convs[n].out_units for n in "abc")
    assert g.unit_private[a].all() and g.unit_private[c].all() and not np.isin(a, b).any()
    assert g.unit_frozen[b].all() and any("softmax" in r for u in b for r in g.reasons[u])
    assert g.unit_image[g.convs["d"].out_units].all()
    gated = GatedModel(_Ops(), "coupled", graph=g)
    assert len(gated.gates) == 2  # a's and c's spaces


def test_analysis_failure_names_the_module():
    with pytest.raises(SrnasError, match=r"module 'body\.0\.esa'.*15x15"):
        analyze(build(tiny_spec("rfdb")), example_size=(12, 12))


# ---------------------------------------------------------------- gate -> shrink equality


def test_family_specs_cover_every_registered_component():
    specs = [tiny_spec(f) for f in BLOCKS.names()]
    used = {
        "heads": {s.get("head", {"type": "conv"})["type"] for s in specs},
        "fusions": {(s.get("fusion") or {}).get("type") for s in specs},
        "upsamplers": {s.get("upsampler", {"type": "pixelshuffle"})["type"] for s in specs},
    }
    assert set(HEADS.names()) <= used["heads"]
    assert set(FUSIONS.names()) <= used["fusions"]
    assert set(UPSAMPLERS.names()) <= used["upsamplers"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", BLOCKS.names())
def test_shrink_equals_gated_for_every_block_family(family, mode):
    model = randomize(build(tiny_spec(family)))
    small = check_shrink(model, mode)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", BLOCKS.names())
def test_gated_training_gradients_stay_finite(family, mode):
    """A gated-off channel is constant: statistics such as CCA's standard deviation must not turn its
    gradient into NaN (found pruning IMDN: sqrt'(0) = inf)."""
    gated = GatedModel(build(tiny_spec(family)).train(), mode)
    random_gates(gated, prune=0.5)
    gated.model(torch.rand(2, 3, *SIZE)).abs().mean().backward()
    for name, p in gated.model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("name", list_zoo())
def test_shrink_equals_gated_for_every_zoo_model(name):
    model = randomize(build(zoo_spec(name)), seed=1)
    graph = analyze(model)
    for mode in MODES:
        check_shrink(model, mode, graph=graph, seed=2, costs=False)


@pytest.mark.parametrize("name", ["rfdn", "nasnetbn", "span"])
def test_shrink_equals_gated_with_official_weights(name, reference):
    model = build_zoo_model(name, official=True).eval()
    graph = analyze(model)
    for mode in MODES:
        check_shrink(model, mode, graph=graph, seed=8, costs=False)


def test_shrink_searched_subnet():
    space = load_space("search_spaces/quick.yaml")
    spec = space.to_spec(
        {
            "width": 16,
            "depth": 4,
            "layers": ["rfdb", "ir_e6", "spab", "lattice"],
            "fusion": "concat",
            "upsampler": "upa",
            "global_skip": "bilinear",
        }
    )
    model = build(spec).eval()
    for mode in MODES:
        check_shrink(model, mode, seed=3)


# ---------------------------------------------------------------- what each mode keeps


def _prune_half(gated: GatedModel) -> None:
    for name, gate in gated.gates.items():
        keep = torch.ones(gate.size, dtype=torch.bool)
        keep[: gate.size // 2] = False
        gated.set_mask(name, keep)


def _widths(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Channels of each residual-block output and of the head output."""
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, out, n=n: seen.__setitem__(n, out.shape[1]))
        for n, m in (("head", model.head), *((f"body.{i}", b) for i, b in enumerate(model.body)))
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_fine_mode_keeps_skip_width_coupled_shrinks_it():
    spec = tiny_spec("residual")
    spec["blocks"] = [{"type": "residual"}] * 3
    model = build(spec).eval()
    x = torch.rand(1, 3, *SIZE)
    fine = GatedModel(model, "fine")
    _prune_half(fine)
    small, _ = shrink(fine)
    # every tensor on the skip path keeps all 8 channels; convs writing into it compute 4 and scatter them
    assert set(_widths(small, x).values()) == {8}
    head, last = small.head.conv, small.body[2].conv2
    for conv in (head, last):
        assert isinstance(conv, PrunedConv2d) and conv.out_channels == 4 and conv.scatter_width == 8
    conv1 = small.body[0].conv1  # private output: no scatter; reads half the trunk: gather
    assert conv1.out_channels == 4 and conv1.scatter_index is None and len(conv1.gather_index) == 4
    fine.remove()
    coupled = GatedModel(model, "coupled")
    _prune_half(coupled)
    small, spec = shrink(coupled)
    assert set(_widths(small, x).values()) == {4}  # the trunk itself shrinks
    assert not any(isinstance(m, PrunedConv2d) for m in small.modules())
    assert decode_indices(spec["pruned"]["convs"]["head.conv"]["out"], "test") == [4, 5, 6, 7]


def test_pixelshuffle_channels_pruned_in_groups_of_r2():
    model = build(tiny_spec("residual")).eval()
    for mode in MODES:
        gated = GatedModel(model, mode)
        unit_sizes = gated.graph.unit_channels[gated.graph.convs["upsampler.steps.0.conv"].out_units]
        assert (unit_sizes == 4).all()
        if mode == "fine":
            assert gated.gates["upsampler.steps.0.conv:out"].size == 8  # 32 output channels, tied by 4
        _prune_half(gated)
        small, _ = shrink(gated)
        assert small.upsampler.steps[0].conv.out_channels % 4 == 0
        assert small.upsampler.steps[0].conv.out_channels < 32
        gated.remove()


def test_zero_gate_removes_channel_behind_batchnorm_shift():
    """A private channel whose producer gate is 0 is dead even though its BatchNorm shift is not 0."""
    model = randomize(build({"width": 4, "blocks": [{"type": "inverted_residual", "expand_ratio": 2}]}))
    gated = GatedModel(model, "fine")
    keep = torch.ones(8, dtype=torch.bool)
    keep[:3] = False
    gated.set_mask("body.0.conv.0:out", keep)
    assert gated.graph.convs["body.0.conv.0"].norm == "body.0.conv.1"
    small, spec = shrink(gated)
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        assert_same(small(x), gated(x))
    assert small.body[0].conv[3].groups == 5 and small.body[0].conv[6].in_channels == 5
    assert spec["pruned"]["norms"]["body.0.conv.4"] == {"keep": "3-7"}


# ---------------------------------------------------------------- plain-data spec


def test_pruned_spec_round_trips_and_profiles_smaller(tmp_path):
    model = randomize(build(tiny_spec("rfdb")))
    gated = GatedModel(model, "fine")
    random_gates(gated, seed=4)
    small, spec = shrink(gated)
    folder = save_model(tmp_path / "pruned", small, spec)
    text = (folder / "spec.yaml").read_text()
    assert "pruned:" in text and "!!python" not in text
    assert yaml.safe_load(text)["pruned"]["mode"] == "fine"
    loaded = load_model(folder)
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        assert_same(loaded.model.eval()(x), gated(x))
    before, after = profile_model(model, (3, 32, 32)), profile_model(loaded.model, (3, 32, 32))
    assert after.params < before.params and after.activations < before.activations and after.flops < before.flops


def test_prune_a_coupled_pruned_model_again():
    model = randomize(build(tiny_spec("imdb", width=12)))
    first = GatedModel(model, "coupled")
    random_gates(first, prune=0.3, seed=5)
    small, spec = shrink(first)
    second = GatedModel(small, "coupled")
    random_gates(second, prune=0.3, seed=6)
    smaller, spec2 = shrink(second)
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        assert_same(smaller(x), second(x))
    rebuilt = build(spec2)  # the composed plan applies to the base model
    rebuilt.load_state_dict(smaller.state_dict())
    assert spec2["pruned"].get("splits")


def test_bad_plans_are_spec_errors():
    spec = tiny_spec("residual")
    with pytest.raises(SpecError, match="'pruned' must be a mapping"):
        build({**spec, "pruned": [1, 2]})
    bad = [
        ({"mode": "fine", "convs": {"head.nope": {"out": "0-3", "in": "0-2"}}}, "names nothing"),
        ({"mode": "fine", "convs": {"head.conv": {"out": "0-3,2", "in": "0-2"}}}, "increasing"),
        ({"mode": "fine", "convs": {"head.conv": {"out": "0-9", "in": "0-2"}}}, "out of range"),
        (
            {
                "mode": "fine",
                "convs": {"head.conv": {"out": "0-3", "in": "0-2", "scatter": {"width": 2, "index": "0-3"}}},
            },
            "width",
        ),
        ({"mode": "fine", "convs": {"head.conv": {"out": "x", "in": "0-2"}}}, "bad index"),
        ({"mode": "odd"}, "mode"),
        ({"mode": "fine", "extra": 1}, "unknown key"),
        ({"mode": "fine", "splits": {"head": [[1, 2]]}}, "cannot be resized|not a module"),
    ]
    for plan, match in bad:
        with pytest.raises(SpecError, match=match):
            build({**spec, "pruned": plan})


def test_index_encoding_round_trip():
    for items in ([], [0], [0, 1, 2, 5, 7, 8], list(range(50))):
        assert decode_indices(encode_indices(items), "t") == items
    assert encode_indices([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert decode_indices([1, 4], "t") == [1, 4]


def test_empty_conv_is_refused():
    gated = GatedModel(build(tiny_spec("residual")), "fine")
    gated.set_mask("body.0.conv1:out", torch.zeros(8, dtype=torch.bool))
    assert "body.0.conv1" in empty_convs(gated)
    with pytest.raises(SrnasError, match="at least one channel"):
        shrink(gated)


# ---------------------------------------------------------------- importance and cost


@pytest.mark.parametrize("mode", MODES)
def test_importance_scores_and_unit_costs(mode):
    model = randomize(build(tiny_spec("rlfb")))
    gated = GatedModel(model, mode)
    random_gates(gated, prune=0.2, seed=7)
    pruned = gated.effective() == 0
    taylor = TaylorImportance(gated)
    with pytest.raises(SrnasError, match="backward"):
        taylor.accumulate()
    for seed in range(2):
        x = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(seed))
        gated.zero_grad()
        gated(x).sub(x.repeat_interleave(4, 2).repeat_interleave(4, 3)).abs().mean().backward()
        taylor.accumulate()
    for scores in (taylor.scores(), l1_importance(gated)):
        assert scores.shape == (gated.num_entries,) and torch.isfinite(scores).all() and (scores >= 0).all()
        assert (scores[pruned] == 0).all() and (scores[~pruned] > 0).any()
    costs = unit_costs(gated, "flops", (3, 32, 32))
    live = gated.live_entries()
    assert (costs[~live] == 0).all() and (costs[live] > 0).all()
    ranked = normalized(taylor.scores(), costs)
    assert (ranked[pruned] == 0).all() and torch.isfinite(ranked[~pruned]).all()
    assert set(per_gate(gated, ranked)) == set(gated.gate_names())
    # the cost of one entry is what shrinking without it saves
    e = int(torch.nonzero(~pruned)[0])
    before = cost_of(gated, "flops", (3, 32, 32))
    with torch.no_grad():
        gated.gate_mask[e] = False
    assert before - cost_of(gated, "flops", (3, 32, 32)) == costs[e]
    assert cost_of(gated, "latency", (3, 32, 32)) > cost_of(gated, "flops", (3, 32, 32))
    with pytest.raises(SrnasError, match="unknown cost metric"):
        cost_of(gated, "speed")


def test_gates_api():
    gated = GatedModel(build(tiny_spec("residual")), "fine")
    assert "head.conv:out" in gated.gate_names() and "head.conv:in" not in gated.gate_names()  # image: no gates
    assert "upsampler.conv_last:out" not in gated.gate_names()
    gated.set_mask("head.conv:out", [True] * 7 + [False])
    assert gated.masks()["head.conv:out"].tolist() == [True] * 7 + [False]
    gated.set_gate("head.conv:out", torch.full((8,), 0.5))
    assert gated.gate("head.conv:out").tolist() == [0.5] * 8
    gated.set_mask("head.conv:out", [True] * 8)  # re-kept entries keep their value
    assert gated.masks()["head.conv:out"].all()
    with pytest.raises(SrnasError, match="needs 8 entries"):
        gated.set_mask("head.conv:out", [True])
    with pytest.raises(SrnasError, match="unknown gate"):
        gated.gate("nope")
    with pytest.raises(SrnasError, match="unknown pruning mode"):
        GatedModel(build(tiny_spec("residual")), "odd")
    coupled = GatedModel(build(tiny_spec("residual")), "coupled")
    assert all(name.startswith("space") for name in coupled.gate_names())
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        gated_out = coupled(x)  # all gates 1: the gated model is the model
        with coupled.hooks_disabled() as plain:
            assert_same(gated_out, plain(x))
    plain = coupled.remove()
    assert not plain._forward_hooks and not plain.head.conv._forward_hooks


def test_deepcopy_gates_its_own_copy():
    gated = GatedModel(build(tiny_spec("rlfb")), "coupled")
    x = torch.rand(1, 3, *SIZE)
    gated(x).sum().backward()  # no autograd state left on the module: deepcopy works after training steps
    twin = copy.deepcopy(gated)
    name = twin.gate_names()[0]
    twin.set_mask(name, torch.arange(twin.gates[name].size) % 2 == 0)
    with torch.no_grad():
        assert not torch.allclose(twin(x), gated(x))
        assert_same(shrink(twin)[0](x), twin(x))
        assert_same(shrink(gated)[0](x), gated(x))
