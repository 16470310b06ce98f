"""Speed-fidelity of a trained parton run on real events: unfoldings/s and Wasserstein-1 to truth
for each sampler and step count, beside the detector-level reference.

    python benchmarks/bench_parton_trained.py --checkpoint runs/parton/<id> [--data data/ttbar_semileptonic_test.h5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import vector
from scipy.stats import wasserstein_distance

from unfold.tasks.sample import sample_unfoldings

OBSERVABLES = (
    ("b_had", "pt"), ("neutrino", "pt"), ("W_had", "mass"), ("t_had", "mass"), ("t_had", "pt"), ("ttbar", "mass"),
)
SETTINGS = [(sampler, steps) for sampler in ("ddpm", "ddim", "dpm-solver") for steps in (10, 25, 50, 100)]


def observable(group: h5py.Group, composites: dict, name: str, feature: str) -> np.ndarray:
    """A parton feature, or a composite's feature summed from its constituents' four-vectors."""
    parts = composites.get(name, [name])
    momenta = [vector.array({f: group[f"{p}/{f}"][...] for f in ("pt", "eta", "phi", "mass")}) for p in parts]
    total = momenta[0]
    for momentum in momenta[1:]:
        total = total + momentum
    return np.asarray(getattr(total, feature))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("data/ttbar_semileptonic_test.h5"))
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    header = f"{'sampler':>10} {'steps':>5} {'unfoldings/s':>12} " + " ".join(f"{'W1 ' + n + ' ' + f:>18}" for n, f in OBSERVABLES)
    print(header)
    with tempfile.TemporaryDirectory() as folder:
        for sampler, steps in SETTINGS:
            out = Path(folder) / f"{sampler}-{steps}.h5"
            start = time.perf_counter()
            sample_unfoldings({"parton": args.checkpoint}, args.data, out, n=args.n, sampler=sampler, steps=steps,
                              limit=args.events, batch_size=args.events)
            rate = args.events * args.n / (time.perf_counter() - start)
            with h5py.File(out) as file:
                composites = json.loads(file.attrs["composites"])
                distances = []
                for name, feature in OBSERVABLES:
                    truth = observable(file["PARTONS"], composites, name, feature)
                    draws = observable(file["SAMPLES/PARTONS"], composites, name, feature)
                    distances.append(np.mean([wasserstein_distance(truth, draws[:, i]) for i in range(args.n)]))
                if (sampler, steps) == SETTINGS[0]:
                    reference = [observable(file["REFERENCE/PARTONS"], composites, n, f) for n, f in OBSERVABLES]
                    detector = [wasserstein_distance(truth_values[np.isfinite(r)], r[np.isfinite(r)]) for truth_values, r in
                                zip((observable(file["PARTONS"], composites, n, f) for n, f in OBSERVABLES), reference, strict=True)]
            print(f"{sampler:>10} {steps:>5} {rate:>12.0f} " + " ".join(f"{d:>18.2f}" for d in distances))
    print(f"{'detector':>10} {'-':>5} {'-':>12} " + " ".join(f"{d:>18.2f}" for d in detector))


if __name__ == "__main__":
    main()
