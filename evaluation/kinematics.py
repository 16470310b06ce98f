"""Four-vector kinematics in numpy through scikit-hep ``vector``, plus azimuthal helpers.

Four-momenta are ``vector`` momentum arrays of any shape, built from (pt, eta, phi, m); sums are
``a + b`` and every kinematic quantity is an attribute (``.pt``, ``.rapidity``, ``.phi``). NaN in
an input stays NaN in every sum that includes it, so a missing object gives a NaN composite.
"""

from __future__ import annotations

import numpy as np
import vector
from vector.backends.numpy import MomentumNumpy4D

__all__ = ["MomentumNumpy4D", "delta_phi", "delta_r", "from_pt_eta_phi_m", "invariant_mass"]


def from_pt_eta_phi_m(
    pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray
) -> MomentumNumpy4D:
    """Four-momenta of massive objects [GeV]; negative masses (from smearing) count as zero.

    Args:
        pt: transverse momentum [GeV], any shape.
        eta: pseudorapidity, same shape.
        phi: azimuth [rad], same shape.
        mass: mass [GeV], same shape.
    """
    return vector.array(
        {
            "pt": np.asarray(pt, dtype=np.float64),
            "eta": np.asarray(eta, dtype=np.float64),
            "phi": np.asarray(phi, dtype=np.float64),
            "mass": np.maximum(np.asarray(mass, dtype=np.float64), 0.0),
        }
    )


def invariant_mass(p: MomentumNumpy4D) -> np.ndarray:
    """m = sqrt(E^2 - |p|^2) [GeV], clipped at zero (``vector`` signs the spacelike rounding of
    massless sums)."""
    return np.maximum(np.asarray(p.mass, dtype=np.float64), 0.0)


def delta_phi(phi_a: np.ndarray, phi_b: np.ndarray) -> np.ndarray:
    """Azimuthal separation wrapped into [-pi, pi) [rad]."""
    return (np.asarray(phi_a) - np.asarray(phi_b) + np.pi) % (2 * np.pi) - np.pi


def delta_r(
    eta_a: np.ndarray, phi_a: np.ndarray, eta_b: np.ndarray, phi_b: np.ndarray
) -> np.ndarray:
    """Angular distance Delta R = sqrt(Delta eta^2 + Delta phi^2) with Delta phi wrapped."""
    return np.hypot(np.asarray(eta_a) - np.asarray(eta_b), delta_phi(phi_a, phi_b))
