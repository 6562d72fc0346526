"""``srnas zoo``: list the reference models and whether their official checkpoints are present."""

from __future__ import annotations

from nas import zoo
from nas.cli.commands._common import print_json


def register(sub) -> None:
    p = sub.add_parser("zoo", help="list the model zoo", description="List the zoo models and their reference numbers.")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = []
    for name in zoo.list_zoo():
        ckpt = zoo.checkpoint_path(name)
        rows.append({"name": name, "checkpoint": str(ckpt) if ckpt else None, **zoo.reference_profile(name)})
    if args.json:
        print_json(rows)
        return 0
    print(f"{'model':<16}{'params':>12}{'FLOPs(G)':>10}{'acts(M)':>10}{'#conv':>7}{'Set5 Y':>9}  checkpoint")
    for r in rows:
        set5 = f"{r['set5_psnr_y']:.4f}" if r.get("set5_psnr_y") else "-"
        print(
            f"{r['name']:<16}{r.get('params', 0):>12,}{r.get('flops', 0) / 1e9:>10.2f}"
            f"{r.get('activations', 0) / 1e6:>10.2f}{r.get('num_conv', 0):>7}{set5:>9}  {r['checkpoint'] or '-'}"
        )
    return 0
