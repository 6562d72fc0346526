"""``srnas zoo``: list the reference models and whether their official checkpoints are present;
``srnas zoo download NAME ...|--all`` fetches official checkpoints into the cache (hash-checked)."""

from __future__ import annotations

import sys

from nas import zoo
from nas.cli.commands._common import print_json
from nas.errors import SrnasError, UsageError
from nas.zoo import weights


def register(sub) -> None:
    p = sub.add_parser(
        "zoo",
        help="list the model zoo; download official weights",
        description="List the zoo models and their reference numbers, or download their official checkpoints "
        f"(`srnas zoo download rfdn`) into the cache ($SRNAS_HOME/weights, default {weights.cache_dir()}), "
        "checked against the sha256 each zoo entry records. $SRNAS_WEIGHTS_DIR names a folder of files you "
        "already have.",
    )
    p.add_argument("action", nargs="?", choices=["list", "download"], default="list", help="list (default) or download")
    p.add_argument("names", nargs="*", metavar="NAME", help="zoo models to download")
    p.add_argument("--all", action="store_true", help="download every zoo model that has an official checkpoint")
    p.add_argument("--force", action="store_true", help="download again even when a verified copy is present")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.action == "download":
        return _download(args)
    if args.names or args.all:
        raise UsageError("model names and --all go with `srnas zoo download`")
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


def _download(args) -> int:
    if args.all and args.names:
        raise UsageError("give model names or --all, not both")
    names = [n for n in zoo.list_zoo() if zoo.weights_source(n)] if args.all else args.names
    if not names:
        raise UsageError("name the zoo models to download (see `srnas zoo`), or pass --all")
    unknown = [n for n in names if n not in zoo.list_zoo()]
    if unknown:
        raise SrnasError(f"unknown zoo model(s) {', '.join(unknown)}; known: {', '.join(zoo.list_zoo())}")
    rows = []
    for name in names:
        source = zoo.weights_source(name)
        if source is None:
            raise SrnasError(f"zoo model {name!r} has no official checkpoint to download")
        path = weights.download(source, force=args.force)
        rows.append({"name": name, "file": str(path), "sha256": source.sha256})
        if not args.json:
            print(f"{name}: {path}", file=sys.stdout)
    if args.json:
        print_json(rows)
    return 0
