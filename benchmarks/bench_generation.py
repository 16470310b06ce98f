"""Generation throughput of `unfold generate`: selected events/s per worker count and MPI setting.

Each setting writes ``--events`` semi-leptonic ttbar events into a temporary folder; rates are
printed beside their ratio to the first setting measured in the same run, with the file size
per 10k events. On a shared machine compare code versions by running this script back to back
on the same settings (ratios), not by absolute rates.

    python benchmarks/bench_generation.py [--events 1000] [--workers 1 2] [--mpi on off]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from unfold.generation.pipeline import GenerationConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="selected events per setting (default 1000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--mpi", choices=("on", "off"), nargs="+", default=["on", "off"], help="MPI settings (default on off)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for mpi in args.mpi:
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as folder:
                config = GenerationConfig(
                    events=args.events, out=Path(folder), workers=workers, mpi=mpi == "on", seed=args.seed, shard_size=100
                )
                result = generate(config, progress=False)
                size = result.train.stat().st_size + result.test.stat().st_size
                rows.append((workers, mpi, result.events / result.seconds, result.tried / result.seconds, size / result.events * 1e4))
    base = rows[0][2]
    print(f"{'workers':>7} {'MPI':>4} {'selected ev/s':>14} {'generated ev/s':>15} {'x first':>8} {'MB per 10k':>11}")
    for workers, mpi, rate, tried, size in rows:
        print(f"{workers:>7} {mpi:>4} {rate:>14.1f} {tried:>15.1f} {rate / base:>8.2f} {size / 2**20:>11.2f}")


if __name__ == "__main__":
    main()
