"""``unfold unbias``: replace a parton unfolding's training prior by one fitted to the data."""

from __future__ import annotations

import argparse
from pathlib import Path

from unfold.commands import DefaultsHelpFormatter, comma_list, non_negative_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "unbias", help="fit the prior's top-pT slope and top mass to the data, resample the draws under it",
        description="A generative unfolding returns its training simulation's prior wherever the detector "
        "resolves less than the prior's features (the top line shape). This fits the prior's top-pT slope (and, "
        "with a simulation of several top masses, the top mass) to the data of a parton `unfold sample` file at detector level, by the template "
        "method on simulation reweighted from the top masses it was generated with (for the mass a broad prior: "
        "generate several with --pythia '6:m0 = ...', arXiv 2501.12363), then resamples every event's draws in proportion to the ratio "
        "of the fitted prior to the training prior (Bayes' theorem, no retraining). Writes a samples file that "
        "`unfold report` reads like any other, with the fit in its attribute `unbiasing`.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("samples", type=Path, metavar="SAMPLES.h5", help="parton samples file of unfold sample")
    parser.add_argument("--simulation", type=Path, nargs="+", required=True, metavar="SIM.h5",
                        help="simulation files written by unfold generate, one or several top masses")
    parser.add_argument("--out", type=Path, default=None,
                        help="the unbiased samples file (default: <samples stem>_unbiased.h5 beside it)")
    parser.add_argument("--parameters", type=comma_list, default=None,
                        help="comma-separated prior parameters to fit: top_pt_slope and/or top_mass (default: top_pt_slope, "
                        "and top_mass too where the simulation holds several top masses)")
    parser.add_argument("--training-data", type=Path, nargs="+", default=None,
                        help="the files the run was trained on (default: the run's config.yaml data)")
    parser.add_argument("--recon", type=Path, action="append", default=None,
                        help="recon run whose assignments reconstruct the tops' pT (default: the chi-square baseline); repeat it for the ensemble of several runs")
    parser.add_argument("--fit-data", type=Path, default=None,
                        help="file whose truth-matched events fit the chi-square (default: the *_train.h5 beside "
                        "the samples' inputs)")
    parser.add_argument("--bootstrap", type=non_negative_int, default=30, help="bootstrap refits for the errors")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the resampling of the draws")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unfold.tasks.unbias import unbias_samples

    out = args.out or args.samples.with_name(f"{args.samples.stem}_unbiased.h5")
    unbiasing = unbias_samples(args.samples, out, args.simulation, free=args.parameters,
                               training_data=args.training_data, recon=args.recon, fit_data=args.fit_data,
                               resamples=args.bootstrap, seed=args.seed)
    print(f"fitted prior: {unbiasing.fit.summary()}")
    print(f"draws resampled under it (Kish effective draws {unbiasing.effective_draws:.0f} of "
          f"{unbiasing.weights.size}); wrote {out}")
    return 0
