"""W and top mass peaks of the shipped parton model trained for a wall-clock budget on fresh Pythia events,
beside the truth and the detector-level reconstruction (the heavy version of
``tests/unfold/test_parton_mass_peaks.py``; its outcome depends on the machine's speed).

    python benchmarks/bench_parton_mass_peaks.py [--events 5000] [--minutes 1] [--out /tmp/peaks]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from evaluation.metrics import peak_position
from evaluation.observables import compute_observables
from evaluation.samples_file import read_samples_file
from unfold.generation.pipeline import GenerationConfig, generate
from unfold.tasks.sample import sample_unfoldings
from unfold.tasks.train_unfolding import UnfoldingConfig, train_unfolding
from unfold.training.trainer import TrainerOptions

EVENT_FILE = Path(__file__).resolve().parents[1] / "configs" / "events" / "ttbar_semileptonic.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--minutes", type=int, default=1)
    parser.add_argument("--draws", type=int, default=33)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_parton_mass_peaks_"))
    start = time.perf_counter()
    files = generate(
        GenerationConfig(events=args.events, out=out / "data", seed=23, workers=2, mpi=False, test_fraction=0.4),
        progress=False,
    )
    generated = time.perf_counter()
    run = train_unfolding(
        UnfoldingConfig(
            task="parton", data=files.train, event_file=EVENT_FILE, out=out / "runs",
            trainer=TrainerOptions(epochs=1000, max_time=f"00:00:{args.minutes:02d}:00", seed=0),
        )
    )
    trained = time.perf_counter()
    samples = sample_unfoldings({"parton": run}, files.test, out / "samples.h5", n=args.draws, steps=10, devices="cpu")
    sampled = time.perf_counter()
    print(f"generation {generated - start:.0f} s, training {trained - generated:.0f} s, sampling {sampled - trained:.0f} s")
    observables = {o.name: o for o in compute_observables(read_samples_file(samples))}
    for composite in ("W_had", "t_had", "W_lep", "t_lep"):
        observable = observables[f"parton/{composite}/mass"]
        print(
            f"m({composite}) peak: truth {peak_position(observable.truth):.1f}, "
            f"unfolded {peak_position(observable.draws):.1f}, "
            f"detector {peak_position(observable.reference):.1f} GeV"
        )


if __name__ == "__main__":
    main()
