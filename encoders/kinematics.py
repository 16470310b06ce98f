"""Relativistic kinematics on torch tensors: small pure functions, broadcasting over any batch shape.

Four-momenta are stored energy first, ``(..., 4) = (E, px, py, pz)``, in GeV; angles in radians.
That is the project's one component order for four-vectors held in a plain array: torch tensors
here, where gradients must flow (the models' decoding and consistency terms), and the numpy
arrays of :mod:`recon.chi_square`. Other numpy kinematics use scikit-hep ``vector``, whose
components are named; the tests check these functions against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "azimuth",
    "delta_phi",
    "delta_r",
    "invariant_mass",
    "invariant_mass_squared",
    "lorentz_boost",
    "pair_mass_squared",
    "pseudorapidity",
    "rapidity",
    "rest_frame_direction",
    "rotate_and_reflect",
    "to_cartesian",
    "to_cylindrical",
    "transverse_momentum",
    "unit_vector",
    "wrap_phi",
]


def wrap_phi(phi: Tensor) -> Tensor:
    """Azimuthal angle wrapped into [-pi, pi)."""
    return torch.remainder(phi + math.pi, 2 * math.pi) - math.pi


def delta_phi(phi_a: Tensor, phi_b: Tensor) -> Tensor:
    """Signed azimuthal difference phi_a - phi_b, wrapped into [-pi, pi)."""
    return wrap_phi(phi_a - phi_b)


def delta_r(eta_a: Tensor, phi_a: Tensor, eta_b: Tensor, phi_b: Tensor) -> Tensor:
    r"""Angular distance :math:`\Delta R = \sqrt{\Delta\eta^2 + \Delta\phi^2}` with phi wrapped.

    Pass rapidities instead of pseudorapidities for the rapidity-based distance.
    """
    return torch.sqrt((eta_a - eta_b) ** 2 + delta_phi(phi_a, phi_b) ** 2)


def to_cartesian(pt: Tensor, eta: Tensor, phi: Tensor, mass: Tensor) -> Tensor:
    """Four-momentum (..., 4) = (E, px, py, pz) from transverse momentum, pseudorapidity, azimuth, mass."""
    px = pt * torch.cos(phi)
    py = pt * torch.sin(phi)
    pz = pt * torch.sinh(eta)
    energy = torch.sqrt(mass**2 + px**2 + py**2 + pz**2)
    return torch.stack([energy, px, py, pz], dim=-1)


def transverse_momentum(p4: Tensor) -> Tensor:
    """pT = sqrt(px^2 + py^2) of (..., 4) four-momenta; shape (...)."""
    return torch.hypot(p4[..., 1], p4[..., 2])


def azimuth(p4: Tensor) -> Tensor:
    """Azimuth phi = atan2(py, px) in (-pi, pi] of (..., 4) four-momenta."""
    return torch.atan2(p4[..., 2], p4[..., 1])


def pseudorapidity(p4: Tensor) -> Tensor:
    """Pseudorapidity eta = asinh(pz / pT); infinite along the beam axis."""
    return torch.asinh(p4[..., 3] / transverse_momentum(p4))


def rapidity(p4: Tensor, eps: float = 1e-12) -> Tensor:
    """Rapidity y = 0.5 ln((E + pz) / (E - pz)); numerator and denominator clamped at ``eps``."""
    energy, pz = p4[..., 0], p4[..., 3]
    return 0.5 * torch.log((energy + pz).clamp_min(eps) / (energy - pz).clamp_min(eps))


def invariant_mass_squared(p4: Tensor) -> Tensor:
    """m^2 = E^2 - |p|^2 (negative for space-like vectors or from rounding)."""
    return p4[..., 0] ** 2 - (p4[..., 1:] ** 2).sum(-1)


def invariant_mass(p4: Tensor) -> Tensor:
    """m = sqrt(max(m^2, 0)): the mass of a time-like four-momentum, 0 for rounding below zero."""
    return torch.sqrt(invariant_mass_squared(p4).clamp_min(0.0))


def pair_mass_squared(p4_a: Tensor, p4_b: Tensor) -> Tensor:
    """Invariant mass squared of the pair, (E_a + E_b)^2 - |p_a + p_b|^2."""
    return invariant_mass_squared(p4_a + p4_b)


def lorentz_boost(p4: Tensor, velocity: Tensor) -> Tensor:
    r"""Four-momenta (..., 4) as seen from a frame moving with ``velocity`` (..., 3) (units of c).

    .. math::  E' = \gamma (E - \vec\beta\cdot\vec p), \qquad
               \vec p\,' = \vec p + \left(\frac{\gamma^2}{\gamma + 1}\,\vec\beta\cdot\vec p
               - \gamma E\right)\vec\beta

    (the form with :math:`\gamma^2/(\gamma+1) = (\gamma-1)/\beta^2` has no 0/0 at rest). The rest
    frame of a four-momentum P moves with :math:`\vec\beta = \vec P / E_P`; boosting back uses
    :math:`-\vec\beta`. Use float64 for strongly boosted frames.
    """
    gamma = 1.0 / torch.sqrt((1.0 - (velocity**2).sum(-1)).clamp_min(1e-12))
    energy, momentum = p4[..., 0], p4[..., 1:]
    beta_dot_p = (velocity * momentum).sum(-1)
    boosted_energy = gamma * (energy - beta_dot_p)
    coefficient = gamma**2 / (gamma + 1.0) * beta_dot_p - gamma * energy
    boosted_momentum = momentum + coefficient[..., None] * velocity
    return torch.cat([boosted_energy[..., None], boosted_momentum], dim=-1)


def unit_vector(vectors: Tensor) -> Tensor:
    """Vectors (..., 3) scaled to unit length (a zero vector stays zero)."""
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def rest_frame_direction(p4: Tensor, frame: Tensor) -> Tensor:
    """Unit vector (..., 3) of a four-momentum's direction in the rest frame of ``frame`` (..., 4), reached from
    the lab by a pure boost (lab axes)."""
    return unit_vector(lorentz_boost(p4, frame[..., 1:] / frame[..., :1])[..., 1:])


def rotate_and_reflect(
    x: Tensor,
    angle: Tensor,
    sign: Tensor,
    *,
    azimuths: Sequence[int] = (),
    xy_pairs: Sequence[tuple[int, int]] = (),
    reflected: Sequence[int] = (),
) -> Tensor:
    """Features ``x`` (E, ..., F) of events rotated about the beam by ``angle`` (E,) and reflected z -> -z where
    ``sign`` (E,) is -1: the ``azimuths`` columns shifted (and wrapped), the ``xy_pairs`` of columns rotated as
    (x, y) components, the ``reflected`` columns (z components, rapidities) multiplied by the sign."""
    shape = (-1,) + (1,) * (x.dim() - 2)
    angle = angle.to(x.dtype).view(shape)
    cos, sin, sign = torch.cos(angle), torch.sin(angle), sign.to(x.dtype).view(shape)
    y = x.clone()
    for c in azimuths:
        y[..., c] = wrap_phi(x[..., c] + angle)
    for cx, cy in xy_pairs:
        y[..., cx] = x[..., cx] * cos - x[..., cy] * sin
        y[..., cy] = x[..., cx] * sin + x[..., cy] * cos
    for c in reflected:
        y[..., c] = x[..., c] * sign
    return y


def to_cylindrical(p4: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(pt, eta, phi, mass) of (..., 4) four-momenta, each of shape (...)."""
    return transverse_momentum(p4), pseudorapidity(p4), azimuth(p4), invariant_mass(p4)
