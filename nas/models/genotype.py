"""Readable one-line genotypes and text block diagrams of architecture specs (display only).

A genotype has up to six ``|``-separated fields (timm style: each component is a short name plus ``_``-joined
abbreviated options)::

    w32 d4 | rfdb rfdb scpa ir_e6 | cat+conv+res | ps4 | +bilinear | pruned coupled 74%ch w24
    width, depth [, h:head] | blocks (runs of 3+ as tok*n) | fusion, conv (body_conv), res (body_skip) joined by +
        | upsampler + scale | global skip (omitted when none) | pruning plan (omitted when none)

The pruning field summarises a spec's ``pruned`` plan (``nas.models.pruned``; the other fields describe the base
model it applies to): the plan's mode, the share of the base model's conv output channels the pruned model
keeps (rounded to a percent, never 100% when a channel is gone) and, when the plan narrows it, the trunk width
(the width of the head's output, which ``body_skip`` adds back). They are counted on the model the spec builds
(on the meta device: no weights, no data); a spec that cannot be built shows the number of convs the plan
resizes instead (``pruned fine 12conv``). ``diagram`` shows every stage's pruned width and the same summary.

Any block ``type`` works: known types get a short name (``BLOCK_NAMES``), options a short key (``KEY_NAMES``,
else the initials of a multi-word key) and their value: ``e6``, ``k5``, ``bn``, ``lrelu``, ``ns0.2``, ``cca``
(true), ``nosr`` (false). The spec itself stays the authority; a genotype is for reading, not parsing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.models.spec import DEFAULTS

BLOCK_NAMES = {
    "residual": "res",
    "inverted_residual": "ir",
    "rfdb": "rfdb",
    "rlfb": "rlfb",
    "scpa": "scpa",
    "spab": "spab",
    "imdb": "imdb",
    "lattice": "lat",
}
FUSION_NAMES = {"concat": "cat", "bfm": "bfm", "span_cat": "spancat"}
UPSAMPLER_NAMES = {"pixelshuffle": "ps", "pixelshuffle_steps": "pss", "upa": "upa", "lattice_tail": "lattail"}
HEAD_NAMES = {"conv": "conv", "lattice": "lat", "span": "span"}
KEY_NAMES = {
    "expand_ratio": "e",
    "kernel_size": "k",
    "mid_channels": "m",
    "mid": "m",
    "hidden": "h",
    "distilled": "dc",
    "esa_channels": "esa",
    "branch": "b",
    "negative_slope": "ns",
    "cc_channels": "cc",
    "up_channels": "u",
    "shallow_residual": "sr",
    "functional": "fn",
    "bias": "bias",
    "cca": "cca",
    "act": "act",
    "norm": "norm",
    "rgb_range": "rgb",
    "img_range": "img",
    "outputs": "o",
    "extras": "x",
}
VALUE_KEYS = {"act", "norm"}  # options shown by their value alone (``bn``, ``lrelu``)


def _key(name: str) -> str:
    """KEY_NAMES, else the initials of a multi-word key (``some_option`` -> ``so``), else the key itself."""
    parts = [p for p in str(name).split("_") if p]
    return KEY_NAMES.get(name) or ("".join(p[0] for p in parts) if len(parts) > 1 else str(name))


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "-".join(_value(v) for v in value)
    if isinstance(value, Mapping):
        return "-".join(f"{_key(k)}{_value(v)}" for k, v in value.items())
    return str(value).replace(" ", "").replace("|", "/")


def _option(key: str, value: Any) -> str:
    abbrev = _key(key)
    if value is None or (key in VALUE_KEYS and value == "none"):
        return f"no{abbrev}"
    if isinstance(value, bool):
        return abbrev if value else f"no{abbrev}"
    if key in VALUE_KEYS:
        return _value(value)
    return f"{abbrev}{_value(value)}"


def component(cfg: Mapping[str, Any] | None, names: Mapping[str, str], suffix: str = "") -> str:
    """``type`` abbreviated (``names``, else the type itself), ``suffix`` appended, then ``_option`` tokens."""
    if cfg is None:
        return "-"
    if not isinstance(cfg, Mapping):
        return _value(cfg)
    kind = str(cfg.get("type", "?"))
    options = [_option(str(k), v) for k, v in cfg.items() if k != "type"]
    return "_".join([names.get(kind, kind) + suffix, *options])


def _runs(tokens: list[str]) -> list[str]:
    """Collapse runs of three or more equal tokens into ``tok*n``."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == tokens[i]:
            j += 1
        n = j - i
        out.extend([f"{tokens[i]}*{n}"] if n >= 3 else tokens[i:j])
        i = j
    return out


