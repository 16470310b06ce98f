"""A parton VLD trained for one minute on real Pythia events: do its W and top peaks beat the detector's?

The detector-level reference is the mass of the truth-matched jets (the best a reconstruction
can do), which jet response and resolution shift and smear; the unfolding should put the peak
back where the partons have it.
"""

from __future__ import annotations

import pytest

from evaluation.metrics import peak_position
from evaluation.observables import compute_observables
from evaluation.samples_file import read_samples_file
from tests.conftest import EVENT_FILES
from unfold.generation.pipeline import GenerationConfig, generate
from unfold.training.trainer import TrainerOptions
from unfold.tasks.sample import sample_unfoldings
from unfold.tasks.train_unfolding import UnfoldingConfig, train_unfolding


@pytest.fixture(scope="module")
def observables(tmp_path_factory) -> dict:
    """Observables of 33 unfoldings per test event from a one-minute CPU training on 3000 events."""
    out = tmp_path_factory.mktemp("mass_peaks")
    files = generate(
        GenerationConfig(events=5000, out=out / "data", seed=23, workers=2, mpi=False, test_fraction=0.4),
        progress=False,
    )
    run = train_unfolding(
        UnfoldingConfig(
            task="parton", data=files.train, event_file=EVENT_FILES["ttbar-semileptonic"], out=out / "runs",
            trainer=TrainerOptions(epochs=1000, max_time="00:00:01:00", seed=0),
        )
    )
    samples = sample_unfoldings({"parton": run}, files.test, out / "samples.h5", n=33, steps=10, devices="cpu")
    return {o.name: o for o in compute_observables(read_samples_file(samples))}


@pytest.mark.parametrize("composite", ["W_had", "t_had"])
def test_unfolded_mass_peak_is_closer_to_truth_than_the_detector_peak(observables, composite):
    observable = observables[f"parton/{composite}/mass"]
    truth = peak_position(observable.truth)
    unfolded = peak_position(observable.draws)
    detector = peak_position(observable.reference)
    summary = f"m({composite}) peak: truth {truth:.1f}, unfolded {unfolded:.1f}, detector {detector:.1f} GeV"
    print(summary)  # shown with pytest -rP
    assert abs(unfolded - truth) < abs(detector - truth), summary
