"""``srnas sr``: super-resolve a folder of LR images."""

from __future__ import annotations

from nas.cli.commands._common import (
    add_device_arg,
    add_model_args,
    check_distinct_targets,
    check_output_dir,
    resolve_device,
)
from nas.measure.images import list_images, read_image, write_image
from nas.progress import track
from nas.zoo.resolve import load_model


def register(sub) -> None:
    p = sub.add_parser("sr", help="super-resolve LR images", description="Write one SR PNG per LR image.")
    add_model_args(p)
    p.add_argument("--input", required=True, help="folder of LR images")
    p.add_argument("--output", required=True, help="folder for the SR PNGs (created)")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from nas.measure.evaluate import super_resolve

    device = resolve_device(args.device)
    files = list_images(args.input)
    out_dir = check_output_dir(args.output, ("--input", args.input))
    targets = [out_dir / f"{path.stem}.png" for path in files]
    check_distinct_targets(files, targets)
    images = [read_image(f) for f in files]  # read everything first: a bad file writes nothing
    loaded = load_model(args.model, args.weights, pretrained=True)
    model = loaded.model.to(device)
    for target, lr in track(list(zip(targets, images, strict=True)), desc="sr", unit="img"):
        write_image(target, super_resolve(model, lr, device))
    print(f"wrote {len(files)} images to {out_dir}")
    return 0
