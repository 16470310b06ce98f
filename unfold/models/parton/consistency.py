"""The physics-consistency term of VLD (arXiv 2305.10399): stored composite masses vs summed daughters."""

from __future__ import annotations

import torch
from torch import Tensor

from encoders.kinematics import invariant_mass_squared

__all__ = ["squared_mass_consistency"]


def squared_mass_consistency(
    daughters: Tensor, stored_masses: Tensor, membership: Tensor, mass_scales: Tensor
) -> Tensor:
    r"""Squared relative mismatch of each composite's squared mass.

    .. math::  r_j = \left(\frac{m_j^2 - (\sum_{k \in j} p_k)^2}{s_j^2}\right)^2

    where :math:`m_j` is the mass stored for composite j (W, t, ttbar) and :math:`p_k` are the
    four-momenta of its daughters. It is zero for a consistent event and needs no truth, so it
    also constrains generated events.

    Args:
        daughters: Daughter four-momenta (..., K, 4) = (E, px, py, pz), GeV.
        stored_masses: Stored composite masses (..., m), GeV.
        membership: (m, K) with 1 where daughter k belongs to composite j, else 0.
        mass_scales: (m,) positive mass scales s_j (GeV) that make the terms dimensionless.

    Returns:
        The per-composite terms r, shape (..., m).
    """
    summed = torch.einsum("jk,...kc->...jc", membership.to(daughters), daughters)
    residual = (stored_masses**2 - invariant_mass_squared(summed)) / mass_scales.to(daughters) ** 2
    return residual**2
