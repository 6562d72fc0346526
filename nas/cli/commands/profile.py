"""``srnas profile``: params, FLOPs (both challenge conventions), activations, #conv, runtime, memory."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from torch import nn

from nas.cli.commands._common import device_name, non_negative_int, positive_int, print_json
from nas.errors import UsageError
from nas.measure.profiler import DEFAULT_INPUT_SIZE, Profile, check_device, profile_model
from nas.progress import track

COUNT_KEYS = ("params", "flops", "flops_fvcore", "activations", "num_conv")


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="count params/FLOPs/activations and time a model",
        description="Complexity as the AIM/NTIRE efficient-SR challenges count it, at a 1 x 3 x SIZE x SIZE "
        "LR input: FLOPs = model_summary MACs (AIM2020-NTIRE2023 tables), FLOPs fvcore = NTIRE2024+ "
        "MACs, activations = elements of all conv outputs.",
    )
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="zoo name (see `srnas zoo`), spec file (.yaml/.json) or model folder",
    )
    p.add_argument("--zoo", action="store_true", help="profile every zoo model (a table)")
    p.add_argument(
        "--size",
        type=_size,
        default=DEFAULT_INPUT_SIZE[1:],
        metavar="N|HxW",
        help="LR input height and width (default 256, the challenge size)",
    )
    p.add_argument(
        "--device", default="cpu", type=device_name, help="cpu or cuda[:N]: where --runtime is measured (default cpu)"
    )
    p.add_argument("--runtime", action="store_true", help="also time forward passes (and CUDA peak memory)")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed forward passes (default 10)")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed passes before timing (default 3)")
    p.add_argument(
        "--baseline",
        metavar="BASELINE_MODEL",
        help="also print the NTIRE efficient-SR score against this model (runtime timed beside it, interleaved)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.zoo == (args.model is not None):
        raise UsageError("give either a MODEL or --zoo")
    device = check_device(args.device)
    options = {
        "input_size": (3, *args.size),
        "device": device,
        "runtime": args.runtime,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "memory": args.runtime,
    }
    if args.baseline is not None and args.zoo:
        raise UsageError("--baseline scores one MODEL; it cannot be combined with --zoo")
    if not args.zoo:
        model = _load_model(args.model)
        prof = profile_model(model, **options)
        score = _score(args, model, prof, options) if args.baseline is not None else None
        if args.json:
            print_json({"model": args.model, **prof.to_dict(), **(score or {})})
        else:
            _print_one(args.model, prof)
            if score is not None:
                _print_score(args.model, score)
        return 0

    zoo = importlib.import_module("nas.zoo")
    rows = []
    for name in track(zoo.list_zoo(), desc="profile", unit="model"):
        prof = profile_model(zoo.build_zoo_model(name), **options)
        rows.append({"model": name, **prof.to_dict(), "matches_reference": _matches(prof, zoo, name)})
    if args.json:
        print_json(rows)
    else:
        _print_table(rows, timed=args.runtime)
    return 0


def _score(args: argparse.Namespace, model: nn.Module, prof: Profile, options: dict[str, Any]) -> dict[str, Any]:
    """The NTIRE ESR score of ``model`` against ``--baseline``: counts of both, runtimes timed interleaved."""
    from nas.measure.score import WEIGHTS, esr_scores, interleaved_runtimes

    baseline = _load_model(args.baseline)
    base = profile_model(baseline, options["input_size"], device=options["device"])
    device = options["device"]
    times = interleaved_runtimes(
        {"model": model.to(device), "baseline": baseline.to(device)},
        options["input_size"],
        device=str(device),
        repeats=args.repeats,
        warmup=args.warmup,
    )
    mine = {"runtime": times["model"], "flops": prof.flops_fvcore, "params": prof.params}
    theirs = {"runtime": times["baseline"], "flops": base.flops_fvcore, "params": base.params}
    return {
        "baseline": {
            "model": args.baseline,
            "runtime_ms": times["baseline"],
            "flops_fvcore": base.flops_fvcore,
            "params": base.params,
        },
        "score": {
            "runtime_ms": times["model"],
            "ratio": {k: mine[k] / theirs[k] for k in mine},
            "weights": WEIGHTS,
            "scores": esr_scores(mine, theirs),
            "repeats": args.repeats,
            "device": str(device),
        },
    }


def _print_score(name: str, score: dict[str, Any]) -> None:
    base, s = score["baseline"], score["score"]
    r = s["ratio"]
    print(
        f"{'baseline':<14}{base['model']}: runtime {base['runtime_ms']:.2f} ms vs {s['runtime_ms']:.2f} ms "
        f"(median of {s['repeats']} interleaved runs on {s['device']}, ratio {r['runtime']:.3f}), FLOPs fvcore "
        f"ratio {r['flops']:.3f}, params ratio {r['params']:.3f}"
    )
    scores = ", ".join(
        f"{challenge} {value:.4f} ({'/'.join(f'{w:g}' for w in s['weights'][challenge].values())})"
        for challenge, value in s["scores"].items()
    )
    print(f"{'ESR score':<14}{scores}; the baseline scores e^2 = 7.3891, lower is better")


def _load_model(ref: str) -> nn.Module:
    """The model MODEL names (weights are not needed to count)."""
    return importlib.import_module("nas.zoo.resolve").load_model(ref, weights=None).model


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(parts) > 2 or h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"expected positive N or HxW, got {text!r}")
    return h, w


def _matches(prof: Profile, zoo: Any, name: str) -> bool | None:
    """Whether the counts equal the zoo's official numbers (at the default size; None when not comparable)."""
    ref = zoo.reference_profile(name)
    keys = [k for k in COUNT_KEYS if k in ref]
    if prof.input_size != DEFAULT_INPUT_SIZE or not keys:
        return None
    return all(getattr(prof, k) == ref[k] for k in keys)


