"""The parametrised detector: jet and lepton efficiency, smearing, isolation, b-tagging and MET.

Every number comes from a :class:`~unfold.generation.detector_card.DetectorCard`; the functions here are
the formulas of Delphes' CMS card written for numpy, applied object by object with a seeded RNG.
"""

from __future__ import annotations

import numpy as np

from unfold.generation.detector_card import (
    BTagCard,
    CaloResolution,
    DetectorCard,
    LeptonCard,
    NSCResolution,
    TrackResolution,
)
from unfold.generation.kinematics import to_cartesian, to_cylindrical
from unfold.generation.particle_level import BOTTOM, CHARM, relative_isolation

__all__ = [
    "btag_efficiency",
    "calo_resolution",
    "isolated",
    "jet_resolution",
    "lepton_efficiency",
    "lepton_resolution",
    "missing_transverse_momentum",
    "reconstruct_jets",
    "reconstruct_lepton",
    "selection_possible",
    "track_resolution",
]


def _bin(values: list[float], edges: list[float], abs_eta: np.ndarray) -> np.ndarray:
    index = np.clip(np.searchsorted(edges, abs_eta, side="right") - 1, 0, len(values) - 1)
    return np.asarray(values)[index]


def jet_resolution(pt: np.ndarray, eta: np.ndarray, card: NSCResolution) -> np.ndarray:
    """Relative jet pT resolution sigma/pT = sqrt((N/pT)^2 + S^2/pT + C^2) in |eta| bins."""
    abs_eta = np.abs(eta)
    n = _bin(card.noise, card.eta_edges, abs_eta)
    s = _bin(card.stochastic, card.eta_edges, abs_eta)
    c = _bin(card.constant, card.eta_edges, abs_eta)
    return np.sqrt((n / pt) ** 2 + s**2 / pt + c**2)


def calo_resolution(energy: np.ndarray, eta: np.ndarray, card: CaloResolution) -> np.ndarray:
    """Relative calorimeter energy resolution sigma_E/E, Delphes' SimpleCalorimeter form
    (a + b (|eta| - eta0)^2) sqrt((C E)^2 + S^2 E + N^2) / E in |eta| bins."""
    energy = np.asarray(energy, dtype=np.float64)
    abs_eta = np.abs(eta)
    shape = _bin(card.shape_a, card.eta_edges, abs_eta) + _bin(card.shape_b, card.eta_edges, abs_eta) * (
        abs_eta - _bin(card.shape_eta0, card.eta_edges, abs_eta)
    ) ** 2
    n, s, c = (_bin(values, card.eta_edges, abs_eta) for values in (card.noise, card.stochastic, card.constant))
    return shape * np.sqrt((c * energy) ** 2 + s**2 * energy + n**2) / energy


def track_resolution(pt: np.ndarray, eta: np.ndarray, card: TrackResolution) -> np.ndarray:
    """Relative track pT resolution sqrt(a^2 + (b pT)^2) in |eta| bins (Delphes MomentumSmearing)."""
    abs_eta = np.abs(eta)
    return np.sqrt(_bin(card.a, card.eta_edges, abs_eta) ** 2 + (_bin(card.b, card.eta_edges, abs_eta) * pt) ** 2)


def btag_efficiency(pt: np.ndarray, flavour: np.ndarray, card: BTagCard) -> np.ndarray:
    """Probability to b-tag a jet of true flavour 5 (b), 4 (c) or other (light), Delphes CMS forms."""
    pt = np.asarray(pt, dtype=np.float64)

    def tanh_form(f):
        return f.a * np.tanh(f.k * pt) * f.c / (1.0 + f.d * pt)

    light = card.light.a + card.light.b * pt
    return np.where(flavour == BOTTOM, tanh_form(card.b), np.where(flavour == CHARM, tanh_form(card.c), light))


