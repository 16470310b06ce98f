"""Generation throughput of `unfold generate`: selected events/s for 1 and 2 workers, MPI on and off.

Each setting writes ``--events`` semi-leptonic ttbar events into a temporary folder; rates are
printed beside their ratio to the first setting (1 worker, MPI on) measured in the same run,
with the file size per 10k events.

    python benchmarks/bench_generation.py [--events 1000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from unfold.generation.pipeline import GenerationConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="selected events per setting (default 1000)")
    args = parser.parse_args()
    rows = []
    for workers, mpi in ((1, True), (2, True), (1, False), (2, False)):
        with tempfile.TemporaryDirectory() as folder:
            config = GenerationConfig(events=args.events, out=Path(folder), workers=workers, mpi=mpi, seed=3, shard_size=100)
            result = generate(config, progress=False)
            size = result.train.stat().st_size + result.test.stat().st_size
            rows.append((workers, mpi, result.events / result.seconds, result.tried / result.seconds, size / result.events * 1e4))
    base = rows[0][2]
    print(f"{'workers':>7} {'MPI':>4} {'selected ev/s':>14} {'generated ev/s':>15} {'x baseline':>11} {'MB per 10k':>11}")
    for workers, mpi, rate, tried, size in rows:
        print(f"{workers:>7} {'on' if mpi else 'off':>4} {rate:>14.1f} {tried:>15.1f} {rate / base:>11.2f} {size / 2**20:>11.2f}")


if __name__ == "__main__":
    main()
