"""A learned mass prior for every K-tuple of objects: the chi-square's idea inside the network.

The mass chi-square (:mod:`recon.chi_square`) knows one thing the attention must otherwise learn
from examples: the daughters of a top have m(bqq') near m_t and m(qq') near m_W. This module
gives the symmetric tensor attention that knowledge as an additive logit, a small MLP of the
tuple's invariant mass and of its daughter pairs' masses, so with few training events the
network starts from the masses rather than discovering them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch
from torch import Tensor, nn

from recon.chi_square import central_half_width
from recon.errors import ReconError

__all__ = ["TupleMassPrior", "tuple_masses"]

# Masses enter the MLP in units of 100 GeV, the scale of m_W and m_t (order-one inputs).
_MASS_UNIT = 100.0


def _minkowski_gram(four_momenta: Tensor) -> Tensor:
    """(E, N, N) Minkowski products p_a . p_b of (E, N, 4) (energy, px, py, pz), metric (+, -, -, -)."""
    metric = four_momenta.new_tensor([1.0, -1.0, -1.0, -1.0])
    return torch.einsum("eac,ebc->eab", four_momenta * metric, four_momenta)


def tuple_masses(four_momenta: Tensor, order: int) -> tuple[Tensor, list[Tensor]]:
    """Invariant masses of every K-tuple and of each of its daughter pairs, in units of 100 GeV.

    Built from the Minkowski products only: :math:`m^2_{a_1 \\dots a_K} = \\sum_{i,j} p_{a_i} \\cdot p_{a_j}`.
    m^2 < 0 from rounding or smeared masses gives 0.

    Args:
        four_momenta: (E, N, 4) as (energy, px, py, pz) in GeV.
        order: K >= 2.

    Returns:
        The tuple masses (E, N, ..., N) with K object axes, and the pair masses in the order of
        ``itertools.combinations(range(K), 2)``, each shaped to broadcast over the tuple axes
        (size N on its two axes, 1 on the others).
    """
    if order < 2:
        raise ReconError(f"tuple_masses: order {order}; a mass needs at least 2 objects")
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
    whole = (sum(pairs) - (order - 2) * singles).expand([events] + [count] * order)

    def mass(squared: Tensor) -> Tensor:
        return squared.clamp_min(0.0).sqrt() / _MASS_UNIT

    return mass(whole), [mass(p) for p in pairs]


class TupleMassPrior(nn.Module):
    r"""A chi-square logit for every K-tuple from its masses, learned, symmetric under the daughter group.

    For the tuple mass and (for K >= 3) each daughter pair's mass :math:`m_f` (:func:`tuple_masses`),

    .. math:: \text{logit} = -\frac{1}{2} \sum_f \left(\frac{m_f - \mu_f}{\sigma_f}\right)^2,

    the chi-square of :mod:`recon.chi_square` over every mass of the tuple (for a hadronic top:
    m(bqq'), m(qq'), m(bq), m(bq')). :meth:`fit` starts the centres and widths at the median and
    central half-width of the truth-matched training tuples; training then moves them. The
    result is averaged over the group's permutations of the object axes, so swapping q1 and q2
    of a W leaves it unchanged exactly, like the attention it is added to. It costs a few
    element-wise operations per tuple.

    Args:
        order: K >= 2 daughters.
        group: G_P as index permutations of ``range(K)`` (the identity alone when trivial).
    """

    def __init__(self, *, order: int, group: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if order < 2:
            raise ReconError(f"TupleMassPrior: order {order}; a mass prior needs at least 2 daughters")
        self.order = order
        self.group = tuple(tuple(int(i) for i in p) for p in group) or (tuple(range(order)),)
        features = 1 + (order * (order - 1) // 2 if order >= 3 else 0)
        # Until fitted: every mass centred at 100 GeV with a 100 GeV width, a gentle start.
        self.centre = nn.Parameter(torch.ones(features))
        self.log_width = nn.Parameter(torch.zeros(features))

    def _masses(self, four_momenta: Tensor) -> list[Tensor]:
        whole, pairs = tuple_masses(four_momenta, self.order)
        return [whole, *pairs] if self.order >= 3 else [whole]

    def forward(self, four_momenta: Tensor) -> Tensor:
        """(E, N, ..., N) logits with K object axes from the (E, N, 4) four-momenta [GeV]."""
        widths = self.log_width.exp()
        chi2 = sum(
            ((mass - centre) / width) ** 2
            for mass, centre, width in zip(self._masses(four_momenta), self.centre, widths, strict=True)
        )
        logits = -0.5 * chi2
        if len(self.group) == 1:
            return logits
        return torch.stack([logits.permute(0, *(1 + a for a in p)) for p in self.group]).mean(0)

    @torch.no_grad()
    def fit(self, four_momenta: Tensor, daughters: Tensor) -> None:
        """Centre and width of each mass from the truth-matched tuples.

        Args:
            four_momenta: (E, N, 4) as (energy, px, py, pz) in GeV.
            daughters: (E, K) object index of each daughter, -1 where unmatched; events with
                every daughter matched count.
        """
        matched = (daughters >= 0).all(dim=1)
        if int(matched.sum()) < 2:
            raise ReconError(f"TupleMassPrior.fit: {int(matched.sum())} fully matched tuples; need at least 2")
        p4, tuples = four_momenta[matched], daughters[matched]
        rows = torch.arange(len(tuples))
        chosen = [p4[rows, tuples[:, k]][:, None, :] for k in range(self.order)]
        one_tuple = torch.cat(chosen, dim=1)  # (e, K, 4): each event's true tuple as objects 0..K-1
        shape = [len(tuples)] + [self.order] * self.order
        for feature, mass in enumerate(self._masses(one_tuple)):
            values = mass.expand(shape)[(slice(None), *range(self.order))]  # the tuple (0, 1, ..., K-1)
            # The median and the central 68.27 % half-width, as the chi-square fits its resolutions.
            values = values.double().numpy()
            self.centre[feature] = float(np.median(values))
            self.log_width[feature] = math.log(max(central_half_width(values), 1e-3))
