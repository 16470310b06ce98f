"""``unfold closure``: does a trained unfolding follow a change of the physics, or return its prior?"""

from __future__ import annotations

import argparse
from pathlib import Path

from unfold.commands import DefaultsHelpFormatter, comma_list, non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from unfold.models.diffusion.sampler import PRECISIONS

    parser = subparsers.add_parser(
        "closure", help="prior-dependence test: unfolded vs truth shift between a nominal and alternative files",
        description="Unfold a nominal file and one or more alternatives (another top mass, a reweighted spectrum, "
        "another tune; all with truth) with a trained parton or particle run, trains nothing, and report per key "
        "observable the shift (alternative - nominal) of the mean within a window around the peak and of the median "
        "in the truth, the unfoldings and at detector level; the fraction followed = unfolded shift / truth shift, "
        "with errors from the draws and from a bootstrap of the events. Writes <out>/metrics.json, <out>/index.html "
        "and one plot per observable.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="parton or particle run folder or .ckpt")
    parser.add_argument("--nominal", type=Path, required=True, help="the nominal file (with truth)")
    parser.add_argument("--alternative", type=Path, action="append", required=True,
                        help="an alternative file (with truth); repeat for several")
    parser.add_argument("--labels", type=comma_list, default=None,
                        help="comma-separated name of each file, the nominal's first (default: nominal and the "
                        "alternatives' stems)")
    parser.add_argument("--n", type=positive_int, default=33, help="unfoldings per event")
    parser.add_argument("--bootstrap", type=positive_int, default=50, help="bootstrap resamples of the events")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder, new or a previous report (default: reports/closure-<run name>)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="denoising steps (default: the run's, as unfold sample: 25 for parton runs, 10 for particle "
                        "diffusion runs)")
    parser.add_argument("--sampler", default=None,
                        help="sampler of the draws (default: the run's, as unfold sample: dpm-solver for runs predicting "
                        "v, ddpm for parton runs predicting the noise, euler for flow matching)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="arithmetic of the denoising network, as unfold sample --precision")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="events per batch")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the draws")
    parser.add_argument("--device", default="auto", help="torch device, auto: cuda if there is a GPU, else cpu")
    parser.add_argument("--limit", type=positive_int, default=None, help="use only the first N events of each file")
    parser.add_argument("--recon", type=Path, action="append", default=None,
                        help="recon run whose assignments reconstruct the parton-level detector reference "
                        "(default: the chi-square baseline); repeat it for the ensemble of several runs")
    parser.add_argument("--fit-data", type=Path, default=None,
                        help="file on whose truth-matched events the chi-square baseline fits its resolutions "
                        "(default: the nominal file)")
    parser.add_argument("--unbias", type=Path, nargs="+", default=(), metavar="SIMULATION.h5",
                        help="also unbias every file's unfolding: fit the prior's top-pT slope and, with several top masses, the top mass to "
                        "its detector level with these simulation files (generated with `unfold generate`; several "
                        "--pythia '6:m0 = ...' top masses make a broad prior) and reweight the draws (parton runs); by default no unbiasing")
    parser.add_argument("--unbias-parameters", type=comma_list, default=None,
                        help="comma-separated prior parameters the unbiasing fits: top_pt_slope and/or top_mass (default: "
                        "top_pt_slope, and top_mass too where the simulation holds several top masses)")
    parser.add_argument("--training-data", type=Path, nargs="+", default=None,
                        help="the files the run was trained on, whose prior the unbiasing replaces (default: the "
                        "run's config.yaml data)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from unfold.tasks.closure import run_closure

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    out = args.out or Path("reports") / f"closure-{args.run.name}"
    result = run_closure(args.run, args.nominal, args.alternative, out, labels=args.labels, n=args.n,
                         resamples=args.bootstrap, seed=args.seed, steps=args.steps, sampler=args.sampler,
                         precision=args.precision, batch_size=args.batch_size, device=device, recon=args.recon,
                         fit_data=args.fit_data, limit=args.limit, unbias=args.unbias,
                         unbias_parameters=args.unbias_parameters, training_data=args.training_data)
    print(result.headline)
    print(f"\nclosure report written to {result.out / 'index.html'}")
    return 0
