"""How reproducible is measured latency, and which counts rank architectures like it?

1. Per zoo model, ``--measurements`` repeated latency measurements, each the median of ``--passes`` timed
   passes after ``--warmup`` (the search's protocol), taken round-robin over the models so that drift over
   time shows up as it would between search trials: coefficient of variation (CV) of the measurements and
   of the individual passes.
2. ``--subnets`` distinct subnets sampled from a search space (``sample_choice``), extracted from a randomly
   initialised ``Supernet``, each measured in two independent passes (the second in reverse order):
   Spearman/Kendall rank correlation between the passes, and Spearman of each count (activations, FLOPs in
   both conventions, params, #conv; at 3x256x256 as the search records them) against the mean runtime --
   the AIM 2020 report's finding that activations predict runtime better than FLOPs (SROCC 0.87, as quoted in
   the benchmark issue; not re-checked against the report here).

    .venv/bin/python scripts/bench_latency_noise.py [--models rfdn span] [--measurements 10] [--subnets 20]
"""

from __future__ import annotations

import statistics
import sys
from argparse import Namespace
from typing import Any

import torch
from bench_common import (
    coefficient_of_variation,
    command_line,
    distinct_choices,
    environment,
    kendall_tau,
    make_parser,
    markdown_table,
    print_table,
    spearman,
    write_results,
)
from tqdm import tqdm

from nas import zoo
from nas.cli.commands.search import find_space
from nas.errors import SrnasError
from nas.measure.profiler import check_device, count_complexity, measure_runtime
from nas.models.genotype import genotype
from nas.search.space import SearchSpace, load_space
from nas.search.supernet import Supernet

NAME = "latency_noise"
COUNTS = ("activations", "flops", "flops_fvcore", "params", "num_conv")
COUNT_SIZE = (3, 256, 256)
InputSize = tuple[int, int, int]


def model_noise(names: list[str], size: InputSize, device: str, args: Namespace) -> list[dict[str, Any]]:
    """Round-robin repeated measurements of each zoo model (official weights when present); CVs."""
    models = {n: zoo.build_zoo_model(n, official=zoo.checkpoint_path(n) is not None).eval().to(device) for n in names}
    medians: dict[str, list[float]] = {n: [] for n in names}
    passes: dict[str, list[float]] = {n: [] for n in names}
    bar = tqdm(total=args.measurements * len(names), desc="zoo noise", unit="meas")
    for _ in range(args.measurements):
        for name, model in models.items():
            t = measure_runtime(model, size, device=device, repeats=args.passes, warmup=args.warmup)
            medians[name].append(t.median_ms)
            passes[name].extend(t.times_ms)
            bar.update(1)
    bar.close()
    rows = []
    for name in names:
        m = medians[name]
        rows.append(
            {
                "model": name,
                "median_ms": statistics.median(m),
                "cv_measurements": coefficient_of_variation(m),
                "cv_passes": coefficient_of_variation(passes[name]),
                "min_ms": min(m),
                "max_ms": max(m),
                "max_over_min": max(m) / min(m),
                "measurements_ms": m,
            }
        )
    return rows


