"""Four-vector kinematics in numpy: (pt, eta, phi, m) <-> (px, py, pz, E), sums, rapidity, Delta R.

Every function works element-wise on arrays of any shape; NaN in an input stays NaN in the output,
so a missing object (NaN kinematics) makes every sum that includes it NaN too.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "FourMomentum",
    "azimuth",
    "delta_phi",
    "delta_r",
    "from_pt_eta_phi_m",
    "invariant_mass",
    "pseudorapidity",
    "rapidity",
    "sum_momenta",
    "transverse_momentum",
]


class FourMomentum(NamedTuple):
    """Cartesian four-momentum in GeV; each component has the shape of the inputs."""

    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    energy: np.ndarray


def from_pt_eta_phi_m(
    pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray
) -> FourMomentum:
    """Cartesian momentum of massive objects: p_z = p_T sinh(eta), E = sqrt(|p|^2 + m^2).

    Args:
        pt: transverse momentum [GeV], any shape.
        eta: pseudorapidity, same shape.
        phi: azimuth [rad], same shape.
        mass: mass [GeV], same shape; negative masses (from smearing) count as zero.
    """
    pt, eta, phi = np.asarray(pt, float), np.asarray(eta, float), np.asarray(phi, float)
    mass = np.asarray(mass, float)
    pz = pt * np.sinh(eta)
    energy = np.sqrt(pt**2 + pz**2 + np.maximum(mass, 0.0) ** 2)
    return FourMomentum(pt * np.cos(phi), pt * np.sin(phi), pz, energy)


def sum_momenta(momenta: list[FourMomentum]) -> FourMomentum:
    """Component-wise sum of several four-momenta of equal shape (a composite such as a top)."""
    return FourMomentum(
        px=sum(p.px for p in momenta),
        py=sum(p.py for p in momenta),
        pz=sum(p.pz for p in momenta),
        energy=sum(p.energy for p in momenta),
    )


def transverse_momentum(p: FourMomentum) -> np.ndarray:
    """p_T = sqrt(p_x^2 + p_y^2) [GeV]."""
    return np.hypot(p.px, p.py)


def azimuth(p: FourMomentum) -> np.ndarray:
    """phi = atan2(p_y, p_x) in (-pi, pi] [rad]."""
    return np.arctan2(p.py, p.px)


def invariant_mass(p: FourMomentum) -> np.ndarray:
    """m = sqrt(E^2 - |p|^2) [GeV], clipped at zero against rounding for massless sums."""
    m2 = p.energy**2 - p.px**2 - p.py**2 - p.pz**2
    return np.sqrt(np.maximum(m2, 0.0))


def rapidity(p: FourMomentum) -> np.ndarray:
    """y = 1/2 ln((E + p_z) / (E - p_z)); the boost-additive longitudinal coordinate."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.5 * np.log((p.energy + p.pz) / (p.energy - p.pz))


def pseudorapidity(p: FourMomentum) -> np.ndarray:
    """eta = asinh(p_z / p_T); equals the rapidity for massless objects."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.arcsinh(p.pz / transverse_momentum(p))


def delta_phi(phi_a: np.ndarray, phi_b: np.ndarray) -> np.ndarray:
    """Azimuthal separation wrapped into [-pi, pi) [rad]."""
    return (np.asarray(phi_a) - np.asarray(phi_b) + np.pi) % (2 * np.pi) - np.pi


def delta_r(
    eta_a: np.ndarray, phi_a: np.ndarray, eta_b: np.ndarray, phi_b: np.ndarray
) -> np.ndarray:
    """Angular distance Delta R = sqrt(Delta eta^2 + Delta phi^2) with Delta phi wrapped."""
    return np.hypot(np.asarray(eta_a) - np.asarray(eta_b), delta_phi(phi_a, phi_b))
