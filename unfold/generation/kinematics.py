"""Four-vector conversions on stacked numpy arrays (last axis = components), and the angular
distances of :mod:`evaluation.kinematics`.

Four-vectors are (px, py, pz, E); cylindrical coordinates are (pt, eta, phi, mass), GeV and
radians. Masses of slightly space-like vectors (rounding) are clipped to zero.

These per-event conversions stay plain numpy on purpose: building a scikit-hep ``vector`` array
costs 0.5-1 ms per call whatever its size (measured here against ~30 us), and generation makes
about 15 such calls per event, which would double its time. Whole-file kinematics use ``vector``
(:mod:`unfold.generation.inspection`) and the truth boosts use Pythia's own ``RotBstMatrix``.
"""

from __future__ import annotations

import numpy as np

from evaluation.kinematics import delta_phi, delta_r

__all__ = ["delta_phi", "delta_r", "to_cartesian", "to_cylindrical"]


def to_cylindrical(four: np.ndarray) -> np.ndarray:
    """(..., 4) (px, py, pz, E) -> (..., 4) (pt, eta, phi, mass)."""
    px, py, pz, energy = np.moveaxis(np.asarray(four, dtype=np.float64), -1, 0)
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.zeros_like(pz), where=pt > 0))
    mass = np.sqrt(np.clip(energy**2 - px**2 - py**2 - pz**2, 0.0, None))
    return np.stack([pt, eta, np.arctan2(py, px), mass], axis=-1)


def to_cartesian(cylindrical: np.ndarray) -> np.ndarray:
    """(..., 4) (pt, eta, phi, mass) -> (..., 4) (px, py, pz, E)."""
    pt, eta, phi, mass = np.moveaxis(np.asarray(cylindrical, dtype=np.float64), -1, 0)
    pz = pt * np.sinh(eta)
    energy = np.sqrt(pt**2 + pz**2 + mass**2)
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pz, energy], axis=-1)