def genotype(spec: Mapping[str, Any]) -> str:
    """A compact readable string for ``spec`` (see the module docstring); robust to unknown types.
    Keys the spec leaves out take their ``nas.models.spec.DEFAULTS``."""
    spec = {**DEFAULTS, **spec}
    blocks = spec.get("blocks") or []
    first = f"w{spec.get('width', '?')} d{len(blocks)}"
    head = spec.get("head") or {"type": "conv"}
    if dict(head) != {"type": "conv"}:
        first += f" h:{component(head, HEAD_NAMES)}"
    body = " ".join(_runs([component(b, BLOCK_NAMES) for b in blocks])) or "-"
    trunk = [component(spec["fusion"], FUSION_NAMES)] if spec.get("fusion") else []
    trunk += ["conv"] * bool(spec.get("body_conv")) + ["res"] * bool(spec.get("body_skip"))
    fusion = "+".join(trunk) or "-"
    up = component(spec.get("upsampler") or {"type": "pixelshuffle"}, UPSAMPLER_NAMES, str(spec.get("scale", "")))
    fields = [first, body, fusion, up]
    skip = spec.get("global_skip", "none")
    if skip and skip != "none":
        fields.append(f"+{skip}")
    pruned = pruned_summary(spec)
    if pruned is not None:
        fields.append(pruned.token(spec.get("width")))
    return " | ".join(fields)


@dataclass(frozen=True)
class PrunedSummary:
    """What a spec's ``pruned`` plan does (display only; see the module docstring)."""

    mode: str
    convs: int  # convs whose shape the plan changes
    kept: float | None  # share of the base model's conv output channels kept; None: the spec cannot be built
    widths: dict[str, int] = field(default_factory=dict)  # output width per diagram stage; empty: unknown

    @property
    def percent(self) -> str:
        if self.kept is None:
            return "?"
        pct = round(100 * self.kept)
        return f"{min(pct, 99) if self.kept < 1 else pct}%"  # a pruned model never shows 100%

    def token(self, width: Any) -> str:
        """The genotype field: ``pruned coupled 74%ch w24`` (``w..`` only when the trunk is narrowed)."""
        if self.kept is None:
            return f"pruned {self.mode} {self.convs}conv"
        trunk = self.widths.get("head")
        return f"pruned {self.mode} {self.percent}ch" + (f" w{trunk}" if trunk is not None and trunk != width else "")


def pruned_summary(spec: Mapping[str, Any]) -> PrunedSummary | None:
    """The summary of ``spec``'s ``pruned`` plan, None when it has none; never raises for a bad spec."""
    plan = spec.get("pruned")
    if not plan:
        return None
    if not isinstance(plan, Mapping):
        return PrunedSummary("?", 0, None)
    convs = plan.get("convs")
    summary = PrunedSummary(str(plan.get("mode", "fine")), len(convs) if isinstance(convs, Mapping) else 0, None)
    import torch  # lazy: genotypes of unpruned specs need no torch
    from torch import nn

    from nas.models.network import build

    try:
        with torch.device("meta"):
            base = build({k: v for k, v in spec.items() if k != "pruned"})
            model = build(dict(spec))
    except Exception:  # noqa: BLE001 - display only: an unbuildable spec shows what the plan alone says
        return summary

    def channels(m: nn.Module) -> int:
        return sum(c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d))

    kept = channels(model) / max(channels(base), 1)
    return PrunedSummary(summary.mode, summary.convs, kept, _stage_widths(model))


