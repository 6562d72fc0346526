"""``srnas eval``: PSNR/SSIM (Y and RGB) of a model on an HR folder, challenge protocol."""

from __future__ import annotations

from nas.cli.commands._common import add_device_arg, add_model_args, print_json, resolve_device
from nas.zoo.resolve import load_model


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model on HR images",
        description="Per-image and mean PSNR/SSIM on Y (float BT.601) and RGB, border = scale. "
        "LR images come from --lr, or are made with MATLAB-exact bicubic downscaling.",
    )
    add_model_args(p)
    p.add_argument("--hr", required=True, help="folder of HR images")
    p.add_argument("--lr", help="folder of LR images (<name>x<scale>.png or <name>.png); default: downscale HR")
    p.add_argument("--no-ssim", action="store_true", help="skip SSIM (faster)")
    add_device_arg(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from nas.measure.evaluate import evaluate_folder

    device = resolve_device(args.device)
    loaded = load_model(args.model, args.weights, pretrained=True)
    scale = loaded.spec["scale"]
    result = evaluate_folder(
        loaded.model, args.hr, args.lr, scale, device=device, ssim=not args.no_ssim, progress=not args.json
    )
    result.update(model=loaded.source, weights=loaded.weights, scale=scale, lr=args.lr or "bicubic (MATLAB)")
    if args.json:
        print_json(result)
        return 0
    keys = list(result["mean"])
    print(f"{'image':<16}" + "".join(f"{k:>11}" for k in keys))
    for row in result["images"]:
        print(f"{row['name']:<16}" + "".join(f"{row[k]:>11.4f}" for k in keys))
    print(f"{'mean':<16}" + "".join(f"{result['mean'][k]:>11.4f}" for k in keys))
    return 0
