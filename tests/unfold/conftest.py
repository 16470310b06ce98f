"""Data shared by the unfold tests: a few hundred real Pythia events (made once) and synthetic parton truth."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from unfold.generation.pipeline import GenerationConfig, generate


@pytest.fixture(scope="session")
def semileptonic_files(tmp_path_factory) -> tuple[Path, Path]:
    """400 semi-leptonic ttbar events (MPI on), 2 workers: (train, test)."""
    out = tmp_path_factory.mktemp("semileptonic")
    result = generate(
        GenerationConfig(events=400, out=out, seed=11, workers=2, shard_size=100, test_fraction=0.25), progress=False
    )
    return result.train, result.test


# Pythia 8's default masses of the semi-leptonic ttbar decay products, GeV (ParticleData: b 4.8,
# d 0.33, u/s-like 0.5 as the second W daughter, e 0.000511, nu 0).
SEMILEPTONIC_MASSES = {
    "b_had": 4.8,
    "q1": 0.33,
    "q2": 0.5,
    "b_lep": 4.8,
    "lepton": 0.000511,
    "neutrino": 0.0,
}


@pytest.fixture
def synthetic_truth(rng: np.random.Generator) -> Callable[..., dict]:
    """Maker of random decay products ``name -> {pt, eta, phi, mass}`` (GeV) for ``events`` events.

    Defaults to the six semi-leptonic ttbar daughters, each with its Pythia mass (0.33 GeV for
    other names). As in generated truth, a W's ``...q1`` is the harder of its two quarks.
    """

    def make(events: int, names: Sequence[str] = tuple(SEMILEPTONIC_MASSES)) -> dict:
        truth = {
            name: {
                "pt": rng.exponential(60.0, events) + 20.0,
                "eta": rng.normal(0.0, 1.5, events),
                "phi": rng.uniform(-np.pi, np.pi, events),
                "mass": np.full(events, SEMILEPTONIC_MASSES.get(name, 0.33)),
            }
            for name in names
        }
        for harder in [name for name in names if name.endswith("q1") and name[:-1] + "2" in truth]:
            first, second = truth[harder], truth[harder[:-1] + "2"]
            swap = first["pt"] < second["pt"]
            for feature in first:
                first[feature], second[feature] = (
                    np.where(swap, second[feature], first[feature]),
                    np.where(swap, first[feature], second[feature]),
                )
        return truth

    return make