def _stage_widths(model: Any) -> dict[str, int]:
    """Output width per diagram stage of an SRNet (head, block i, fusion, body_conv; upsampler: its input),
    from a forward pass on the meta device; empty when that fails."""
    import torch

    widths: dict[str, int] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: Any, args: tuple, out: Any) -> None:
            widths[name] = int((out[0] if isinstance(out, tuple) else out).shape[1])

        return hook

    stages = [("head", model.head), *((f"block {i + 1}", b) for i, b in enumerate(model.body))]
    stages += [(name, getattr(model, name)) for name in ("fusion", "body_conv") if getattr(model, name) is not None]
    handles = [module.register_forward_hook(record(name)) for name, module in stages]
    handles.append(
        model.upsampler.register_forward_pre_hook(
            lambda m, args: widths.__setitem__("upsampler", int(args[0].shape[1]))
        )
    )
    try:
        with torch.no_grad():
            model(torch.empty(1, model.spec["in_channels"], 32, 32, device="meta"))
    except Exception:  # noqa: BLE001 - display only
        return {}
    finally:
        for h in handles:
            h.remove()
    return widths


def _options(cfg: Mapping[str, Any]) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "type")
    return f"{cfg.get('type', '?')}" + (f" ({opts})" if opts else "")


def diagram(spec: Mapping[str, Any]) -> str:
    """A text block diagram: input -> head -> blocks -> fusion -> body conv/skip -> upsampler -> output,
    with the channel widths at each step (a pruned spec: its pruned widths, and a closing summary line)."""
    spec = {**DEFAULTS, **spec}
    width, scale = spec.get("width", "?"), spec.get("scale", "?")
    cin, cout = spec.get("in_channels", 3), spec.get("out_channels", 3)
    blocks = spec.get("blocks") or []
    pruned = pruned_summary(spec)
    widths = pruned.widths if pruned is not None else {}

    def w(stage: str) -> Any:
        return widths.get(stage, width)

    rows: list[tuple[str, str, str]] = [("input", f"LR image, x{scale}", f"{cin}ch")]
    rows.append(("head", _options(spec.get("head") or {"type": "conv"}), f"{cin} -> {w('head')}"))
    prev = w("head")
    for i, block in enumerate(blocks):
        name = f"block {i + 1}"
        rows.append((name, _options(block) if isinstance(block, Mapping) else str(block), f"{prev} -> {w(name)}"))
        prev = w(name)
    fusion = spec.get("fusion")
    if fusion:
        outs = [w(f"block {i + 1}") for i in range(len(blocks))]
        concat = f"{len(blocks)}x{outs[0]}" if outs and len(set(outs)) == 1 else "+".join(map(str, outs))
        rows.append(("fusion", _options(fusion), f"{concat} -> {w('fusion')}"))
        prev = w("fusion")
    if spec.get("body_conv"):
        rows.append(("body_conv", "conv 3x3", f"{prev} -> {w('body_conv')}"))
    if spec.get("body_skip"):
        rows.append(("body_skip", "+ head output", f"{w('head')}"))
    rows.append(
        (
            "upsampler",
            f"{_options(spec.get('upsampler') or {'type': 'pixelshuffle'})} x{scale}",
            f"{w('upsampler')} -> {cout}",
        )
    )
    skip = spec.get("global_skip", "none")
    if skip and skip != "none":
        rows.append(("global_skip", f"+ {skip} x{scale} of the input", f"{cout}"))
    rows.append(("output", f"SR image, x{scale}", f"{cout}ch"))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = []
    for i, (stage, what, chans) in enumerate(rows):
        arrow = "   " if i == 0 else "-> "
        lines.append(f"{arrow}{stage:<{w0}}  {what:<{w1}}  {chans}")
    if pruned is not None:
        lines.append(_pruned_line(pruned, width))
    return "\n".join(lines)


def _pruned_line(pruned: PrunedSummary, width: Any) -> str:
    if pruned.kept is None:
        return f"pruned ({pruned.mode} plan): {pruned.convs} convs resized; widths above are the base model's"
    trunk = pruned.widths.get("head")
    text = f"pruned ({pruned.mode} plan): {pruned.percent} of the base model's conv output channels kept"
    text += f", {pruned.convs} convs resized"
    if trunk is not None and trunk != width:
        text += f", trunk width {trunk} of {width}"
    return text + ("" if pruned.widths else "; widths above are the base model's")
