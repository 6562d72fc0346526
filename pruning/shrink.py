"""``shrink(gated)``: the physically smaller model a gated model describes, with its output unchanged.

Which channels survive (``pruning.gates`` defines the semantics):

- a unit is *materialised* when it is alive (``GatedModel.unit_alive``): coupled mode drops zero-gated units
  from every tensor; fine mode drops dead private units and keeps shared ones at full width;
- a conv computes the materialised output channels whose output gate is nonzero; when that is fewer than the
  materialised ones (a shared target in fine mode) it *scatters* them into a zero tensor of the full width
  (after its BatchNorm when one alone follows it);
- a conv reads the materialised input channels whose input gate is nonzero (fine mode), *gathering* them when
  that is a subset; BatchNorm, PReLU and depthwise convs keep the materialised channels of their units;
- gate values are folded into the weights: an output gate scales the conv's rows and bias (or its BatchNorm's
  weight and bias), a fine-mode input gate scales its input columns. No gate remains.

The result is ``nas.models.network.build(spec)`` of the base spec plus a ``pruned`` plan (``nas.models.pruned``), with
the folded weights loaded strictly, so ``nas.zoo.resolve.save_model`` / ``load_model`` round-trip it.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.errors import SrnasError
from nas.models.pruned import decode_indices, encode_indices
from pruning.gates import GatedModel


def layout(gated: GatedModel) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """(effective gates + trailing 1, alive units, per conv: out_alive/out_keep/in_alive/in_keep bool arrays)."""
    eff = gated.effective().cpu().double().numpy()
    nz = eff != 0
    alive = gated.unit_alive(nz)
    ext = np.append(eff, 1.0)
    ext_nz = ext != 0
    convs = {}
    for conv in gated.graph.convs.values():
        if conv.kind != "conv":
            continue
        port = gated.ports[conv.name]
        out_alive = alive[conv.out_units]
        in_alive = alive[conv.in_units]
        in_keep = in_alive & ext_nz[port["in"]] if gated.mode == "fine" else in_alive
        convs[conv.name] = {
            "out_alive": out_alive,
            "out_keep": out_alive & ext_nz[port["out"]],
            "in_alive": in_alive,
            "in_keep": in_keep,
        }
    return ext, alive, convs


def empty_convs(gated: GatedModel) -> list[str]:
    """Convs that would keep no input or no output channel (``shrink`` refuses those patterns)."""
    _, alive, convs = layout(gated)
    bad = [name for name, lay in convs.items() if not lay["out_keep"].any() or not lay["in_keep"].any()]
    bad += [c.name for c in gated.graph.convs.values() if c.kind == "depthwise" and not alive[c.out_units].any()]
    return bad


def _positions(keep: np.ndarray, within: np.ndarray) -> list[int]:
    """Positions of the ``keep`` channels among the ``within`` ones (both boolean over the same channels)."""
    return np.flatnonzero(keep[within]).tolist()


def make_plan(gated: GatedModel) -> dict[str, Any]:
    """The ``pruned`` plan (plain data) of the gated model's current gates, relative to its own modules."""
    empty = empty_convs(gated)
    if empty:
        raise SrnasError(
            f"the gates remove every input or output channel of {len(empty)} conv(s): {', '.join(empty[:6])}; "
            "keep at least one channel per conv"
        )
    _, alive, layouts = layout(gated)
    graph = gated.graph
    convs: dict[str, Any] = {}
    norms: dict[str, Any] = {}
    for conv in graph.convs.values():
        if conv.kind == "depthwise":
            keep = alive[conv.out_units]
            if not keep.all():
                idx = encode_indices(np.flatnonzero(keep))
                convs[conv.name] = {"out": idx, "in": idx}
        if conv.kind != "conv":
            continue
        lay = layouts[conv.name]
        out_keep, out_alive, in_keep, in_alive = lay["out_keep"], lay["out_alive"], lay["in_keep"], lay["in_alive"]
        entry: dict[str, Any] = {
            "out": encode_indices(np.flatnonzero(out_keep)),
            "in": encode_indices(np.flatnonzero(in_keep)),
        }
        scatter = None
        if (out_keep != out_alive).any():
            scatter = {"width": int(out_alive.sum()), "index": encode_indices(_positions(out_keep, out_alive))}
        if (in_keep != in_alive).any():
            entry["gather"] = encode_indices(_positions(in_keep, in_alive))
        if conv.norm is not None:
            if scatter is not None or not out_keep.all():
                norms[conv.norm] = {"keep": entry["out"], **({"scatter": scatter} if scatter else {})}
        elif scatter is not None:
            entry["scatter"] = scatter
        if "scatter" in entry or "gather" in entry or not out_keep.all() or not in_keep.all():
            convs[conv.name] = entry
    for norm in graph.norms.values():
        if norm.kind == "depthwise" or norm.name in norms or any(c.norm == norm.name for c in graph.convs.values()):
            continue
        keep = alive[norm.units]
        if not keep.all():
            norms[norm.name] = {"keep": encode_indices(np.flatnonzero(keep))}
    splits: dict[str, list[list[int]]] = {}
    changed: set[str] = set()
    for split in graph.splits:
        sizes = [int(alive[seg].sum()) for seg in split.segments]
        splits.setdefault(split.module, []).append(sizes)
        if sizes != [len(seg) for seg in split.segments]:
            changed.add(split.module)
    plan: dict[str, Any] = {"mode": gated.mode, "convs": convs, "norms": norms}
    splits = {m: s for m, s in splits.items() if m in changed}
    if splits:
        plan["splits"] = splits
    return plan


