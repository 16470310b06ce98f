"""Generated events carry the physics the generator and the detector card put in."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from unfold.generation.detector import btag_efficiency, jet_resolution, reconstruct_jets
from unfold.generation.detector_card import load_detector_card
from unfold.generation.kinematics import delta_r, to_cartesian, to_cylindrical
from unfold.generation.pipeline import GenerationConfig, generate

# Pythia 8.3 defaults (ParticleData 6:m0 and 24:m0).
TOP_MASS, W_MASS = 173.0, 80.385


def _peak(masses: np.ndarray, low: float, high: float, width: float = 1.0) -> float:
    counts, edges = np.histogram(masses, bins=int((high - low) / width), range=(low, high))
    return 0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1])


def _four(file: h5py.File, name: str) -> np.ndarray:
    return to_cartesian(np.stack([file[f"PARTONS/{name}/{f}"][...] for f in ("pt", "eta", "phi", "mass")], -1))


def test_parton_top_and_w_masses_peak_at_the_generator_values(semileptonic_files):
    with h5py.File(semileptonic_files[0]) as file:
        m_t = to_cylindrical(_four(file, "b_had") + _four(file, "q1") + _four(file, "q2"))[:, 3]
        m_w = to_cylindrical(_four(file, "q1") + _four(file, "q2"))[:, 3]
        m_t_lep = to_cylindrical(_four(file, "b_lep") + _four(file, "lepton") + _four(file, "neutrino"))[:, 3]
        assert abs(_peak(m_t, 100, 250, 2.0) - TOP_MASS) < 3.0
        assert abs(_peak(m_t_lep, 100, 250, 2.0) - TOP_MASS) < 3.0
        assert abs(_peak(m_w, 40, 120) - W_MASS) < 2.0
        assert abs(np.median(file["PARTONS/t_had/mass"][...]) - TOP_MASS) < 2.0
        assert abs(np.median(file["PARTONS/W_lep/mass"][...]) - W_MASS) < 1.5


def test_top_mass_setting_moves_the_peak(tmp_path):
    """A systematic variation through --pythia: the parton-level top mass follows 6:m0."""
    result = generate(
        GenerationConfig(events=120, out=tmp_path, seed=5, workers=1, mpi=False, pythia=("6:m0 = 180.0",)), progress=False
    )
    with h5py.File(result.train) as file:
        assert abs(np.median(file["PARTONS/t_had/mass"][...]) - 180.0) < 2.0
        assert "6:m0 = 180.0" in file.attrs["pythia_settings"]


def test_btag_rates_match_the_card(semileptonic_files):
    card = load_detector_card()
    with h5py.File(semileptonic_files[0]) as file:
        pt, btag = file["INPUTS/Momenta/pt"][...], file["INPUTS/Momenta/btag"][...]
        rows = np.arange(len(pt))
        for daughter, parton, quark in (("ht/b", "b_had", 5), ("lt/b", "b_lep", 5), ("ht/q1", "q1", None), ("ht/q2", "q2", None)):
            index = file[f"TARGETS/{daughter}"][...]
            matched = index >= 0
            flavour = np.abs(file[f"PARTONS/{parton}/pdgid"][...]) if quark is None else np.full(len(index), quark)
            flavour = np.where(flavour == 5, 5, np.where(flavour == 4, 4, 0))
            tagged = btag[rows[matched], index[matched]]
            expected = btag_efficiency(pt[rows[matched], index[matched]], flavour[matched], card.btag)
            # binomial tolerance: 4 standard deviations of the mean of independent Bernoulli draws
            tolerance = 4 * np.sqrt(np.sum(expected * (1 - expected))) / matched.sum()
            assert abs(tagged.mean() - expected.mean()) < tolerance, daughter


def test_jet_response_closes_on_the_card(rng):
    """Smearing known jets: reco/true pT has the card's scale and, standardised, unit width."""
    card = load_detector_card()
    n = 20_000
    cyl = np.stack([rng.uniform(30, 300, n), rng.uniform(-2.4, 2.4, n), rng.uniform(-np.pi, np.pi, n), np.full(n, 10.0)], -1)
    reco, _, source = reconstruct_jets(to_cartesian(cyl), np.zeros(n, dtype=int), card, rng)
    response = reco[:, 0] / cyl[source, 0]
    pull = (response - card.jets.energy_scale) / jet_resolution(cyl[source, 0], cyl[source, 1], card.jets.resolution)
    assert abs(len(source) / n - card.jets.efficiency) < 0.01
    assert abs(np.mean(response) - card.jets.energy_scale) < 0.005
    assert abs(np.mean(pull)) < 0.03
    assert abs(np.std(pull) - 1.0) < 0.03
    assert abs(np.std(reco[:, 1] - cyl[source, 1]) - card.jets.eta_resolution) < 0.002


