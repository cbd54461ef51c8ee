"""`latentdiff data list | export`: the built-in datasets."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction, formatter) -> None:
    p = sub.add_parser(
        "data",
        help="list the built-in datasets or export one as an image folder",
        description="list the built-in datasets or export one as an image folder\n\nexamples:\n"
        "  latentdiff data list\n  latentdiff data export fashion-mnist out/fm --split test",
        formatter_class=formatter,
    )
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{list,export}")
    lp = dsub.add_parser("list", help="name, images per split, shape, installed?")
    lp.set_defaults(func=cmd_list)
    ep = dsub.add_parser("export", help="write a dataset as PNGs in class sub-folders")
    ep.add_argument("name", help="built-in dataset name (or an image folder)")
    ep.add_argument("out", type=Path, help="empty or new folder")
    ep.add_argument("--split", default="train")
    ep.add_argument("--limit", type=int, default=None)
    ep.add_argument("--resolution", type=int, default=None)
    ep.set_defaults(func=cmd_export)


def cmd_list(args: argparse.Namespace) -> str:
    from latentdiff.data.builtin import list_datasets

    rows = [("name", "images", "shape", "installed", "description")]
    for d in list_datasets():
        counts = " / ".join(f"{n:,} {s}" for s, n in d["counts"].items())
        shape = "×".join(str(v) for v in d["shape"])
        installed = "yes" if d["installed"] else f"no: {d['install_command']}"
        rows.append((d["name"], counts, shape, installed, d["description"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows
    )


def cmd_export(args: argparse.Namespace) -> str:
    from latentdiff.data.png_export import export_dataset

    n = export_dataset(args.name, args.out, split=args.split, limit=args.limit, resolution=args.resolution)
    return f"wrote {n} images to {args.out}/"
