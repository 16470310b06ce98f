"""The early selection veto drops only events the detector could never select."""

from __future__ import annotations

import numpy as np
import pytest

from unfold.generation.detector import (
    SELECTION_SIGMAS,
    jet_resolution,
    lepton_resolution,
    selection_possible,
)
from unfold.generation.detector_card import load_detector_card
from unfold.generation.kinematics import to_cartesian
from unfold.generation.processes import get_process
from unfold.generation.pythia_events import generate_truth, pythia_settings
from unfold.generation.simulation import simulate_event

CARD = load_detector_card(None)
MUON = 13


def _muon(pt: float, eta: float = 0.3) -> np.ndarray:
    return np.append(to_cartesian(np.array([pt, eta, 0.1, 0.105])), MUON)


def _jets(pts: list[float], eta: float = 0.5) -> np.ndarray:
    return to_cartesian(np.array([[pt, eta, 0.7 * k, 5.0] for k, pt in enumerate(pts)])).reshape(-1, 4)


def _lowest_reachable_lepton_pt(eta: float) -> float:
    """pT whose 6-sigma upward fluctuation just reaches the muon threshold (fixed point of pT (1 + 6 sigma))."""
    pt = CARD.muons.pt_min
    for _ in range(50):
        pt = CARD.muons.pt_min / (1.0 + SELECTION_SIGMAS * float(lepton_resolution(pt, eta, MUON, CARD)))
    return pt


def _lowest_reachable_jet_pt(eta: float) -> float:
    pt = CARD.jets.pt_min
    for _ in range(50):
        pt = CARD.jets.pt_min / (CARD.jets.energy_scale + SELECTION_SIGMAS * float(jet_resolution(np.array([pt]), np.array([eta]), CARD.jets.resolution)[0]))
    return pt


def test_lepton_threshold_sits_six_resolutions_below_the_cut():
    edge = _lowest_reachable_lepton_pt(0.3)
    assert edge < CARD.muons.pt_min
    jets = _jets([60.0, 50.0, 40.0, 30.0])
    assert selection_possible(_muon(edge * 1.01), jets, CARD, leptons=1, min_jets=4)
    assert not selection_possible(_muon(edge * 0.99), jets, CARD, leptons=1, min_jets=4)
    assert not selection_possible(_muon(60.0, eta=CARD.muons.eta_max + 0.01), jets, CARD, leptons=1, min_jets=4)
    assert not selection_possible(None, jets, CARD, leptons=1, min_jets=4)


def test_jets_must_be_able_to_reach_the_threshold_in_number():
    edge = _lowest_reachable_jet_pt(0.5)
    lepton = _muon(40.0)
    assert selection_possible(lepton, _jets([60.0, 50.0, 40.0, edge * 1.01]), CARD, leptons=1, min_jets=4)
    assert not selection_possible(lepton, _jets([60.0, 50.0, 40.0, edge * 0.99]), CARD, leptons=1, min_jets=4)
    assert not selection_possible(lepton, _jets([60.0, 50.0, 40.0]), CARD, leptons=1, min_jets=4)
    far_forward = CARD.jets.eta_max + SELECTION_SIGMAS * CARD.jets.eta_resolution + 0.01
    assert not selection_possible(lepton, np.concatenate([_jets([60.0, 50.0, 40.0]), _jets([80.0], eta=far_forward)]), CARD, leptons=1, min_jets=4)


def test_all_hadronic_events_need_no_lepton():
    assert selection_possible(None, _jets([60.0, 50.0, 40.0, 35.0, 30.0, 30.0]), CARD, leptons=0, min_jets=6)
    assert not selection_possible(None, _jets([60.0, 50.0, 40.0, 35.0, 30.0]), CARD, leptons=0, min_jets=6)


@pytest.mark.parametrize("process_name", ["ttbar-semileptonic", "ttbar-allhadronic"])
def test_no_selected_event_is_vetoed(process_name):
    """On Pythia events read without the veto, every event the detector selects (ten smearings
    each) passes ``selection_possible``, and the veto still removes a real share of events."""
    process = get_process(process_name)
    truths = generate_truth(pythia_settings(process, mpi=False), 5, process, jet_radius=CARD.jets.cluster_radius,
                            jet_pt_min=CARD.jets.cluster_pt_min)
    rng = np.random.default_rng(0)
    selected = vetoed = 0
    for _, truth in zip(range(120), truths, strict=False):
        possible = selection_possible(truth.lepton, truth.jets, CARD, leptons=process.leptons, min_jets=process.min_jets)
        vetoed += not possible
        for _ in range(10):
            if simulate_event(truth, process, CARD, rng, max_particle_jets=16) is not None:
                selected += 1
                assert possible
    assert selected > 50
    assert vetoed > 10
