"""Speed of the report's distances with their noise: one observable of E events and n draws, every
metric with its bootstrap errors (K resamples), the noise floor and a detector reference; and,
given a samples file, the whole ``unfold report`` on it.

    python benchmarks/bench_report_distances.py [--events 5000] [--draws 33] [--resamples 50] [--file samples.h5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluation.metrics import bootstrap_weights, histogram_edges, noise_floor, summarise
from evaluation.report import write_report


def one_observable(events: int, draws: int, resamples: int) -> float:
    """Seconds for the distances of one per-event observable: draws, reference and noise floor."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=events)
    unfolded = rng.normal(size=(events, draws))
    detector = truth + rng.normal(0.0, 0.3, size=events)
    start = time.perf_counter()
    edges = histogram_edges(truth, 64)
    weights = bootstrap_weights(events, resamples, rng)
    summarise(truth, unfolded, edges, weights, weights)
    summarise(truth, detector, edges, weights, weights)
    noise_floor(truth, edges, weights, bootstrap_weights(events, resamples, rng))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--draws", type=int, default=33)
    parser.add_argument("--resamples", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--file", type=Path, default=None, help="a samples file for the whole report")
    args = parser.parse_args()
    best = min(one_observable(args.events, args.draws, args.resamples) for _ in range(args.repeats))
    print(f"one observable, {args.events} events x {args.draws} draws, {args.resamples} resamples: {best:.2f} s")
    if args.file is not None:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            result = write_report([args.file], Path(folder) / "report", resamples=args.resamples)
            print(f"unfold report {args.file}: {time.perf_counter() - start:.1f} s ({result.n_plots} plots)")


if __name__ == "__main__":
    main()
