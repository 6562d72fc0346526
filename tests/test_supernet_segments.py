"""Segment-aware weight sharing: an axis that reads a concat (or is split) takes, for segment i, the leading
channels of segment i of the widest; declarations checked against the pruner's channel tracer (an oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nas.errors import SpecError
from nas.models.blocks.common import conv, declared_segments
from nas.models.blocks.rfdb import RFDB
from nas.models.registry import BLOCKS, FUSIONS, HEADS, UPSAMPLERS
from nas.search.space import parse_space
from nas.search.supernet import Supernet, segment_index
from pruning.graph.ops import SELECTS, op_name, tensors
from pruning.graph.trace import Recorder, Tracer

WIDTHS = (8, 16)
SIZE = 16  # the ESA of RFDB / RLFB needs maps of at least 15x15
BLOCK_OPTIONS = {
    "imdb": [{}, {"cca": False}],
    "inverted_residual": [{"expand_ratio": 3, "norm": "none"}, {"expand_ratio": 2}],
    "residual": [{}, {"norm": "bn"}],
    "rfdb": [{}, {"shallow_residual": False}],
}
FUSION_OPTIONS = {"span_cat": [{}, {"outputs": [0, 1], "extras": [-1, 0]}]}
FUSION_BLOCK = {"span_cat": {"type": "spab"}}  # span_cat concatenates SPAB's extra output
DEFAULT_FUSION_BLOCK = {"type": "imdb"}  # itself segmented: fusion and block segments together


def configs(registry, options):
    return [{"type": name, **opts} for name in registry.names() for opts in options.get(name, [{}])]


BLOCK_CONFIGS = configs(BLOCKS, BLOCK_OPTIONS)
FUSION_CONFIGS = configs(FUSIONS, FUSION_OPTIONS)


def cfg_id(cfg):
    return "-".join(f"{v}" if k == "type" else f"{k}={v}" for k, v in cfg.items())


# --------------------------------------------------------------------------- the tracer as an oracle


class CutTracer(Tracer):
    """The pruner's channel tracer, also recording every channel select (split/chunk/narrow/slice), declared
    or not."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.cuts: list[tuple[np.ndarray, list[np.ndarray]]] = []

    def record(self, func, args, kwargs, out) -> None:
        super().record(func, args, kwargs, out)
        if op_name(func) in SELECTS and args and isinstance(args[0], torch.Tensor) and id(args[0]) in self.tmap:
            source = self.tmap[id(args[0])]
            pieces = [self.tmap.get(id(t)) for t in tensors(out)]
            if pieces and all(p is not None and len(p) < len(source) for p in pieces):
                self.cuts.append((source, pieces))


def runs(nodes: np.ndarray, base: list[int]) -> list[int]:
    """Lengths of the stretches of consecutive nodes of one tensor: the parts of a concatenation."""
    sizes = [1]
    for a, b in zip(nodes[:-1].tolist(), nodes[1:].tolist(), strict=True):
        if b == a + 1 and base[a] == base[b]:
            sizes[-1] += 1
        else:
            sizes.append(1)
    return sizes


def traced_segments(module: nn.Module, x: torch.Tensor) -> dict[str, dict[int, list[int]]]:
    """The segments the tracer sees: conv inputs reading a concat, conv outputs that are split or combined
    channel by channel with a concat (attention), as ``{tensor name: {axis: sizes}}``."""
    tracer = CutTracer(module)
    tracer.track(x, tracer.nodes.new(x.shape[1], "input"))
    handles = tracer.attach()
    try:
        with torch.no_grad(), Recorder(tracer):
            module(x)
    finally:
        for h in handles:
            h.remove()
    base, found = tracer.nodes.base, {}
    convs = {p: i for p, i in tracer.convs.items() if i["kind"] == "conv"}

    def put(path: str, axis: int, sizes: list[int]) -> None:
        entry = found.setdefault(f"{path}.weight", {})
        assert entry.get(axis, sizes) == sizes, (path, axis, entry, sizes)
        entry[axis] = sizes
        if axis == 0 and tracer.modules[path].bias is not None:
            found[f"{path}.bias"] = {0: sizes}

    for path, info in convs.items():
        if len(parts := runs(info["in"], base)) > 1:
            put(path, 1, parts)
    for source, pieces in tracer.cuts:
        producer = [p for p, i in convs.items() if np.array_equal(i["out"], source)]
        assert len(producer) == 1, (
            f"a channel select of a tensor that is no conv output: {tracer.nodes.bases[base[source[0]]]}"
        )
        where = {int(n): k for k, n in enumerate(source.tolist())}
        cuts = {0, len(source)} | {where[int(p[0])] for p in pieces} | {where[int(p[-1])] + 1 for p in pieces}
        cuts = sorted(cuts)
        put(producer[0], 0, [b - a for a, b in zip(cuts[:-1], cuts[1:], strict=True)])

    def roots(nodes: np.ndarray) -> list[int]:
        return [tracer.nodes.find(int(n)) for n in nodes.tolist()]

    tracked = {id(t): t for t in tracer.tmap.values()}.values()
    for path, info in convs.items():
        mine = roots(info["out"])
        for other in tracked:
            if len(other) == len(mine) and len(parts := runs(other, base)) > 1 and roots(other) == mine:
                put(path, 0, parts)
    return found


