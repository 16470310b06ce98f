"""Time and peak memory of `unfold sample` on a file ten times a test file against the file itself:
streaming in chunks, time should grow about linearly (plus a fixed start-up: imports, model, chi-square
fit) and peak resident memory should stay flat.

    python benchmarks/bench_sample_scaling.py --checkpoint runs/parton/<id> \\
        [--data data/ttbar_semileptonic_test.h5] [--fit-data data/ttbar_semileptonic_train.h5] [--n 2]

Each run is its own `unfold sample` process; its peak RSS is that process's ``ru_maxrss`` and its CPU
time ``ru_utime + ru_stime`` (os.wait4), which a loaded machine disturbs less than the wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py


def replicate(source: Path, out: Path, copies: int) -> int:
    """Write ``copies`` back-to-back copies of every per-event dataset of ``source`` to ``out`` (root
    attributes kept), one copy in memory at a time; returns the number of events of ``out``."""
    with h5py.File(source) as file, h5py.File(out, "w") as target:
        events = len(file["INPUTS/Momenta/MASK"])
        datasets: list[str] = []
        file.visititems(lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None)
        for name in datasets:
            data = file[name]
            if data.shape[:1] != (events,):
                raise SystemExit(f"{source}: {name} has shape {data.shape}; expected one row per event ({events})")
            copy = target.create_dataset(name, shape=(events * copies, *data.shape[1:]), dtype=data.dtype,
                                         chunks=True, compression="gzip", compression_opts=1)
            values = data[...]
            for k in range(copies):
                copy[k * events:(k + 1) * events] = values
        for key, value in file.attrs.items():
            target.attrs[key] = value
    return events * copies


def sample(args: argparse.Namespace, data: Path, out: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one `unfold sample` process on ``data``."""
    command = [sys.executable, "-m", "unfold.cli", "sample", "parton", "--checkpoint", str(args.checkpoint),
               "--data", str(data), "--out", str(out), "--n", str(args.n), "--steps", str(args.steps),
               "--fit-data", str(args.fit_data), "--devices", args.devices]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="parton run folder or .ckpt")
    parser.add_argument("--data", type=Path, default=Path("data/ttbar_semileptonic_test.h5"))
    parser.add_argument("--fit-data", type=Path, default=Path("data/ttbar_semileptonic_train.h5"))
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--n", type=int, default=2, help="unfoldings per event")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--devices", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        large = Path(folder) / f"x{args.copies}.h5"
        events = replicate(args.data, large, args.copies)
        rows = {}
        for label, data in (("1x", args.data), (f"{args.copies}x", large)):
            rows[label] = sample(args, data, Path(folder) / f"samples-{label}.h5")
            wall, cpu, rss = rows[label]
            print(f"{label:>4} {events // args.copies if label == '1x' else events:>8} events: wall {wall:8.1f} s, "
                  f"CPU {cpu:8.1f} s, peak RSS {rss:6.0f} MiB", flush=True)
    (one_wall, one_cpu, one_rss), (big_wall, big_cpu, big_rss) = rows.values()
    print(f"ratio {args.copies}x/1x: wall {big_wall / one_wall:.2f}, CPU {big_cpu / one_cpu:.2f}, "
          f"peak RSS {big_rss / one_rss:.2f}")


if __name__ == "__main__":
    main()
