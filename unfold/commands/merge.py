"""``unfold merge``: concatenate generated files, e.g. several top masses into one broad-prior sample."""

from __future__ import annotations

import argparse
from pathlib import Path

from unfold.commands import DefaultsHelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge", help="concatenate files of unfold generate (several top masses make a broad prior)",
        description="Concatenate files written by `unfold generate` for the same process and layout into one (datasets "
        "only some files have are left out and named), "
        "written whole or not at all. The merged file records the top-mass mixture of its inputs "
        "(attribute top_mass_prior), which `unfold unbias` reads as the prior a run trained on it has.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE.h5", help="files written by unfold generate")
    parser.add_argument("--out", type=Path, required=True, help="the merged file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unfold.tasks.merge import merge_files

    events, dropped = merge_files(args.files, args.out)
    print(f"wrote {args.out}: {events} events from {len(args.files)} files")
    if dropped:
        print(f"left out, not in every file: {', '.join(dropped)}")
    return 0