def subnet_correlations(
    space: SearchSpace, size: InputSize, device: str, args: Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Counts and two independent runtime passes of ``args.subnets`` random subnets; their rank correlations."""
    torch.manual_seed(args.seed)
    supernet = Supernet(space).eval()
    choices = distinct_choices(space, args.subnets, args.seed)
    rows, models = [], []
    for i, choice in enumerate(tqdm(choices, desc="extract", unit="subnet")):
        model = supernet.extract(choice).eval()
        counts = count_complexity(model, COUNT_SIZE)
        spec = space.to_spec(choice)
        rows.append(
            {
                "subnet": i,
                "genotype": genotype(spec),
                "width": choice["width"],
                "depth": choice["depth"],
                **{k: getattr(counts, k) for k in COUNTS},
                "choice": choice,
            }
        )
        models.append(model.to(device))
    order = list(range(len(models)))
    for name, label, indices in (("A", "runtime_a_ms", order), ("B", "runtime_b_ms", order[::-1])):
        for i in tqdm(indices, desc=f"pass {name}", unit="subnet"):
            t = measure_runtime(models[i], size, device=device, repeats=args.passes, warmup=args.warmup)
            rows[i][label] = t.median_ms
    for r in rows:
        r["runtime_ms"] = (r["runtime_a_ms"] + r["runtime_b_ms"]) / 2
    a = [r["runtime_a_ms"] for r in rows]
    b = [r["runtime_b_ms"] for r in rows]
    mean = [r["runtime_ms"] for r in rows]
    stats: dict[str, Any] = {
        "subnets": len(rows),
        "spearman_pass_a_vs_b": spearman(a, b),
        "kendall_pass_a_vs_b": kendall_tau(a, b),
        "cv_pass_a_vs_b_median": statistics.median(
            coefficient_of_variation([r["runtime_a_ms"], r["runtime_b_ms"]]) for r in rows
        ),
    }
    for key in COUNTS:
        values = [r[key] for r in rows]
        stats[f"spearman_{key}_vs_runtime"] = spearman(values, mean)
        stats[f"spearman_{key}_vs_runtime_a"] = spearman(values, a)
        stats[f"spearman_{key}_vs_runtime_b"] = spearman(values, b)
    return rows, stats


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--models", nargs="+", metavar="NAME", help="zoo models (default: all)")
    parser.add_argument("--measurements", type=int, default=10, help="repeated measurements per zoo model")
    parser.add_argument("--passes", type=int, default=7, help="timed passes per measurement (its median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes before each measurement")
    parser.add_argument("--size", type=int, default=128, help="LR input side (the search measures 128)")
    parser.add_argument("--subnets", type=int, default=20, help="random subnets for the rank correlations")
    parser.add_argument("--space", default="quick", help="search space name or YAML file (default: quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present: as the search)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.measurements < 2 or args.passes < 1 or args.warmup < 0 or args.subnets < 3 or args.size < 1:
        parser.error("need --measurements >= 2, --passes >= 1, --warmup >= 0, --subnets >= 3, --size >= 1")
    known = zoo.list_zoo()
    unknown = [n for n in args.models or [] if n not in known]
    if unknown:
        parser.error(f"unknown zoo model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        check_device(device)
        space = load_space(find_space(args.space))
    except SrnasError as exc:
        parser.error(str(exc))
    if args.subnets > space.size():
        parser.error(f"--subnets {args.subnets} exceeds the {space.size()} architectures of {space.name}")
    env = environment([device])
    size = (3, args.size, args.size)

    zoo_rows = model_noise(args.models or known, size, device, args)
    subnet_rows, stats = subnet_correlations(space, size, device, args)
    cvs = [r["cv_measurements"] for r in zoo_rows]
    summary = {
        "device": device,
        "input_size": list(size),
        "cv_measurements_median": statistics.median(cvs),
        "cv_measurements_max": max(cvs),
        **stats,
    }

    corr_rows = [
        {
            "count": key,
            "spearman_vs_runtime": stats[f"spearman_{key}_vs_runtime"],
            "pass_a": stats[f"spearman_{key}_vs_runtime_a"],
            "pass_b": stats[f"spearman_{key}_vs_runtime_b"],
        }
        for key in COUNTS
    ]
    zoo_cols = ["model", "median_ms", "cv_measurements", "cv_passes", "min_ms", "max_ms", "max_over_min"]
    sub_cols = ["subnet", "genotype", "activations", "flops", "params", "num_conv", "runtime_a_ms", "runtime_b_ms"]
    body = (
        "## Protocol\n\n"
        f"- Device `{device}`, input 1x3x{args.size}x{args.size}; one measurement = median of {args.passes} timed "
        f"passes after {args.warmup} warm-up passes (`nas.measure.profiler.measure_runtime`, as the search measures).\n"
        f"- Zoo models: {args.measurements} measurements each, taken round-robin over the models. CV = sample "
        "standard deviation / mean, of the measurements (`cv_measurements`) and of all single passes "
        "(`cv_passes`).\n"
        f"- Subnets: {len(subnet_rows)} distinct choices `sample_choice(space, {args.seed}, step)` of "
        f"`{space.source}`, extracted from a randomly initialised supernet (seed {args.seed}); pass B measures "
        "them in reverse order. Counts at 1x3x256x256 (as the search records them).\n"
        "- The AIM 2020 report found that activations rank runtime better than FLOPs (SROCC 0.87 as quoted in the "
        "benchmark issue, over the challenge entries on the organisers' GPU; not re-checked here); the table below "
        "is the same statistic over these subnets on this device.\n\n"
        "## Summary\n\n"
        f"- median CV of repeated measurements over {len(zoo_rows)} zoo models: "
        f"**{summary['cv_measurements_median']:.3f}** (max {summary['cv_measurements_max']:.3f})\n"
        f"- Spearman between two measuring passes over {len(subnet_rows)} subnets: "
        f"**{stats['spearman_pass_a_vs_b']:.3f}** (Kendall {stats['kendall_pass_a_vs_b']:.3f})\n\n"
        "### Spearman of counts vs runtime (mean of the two passes; each pass alone)\n\n"
        + markdown_table(corr_rows, floatfmt=".3f")
        + "\n\n## Zoo models\n\n"
        + markdown_table(zoo_rows, zoo_cols, floatfmt=".3f")
        + "\n\n## Subnets\n\n"
        + markdown_table(subnet_rows, sub_cols, floatfmt=".3f")
        + "\n"
    )
    write_results(
        NAME,
        title="Latency noise and what predicts runtime",
        env=env,
        command=command_line("bench_latency_noise.py", argv),
        arguments=vars(args),
        results={"summary": summary, "correlations": corr_rows, "models": zoo_rows, "subnets": subnet_rows},
        body=body,
    )
    print_table(zoo_rows, zoo_cols, floatfmt=".3f")
    print()
    print_table(corr_rows, floatfmt=".3f")
    print(
        f"passes A vs B over {len(subnet_rows)} subnets: Spearman {stats['spearman_pass_a_vs_b']:.3f}, "
        f"Kendall {stats['kendall_pass_a_vs_b']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
