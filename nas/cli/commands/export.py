"""``srnas export``: write a model as an ONNX file and check it against PyTorch with ONNX Runtime."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from nas.cli.commands._common import add_model_args, print_json
from nas.errors import SrnasError

DEFAULT_SIZE = (256, 256)  # the AIM 2020 LR input size, as `srnas profile`
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, checked with ONNX Runtime",
        description="Export MODEL (zoo name with its official weights, spec file + --weights, model folder, "
        "RUN/models/ID, pruned model folder) to one ONNX file, run it with ONNX Runtime on a real image (the "
        "first Set5 LR image of the reference kit, else an embedded photo) and compare with PyTorch. OUT is "
        "written only when the largest difference on [0,1]-clipped outputs is within --atol.",
    )
    add_model_args(p)
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the file to write (its folder must exist)")
    p.add_argument(
        "--size",
        nargs=2,
        type=_positive,
        metavar=("H", "W"),
        help=f"fixed LR input height and width (default {DEFAULT_SIZE[0]} {DEFAULT_SIZE[1]}; with --dynamic: "
        "the traced size)",
    )
    p.add_argument("--dynamic", action="store_true", help="dynamic height and width (checked on two sizes)")
    p.add_argument("--opset", type=_positive, help="ONNX opset (default: the exporter's, 20 for dynamo)")
    p.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript"),
        default="dynamo",
        help="torch.onnx exporter (default dynamo; torchscript is the legacy one, faster to export)",
    )
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed |ORT - PyTorch| (default 1e-4)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise SrnasError(f"needs {', '.join(missing)}: pip install 'srnas[bench]' (onnx, onnxscript, onnxruntime)")
    from nas.export import export_checked, sample_input
    from nas.zoo.resolve import load_model

    out = Path(args.onnx)
    if out.is_dir():
        raise SrnasError(f"--onnx {out} is a directory; give the .onnx file to write")
    if not out.parent.is_dir():
        raise SrnasError(f"--onnx {out}: folder {out.parent} does not exist")
    loaded = load_model(args.model, args.weights, pretrained=True)
    label, inputs = _inputs(sample_input, args)
    report = export_checked(
        loaded.model,
        out,
        inputs,
        dynamic=args.dynamic,
        opset=args.opset,
        exporter=args.exporter,
        atol=args.atol,
        name=loaded.source,
    )
    result = {"model": loaded.source, "weights": loaded.weights, "image": label, **vars(report)}
    if args.json:
        print_json(result)
        return 0
    _print_report(result)
    return 0


def _inputs(sample_input, args: argparse.Namespace):
    """The check's inputs: the image at --size (fixed); with --dynamic also at a second, different size."""
    if not args.dynamic:
        label, x = sample_input(tuple(args.size or DEFAULT_SIZE))
        return label, [x]
    label, x = sample_input(tuple(args.size) if args.size else None)
    h, w = x.shape[-2:]
    second = x[..., : max(1, h * 3 // 4), : max(1, w * 2 // 3)].contiguous()
    return label, [x, second]


def _print_report(r: dict) -> None:
    shape = "x".join(str(d) for d in r["input_shape"])
    checked = ", ".join("x".join(map(str, s)) for s in r["checked_inputs"])
    lines = [
        ("file", r["path"]),
        ("size", f"{r['bytes'] / 1e6:.2f} MB ({r['bytes']:,} bytes)"),
        ("model", f"{r['model']} (weights: {r['weights'] or 'random init'})"),
        ("exporter", f"{r['exporter']}, opset {r['opset']}"),
        (
            "input",
            f"{shape} ({'dynamic height/width' if r['dynamic'] else 'fixed'}) -> output "
            + "x".join(str(d) for d in r["output_shape"]),
        ),
        ("parity", f"max |ORT - PyTorch| {r['max_abs_diff']:.3g} on [0,1]-clipped outputs (atol {r['atol']:g})"),
        ("checked on", f"{r['image']} at {checked}"),
        ("runtime", r["provider"]),
    ]
    for key, value in lines:
        print(f"{key:<12}{value}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
