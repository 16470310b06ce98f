"""Training events/s of every model as `unfold train` runs it, against the assignment network's in the same run.

Each configuration trains for a few epochs on the first N events of a training file (default: the
default data, `unfold generate`) into a temporary folder, through the command line a user runs, with
the shipped configuration otherwise; its rate is the median of the `events_per_s` the trainer logs
every ten steps (forward, loss, backward and optimiser step of one batch, data loading included),
the first epoch left out (warm-up). Ratios are to `unfold train recon` measured the same way, the
baseline of the assignment issue (SPANet trained at about 263 events/s on that CPU).

    python benchmarks/bench_unfolding_training.py [--data data/ttbar_semileptonic_train.h5] [--events 8192] [--epochs 3]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGURATIONS = (
    ("recon", ()),
    ("parton", ()),
    ("parton", ("--latent",)),
    ("parton", ("--model.objective", "flow-matching")),
    ("parton", ("--model.prediction_type", "epsilon", "--model.noise_draws", "1", "--model.object_queries", "false",
                "--model.augment", "null", "--representation", "decay-chain", "--model.block_conditioning", "false")),
    ("particle", ()),
    ("particle", ("--model.objective", "flow-matching")),
)


def training_rate(task: str, options: tuple[str, ...], data: Path, events: int, epochs: int) -> float:
    """Median logged events/s after the first epoch of `unfold train TASK OPTIONS` on the first ``events`` events."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "unfold.cli", "train", task, *options, "--data", str(data),
                   "--limit", str(events), "--epochs", str(epochs), "--out", out]
        if task == "recon":
            command += ["--test", str(data)]  # the closing efficiency table on the same (small) file
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (metrics,) = Path(out).glob(f"{task}/*/metrics/metrics.csv")
        with metrics.open() as handle:
            rates = [float(row["events_per_s"]) for row in csv.DictReader(handle)
                     if row["events_per_s"] and int(row["epoch"]) > 0]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ttbar_semileptonic_train.h5"), help="training file")
    parser.add_argument("--events", type=int, default=8192, help="first N events of the file (default 8192)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per configuration (default 3; the first is warm-up)")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data}: not found; run `unfold generate` first or pass --data")
    print(f"unfold train on the first {args.events} events of {args.data}, {args.epochs} epochs, CPU")
    print(f"{'task':>9} {'options':<84} {'events/s':>9} {'x recon':>8}")
    baseline = None
    for task, options in CONFIGURATIONS:
        rate = training_rate(task, options, args.data, args.events, args.epochs)
        baseline = baseline or rate
        print(f"{task:>9} {' '.join(options) or '(shipped)':<84} {rate:>9.0f} {rate / baseline:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