def test_generated_jet_response_matches_the_card(semileptonic_files):
    """Detector jets matched to particle-level jets: pulls against the card resolution ~ N(0, 1)."""
    card = load_detector_card()
    with h5py.File(semileptonic_files[0]) as file:
        reco = {f: file[f"INPUTS/Momenta/{f}"][...] for f in ("pt", "eta", "phi", "qtag")}
        truth = {f: file[f"PARTICLES/jets/{f}"][...] for f in ("pt", "eta", "phi", "MASK")}
    pulls = []
    for e in range(len(reco["pt"])):
        jets = np.flatnonzero(reco["qtag"][e] > 0)
        for j in np.flatnonzero(truth["MASK"][e] & (truth["pt"][e] > 60)):
            dr = delta_r(reco["eta"][e, jets], reco["phi"][e, jets], truth["eta"][e, j], truth["phi"][e, j])
            if len(dr) and dr.min() < 0.1:
                true_pt = truth["pt"][e, j]
                sigma = jet_resolution(true_pt, truth["eta"][e, j], card.jets.resolution)
                pulls.append((reco["pt"][e, jets[np.argmin(dr)]] / true_pt - card.jets.energy_scale) / sigma)
    pulls = np.array(pulls)
    assert len(pulls) > 300
    assert abs(np.median(pulls)) < 0.15
    assert 0.8 < 0.5 * (np.percentile(pulls, 84) - np.percentile(pulls, 16)) < 1.2


def test_matched_fractions_are_plausible(semileptonic_files):
    with h5py.File(semileptonic_files[0]) as file:
        ht = np.all([file[f"TARGETS/ht/{d}"][...] >= 0 for d in ("b", "q1", "q2")], axis=0)
        lt = np.all([file[f"TARGETS/lt/{d}"][...] >= 0 for d in ("b", "l")], axis=0)
        assert (file["TARGETS/lt/l"][...] == 0).all(), "the lepton sits in slot 0"
        assert 0.2 < file.attrs["selection_efficiency"] < 0.7
    print(f"fully matched: hadronic top {ht.mean():.1%}, leptonic top {lt.mean():.1%}, both {(ht & lt).mean():.1%}")
    # SPANet's semi-leptonic Delphes samples have ~40-60 % of hadronic tops fully matched.
    assert 0.3 < ht.mean() < 0.7
    assert 0.6 < lt.mean() < 0.95
    assert 0.2 < (ht & lt).mean() < 0.65


@pytest.mark.slow
def test_allhadronic_events_have_six_jets_and_two_tops(tmp_path):
    result = generate(GenerationConfig(process="ttbar-allhadronic", events=60, out=tmp_path, seed=2, workers=1, mpi=False), progress=False)
    with h5py.File(result.train) as file:
        assert (file["INPUTS/Momenta/MASK"][...].sum(axis=1) >= 6).all()
        assert (file["INPUTS/Momenta/etag"][...] == 0).all()
        assert abs(np.median(file["PARTONS/t1/mass"][...]) - TOP_MASS) < 3.0
        assert set(file["TARGETS"]) == {"t1", "t2"}
        assert "PARTICLES/lepton" not in file
