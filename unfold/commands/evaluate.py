"""``unfold evaluate recon``: SPANet's efficiency tables for a trained run beside the chi-square."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unfold.commands import DefaultsHelpFormatter, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="efficiency tables of a trained recon run vs the chi-square baseline")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    recon = tasks.add_parser(
        "recon", help="efficiency by jet multiplicity, all and complete events, model vs chi-square",
        description="Print event fraction, event efficiency and per-resonance efficiency by jet multiplicity for all "
        "events (at least one reconstructable resonance) and complete events (all reconstructable), for the model "
        "and the chi-square baseline (resolutions fitted on the training file).",
        formatter_class=DefaultsHelpFormatter,
    )
    recon.add_argument("--checkpoint", type=Path, action="append", default=None,
                       help="run folder or .ckpt (default: the newest recon run); repeat it to evaluate the ensemble "
                       "of several runs (their mean tuple probabilities)")
    recon.add_argument("--data", type=Path, default=None, help="file to evaluate (default: the default test file)")
    recon.add_argument("--train", type=Path, default=None, help="file the chi-square resolutions are fitted on (default: the default train file)")
    recon.add_argument("--event-file", type=Path, default=None,
                       help="SPANet event file; only checked against the checkpoint's own, which is what is used")
    recon.add_argument("--bins", default=None, help="comma-separated jet bins, e.g. '==4,==5,>=6' (default from the topology)")
    recon.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the tables as JSON")
    recon.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N events")
    recon.add_argument("--weights", default=None, metavar="DATASET",
                       help="per-event weights of the tables, e.g. WEIGHTS/weight (default: SPANet's WEIGHTS/weight when "
                       "the file has it, else unweighted); negative weights allowed")
    recon.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recon.event_topology import EventTopology
    from unfold.errors import UnfoldError
    from unfold.generation.pipeline import ensure_default_data
    from unfold.outputs import check_output_file, partial_name
    from unfold.tasks.assignment_model import AssignmentModel
    from unfold.tasks.evaluate_recon import evaluate_recon
    from unfold.training.trainer import newest_run

    if args.json is not None:
        check_output_file(args.json, option="--json", kind="json",
                          inputs=(*(args.checkpoint or ()), args.data, args.train, args.event_file))
    checkpoints = args.checkpoint or [newest_run(Path("runs"), "recon")]
    if args.data is None:
        train, test = ensure_default_data()
        data, train = test, args.train or train
    else:
        data, train = args.data, args.train
    if args.event_file is not None:
        expected = AssignmentModel.load(*checkpoints).topology
        given = EventTopology.from_yaml(args.event_file)
        if given.resonances != expected.resonances or given.sources != expected.sources:
            raise UnfoldError(f"{args.event_file}: does not match the checkpoint's event file ({expected.resonance_names})")
    bins = tuple(b.strip() for b in args.bins.split(",")) if args.bins else None
    tables, text = evaluate_recon(checkpoints, data, train, bins=bins, limit=args.limit, weights=args.weights)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_name(args.json)
        try:
            partial.write_text(json.dumps(tables, indent=2))
            partial.replace(args.json)
        finally:
            partial.unlink(missing_ok=True)
        print(f"tables written to {args.json}")
    return 0
