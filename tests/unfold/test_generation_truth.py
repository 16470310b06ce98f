"""Parton truth, W charges, leptons and MET of generated events, against the generator and the card."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from recon.chi_square import ChiSquareBaseline
from recon.errors import ReconError
from recon.event_topology import EventTopology
from unfold.data.hdf5_schema import read_spanet
from unfold.data.recon_data import detector_events
from unfold.generation.detector import (
    calo_resolution,
    isolated,
    lepton_resolution,
    reconstruct_lepton,
    soft_term,
    track_resolution,
)
from unfold.generation.detector_card import load_detector_card
from unfold.generation.inspection import generator_masses
from unfold.generation.kinematics import delta_r, to_cartesian
from unfold.generation.pipeline import GenerationConfig, generate
from unfold.generation.processes import get_process


def _four(file: h5py.File, name: str) -> np.ndarray:
    return to_cartesian(np.stack([file[f"PARTONS/{name}/{f}"][...] for f in ("pt", "eta", "phi", "mass")], -1))


def _assert_daughters_sum_to_record(path, process_name: str) -> None:
    process = get_process(process_name)
    with h5py.File(path) as file:
        for name, daughters in process.composites.items():
            if f"PARTONS/{name}/pt" not in file:
                continue
            total = sum(_four(file, d) for d in daughters)
            stored = _four(file, name)
            # float precision of (pt, eta, phi, mass) round trips: 1e-6 of the energy
            assert np.abs(total - stored).max(axis=-1).max() < 1e-6 * stored[:, 3].max(), name


def test_semileptonic_partons_sum_to_the_stored_tops_and_ws(semileptonic_files):
    for path in semileptonic_files:
        _assert_daughters_sum_to_record(path, "ttbar-semileptonic")


@pytest.fixture(scope="module")
def allhadronic_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("allhadronic")
    result = generate(GenerationConfig(process="ttbar-allhadronic", events=30, out=out, seed=4, workers=1, mpi=False), progress=False)
    return result.train, result.test


def test_allhadronic_partons_sum_to_the_stored_tops_and_ws(allhadronic_files):
    for path in allhadronic_files:
        _assert_daughters_sum_to_record(path, "ttbar-allhadronic")


def test_both_w_charges_in_every_file(semileptonic_files):
    """Charge chosen per event: l+ share 50 % within 3 binomial standard deviations in train and test."""
    for path in semileptonic_files:
        with h5py.File(path) as file:
            charge = file["PARTICLES/lepton/pdgid"][:, 0]
            hadronic_b = file["PARTONS/b_had/pdgid"][...]
        n = len(charge)
        assert abs(np.mean(charge < 0) - 0.5) < 3 * np.sqrt(0.25 / n), path.name
        # l+ comes from t -> W+ b, so the hadronic side is the anti-top with a b-bar
        assert np.array_equal(charge < 0, hadronic_b < 0)


def test_no_jet_overlaps_the_lepton(semileptonic_files):
    for path in semileptonic_files:
        with h5py.File(path) as file:
            eta, phi = file["INPUTS/Momenta/eta"][...], file["INPUTS/Momenta/phi"][...]
            jets = file["INPUTS/Momenta/MASK"][...] & (file["INPUTS/Momenta/qtag"][...] > 0)
            particle = {f: file[f"PARTICLES/jets/{f}"][...] for f in ("eta", "phi", "MASK")}
            lepton = {f: file[f"PARTICLES/lepton/{f}"][:, 0] for f in ("eta", "phi")}
        dr = delta_r(eta[:, 1:], phi[:, 1:], eta[:, :1], phi[:, :1])
        assert dr[jets[:, 1:]].min() >= 0.4
        particle_dr = delta_r(particle["eta"], particle["phi"], lepton["eta"][:, None], lepton["phi"][:, None])
        assert particle_dr[particle["MASK"]].min() >= 0.4


def test_dressed_lepton_is_at_least_as_hard_as_the_bare_one(semileptonic_files):
    with h5py.File(semileptonic_files[0]) as file:
        dressed = file["PARTICLES/lepton/pt"][:, 0]
        bare = file["PARTONS/lepton/pt"][...]
    # the dressed lepton gains collinear photons but lost the W's other radiation: medians agree within 5 %
    assert abs(np.median(dressed / bare) - 1) < 0.05


def test_electron_energy_resolution_is_the_ecal_one(rng):
    """Electrons smeared with the card's ECAL resolution: a few per cent, pulls of unit width."""
    card = load_detector_card()
    n = 20_000
    pt, eta = rng.uniform(30, 150, n), rng.uniform(-2.4, 2.4, n)
    sigma = lepton_resolution(pt, eta, 11, card)
    assert np.median(sigma[np.abs(eta) < 1.0]) < 0.03  # CMS Z -> ee: 1.7-4.5 % (JINST 10 (2015) P06005)
    cyl = np.stack([pt, eta, rng.uniform(-np.pi, np.pi, n), np.full(n, 0.000511)], -1)
    pulls = []
    for four, s, p in zip(to_cartesian(cyl), sigma, pt, strict=True):
        reco = reconstruct_lepton(np.append(four, 11.0), card, rng)
        if reco is not None:
            pulls.append((reco[0] / p - 1) / s)
    assert abs(np.std(pulls) - 1) < 0.05
    assert np.allclose(calo_resolution(pt * np.cosh(eta), eta, card.calorimeters.ecal), sigma)


