"""Readable one-line genotypes and text block diagrams of architecture specs (display only).

A genotype has five ``|``-separated fields (timm style: each component is a short name plus ``_``-joined
abbreviated options)::

    w32 d4 | rfdb rfdb scpa ir_e6 | cat+conv+res | ps4 | +bilinear
    width, depth [, h:head] | blocks (runs of 3+ as tok*n) | fusion, conv (body_conv), res (body_skip) joined by +
        | upsampler + scale | global skip (omitted when none)

Any block ``type`` works: known types get a short name (``BLOCK_NAMES``), options a short key (``KEY_NAMES``,
else the initials of a multi-word key) and their value: ``e6``, ``k5``, ``bn``, ``lrelu``, ``ns0.2``, ``cca``
(true), ``nosr`` (false). The spec itself stays the authority; a genotype is for reading, not parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import DEFAULTS

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
    Keys the spec leaves out take their ``nas.spec.DEFAULTS``."""
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
    return " | ".join(fields)


def _options(cfg: Mapping[str, Any]) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "type")
    return f"{cfg.get('type', '?')}" + (f" ({opts})" if opts else "")


def diagram(spec: Mapping[str, Any]) -> str:
    """A text block diagram: input -> head -> blocks -> fusion -> body conv/skip -> upsampler -> output,
    with the channel widths at each step."""
    spec = {**DEFAULTS, **spec}
    width, scale = spec.get("width", "?"), spec.get("scale", "?")
    cin, cout = spec.get("in_channels", 3), spec.get("out_channels", 3)
    blocks = spec.get("blocks") or []
    rows: list[tuple[str, str, str]] = [("input", f"LR image, x{scale}", f"{cin}ch")]
    rows.append(("head", _options(spec.get("head") or {"type": "conv"}), f"{cin} -> {width}"))
    for i, block in enumerate(blocks):
        rows.append(
            (f"block {i + 1}", _options(block) if isinstance(block, Mapping) else str(block), f"{width} -> {width}")
        )
    fusion = spec.get("fusion")
    if fusion:
        rows.append(("fusion", _options(fusion), f"{len(blocks)}x{width} -> {width}"))
    if spec.get("body_conv"):
        rows.append(("body_conv", "conv 3x3", f"{width} -> {width}"))
    if spec.get("body_skip"):
        rows.append(("body_skip", "+ head output", f"{width}"))
    rows.append(
        ("upsampler", f"{_options(spec.get('upsampler') or {'type': 'pixelshuffle'})} x{scale}", f"{width} -> {cout}")
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
    return "\n".join(lines)
