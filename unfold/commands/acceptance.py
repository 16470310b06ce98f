"""``unfold acceptance``: efficiency and fake corrections (arXiv 2509.02708) for unfolded samples."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

from unfold.commands import DefaultsHelpFormatter, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from unfold.tasks.acceptance import FitConfig, Level

    parser = subparsers.add_parser(
        "acceptance",
        help="train efficiency / fake-rate classifiers on a --keep-missed file and weight unfolded samples with them",
        description=(
            "Efficiency and fake corrections after 'Analysis-ready generative unfolding' (arXiv 2509.02708). "
            "'train' fits p(selected | truth) (parton level: every generated event; particle level: the fiducial "
            "events) and, at particle level, p(fiducial | detector event), on a file written by "
            "'unfold generate --keep-missed', and prints their calibration and the efficiency and fake rate in bins "
            "of m(ttbar) and the top pT on the test file. 'apply' weights every draw of an 'unfold sample' file by "
            "p_fid(detector) / efficiency(draw) into ACCEPTANCE/weight, so the weighted draws estimate the full "
            "inclusive (parton) or fiducial (particle) distribution."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="fit the classifiers and check them against counts on the test file",
                               formatter_class=DefaultsHelpFormatter)
    train.add_argument("train", type=Path, metavar="TRAIN.h5", help="training file of unfold generate --keep-missed")
    train.add_argument("--test", type=Path, default=None, metavar="TEST.h5",
                       help="held-out file for the checks (default: the *_test.h5 beside a *_train.h5)")
    train.add_argument("--level", choices=get_args(Level), default="parton",
                       help="parton: inclusive efficiency; particle: fiducial efficiency and fake probability")
    train.add_argument("--out", type=Path, default=None, help="run folder (default: runs/acceptance/<level>)")
    train.add_argument("--epochs", type=positive_int, default=FitConfig.epochs, help="training passes over the events")
    train.add_argument("--hidden", type=positive_int, default=FitConfig.hidden, help="width of the classifiers' hidden layers")
    train.add_argument("--seed", type=int, default=FitConfig.seed, help="seed of the initialisation and batches")
    train.set_defaults(func=run_train)
    apply = actions.add_parser("apply", help="write the per-draw correction weights into an unfold sample file",
                               formatter_class=DefaultsHelpFormatter)
    apply.add_argument("run", type=Path, metavar="RUN", help="folder written by unfold acceptance train")
    apply.add_argument("samples", type=Path, metavar="SAMPLES.h5", help="output of unfold sample (changed in place)")
    apply.add_argument("--min-efficiency", type=float, default=None,
                       help="efficiencies below this are raised to it, bounding the weights at 1/min "
                       "(default: 0.1, unfold.tasks.acceptance.MIN_EFFICIENCY)")
    apply.set_defaults(func=run_apply)


def run_train(args: argparse.Namespace) -> int:
    from unfold.errors import UnfoldError
    from unfold.tasks.acceptance import FitConfig, train_acceptance

    test = args.test
    if test is None:
        if not args.train.stem.endswith("_train"):
            raise UnfoldError(f"{args.train}: not a *_train.h5 file; name the held-out file with --test")
        test = args.train.with_name(args.train.name.replace("_train.h5", "_test.h5"))
    out = args.out or Path("runs") / "acceptance" / args.level
    metrics = train_acceptance(args.train, test, out, level=args.level,
                               config=FitConfig(epochs=args.epochs, hidden=args.hidden, seed=args.seed))
    for name in ("efficiency", "fake_rate"):
        if name not in metrics:
            continue
        entry = metrics[name]
        calib = entry["calibration"]
        print(f"{name}: observed {entry['observed']:.4f}, predicted {entry['predicted']:.4f} on {entry['events']} "
              f"test events; calibration chi2/ndf {calib['chi2']:.1f}/{calib['ndf']}")
        for observable, rows in entry["by_observable"].items():
            print(f"  {name} vs {observable} [GeV]: observed +- error (predicted) [events]")
            for row in rows:
                print(f"    {row['low']:6.0f}-{row['high']:<6.0f} {row['observed']:.3f} +- {row['error']:.3f} "
                      f"({row['predicted']:.3f}) [{row['events']}]")
    print(f"wrote {out / 'acceptance.pt'} and {out / 'metrics.json'}")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    from unfold.tasks.acceptance import apply_acceptance

    chosen = {} if args.min_efficiency is None else {"min_efficiency": args.min_efficiency}
    summary = apply_acceptance(args.run, args.samples, **chosen)
    print(f"{args.samples}: ACCEPTANCE/weight written {json.dumps(summary)}")
    return 0