def test_isolation_follows_the_card():
    """A 60 GeV muon with hadrons inside its cone: isolated below the card's pT ratio, not above;
    particles outside the cone or below the particle threshold do not count."""
    card = load_detector_card()
    iso = card.muons.isolation
    muon = np.append(to_cartesian(np.array([60.0, 0.3, 0.0, 0.105])), 13.0)

    def hadrons(total_pt: float, delta_eta: float) -> np.ndarray:
        return to_cartesian(np.array([[total_pt / 4, 0.3 + delta_eta, 0.05 * k, 0.14] for k in range(4)]))

    inside = 0.5 * iso.delta_r_max
    assert isolated(muon, hadrons(0.5 * iso.pt_ratio_max * 60, inside), card)
    assert not isolated(muon, hadrons(1.5 * iso.pt_ratio_max * 60, inside), card)
    assert isolated(muon, hadrons(1.5 * iso.pt_ratio_max * 60, 1.5 * iso.delta_r_max), card)
    soft = to_cartesian(np.array([[0.9 * iso.particle_pt_min, 0.3 + inside, 0.0, 0.0]] * 40))
    assert isolated(muon, soft, card)


def test_soft_term_smearing_follows_the_card(rng):
    """Unclustered particles: tracked, ECAL or HCAL resolution by kind; the sum is unbiased."""
    card = load_detector_card()
    n = 4000
    cyl = np.stack([rng.uniform(1, 10, n), rng.uniform(-2.4, 2.4, n), rng.uniform(-np.pi, np.pi, n), np.zeros(n)], -1)
    particles = to_cartesian(cyl)
    for charged, ids, sigma in (
        (np.ones(n, bool), np.full(n, 211), track_resolution(cyl[:, 0], cyl[:, 1], card.met.tracks)),
        (np.zeros(n, bool), np.full(n, 22), calo_resolution(particles[:, 3], cyl[:, 1], card.calorimeters.ecal)),
        (np.zeros(n, bool), np.full(n, 130), calo_resolution(particles[:, 3], cyl[:, 1], card.calorimeters.hcal)),
    ):
        draws = np.array([soft_term(particles[:1], charged[:1], ids[:1], card, rng)[0] for _ in range(3000)])
        expected = abs(particles[0, 0]) * sigma[0]
        assert abs(np.mean(draws) - particles[0, 0]) < 5 * expected / np.sqrt(3000)
        assert abs(np.std(draws) / expected - 1) < 0.1


def test_met_response_and_resolution_against_the_true_neutrinos(semileptonic_files):
    """Detector MET against the neutrinos: unbiased within 10 % above 40 GeV of true MET, and a
    resolution per component between 5 and 30 GeV (the jet term's 5-15 % on a few hundred GeV of
    jets, no pileup; CMS reaches 15-30 GeV with pileup, JINST 14 (2019) P07004)."""
    with h5py.File(semileptonic_files[0]) as file:
        met, phi = file["INPUTS/Met/met"][...], file["INPUTS/Met/phi"][...]
        true, true_phi = file["PARTICLES/met/met"][...], file["PARTICLES/met/phi"][...]
    hard = true > 40
    response = np.median((met * np.cos(phi - true_phi) / true)[hard])
    difference = met * np.cos(phi) - true * np.cos(true_phi)
    width = 0.5 * np.subtract(*np.percentile(difference, [84.0, 16.0]))
    print(f"MET response {response:.3f}, resolution {width:.1f} GeV")
    assert abs(response - 1) < 0.1
    assert 5 < width < 30


def test_chi_square_centres_come_from_the_generator(semileptonic_files, event_files):
    """The chi-square centres are the file's top and W masses (Pythia 8.3: 6:m0 = 173.0, 24:m0 = 80.385)."""
    m_t, m_w = generator_masses(semileptonic_files[0])
    assert abs(m_t - 173.0) < 0.5
    assert abs(m_w - 80.385) < 0.5
    topology = EventTopology.from_yaml(event_files["ttbar-semileptonic"])
    data = read_spanet(semileptonic_files[0], topology)
    events = detector_events(data, topology)
    baseline = ChiSquareBaseline.fit(events, data.targets, topology, centres="generator", generator_masses=(m_t, m_w))
    assert (baseline.m_t, baseline.m_W) == (m_t, m_w)
    with pytest.raises(ReconError, match="needs generator_masses"):
        ChiSquareBaseline.fit(events, data.targets, topology, centres="generator")
