"""Latency of the zoo models at 256x256 LR and at the Set5 LR sizes, as ratios to RFDN measured in the same run.

Each model (official weights when the reference kit has them) is timed by ``nas.measure.profiler.measure_runtime``:
``--warmup`` untimed passes, then the median of ``--repeats`` timed passes of one fixed random input (CUDA
events + synchronize on CUDA, ``perf_counter`` on CPU). Variants, reported separately: ``eager``;
``channels_last`` (weights and input in channels-last memory format; the input conversion is timed);
``compile`` (``torch.compile(dynamic=False)``, per model and size, compile time excluded; only with
``--compile``: minutes per model); ``onnxruntime`` (only when it is importable; exported per size).
RFDN is always measured, as the baseline of the ratios.

    .venv/bin/python scripts/bench_runtime.py                      # all models, 256 + Set5, CPU (+ CUDA)
    .venv/bin/python scripts/bench_runtime.py --models rfdn span --sizes 128 --repeats 5 --device cpu
"""

from __future__ import annotations

import copy
import importlib.util
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from bench_common import command_line, environment, make_parser, markdown_table, print_table, write_results
from torch import nn

from nas import zoo
from nas.errors import SrnasError
from nas.measure.profiler import Timing, check_device, measure_runtime
from nas.paths import reference_dir
from nas.progress import progress

NAME = "runtime"
BASELINE = "rfdn"
VARIANTS = ("eager", "channels_last", "compile", "onnxruntime")
SET5 = "set5"
SET5_MEAN = "set5 mean"

InputSize = tuple[int, int, int]


class ChannelsLast(nn.Module):
    """Runs ``model`` (already channels-last) on a channels-last copy of its input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


class Skip(Exception):
    """A variant that cannot run here; the message says why."""


# ----------------------------------------------------------------------------- sizes


def set5_sizes() -> list[tuple[str, InputSize]] | None:
    """``(label, (3, H, W))`` of the Set5 x4 LR images in the reference kit, or None without the kit."""
    from PIL import Image

    ref = reference_dir()
    folder = ref / "images" / "Set5" / "LR_bicubic_X4" if ref is not None else None
    if folder is None or not folder.is_dir():
        return None
    sizes = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as im:
            w, h = im.size
        sizes.append((f"{SET5}/{path.stem} {h}x{w}", (3, h, w)))
    return sizes or None


def parse_sizes(items: list[str]) -> tuple[list[tuple[str, str, InputSize]], list[str]]:
    """``(group, label, size)`` for each ``--sizes`` item (N, HxW or set5) and notes on what was skipped."""
    out, notes = [], []
    for item in items:
        if item.lower() == SET5:
            sizes = set5_sizes()
            if sizes is None:
                notes.append("Set5 sizes skipped: the reference kit (Set5 LR images) is not present.")
                continue
            out += [(SET5, label, size) for label, size in sizes]
            continue
        try:
            h, _, w = item.lower().partition("x")
            size = (3, int(h), int(w or h))
        except ValueError:
            raise SrnasError(f"--sizes: {item!r} is not N, HxW or set5") from None
        if min(size) <= 0:
            raise SrnasError(f"--sizes: {item!r} must be positive")
        out.append((f"{size[1]}x{size[2]}", f"{size[1]}x{size[2]}", size))
    return out, notes


def resolve_devices(requested: list[str] | None) -> list[str]:
    """``auto`` (the default): CPU, plus CUDA when present."""
    names = requested or ["auto"]
    devices: list[str] = []
    for name in names:
        if name == "auto":
            expanded = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
        else:
            expanded = [name]
        for dev in expanded:
            check_device(dev)
            if dev not in devices:
                devices.append(dev)
    return devices


# ----------------------------------------------------------------------------- variants


def time_onnxruntime(model: nn.Module, size: InputSize, device: str, repeats: int, warmup: int) -> Timing:
    """Export to ONNX (``nas.export``, dynamo exporter) and time ``InferenceSession.run`` (host<->device copies
    included on CUDA)."""
    import onnxruntime as ort

    from nas.export.onnx import export_onnx, onnx_session

    provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise Skip(f"{provider} is not available in onnxruntime {ort.__version__}")
    x = torch.rand(1, *size, generator=torch.Generator().manual_seed(0))
    net = copy.deepcopy(model).cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(net, path, x)
        session = onnx_session(path, provider)
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(warmup):
            session.run(None, feed)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - t0) * 1000.0)
    return Timing(times)


def time_variant(
    variant: str, model: nn.Module, size: InputSize, device: str, repeats: int, warmup: int
) -> tuple[Timing, dict[str, Any]]:
    """Timing of one variant of ``model`` (on ``device`` already) and extra fields (compile time, memory)."""
    cuda = device.startswith("cuda")
    if variant == "eager":
        return measure_runtime(model, size, device=device, repeats=repeats, warmup=warmup, memory=cuda), {}
    if variant == "channels_last":
        net = ChannelsLast(copy.deepcopy(model).to(memory_format=torch.channels_last))
        return measure_runtime(net, size, device=device, repeats=repeats, warmup=warmup), {}
    if variant == "compile":
        torch._dynamo.reset()  # every zoo model is an SRNet: without a reset they share one recompile budget
        net = torch.compile(model, dynamic=False)
        x = torch.rand(1, *size, device=device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            net.eval()(x)
        if cuda:
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        timing = measure_runtime(net, size, device=device, repeats=repeats, warmup=warmup)
        return timing, {"compile_s": round(compile_s, 2)}
    if variant == "onnxruntime":
        return time_onnxruntime(model, size, device, repeats, warmup), {}
    raise ValueError(variant)


def variant_unavailable(variant: str) -> str | None:
    """Why a variant cannot run at all on this installation, or None."""
    missing = [m for m in ("onnxruntime", "onnxscript", "onnx") if importlib.util.find_spec(m) is None]
    if variant == "onnxruntime" and missing:
        return f"onnxruntime: not installed ({', '.join(missing)} missing; `pip install -e .[bench]` adds this variant)"
    return None


# ----------------------------------------------------------------------------- tables


def add_set5_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``set5 mean`` row per (device, variant, model): the mean of the per-image medians."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["group"] == SET5:
            groups[(r["device"], r["variant"], r["model"])].append(r)
    means = []
    for (device, variant, model), members in groups.items():
        ok = all(m["status"] == "ok" for m in members)
        means.append(
            {
                "device": device,
                "variant": variant,
                "model": model,
                "group": SET5,
                "size": SET5_MEAN,
                "status": "ok" if ok else "incomplete",
                "median_ms": statistics.fmean(m["median_ms"] for m in members) if ok else None,
                "images": len(members),
            }
        )
    return rows + means


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``ratio_to_rfdn``: median / RFDN's median for the same device, variant and size."""
    base = {
        (r["device"], r["variant"], r["size"]): r["median_ms"]
        for r in rows
        if r["model"] == BASELINE and r["status"] == "ok"
    }
    for r in rows:
        b = base.get((r["device"], r["variant"], r["size"]))
        r["ratio_to_rfdn"] = r["median_ms"] / b if r["status"] == "ok" and b else None


