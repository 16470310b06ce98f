"""``unfold predict recon``: everything a trained recon run predicts per event, into an HDF5 file."""

from __future__ import annotations

import argparse
from pathlib import Path

from unfold.commands import DefaultsHelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="write a trained recon run's per-event predictions to HDF5")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    recon = tasks.add_parser(
        "recon", help="assignments with probabilities, regression and classification heads, per event",
        description="Write, for every event of any SPANet-layout file holding the model's inputs: "
        "PREDICTIONS/<resonance>/<daughter> (assigned object indices) and "
        "PREDICTIONS/<resonance>/{assignment,detection,marginal}_probability and entropy; "
        "PREDICTIONS/REGRESSIONS/<target> and <target>_uncertainty (the head's mean and sigma); "
        "PREDICTIONS/CLASSIFICATIONS/<target> (class probabilities); with --embeddings PREDICTIONS/EMBEDDING; "
        "every input source, WEIGHTS/weight and EVENT_INDEX (the event's row in the input file). TARGETS, "
        "REGRESSIONS, CLASSIFICATIONS, truth and generator attributes are optional: where TARGETS are present "
        "they are copied with PREDICTIONS/<resonance>/correct and the efficiency tables (a root attribute read "
        "by `unfold report`); where absent the tables are skipped and the file's 'note' attribute says so. "
        "The input is streamed in chunks; nothing is written unless the whole file is.",
        formatter_class=DefaultsHelpFormatter,
    )
    recon.add_argument("--checkpoint", type=Path, action="append", default=None,
                       help="run folder or .ckpt (default: the newest recon run); repeat it to predict with the ensemble "
                       "of several runs (their mean tuple probabilities)")
    recon.add_argument("--data", type=Path, default=None, help="input file (default: the default test file)")
    recon.add_argument("--train", type=Path, default=None, help="file for the chi-square baseline's resolutions (optional)")
    recon.add_argument("--out", type=Path, default=None, help="output file (default: <data stem>_predictions.h5 beside the inputs)")
    recon.add_argument("--weights", default=None, metavar="DATASET",
                       help="per-event weights copied to the output and weighting the efficiency tables "
                       "(default: SPANet's WEIGHTS/weight when the file has it, else 1); negative weights allowed")
    recon.add_argument("--embeddings", action="store_true", help="also write the encoder's event vector (E, width)")
    recon.add_argument("--limit", type=int, default=None, help="predict only the first N events (only they are read)")
    recon.add_argument("--chunk-size", type=int, default=16_384, help="events read and predicted at a time")
    recon.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unfold.generation.pipeline import ensure_default_data
    from unfold.outputs import check_output_file
    from unfold.tasks.predict_recon import NO_TARGETS, predict_recon
    from unfold.training.trainer import newest_run

    checkpoints = args.checkpoint or [newest_run(Path("runs"), "recon")]
    train = args.train
    if args.data is None:
        default_train, data = ensure_default_data()
        train = train or default_train
    else:
        data = args.data
    out = args.out or data.with_name(f"{data.stem}_predictions.h5")
    check_output_file(out, option="--out", kind="predictions", inputs=(data, train, *checkpoints))
    out = predict_recon(checkpoints, data, out, train_path=train, weights=args.weights, embeddings=args.embeddings,
                        limit=args.limit, chunk_size=args.chunk_size)
    import h5py

    with h5py.File(out) as file:
        if file.attrs.get("note") == NO_TARGETS:
            print(f"note: {NO_TARGETS}")
    print(f"predictions written to {out}")
    return 0