def _folded_state(gated: GatedModel, plan: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The wrapped model's state dict, sliced to the plan and with every gate folded into the weights."""
    model = gated.model
    modules = dict(model.named_modules())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ext = torch.cat([gated.effective(), gated.effective().new_ones(1)]).cpu()
    graph = gated.graph
    for conv in graph.convs.values():
        if conv.kind == "fixed":
            continue
        module = modules[conv.name]
        entry = plan["convs"].get(conv.name, {})
        out = decode_indices(entry["out"], conv.name) if entry else list(range(module.out_channels))
        inp = decode_indices(entry["in"], conv.name) if entry else list(range(module.in_channels))
        weight = module.weight.detach().cpu()
        bias = module.bias.detach().cpu() if module.bias is not None else None
        weight = weight[out] if conv.kind == "depthwise" else weight[out][:, inp]
        bias = bias[out] if bias is not None else None
        if conv.kind == "conv":
            port = gated.ports[conv.name]
            if conv.norm is None:
                scale = ext[torch.from_numpy(port["out"][out])].to(weight.dtype)
                weight = weight * scale.view(-1, 1, 1, 1)
                bias = bias * scale if bias is not None else None
            else:
                _fold_norm(state, modules[conv.norm], conv.norm, out, ext[torch.from_numpy(port["out"][out])])
            if gated.mode == "fine":
                weight = weight * ext[torch.from_numpy(port["in"][inp])].to(weight.dtype).view(1, -1, 1, 1)
        state[f"{conv.name}.weight"] = weight
        if bias is not None:
            state[f"{conv.name}.bias"] = bias
    fused = {c.norm for c in graph.convs.values() if c.norm is not None}
    for name, entry in plan["norms"].items():
        if name not in fused:
            keep = decode_indices(entry["keep"], name)
            _fold_norm(state, modules[name], name, keep, None)
    return state


def _fold_norm(state: dict, module: nn.Module, name: str, keep: list[int], scale: torch.Tensor | None) -> None:
    """Slice a BatchNorm/PReLU's per-channel tensors to ``keep``; fold an output gate into BN weight and bias."""
    keys = ("weight",) if isinstance(module, nn.PReLU) else ("weight", "bias", "running_mean", "running_var")
    for key in keys:
        full = f"{name}.{key}"
        if full not in state:
            continue
        value = state[full][keep]
        if scale is not None and key in ("weight", "bias"):
            value = value * scale.to(value.dtype)
        state[full] = value


def compose_plans(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The plan on the base model of pruning a pruned model (``old``) again with ``new``.

    Supported when ``old`` has no scatter/gather (coupled pruning, or fine pruning that only shrank private
    channels): indices of ``new`` are mapped through ``old``'s kept channels.
    """
    for section in ("convs", "norms"):
        for path, entry in (old.get(section) or {}).items():
            if entry.get("scatter") or entry.get("gather"):
                raise SrnasError(
                    f"cannot prune again a model whose plan scatters/gathers channels ({section} {path}); "
                    "prune the original model instead"
                )
    out = {
        "mode": new["mode"],
        "convs": copy.deepcopy(old.get("convs") or {}),
        "norms": copy.deepcopy(old.get("norms") or {}),
    }
    for path, entry in new["convs"].items():
        prev = out["convs"].get(path)
        merged = dict(entry)
        if prev is not None:
            for key in ("out", "in"):
                base = decode_indices(prev[key], path)
                merged[key] = encode_indices([base[i] for i in decode_indices(entry[key], path)])
        out["convs"][path] = merged
    for path, entry in new["norms"].items():
        prev = out["norms"].get(path)
        merged = dict(entry)
        if prev is not None:
            base = decode_indices(prev["keep"], path)
            merged["keep"] = encode_indices([base[i] for i in decode_indices(entry["keep"], path)])
        out["norms"][path] = merged
    splits = dict(old.get("splits") or {})
    splits.update(new.get("splits") or {})
    if splits:
        out["splits"] = splits
    return out


def shrink(gated: GatedModel) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, spec)``: the pruned network (no gates, no masks) and its spec (base spec + ``pruned`` plan).

    ``model(x)`` equals ``gated(x)`` up to float rounding (eval mode; in train mode BatchNorm batch statistics
    are per channel too, so it holds as well).
    """
    from nas.models.checkpoint import load_weights
    from nas.models.network import build

    base_spec = getattr(gated.model, "spec", None)
    if not isinstance(base_spec, dict):
        raise SrnasError("shrink needs an SRNet (a model built from a spec by nas.models.network.build)")
    plan = make_plan(gated)
    state = _folded_state(gated, plan)
    spec = copy.deepcopy(base_spec)
    spec["pruned"] = compose_plans(spec["pruned"], plan) if spec.get("pruned") else plan
    model = build(spec)  # the base model, then the plan's surgery
    load_weights(model, state, source="pruned weights")
    device = next((p.device for p in gated.model.parameters()), torch.device("cpu"))
    model.to(device)
    model.train(gated.model.training)
    return model, spec