def lepton_efficiency(pt: np.ndarray, eta: np.ndarray, card: LeptonCard) -> np.ndarray:
    """Reconstruction efficiency in |eta| bins, zero outside the acceptance."""
    abs_eta = np.abs(eta)
    inside = (abs_eta < card.efficiency.eta_edges[-1]) & (np.asarray(pt) > 0)
    return np.where(inside, _bin(card.efficiency.values, card.efficiency.eta_edges, abs_eta), 0.0)


def lepton_resolution(pt: np.ndarray, eta: np.ndarray, pdg_id: int, card: DetectorCard) -> np.ndarray:
    """Relative pT resolution of a lepton: the ECAL energy resolution for electrons (pT = E / cosh eta),
    the tracker's sqrt(a^2 + (b pT)^2) for muons."""
    if abs(pdg_id) == 11:
        return calo_resolution(np.asarray(pt) * np.cosh(eta), eta, card.calorimeters.ecal)
    return track_resolution(pt, eta, card.muons.resolution)


def reconstruct_jets(
    jets: np.ndarray, flavour: np.ndarray, card: DetectorCard, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detector jets from particle jets.

    Args:
        jets: (J, 4) particle-level jet four-vectors.
        flavour: (J,) hadron-based flavour labels (5, 4, 0).

    Returns:
        (J', 4) reconstructed (pt, eta, phi, mass), hardest first, before the analysis cuts;
        (J',) b-tag decisions; (J',) index of the particle jet each came from.
    """
    cyl = to_cylindrical(jets)
    pt, eta, phi, mass = cyl.T
    found = rng.random(len(jets)) < card.jets.efficiency
    response = card.jets.energy_scale + jet_resolution(pt, eta, card.jets.resolution) * rng.standard_normal(len(jets))
    response = np.clip(response, 0.0, None)
    reco = np.stack(
        [
            pt * response,
            eta + card.jets.eta_resolution * rng.standard_normal(len(jets)),
            (phi + card.jets.phi_resolution * rng.standard_normal(len(jets)) + np.pi) % (2 * np.pi) - np.pi,
            mass * response,
        ],
        axis=-1,
    )
    tag_probability = btag_efficiency(reco[:, 0], flavour, card.btag)
    tagged = (rng.random(len(jets)) < tag_probability) & (np.abs(reco[:, 1]) < card.btag.eta_max)
    inside = np.abs(eta) < card.jets.calorimeter_eta_max
    keep = np.flatnonzero(found & inside & (reco[:, 0] > 0))
    order = keep[np.argsort(-reco[keep, 0], kind="stable")]
    return reco[order], tagged[order], order


def reconstruct_lepton(lepton: np.ndarray | None, card: DetectorCard, rng: np.random.Generator) -> np.ndarray | None:
    """The detector-level prompt lepton (pt, eta, phi, mass, pdg id), or None when lost or out
    of acceptance (isolation is :func:`isolated`)."""
    if lepton is None:
        return None
    pt, eta, phi, mass = to_cylindrical(lepton[:4])
    pdg_id = int(lepton[4])
    lepton_card: LeptonCard = card.electrons if abs(pdg_id) == 11 else card.muons
    found = rng.random() < lepton_efficiency(pt, eta, lepton_card)
    pt_reco = pt * max(1.0 + float(lepton_resolution(pt, eta, pdg_id, card)) * rng.standard_normal(), 0.0)
    if not found or pt_reco < lepton_card.pt_min or abs(eta) > lepton_card.eta_max:
        return None
    return np.array([pt_reco, eta, phi, mass, lepton[4]])


# Smearing fluctuations an event may need to pass the selection and still be generated in full:
# beyond 6 sigma (probability 1e-9 per object) an event is dropped before its detector simulation.
SELECTION_SIGMAS = 6.0


def selection_possible(lepton: np.ndarray | None, jets: np.ndarray, card: DetectorCard, *, leptons: int, min_jets: int) -> bool:
    """Whether an event could still pass the detector-level selection whatever its smearing (up to
    :data:`SELECTION_SIGMAS`): a particle-level lepton (px, py, pz, E, id) inside its acceptance whose
    pT, scaled up by that many resolutions, clears the threshold (when the process has one), and at
    least ``min_jets`` particle-level jets (px, py, pz, E) that could be measured above the jet pT
    threshold and inside the jet acceptance. Events that fail are dropped before their detector
    simulation and before most of the event record is read."""
    if leptons:
        if lepton is None:
            return False
        pt, eta, _, _ = to_cylindrical(lepton[:4])
        pdg_id = int(lepton[4])
        lepton_card: LeptonCard = card.electrons if abs(pdg_id) == 11 else card.muons
        best_pt = pt * (1.0 + SELECTION_SIGMAS * float(lepton_resolution(pt, eta, pdg_id, card)))
        if abs(eta) > lepton_card.eta_max or best_pt < lepton_card.pt_min:
            return False
    if len(jets) < min_jets:
        return False
    pt, eta, _, _ = to_cylindrical(jets).T
    best_pt = pt * (card.jets.energy_scale + SELECTION_SIGMAS * jet_resolution(pt, eta, card.jets.resolution))
    reachable = (best_pt > card.jets.pt_min) & (np.abs(eta) < card.jets.eta_max + SELECTION_SIGMAS * card.jets.eta_resolution)
    return int(reachable.sum()) >= min_jets


def isolated(lepton: np.ndarray, visible: np.ndarray, card: DetectorCard) -> bool:
    """Whether the (dressed) lepton (px, py, pz, E, id) passes its flavour's relative isolation
    against the other visible particles (px, py, pz, E)."""
    lepton_card: LeptonCard = card.electrons if abs(int(lepton[4])) == 11 else card.muons
    ratio = relative_isolation(
        to_cylindrical(lepton[:4]),
        to_cylindrical(visible),
        radius=lepton_card.isolation.delta_r_max,
        particle_pt_min=lepton_card.isolation.particle_pt_min,
    )
    return ratio < lepton_card.isolation.pt_ratio_max


def soft_term(
    particles: np.ndarray, charged: np.ndarray, ids: np.ndarray, card: DetectorCard, rng: np.random.Generator
) -> np.ndarray:
    """(2,) measured vector pT sum of unclustered particles (px, py, pz, E): charged ones within the
    tracker by the tracker, photons by the ECAL, the rest by the HCAL; none beyond the calorimeters."""
    cyl = to_cylindrical(particles)
    pt, eta = cyl[:, 0], cyl[:, 1]
    energy = particles[:, 3]
    inside = np.abs(eta) < card.met.soft_eta_max
    tracked = charged & (np.abs(eta) < card.met.track_eta_max)
    photon = ~tracked & (ids == 22)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(
            tracked,
            track_resolution(pt, eta, card.met.tracks),
            np.where(
                photon,
                calo_resolution(energy, eta, card.calorimeters.ecal),
                calo_resolution(energy, eta, card.calorimeters.hcal),
            ),
        )
    scale = np.clip(1.0 + np.nan_to_num(sigma) * rng.standard_normal(len(pt)), 0.0, None)
    return (particles[inside, :2] * scale[inside, None]).sum(axis=0)


def missing_transverse_momentum(
    jets: np.ndarray, lepton: np.ndarray | None, soft: np.ndarray, card: DetectorCard
) -> np.ndarray:
    """(met, phi): minus the vector pT sum of the reconstructed jets (pt, eta, phi, mass) above the
    MET jet threshold, the lepton, and the measured soft term ``soft`` (px, py)."""
    visible = jets[jets[:, 0] > card.met.jet_pt_min]
    if lepton is not None:
        visible = np.concatenate([visible, lepton[None, :4]])
    px, py = -(to_cartesian(visible)[:, :2].sum(axis=0) + soft)
    return np.array([np.hypot(px, py), np.arctan2(py, px)])