def summary_table(rows: list[dict[str, Any]], models: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per model, one column per (device, variant, size) of the non-Set5-image sizes and the Set5 mean."""
    shown = [r for r in rows if r["status"] == "ok" and (r["group"] != SET5 or r["size"] == SET5_MEAN)]
    columns = list(dict.fromkeys(f"{r['device']} {r['variant']} {r['size']}" for r in shown))
    table = {m: {"model": m} for m in models}
    for r in shown:
        cell = f"{r['median_ms']:.2f} ms"
        if r["ratio_to_rfdn"] is not None:
            cell += f" ({r['ratio_to_rfdn']:.2f}x)"
        table[r["model"]][f"{r['device']} {r['variant']} {r['size']}"] = cell
    return list(table.values()), ["model", *columns]


# ----------------------------------------------------------------------------- main


def build_models(names: list[str]) -> dict[str, tuple[nn.Module, str]]:
    """Each zoo model in eval mode, with its official weights when the kit has them."""
    models = {}
    for name in names:
        official = zoo.checkpoint_path(name) is not None
        models[name] = (zoo.build_zoo_model(name, official=official).eval(), "official" if official else "random")
    return models


def measure_one(
    variant: str, model: nn.Module, size: InputSize, device: str, repeats: int, warmup: int
) -> dict[str, Any]:
    """Status and timing fields of one measurement; a failure is recorded with its reason."""
    try:
        timing, extra = time_variant(variant, model, size, device, repeats, warmup)
    except Skip as exc:
        return {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported with its reason; the benchmark goes on
        return {"status": "failed", "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    return {
        "status": "ok",
        "median_ms": timing.median_ms,
        "mean_ms": timing.mean_ms,
        "min_ms": timing.min_ms,
        "times_ms": [round(t, 4) for t in timing.times_ms],
        "memory_mb": timing.memory_mb,
        **extra,
    }


def measure_all(
    models: dict[str, tuple[nn.Module, str]],
    devices: list[str],
    sizes: list[tuple[str, str, InputSize]],
    variants: list[str],
    repeats: int,
    warmup: int,
) -> list[dict[str, Any]]:
    """One row per (device, size, variant, model), the models of one (device, size, variant) back to back."""
    rows = []
    bar = progress(len(devices) * len(sizes) * len(variants) * len(models), desc="runtime", unit="run")
    for device in devices:
        on_device = {n: (copy.deepcopy(m).to(device), w) for n, (m, w) in models.items()}
        for group, label, size in sizes:
            for variant in variants:
                for name, (model, weights) in on_device.items():
                    bar.set_postfix({"run": f"{device} {variant} {label} {name}"}, refresh=False)
                    row = {"device": device, "variant": variant, "model": name, "group": group, "size": label}
                    row.update(input_size=list(size), weights=weights, repeats=repeats, warmup=warmup)
                    row.update(measure_one(variant, model, size, device, repeats, warmup))
                    rows.append(row)
                    bar.update(1)
        del on_device
    bar.close()
    return rows


def render_markdown(
    rows: list[dict[str, Any]],
    table: list[dict[str, Any]],
    columns: list[str],
    notes: list[str],
    repeats: int,
    warmup: int,
) -> str:
    """The Markdown body: protocol, notes, the summary table and every measurement."""
    detail_cols = ["device", "variant", "model", "size", "status", "median_ms", "min_ms", "ratio_to_rfdn", "weights"]
    if any("compile_s" in r for r in rows):
        detail_cols.append("compile_s")
    if any(r.get("memory_mb") is not None for r in rows):
        detail_cols.append("memory_mb")
    return (
        "## Protocol\n\n"
        f"- Median of {repeats} timed forward passes after {warmup} warm-up passes, batch 1, one fixed "
        "random input per size (`nas.measure.profiler.measure_runtime`; CUDA events + synchronize on CUDA, "
        "`time.perf_counter` on CPU); float32; official checkpoints where the reference kit has them.\n"
        f"- `(Nx)` = ratio to {BASELINE.upper()} (AIM 2020 winner) measured in this run on the same device, "
        "variant and size: the number to compare across machines. Absolute milliseconds depend on this "
        "machine and its load at the time.\n"
        f"- `{SET5_MEAN}` = mean over the five Set5 x4 LR images' sizes of the per-image medians (the "
        "challenges average per image).\n"
        "- `channels_last`: weights in channels-last format, input converted inside the timed pass. "
        "`compile`: `torch.compile(dynamic=False)`, default mode, compiled per model and size after "
        "`torch._dynamo.reset()`; compile time (`compile_s`) not timed. `onnxruntime`: exported per size, "
        "`InferenceSession.run` timed with `perf_counter` (host/device copies included).\n"
        "- **Official code path: not compared.** The official implementations are not part of this "
        "repository (the reference kit holds their checkpoints and measured counts, not their code), so "
        "their runtime cannot be measured here; these are the zoo re-implementations, whose counts match "
        "the official numbers exactly (see `profile.md`).\n\n"
        + ("## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" if notes else "")
        + "## Summary\n\n"
        + markdown_table(table, columns)
        + "\n\n## All measurements\n\n"
        + markdown_table(rows, detail_cols, floatfmt=".3f")
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--models", nargs="+", metavar="NAME", help=f"zoo models (default: all; {BASELINE} always)")
    parser.add_argument(
        "--sizes", nargs="+", default=["256", SET5], metavar="SIZE", help="N, HxW or set5 (default: 256 set5)"
    )
    parser.add_argument(
        "--device", action="append", choices=["auto", "cpu", "cuda"], help="repeatable; auto = CPU + CUDA if present"
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes before timing")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=["eager", "channels_last", "onnxruntime"],
        metavar="V",
        help=f"of {', '.join(VARIANTS)}",
    )
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variant (slow to compile)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--name", default=NAME, help="results file stem under results/bench/, e.g. runtime_cuda for a GPU run"
    )
    args = parser.parse_args(argv)
    if not args.name.replace("_", "").replace("-", "").isalnum():
        parser.error(f"--name {args.name!r}: letters, digits, '-' and '_' only")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    known = zoo.list_zoo()
    unknown = [n for n in args.models or [] if n not in known]
    if unknown:
        parser.error(f"unknown zoo model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    names = list(dict.fromkeys([BASELINE, *(args.models or known)]))
    variants = list(dict.fromkeys([*args.variants, *(["compile"] if args.compile else [])]))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        devices = resolve_devices(args.device)
        sizes, notes = parse_sizes(args.sizes)
    except SrnasError as exc:
        parser.error(str(exc))
    env = environment(devices)

    for variant in list(variants):
        reason = variant_unavailable(variant)
        if reason:
            notes.append(reason)
            variants.remove(variant)
    rows = measure_all(build_models(names), devices, sizes, variants, args.repeats, args.warmup)
    rows = add_set5_means(rows)
    add_ratios(rows)
    problems = sorted(
        {f"{r['variant']} {r['model']}: {r['reason']}" for r in rows if r["status"] != "ok" and "reason" in r}
    )
    notes += problems

    table, columns = summary_table(rows, names)
    body = render_markdown(rows, table, columns, notes, args.repeats, args.warmup)
    write_results(
        args.name,
        title="Zoo runtime (ratios to RFDN, same run)",
        env=env,
        command=command_line("bench_runtime.py", argv),
        arguments={**vars(args), "devices": devices, "variants_run": variants},
        results={"notes": notes, "summary": table, "rows": rows},
        body=body,
    )
    print_table(table, columns)
    for note in notes:
        print(f"note: {note}")
    failed_eager = any(r["variant"] == "eager" and r["status"] == "failed" for r in rows)
    return 1 if failed_eager else 0


if __name__ == "__main__":
    sys.exit(main())
