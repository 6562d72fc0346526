"""ONNX export parity of the zoo: every model (official weights from the reference kit) exported with
``nas.export`` (what ``srnas export`` runs), then run with ONNX Runtime on the first Set5 LR image of the kit
(an embedded photo without it) at a fixed size; max |ORT - PyTorch| on [0,1]-clipped outputs, file size, opset,
export time. A model without its checkpoint is reported as skipped, not exported with random weights.

    .venv/bin/python scripts/bench_onnx.py                                   # all zoo models, 64x64, dynamo
    .venv/bin/python scripts/bench_onnx.py --models rfdn span --size 128 128 --exporter torchscript
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from bench_common import command_line, environment, make_parser, markdown_table, print_table, write_results

from nas import zoo
from nas.export import DEFAULT_ATOL, EXPORTERS, ExportError, export_checked, sample_input

NAME = "onnx"


def measure(name: str, x: torch.Tensor, exporter: str, dynamic: bool, atol: float) -> dict[str, Any]:
    """One zoo model's checked export: status, diff, size, opset and times."""
    row: dict[str, Any] = {"model": name}
    weights = zoo.checkpoint_path(name)
    if weights is None:
        return {**row, "status": "skipped", "reason": "official checkpoint not present"}
    model = zoo.build_zoo_model(name, weights=weights).eval()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            report = export_checked(
                model, Path(tmp) / f"{name}.onnx", [x], exporter=exporter, dynamic=dynamic, atol=atol, name=name
            )
        except ExportError as exc:
            return {**row, "status": "failed", "reason": str(exc)}
        seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return {
        **row,
        "status": "ok",
        "weights": weights.name,
        "params": params,
        "max_abs_diff": report.max_abs_diff,
        "onnx_bytes": report.bytes,
        "onnx_mb": round(report.bytes / 1e6, 3),
        "bytes_per_param": round(report.bytes / params, 2),
        "opset": report.opset,
        "input_shape": "x".join(map(str, report.input_shape)),
        "output_shape": "x".join(map(str, report.output_shape)),
        "provider": report.provider,
        "export_and_check_s": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--models", nargs="+", metavar="NAME", help="zoo models (default: all)")
    parser.add_argument("--size", nargs=2, type=int, default=[64, 64], metavar=("H", "W"), help="LR input size")
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo", help="torch.onnx exporter")
    parser.add_argument("--dynamic", action="store_true", help="dynamic height and width")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="largest allowed |ORT - PyTorch|")
    parser.add_argument("--name", default=NAME, help="results file stem under results/bench/")
    args = parser.parse_args(argv)
    known = zoo.list_zoo()
    unknown = [n for n in args.models or [] if n not in known]
    if unknown:
        parser.error(f"unknown zoo model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if min(args.size) <= 0:
        parser.error("--size must be positive")
    image, x = sample_input(tuple(args.size))
    rows = [measure(name, x, args.exporter, args.dynamic, args.atol) for name in args.models or known]
    env = {**environment(["cpu"]), "onnxruntime": onnxruntime.__version__}
    columns = ["model", "status", "max_abs_diff", "onnx_mb", "params", "opset", "export_and_check_s"]
    notes = [f"{r['model']}: {r['reason']}" for r in rows if r["status"] != "ok"]
    body = (
        "## Protocol\n\n"
        f"- Input: `{image}` centre-cropped to 1x3x{args.size[0]}x{args.size[1]} "
        f"({'dynamic height/width' if args.dynamic else 'fixed shape'}); official checkpoints of the reference kit.\n"
        f"- Export: `nas.export.export_checked` (as `srnas export`), exporter `{args.exporter}`, weights inside the "
        f"one `.onnx` file; ONNX Runtime {onnxruntime.__version__} on the CPU provider.\n"
        f"- `max_abs_diff`: largest |ORT - PyTorch| over the output clipped to [0, 1] (tolerance {args.atol:g}); "
        "`export_and_check_s`: export + ORT session + both forward passes, on this machine.\n\n"
        + ("## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" if notes else "")
        + "## Results\n\n"
        + markdown_table(rows, columns, floatfmt=".3g")
        + "\n"
    )
    write_results(
        args.name,
        title="ONNX export parity of the zoo (ONNX Runtime vs PyTorch)",
        env=env,
        command=command_line("bench_onnx.py", argv),
        arguments={**vars(args), "image": image},
        results={"notes": notes, "rows": rows},
        body=body,
    )
    print_table(rows, columns, floatfmt=".3g")
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
