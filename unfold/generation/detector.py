"""The parametrised detector: jet and lepton efficiency, smearing, b-tagging and MET.

Every number comes from a :class:`~unfold.generation.detector_card.DetectorCard`; the functions here are
the formulas of Delphes' CMS card written for numpy, applied object by object with a seeded RNG.
"""

from __future__ import annotations

import numpy as np

from unfold.generation.detector_card import BTagCard, DetectorCard, LeptonCard, NSCResolution
from unfold.generation.kinematics import to_cartesian, to_cylindrical
from unfold.generation.particle_level import BOTTOM, CHARM

__all__ = [
    "btag_efficiency",
    "jet_resolution",
    "lepton_efficiency",
    "lepton_resolution",
    "missing_transverse_momentum",
    "reconstruct_jets",
    "reconstruct_lepton",
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


def lepton_resolution(pt: np.ndarray, eta: np.ndarray, card: LeptonCard) -> np.ndarray:
    """Relative pT resolution sqrt(a^2 + (b pT)^2) in |eta| bins."""
    abs_eta = np.abs(eta)
    a = _bin(card.resolution.a, card.resolution.eta_edges, abs_eta)
    b = _bin(card.resolution.b, card.resolution.eta_edges, abs_eta)
    return np.sqrt(a**2 + (b * pt) ** 2)


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
    keep = np.flatnonzero(found & (reco[:, 0] > 0))
    order = keep[np.argsort(-reco[keep, 0], kind="stable")]
    return reco[order], tagged[order], order


def reconstruct_lepton(lepton: np.ndarray | None, card: DetectorCard, rng: np.random.Generator) -> np.ndarray | None:
    """The detector-level prompt lepton (pt, eta, phi, mass, pdg id), or None when lost or out of acceptance."""
    if lepton is None:
        return None
    pt, eta, phi, mass = to_cylindrical(lepton[:4])
    lepton_card = card.electrons if abs(int(lepton[4])) == 11 else card.muons
    found = rng.random() < lepton_efficiency(pt, eta, lepton_card)
    pt_reco = pt * max(1.0 + lepton_resolution(pt, eta, lepton_card) * rng.standard_normal(), 0.0)
    if not found or pt_reco < lepton_card.pt_min or abs(eta) > lepton_card.eta_max:
        return None
    return np.array([pt_reco, eta, phi, mass, lepton[4]])


def missing_transverse_momentum(jets: np.ndarray, lepton: np.ndarray | None, card: DetectorCard) -> np.ndarray:
    """(met, phi): minus the vector pT sum of reconstructed jets above ``met_pt_min`` and the lepton."""
    visible = jets[(jets[:, 0] > card.jets.met_pt_min) & (np.abs(jets[:, 1]) < card.jets.calorimeter_eta_max)]
    if lepton is not None:
        visible = np.concatenate([visible, lepton[None, :4]])
    px, py = -to_cartesian(visible)[:, :2].sum(axis=0)
    return np.array([np.hypot(px, py), np.arctan2(py, px)])
