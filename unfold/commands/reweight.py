"""``unfold reweight``: a copy of a generated file reweighted to another top mass or top-pT spectrum."""

from __future__ import annotations

import argparse
from pathlib import Path

from unfold.commands import DefaultsHelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reweight", help="pseudo-data: a generated file reweighted to another top mass or top-pT spectrum",
        description="Copy a file written by `unfold generate` and multiply its event weights (WEIGHTS/weight) by "
        "the ratio of a prior with the given top mass and top-pT slope to the file's own (a relativistic "
        "Breit-Wigner per top; the factor sqrt(prod_t (1 + s pT_t / 500 GeV))), normalised to a mean of one. "
        "For `unfold closure` tests of whether an unfolding follows the data or its training prior.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("source", type=Path, metavar="FILE.h5", help="file written by unfold generate (with PARTONS)")
    parser.add_argument("--out", type=Path, required=True, help="the reweighted copy")
    parser.add_argument("--top-mass", type=float, default=None,
                        help="top pole mass of the new prior in GeV (default: the file's own)")
    parser.add_argument("--top-pt-slope", type=float, default=0.0,
                        help="s of the top-pT factor 1 + s pT / 500 GeV per top (1: issue 14's test)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from evaluation.metrics import effective_events
    from unfold.tasks.reweight import reweight_file

    weights, prior = reweight_file(args.source, args.out, top_mass=args.top_mass, top_pt_slope=args.top_pt_slope)
    mass = "the file's own top mass" if prior.top_mass is None else f"top mass {prior.top_mass:g} GeV"
    print(f"wrote {args.out}: {len(weights)} events reweighted to {mass} and top-pT slope {prior.top_pt_slope:g}; weights {np.min(weights):.3g} to {np.max(weights):.3g}, effective events "
          f"{effective_events(weights):.0f}")
    return 0
