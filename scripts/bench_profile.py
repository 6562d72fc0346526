"""Zoo complexity vs the official numbers: params, FLOPs (both conventions), activations and #conv at 3x256x256.

Every zoo model is built from its spec (with its official checkpoint loaded strictly when the reference kit
has one, so the counted parameters are the official tensors) and counted by ``nas.measure.profiler``; each number
is compared with the zoo's ``reference`` block, measured on the official code. Exit code 1 when any number
differs or a checkpoint does not load.

    .venv/bin/python scripts/bench_profile.py [--models rfdn pan ...]
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench_common import command_line, environment, make_parser, markdown_table, print_table, write_results
from tqdm import tqdm

from nas import zoo
from nas.errors import SrnasError
from nas.measure.profiler import count_complexity

NAME = "profile"
KEYS = ("params", "flops", "flops_fvcore", "activations", "num_conv")
SIZE = (3, 256, 256)  # the size the reference numbers are measured at


def profile_row(name: str) -> dict[str, Any]:
    """Our counts, the reference counts, per-key and overall exact match for one zoo model."""
    try:
        official = zoo.checkpoint_path(name) is not None
        model = zoo.build_zoo_model(name, official=official)
        checkpoint = "loaded" if official else "none"
    except SrnasError as exc:
        model, checkpoint = zoo.build_zoo_model(name), f"error: {exc}"
    t0 = time.perf_counter()
    counts = count_complexity(model, SIZE)
    seconds = time.perf_counter() - t0
    ref = zoo.reference_profile(name)
    row: dict[str, Any] = {"model": name}
    mismatched = []
    for key in KEYS:
        ours, theirs = getattr(counts, key), ref.get(key)
        row[key], row[f"{key}_ref"] = ours, theirs
        if ours != theirs:
            mismatched.append(key if theirs is not None else f"{key} (no reference)")
    if checkpoint.startswith("error"):
        mismatched.append("checkpoint")
    row.update(
        match=not mismatched,
        mismatched=", ".join(mismatched),
        checkpoint=checkpoint,
        count_s=round(seconds, 3),
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--models", nargs="+", metavar="NAME", help="zoo models (default: all)")
    args = parser.parse_args(argv)
    names = args.models or zoo.list_zoo()
    unknown = [n for n in names if n not in zoo.list_zoo()]
    if unknown:
        parser.error(f"unknown zoo model(s) {', '.join(unknown)}; known: {', '.join(zoo.list_zoo())}")

    env = environment(["cpu"])
    rows = [profile_row(n) for n in tqdm(names, desc="profile", unit="model")]
    all_match = all(r["match"] for r in rows)
    summary = {"models": len(rows), "exact_matches": sum(r["match"] for r in rows), "all_match": all_match}

    short = ["model", "params", "flops", "flops_fvcore", "activations", "num_conv", "match", "mismatched"]
    md_rows = [{**r, "match": "yes" if r["match"] else "**NO**"} for r in rows]
    full_cols = ["model"] + [c for k in KEYS for c in (k, f"{k}_ref")] + ["match", "mismatched", "checkpoint"]
    body = (
        f"Counts at 1x{SIZE[0]}x{SIZE[1]}x{SIZE[2]} by `nas.measure.profiler.count_complexity`; `*_ref` = the zoo's "
        "`reference:` numbers (official code, see the reference kit README). `flops` = AIM 2020 / NTIRE 2022-23 "
        "`model_summary` convention, `flops_fvcore` = NTIRE 2024+ fvcore convention. `match` is exact integer "
        "equality of all five numbers (and a strict load of the official checkpoint when the kit has one).\n\n"
        f"**{summary['exact_matches']} / {summary['models']} models match exactly.**\n\n"
        + markdown_table(md_rows, full_cols, floatfmt="d")
        + "\n"
    )
    write_results(
        NAME,
        title="Zoo complexity vs official numbers",
        env=env,
        command=command_line("bench_profile.py", argv),
        arguments=vars(args),
        results={"input_size": list(SIZE), "summary": summary, "rows": rows},
        body=body,
    )
    print_table(rows, short)
    print(f"{summary['exact_matches']}/{summary['models']} exact matches")
    return 0 if all_match else 1


if __name__ == "__main__":
    sys.exit(main())
