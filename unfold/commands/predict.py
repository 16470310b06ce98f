"""``unfold predict recon``: per-event assignments and their probabilities into an HDF5 file."""

from __future__ import annotations

import argparse
from pathlib import Path

from unfold.commands import DefaultsHelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="write a trained recon run's per-event assignments to HDF5")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    recon = tasks.add_parser(
        "recon", help="assigned jet indices, assignment/detection/marginal probabilities and entropy per resonance",
        description="Write PREDICTIONS/<resonance>/<daughter> (assigned object indices) and "
        "PREDICTIONS/<resonance>/{assignment,detection,marginal}_probability and entropy, with the inputs' targets and "
        "momenta beside them and the efficiency tables as a root attribute (readable by `unfold report`).",
        formatter_class=DefaultsHelpFormatter,
    )
    recon.add_argument("--checkpoint", type=Path, default=None, help="run folder or .ckpt (default: the newest recon run)")
    recon.add_argument("--data", type=Path, default=None, help="input file (default: the default test file)")
    recon.add_argument("--train", type=Path, default=None, help="file for the chi-square baseline's resolutions (optional)")
    recon.add_argument("--out", type=Path, default=None, help="output file (default: <data stem>_predictions.h5 beside the inputs)")
    recon.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unfold.generation.pipeline import ensure_default_data
    from unfold.tasks.predict_recon import predict_recon
    from unfold.training.trainer import newest_run

    checkpoint = args.checkpoint or newest_run(Path("runs"), "recon")
    train = args.train
    if args.data is None:
        default_train, data = ensure_default_data()
        train = train or default_train
    else:
        data = args.data
    out = args.out or data.with_name(f"{data.stem}_predictions.h5")
    print(f"predictions written to {predict_recon(checkpoint, data, out, train_path=train)}")
    return 0