class FusionHarness(nn.Module):
    """A head conv and ``num_blocks`` conv 'blocks' (each with an extra output) feeding one fusion."""

    def __init__(self, cfg: dict, channels: int, num_blocks: int) -> None:
        super().__init__()
        self.head = conv(3, channels)
        self.blocks = nn.ModuleList(conv(channels, channels) for _ in range(num_blocks))
        self.extra = nn.ModuleList(conv(channels, channels) for _ in range(num_blocks))
        self.fusion = FUSIONS.build(cfg, channels=channels, num_blocks=num_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = h = self.head(x)
        outputs, extras = [], []
        for block, extra in zip(self.blocks, self.extra, strict=True):
            h = block(h)
            outputs.append(h)
            extras.append((extra(h),))
        return self.fusion(head, outputs, extras)


def oracle_cases():
    image = (1, 3, SIZE, SIZE)
    for w in WIDTHS:
        feat = (1, w, SIZE, SIZE)
        for cfg in BLOCK_CONFIGS:
            yield f"block-{cfg_id(cfg)}-w{w}", lambda c=cfg, w=w: BLOCKS.build(c, channels=w), feat
        for cfg in FUSION_CONFIGS:
            for n in (2, 3):
                yield f"fusion-{cfg_id(cfg)}-w{w}-n{n}", lambda c=cfg, w=w, n=n: FusionHarness(c, w, n), image
        for name in HEADS.names():
            yield f"head-{name}-w{w}", lambda n=name, w=w: HEADS.build({"type": n}, in_channels=3, channels=w), image
        for name in UPSAMPLERS.names():
            build = lambda n=name, w=w: UPSAMPLERS.build({"type": n}, channels=w, out_channels=3, scale=2)  # noqa: E731
            yield f"upsampler-{name}-w{w}", build, feat


ORACLE = list(oracle_cases())


@pytest.mark.parametrize(("build", "shape"), [c[1:] for c in ORACLE], ids=[c[0] for c in ORACLE])
def test_declared_segments_are_the_traced_concats_and_splits(build, shape):
    torch.manual_seed(0)
    module = build().eval()
    assert declared_segments(module) == traced_segments(module, torch.rand(shape))


def test_the_oracle_sees_the_known_concats():
    rfdb = BLOCKS.build({"type": "rfdb"}, channels=16)
    assert traced_segments(rfdb, torch.rand(1, 16, SIZE, SIZE)) == {"c5.weight": {1: [8, 8, 8, 8]}}
    imdb = traced_segments(BLOCKS.build({"type": "imdb"}, channels=16), torch.rand(1, 16, SIZE, SIZE))
    assert imdb["c1.weight"] == {0: [4, 12]} and imdb["c1.bias"] == {0: [4, 12]}
    assert imdb["c5.weight"] == imdb["cca.conv_du.0.weight"] == {1: [4, 4, 4, 4]}
    assert imdb["cca.conv_du.2.weight"] == {0: [4, 4, 4, 4]}


# --------------------------------------------------------------------------- supernet paths


def family_space(block: dict, fusion: dict | None = None, depths=(1,)):
    return parse_space(
        {
            "name": "segments",
            "scale": 2,
            "widths": list(WIDTHS),
            "depths": list(depths),
            "candidates": {"b": block},
            "fusions": {"f": fusion},
            "upsamplers": {"ps": {"type": "pixelshuffle"}},
            "global_skips": ["none"],
        }
    )


def narrow(space):
    depth = min(space.depths)
    return {"width": min(space.widths), "depth": depth, "layers": ["b"] * depth, "fusion": "f", "upsampler": "ps",
            "global_skip": "none"}  # fmt: skip


CASES = [pytest.param(family_space(cfg), id=f"block-{cfg_id(cfg)}") for cfg in BLOCK_CONFIGS] + [
    pytest.param(
        family_space(FUSION_BLOCK.get(cfg["type"], DEFAULT_FUSION_BLOCK), cfg, (2, 3)), id=f"fusion-{cfg_id(cfg)}"
    )
    for cfg in FUSION_CONFIGS
]


def expected_entries(small: list[int], big: list[int]) -> list[int]:
    """The widest axis positions a path axis reads, written out: the first small[i] of each big segment i."""
    positions, start = [], 0
    for i, size in enumerate(big):
        if i < len(small):
            positions.extend(start + k for k in range(small[i]))
        start += size
    return positions


def expected_map(net: Supernet, choice: dict) -> dict[str, tuple[str, list[list[int]]]]:
    """Path tensor name -> (shared name, per-axis widest positions), from the declarations."""
    model = net.extract(choice)
    mine, widest = declared_segments(model), declared_segments(net)
    out = {}
    for name, t in model.state_dict().items():
        shared = Supernet._shared_name(name, choice)
        axes = [
            expected_entries(mine[name][a], widest[shared][a]) if a in mine.get(name, {}) else list(range(n))
            for a, n in enumerate(t.shape)
        ]
        out[name] = (shared, axes)
    return out


@pytest.mark.parametrize("space", CASES)
def test_narrow_path_reads_the_leading_channels_of_each_widest_segment(space):
    net = Supernet(space)
    with torch.no_grad():
        total = 0
        for t in net.state_dict().values():  # distinct values: every path entry names its source entry
            t.copy_(torch.arange(total, total + t.numel(), dtype=t.dtype).view_as(t))
            total += t.numel()
    choice = narrow(space)
    shared = net.state_dict()
    path = net.path_tensors(choice)
    segmented = 0
    for name, (shared_name, axes) in expected_map(net, choice).items():
        big = shared[shared_name]
        want = big[np.ix_(*axes)] if axes else big
        assert torch.equal(path[name], want), name
        if any(a != list(range(len(a))) for a in axes):
            segmented += 1
        elif path[name].dim():
            assert path[name].data_ptr() == big.data_ptr(), f"{name}: a leading slice should be a view"
    declared = {n for n, axes in declared_segments(net.extract(choice)).items() if axes}
    assert segmented == len(declared)


def test_known_segment_positions():
    space = family_space({"type": "rfdb"})
    net = Supernet(space)
    (_, axes) = expected_map(net, narrow(space))["body.0.c5.weight"]
    assert axes[1] == [*range(0, 4), *range(8, 12), *range(16, 20), *range(24, 28)]
    assert segment_index([4, 4, 4, 4], [8, 8, 8, 8], "c5").tolist() == axes[1]
    assert segment_index([2, 6], [4, 12], "c1").tolist() == [0, 1, 4, 5, 6, 7, 8, 9]
    assert segment_index([8, 8], [16, 16, 16], "fusion").tolist() == [*range(8), *range(16, 24)]
    with pytest.raises(SpecError, match="do not fit"):
        segment_index([4, 4, 4], [8, 8], "x")
    with pytest.raises(SpecError, match="do not fit"):
        segment_index([9], [8, 8], "x")


@pytest.mark.parametrize("space", CASES)
def test_one_sgd_step_changes_exactly_the_mapped_entries(space):
    torch.manual_seed(0)
    net = Supernet(space).train()
    choice = narrow(space)
    mapped = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in net.named_parameters()}
    for shared_name, axes in expected_map(net, choice).values():
        if shared_name in mapped:
            mapped[shared_name][np.ix_(*axes) if axes else ()] = True
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    opt.zero_grad()
    net(torch.rand(2, 3, SIZE, SIZE), choice).square().mean().backward()
    opt.step()
    declared, mine = declared_segments(net), declared_segments(net.extract(choice))
    mine = {Supernet._shared_name(name, choice): axes for name, axes in mine.items()}
    spread = 0  # segmented axes whose step reached several segments of the widest
    for name, p in net.named_parameters():
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        changed = p.detach() != before[name]
        assert not (grad != 0)[~mapped[name]].any(), f"{name}: gradient outside the path's entries"
        assert torch.equal(changed, (grad != 0) & (before[name] - grad != before[name])), name
        assert not changed[~mapped[name]].any(), f"{name}: changed outside the path's entries"
        for axis, sizes in declared.get(name, {}).items():
            moved = (grad != 0).movedim(axis, 0).reshape(sum(sizes), -1).any(1)
            starts = np.cumsum([0, *sizes[:-1]])
            used = [s for s, pos in zip(starts, moved.split(sizes), strict=True) if pos.any()]
            # the gradient reaches every segment the path reads (a dead ReLU can starve a tiny CCA entirely)
            assert not moved.any() or len(used) == len(mine[name][axis]), f"{name} axis {axis}: reached {used}"
            spread += len(used) >= 2
    assert spread or not any(mine.values())


@pytest.mark.parametrize("space", CASES)
def test_extracted_model_equals_the_supernet_path(space):
    torch.manual_seed(0)
    net = Supernet(space).eval()
    x = torch.rand(1, 3, SIZE, SIZE)
    for width in WIDTHS:
        for depth in space.depths:
            choice = {**narrow(space), "width": width, "depth": depth, "layers": ["b"] * depth}
            with torch.no_grad():
                assert torch.equal(net(x, choice), net.extract(choice).eval()(x)), choice


def test_wrong_declaration_is_a_clear_error(monkeypatch):
    space = family_space({"type": "rfdb"})
    net = Supernet(space)
    monkeypatch.setattr(RFDB, "channel_segments", lambda self: {"c5.weight": {1: [1, 1]}})
    with pytest.raises(SpecError, match=r"c5.weight .*do not add up"):
        net(torch.rand(1, 3, SIZE, SIZE), narrow(space))
