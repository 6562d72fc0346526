"""``srnas downscale``: make MATLAB-bicubic LR images from a folder of HR images."""

from __future__ import annotations

from pathlib import Path

from nas.cli.commands._common import check_distinct_targets, check_output_dir
from nas.errors import DataError
from nas.measure.images import list_images, read_image, write_image
from nas.measure.imresize import downscale
from nas.progress import track


def register(sub) -> None:
    p = sub.add_parser(
        "downscale",
        help="make MATLAB-bicubic LR images from HR images",
        description=(
            "Write <stem>x<scale>.png for every image in --input (DIV2K naming: 0001.png -> 0001x4.png): "
            "the HR image cropped to a multiple of the scale and resized like MATLAB imresize(hr, 1/scale) "
            "on uint8 (bit-identical to the standard Set5/Set14/DIV2K bicubic LR images)."
        ),
    )
    p.add_argument("--input", required=True, help="folder of HR images")
    p.add_argument("--output", required=True, help="folder for the LR images (created if missing)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=4, help="downscaling factor (default 4)")
    p.set_defaults(func=run)


def run(args) -> int:
    src, dst, scale = Path(args.input), Path(args.output), args.scale
    files = list_images(src)
    check_output_dir(dst, ("--input", src))
    targets = [dst / f"{f.stem}x{scale}.png" for f in files]
    check_distinct_targets(files, targets)
    # Read every input once before writing anything, so a bad file leaves the output untouched.
    for f in track(files, desc="checking", unit="img", leave=False):
        h, w = read_image(f).shape[:2]
        if min(h, w) < scale:
            raise DataError(f"image {f} ({w}x{h}) is smaller than the scale {scale}")
    for f, target in track(list(zip(files, targets, strict=True)), desc=f"downscale x{scale}", unit="img"):
        write_image(target, downscale(read_image(f), scale))
    print(f"wrote {len(files)} LR x{scale} images to {dst}")
    return 0
