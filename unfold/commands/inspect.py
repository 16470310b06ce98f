"""``unfold inspect``: print an event file's structure and physics summary."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="print an HDF5 event file's groups, shapes, dtypes and a physics summary",
        description="Print the structure of FILE (groups, datasets with dtype and shape, root attributes) and a "
        "short physics summary: object multiplicities, matched fractions and parton-level mass peaks.",
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="an HDF5 file in the suite's (or SPANet's) layout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unfold.errors import UnfoldError
    from unfold.generation.inspection import describe

    if args.file.is_dir():
        raise UnfoldError(f"{args.file}: a folder; expected an HDF5 file, e.g. data/ttbar_semileptonic_test.h5")
    print(describe(args.file))
    return 0
