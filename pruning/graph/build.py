"""``analyze(model)``: trace one forward pass, then assemble the union-find classes into a ``ChannelGraph``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nas.errors import SrnasError
from nas.models.pruned import declared_splits
from pruning.graph.ops import EXAMPLE_SIZE
from pruning.graph.trace import Recorder, Tracer
from pruning.graph.types import CallInfo, ChannelGraph, ConvInfo, NormInfo, Space, SplitInfo


def analyze(
    model: nn.Module, example_size: Sequence[int] = EXAMPLE_SIZE, in_channels: int | None = None
) -> ChannelGraph:
    """The channel graph of ``model`` from one forward pass on a ``1 x C x H x W`` random input."""
    if in_channels is None:
        spec = getattr(model, "spec", None)
        in_channels = spec["in_channels"] if isinstance(spec, dict) else 3
    height, width = example_size
    tracer = Tracer(model)
    x = torch.rand(1, in_channels, height, width, generator=torch.Generator().manual_seed(0))
    x = x.to(next((p.device for p in model.parameters()), torch.device("cpu")))
    tracer.track(x, tracer.nodes.new(in_channels, "image input"))
    tracer.nodes.mark_image(tracer.tmap[id(x)])
    flags = [(m, m.training) for m in model.modules()]
    handles = tracer.attach()
    try:
        model.eval()
        with torch.no_grad(), Recorder(tracer):
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - name the module that failed
        raise SrnasError(f"channel analysis failed in module {tracer.where!r}: {type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag
    if not isinstance(out, torch.Tensor) or id(out) not in tracer.tmap:
        raise SrnasError("channel analysis: the model output is not a tensor derived from the input")
    tracer.nodes.mark_image(tracer.tmap[id(out)])
    _check_declared_splits(tracer)
    return assemble(tracer)


def _check_declared_splits(tracer: Tracer) -> None:
    """A module whose forward did not make exactly the splits it declares gets them frozen, not resized."""
    seen: dict[str, list[list[int]]] = {}
    for module, _, pieces in tracer.splits:
        seen.setdefault(module, []).append([len(p) for p in pieces])
    bad = set()
    for module, sizes in seen.items():
        declared = [list(s) for s in declared_splits(tracer.modules[module]) or []]
        if sizes != declared:
            bad.add(module)
    for module, _, pieces in tracer.splits:
        if module in bad:
            reason = f"channel splits in {module or '(model)'} differ from its split_sizes"
            tracer.nodes.freeze(np.concatenate(pieces), reason)
    tracer.splits = [s for s in tracer.splits if s[0] not in bad]


def assemble(tracer: Tracer) -> ChannelGraph:
    """Units (union-find classes), their flags and spaces, and every conv, norm, split and call by unit."""
    nodes = tracer.nodes
    roots = np.array([nodes.find(i) for i in range(len(nodes.parent))], dtype=np.int64)
    uniq, unit_of_node = np.unique(roots, return_inverse=True)
    num_units = len(uniq)
    image = np.array([nodes.image.get(int(r), False) for r in uniq], dtype=bool)
    shared = np.array([nodes.shared.get(int(r), False) for r in uniq], dtype=bool)
    reasons = {i: list(nodes.reasons[int(r)]) for i, r in enumerate(uniq) if int(r) in nodes.reasons}
    frozen = np.zeros(num_units, dtype=bool)
    frozen[list(reasons)] = True
    unit_space = _unit_spaces(np.array(nodes.base, dtype=np.int64), len(nodes.bases), unit_of_node, num_units)
    spaces = [Space(i, []) for i in range(int(unit_space.max()) + 1 if num_units else 0)]
    for u in range(num_units):
        spaces[unit_space[u]].units.append(u)
    convs, norms = _modules(tracer, unit_of_node)
    _add_all_members(spaces, unit_space, convs, norms)
    for s in spaces:
        us = np.array(s.units)
        s.image = bool(image[us].any())
        s.frozen = bool(frozen[us].any())
        s.private = bool((~shared[us] & ~frozen[us] & ~image[us]).all())
    return ChannelGraph(
        num_units=num_units,
        unit_space=unit_space,
        unit_image=image,
        unit_frozen=frozen,
        unit_shared=shared,
        unit_channels=_unit_channels(convs, num_units),
        reasons=reasons,
        spaces=spaces,
        convs=convs,
        norms=norms,
        splits=[SplitInfo(m, i, [unit_of_node[p] for p in pieces]) for m, i, pieces in tracer.splits],
        calls=[CallInfo(p, k, i, unit_of_node[n] if n is not None else None) for p, k, i, n in tracer.calls],
        unknown_ops=tracer.unknown,
        module_outputs={path: unit_of_node[n] for path, n in tracer.outputs.items()},
    )


def _unit_spaces(base: np.ndarray, num_bases: int, unit_of_node: np.ndarray, num_units: int) -> np.ndarray:
    """Per unit: its space, the connected component of the tensors (bases) that share units, numbered by
    first appearance."""
    parent = list(range(num_bases))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_base: dict[int, int] = {}
    for node, u in enumerate(unit_of_node.tolist()):
        b = int(base[node])
        if u in first_base:
            ra, rb = find(first_base[u]), find(b)
            if ra != rb:
                parent[rb] = ra
        else:
            first_base[u] = b
    comp = [find(first_base[u]) for u in range(num_units)]
    order: dict[int, int] = {}
    for c in comp:
        order.setdefault(c, len(order))
    return np.array([order[c] for c in comp], dtype=np.int64)


def _modules(tracer: Tracer, unit_of_node: np.ndarray) -> tuple[dict[str, ConvInfo], dict[str, NormInfo]]:
    """Convs and per-channel modules by unit; a BatchNorm alone consuming a conv's output becomes its ``norm``
    (the conv's output gate goes after it); depthwise convs are per-channel modules too."""
    convs = {
        path: ConvInfo(path, info["kind"], unit_of_node[info["in"]], unit_of_node[info["out"]], calls=info["calls"])
        for path, info in tracer.convs.items()
    }
    norms = {p: NormInfo(p, info["kind"], unit_of_node[info["nodes"]]) for p, info in tracer.norms.items()}
    for path, tids in tracer.bn_inputs.items():
        if len(tids) != 1 or tids[0] not in tracer.conv_out_tensor or tracer.uses[tids[0]] != 1:
            continue
        conv = convs[tracer.conv_out_tensor[tids[0]]]
        if conv.kind == "conv" and conv.calls == 1 and tracer.modules[path].affine and conv.norm is None:
            conv.norm = path
    for conv in convs.values():
        if conv.kind == "depthwise":
            norms[conv.name] = NormInfo(conv.name, "depthwise", conv.out_units)
    return convs, norms


def _unit_channels(convs: dict[str, ConvInfo], num_units: int) -> np.ndarray:
    """Channels per unit as the producer sees them (r^2 for pixel-shuffle groups)."""
    unit_channels = np.ones(num_units, dtype=np.int64)
    for conv in convs.values():
        if conv.kind == "conv":
            unit_channels = np.maximum(unit_channels, np.bincount(conv.out_units, minlength=num_units))
    return unit_channels


def _add_all_members(
    spaces: list[Space], unit_space: np.ndarray, convs: dict[str, ConvInfo], norms: dict[str, NormInfo]
) -> None:
    for conv in convs.values():
        if conv.kind != "depthwise":
            _add_members(spaces, unit_space, conv.name, "in", conv.in_units)
            _add_members(spaces, unit_space, conv.name, "out", conv.out_units)
    for norm in norms.values():
        _add_members(spaces, unit_space, norm.name, "norm", norm.units)


def _add_members(spaces: list[Space], unit_space: np.ndarray, module: str, role: str, units: np.ndarray) -> None:
    """Runs of consecutive channels of one module side that lie in the same space."""
    sp = unit_space[units]
    start = 0
    for i in range(1, len(sp) + 1):
        if i == len(sp) or sp[i] != sp[start]:
            spaces[int(sp[start])].members.append((module, role, start, i - start))
            start = i