def _print_one(name: str, p: Profile) -> None:
    c, h, w = p.input_size
    lines = [
        ("model", name),
        ("input", f"1x{c}x{h}x{w}"),
        ("params", f"{p.params:,} ({p.params / 1e6:.4f} M)"),
        ("FLOPs", f"{p.flops / 1e9:.4f} G  (model_summary: AIM2020-NTIRE2023)"),
        ("FLOPs fvcore", f"{p.flops_fvcore / 1e9:.4f} G  (fvcore: NTIRE2024+)"),
        ("activations", f"{p.activations / 1e6:.4f} M"),
        ("#conv", str(p.num_conv)),
    ]
    if p.runtime_ms is not None:
        lines.append(
            (
                "runtime",
                f"{p.runtime_ms:.2f} ms median, {p.runtime_mean_ms:.2f} ms mean, "
                f"{p.runtime_best3_mean_ms:.2f} ms best-of-3 mean (AIM 2020), "
                f"{p.runtime_min_ms:.2f} ms min ({p.repeats} runs on {p.device})",
            )
        )
    if p.memory_mb is not None:
        lines.append(("peak memory", f"{p.memory_mb:.2f} MB"))
    for key, value in lines:
        print(f"{key:<14}{value}")


def _print_table(rows: list[dict[str, Any]], *, timed: bool) -> None:
    header = f"{'model':<28}{'params':>11}{'FLOPs(G)':>10}{'fvcore(G)':>11}{'acts(M)':>10}{'#conv':>7}"
    if timed:
        header += f"{'ms':>9}{'mem(MB)':>9}"
    print(header + "  ref")
    for r in rows:
        line = (
            f"{r['model']:<28}{r['params']:>11,}{r['flops'] / 1e9:>10.4f}{r['flops_fvcore'] / 1e9:>11.4f}"
            f"{r['activations'] / 1e6:>10.4f}{r['num_conv']:>7}"
        )
        if timed:
            mem = f"{r['memory_mb']:.1f}" if r["memory_mb"] is not None else "-"
            line += f"{r['runtime_ms']:>9.2f}{mem:>9}"
        ref = {True: "ok", False: "DIFF", None: "-"}[r["matches_reference"]]
        print(f"{line}  {ref}")
