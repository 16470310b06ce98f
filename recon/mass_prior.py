"""A learned mass prior for every K-tuple of objects: the chi-square's idea inside the network.

The mass chi-square (:mod:`recon.chi_square`) knows one thing the attention must otherwise learn
from examples: the daughters of a top have m(bqq') near m_t and m(qq') near m_W. This module
gives the symmetric tensor attention that knowledge as an additive logit, a small MLP of the
tuple's invariant mass and of its daughter pairs' masses, so with few training events the
network starts from the masses rather than discovering them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
from torch import Tensor, nn

from recon.errors import ReconError

__all__ = ["TupleMassPrior", "tuple_mass_features"]

# Masses enter the MLP in units of 100 GeV, the scale of m_W and m_t (order-one inputs).
_MASS_UNIT = 100.0


def _minkowski_gram(four_momenta: Tensor) -> Tensor:
    """(E, N, N) Minkowski products p_a . p_b of (E, N, 4) (energy, px, py, pz), metric (+, -, -, -)."""
    metric = four_momenta.new_tensor([1.0, -1.0, -1.0, -1.0])
    return torch.einsum("eac,ebc->eab", four_momenta * metric, four_momenta)


def tuple_mass_features(four_momenta: Tensor, order: int) -> Tensor:
    """Invariant masses of every K-tuple and of each of its daughter pairs, in units of 100 GeV.

    Built from the Minkowski products only: :math:`m^2_{a_1 \\dots a_K} = \\sum_{i,j} p_{a_i} \\cdot p_{a_j}`.

    Args:
        four_momenta: (E, N, 4) as (energy, px, py, pz) in GeV.
        order: K >= 2.

    Returns:
        (E, N, ..., N, 1 + K(K-1)/2) with K object axes: the tuple mass, then the pair masses
        in the order of ``itertools.combinations(range(K), 2)``; m^2 < 0 from rounding or
        smeared masses gives 0.
    """
    if order < 2:
        raise ReconError(f"tuple_mass_features: order {order}; a mass needs at least 2 objects")
    gram = _minkowski_gram(four_momenta.float())
    events, count = gram.shape[:2]

    def along(axis_a: int, axis_b: int) -> Tensor:
        """p_a . p_b of the objects on tuple axes a <= b, shaped to broadcast over (E, N, ..., N)."""
        shape = [events] + [1] * order
        shape[axis_a + 1] = shape[axis_b + 1] = count
        products = gram.diagonal(dim1=1, dim2=2) if axis_a == axis_b else gram
        return products.reshape(shape)

    pairs = [along(a, a) + along(b, b) + 2 * along(a, b) for a, b in combinations(range(order), 2)]
    singles = sum(along(a, a) for a in range(order))
    # m^2(tuple) = sum_a m_a^2 + 2 sum_{a<b} p_a.p_b = sum of the pair m^2 minus (K - 2) sum_a m_a^2.
    whole = sum(pairs) - (order - 2) * singles
    shape = [events] + [count] * order
    squared = torch.stack([whole.expand(shape)] + [p.expand(shape) for p in pairs], dim=-1)
    return squared.clamp_min(0.0).sqrt() / _MASS_UNIT


class TupleMassPrior(nn.Module):
    """An additive logit for every K-tuple from its masses, symmetric under the daughter group.

    An MLP maps the features of :func:`tuple_mass_features` to one number; the result is
    averaged over the group's permutations of the object axes, so swapping q1 and q2 of a W
    leaves it unchanged exactly, like the attention it is added to.

    Args:
        order: K >= 2 daughters.
        group: G_P as index permutations of ``range(K)`` (the identity alone when trivial).
        hidden: the MLP's hidden width.
    """

    def __init__(self, *, order: int, group: Sequence[Sequence[int]], hidden: int = 16) -> None:
        super().__init__()
        if order < 2:
            raise ReconError(f"TupleMassPrior: order {order}; a mass prior needs at least 2 daughters")
        self.order = order
        self.group = tuple(tuple(int(i) for i in p) for p in group) or (tuple(range(order)),)
        features = 1 + order * (order - 1) // 2
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, four_momenta: Tensor) -> Tensor:
        """(E, N, ..., N) logits with K object axes from the (E, N, 4) four-momenta [GeV]."""
        logits = self.mlp(tuple_mass_features(four_momenta, self.order)).squeeze(-1)
        if len(self.group) == 1:
            return logits
        return torch.stack([logits.permute(0, *(1 + a for a in p)) for p in self.group]).mean(0)
