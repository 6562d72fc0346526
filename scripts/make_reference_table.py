"""Write results/reference/zoo.csv + zoo.md: every zoo model's profile, CPU runtime and Set5/Set14 x4 Y-PSNR
(official checkpoints from the reference kit), next to the reference README's published numbers.

    .venv/bin/python scripts/make_reference_table.py [--device cpu] [--size 256] [--repeats 5] [--no-psnr]
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import datetime, timezone

import pandas as pd
import torch
from tqdm import tqdm

from nas import zoo
from nas.io import atomic_write
from nas.measure.evaluate import evaluate_folder
from nas.measure.profiler import profile_model
from nas.paths import REPO_ROOT, reference_dir, results_dir
from nas.results.runs import REFERENCE_COLUMNS

COUNTS = ("params", "flops", "flops_fvcore", "activations", "num_conv")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=256, help="LR input side for counts and runtime")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-psnr", action="store_true", help="skip Set5/Set14 (counts and runtime only)")
    p.add_argument("--models", nargs="*", default=None)
    args = p.parse_args(argv)
    ref = reference_dir()
    rows = []
    for name in tqdm(args.models or zoo.list_zoo(), desc="zoo", unit="model"):
        official = zoo.checkpoint_path(name) is not None
        model = zoo.build_zoo_model(name, official=official).eval()
        prof = profile_model(model, (3, args.size, args.size), device=args.device, runtime=True, repeats=args.repeats)
        expected = zoo.reference_profile(name)
        row = {
            "model": name,
            **{k: getattr(prof, k) for k in COUNTS},
            "runtime_ms": round(prof.runtime_ms, 2),
            "device": prof.device,
            "input_size": f"3x{args.size}x{args.size}",
            "torch": torch.__version__,
            "counts_match_reference": all(getattr(prof, k) == expected.get(k) for k in COUNTS),
        }
        for set_name in ("Set5", "Set14"):
            key = f"{set_name.lower()}_psnr_y"
            row[f"{key}_reference"] = expected.get(key)
            if official and ref is not None and not args.no_psnr:
                folder = ref / "images" / set_name
                res = evaluate_folder(
                    model, folder, folder / "LR_bicubic_X4", 4, device=args.device, ssim=False, progress=False
                )
                row[key] = round(res["mean"]["psnr_y"], 4)
            else:
                row[key] = None
        rows.append(row)
    df = pd.DataFrame(rows)
    df = df[REFERENCE_COLUMNS + [c for c in df.columns if c not in REFERENCE_COLUMNS]]
    out = results_dir(default=REPO_ROOT / "results") / "reference"
    atomic_write(out / "zoo.csv", df.to_csv(index=False))
    cpu = platform.processor() or platform.machine()
    header = (
        f"# Zoo reference table\n\nMeasured {datetime.now(timezone.utc):%Y-%m-%d} on {args.device} ({cpu}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}, Python {platform.python_version()}.\n"
        f"Counts at 3x{args.size}x{args.size} (FLOPs: `flops` = AIM/NTIRE22-23 model_summary, `flops_fvcore` = "
        f"NTIRE24+); runtime = median of {args.repeats} after warm-up; PSNR = x4 Y (float BT.601), shipped "
        "MATLAB-bicubic LR, official checkpoints. `*_reference` = the reference kit's README values.\n"
        f"Reproduce: `.venv/bin/python scripts/make_reference_table.py --device {args.device}`\n\n"
    )
    atomic_write(out / "zoo.md", header + df.to_markdown(index=False, floatfmt=".4f") + "\n")
    print(
        df[
            ["model", "params", "activations", "runtime_ms", "set5_psnr_y", "set14_psnr_y", "counts_match_reference"]
        ].to_string(index=False)
    )
    return 0 if df["counts_match_reference"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
