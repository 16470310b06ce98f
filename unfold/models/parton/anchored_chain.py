"""The decay chain with one daughter anchored to its measurement and its branch built upward from it.

The plain decay chain builds the charged lepton last, from its top's momentum, the W's direction
in the top and the lepton's direction in the W, so the lepton carries every error above it: a
lepton the detector measures to a per cent comes out of the unfolding several GeV wide. Here the
anchored daughter (the lepton) is generated relative to the detector object it left (log pT
ratio, Delta eta, Delta phi), and its branch is built upward: each sibling on the way to the top
gets its mass and part of its momentum from the model and the rest from the parent mass,

.. math::  (p_{known} + p_{built})^2 = M^2,

so the W and the top keep their generated Breit-Wigner masses exactly, as in the plain chain. The
built sibling (the neutrino beside its lepton, the b beside its W) is stored as its transverse
momentum and the side of its known sibling's rapidity it lies on: the rapidity difference is the
solution of the parent mass (for the neutrino, the longitudinal solution of lepton+jets analyses),
the model choosing the root. A transverse momentum too large for any rapidity to close the parent
is brought down to the largest that does. The other top and its decays are generated top-down as
in the plain chain.

Measured (README, "Parton representations"): the lepton comes out as sharp as it went in, but about
a quarter of the generated neutrinos and b quarks lie beyond the largest transverse momentum that
closes their parent, so the leptonic top is softer than in the plain chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from encoders.kinematics import (
    azimuth,
    delta_phi,
    invariant_mass_squared,
    rapidity,
    to_cartesian,
    to_cylindrical,
    transverse_momentum,
)
from unfold.errors import UnfoldError
from unfold.models.parton.decay_chain import DecayChainRepresentation, TwoBodyDecay
from unfold.models.parton.representation import Anchors, PartonTruth

__all__ = ["AnchoredDecayChainRepresentation", "UpwardDecay", "sibling_momentum"]

_ANCHOR_FEATURES = ("log_pt_ratio", "delta_eta", "delta_phi")


@dataclass(frozen=True)
class UpwardDecay:
    """A decay of ``decay.parent`` built from its ``known`` child: the ``built`` child's (px, py) and rapidity
    difference to the known one are stored."""

    decay: TwoBodyDecay
    known: str
    built: str


def sibling_momentum(known: Tensor, parent_mass: Tensor, mass: Tensor, transverse: Tensor, side: Tensor) -> Tensor:
    r"""Four-momentum (..., 4) of the child of ``mass`` and ``transverse`` (px, py) that makes, with its
    ``known`` sibling (..., 4), a parent of ``parent_mass``, on the side of the sibling's rapidity of the
    sign of ``side``:

    .. math::  c = m_{T,k}\, m_T \cosh\Delta y - k\, p_T, \qquad c = (M^2 - m_k^2 - m^2) / 2, \quad
               k = p_{T,k} \cos\Delta\phi.

    Real solutions need :math:`g(p_T) = m_{T,k} \sqrt{p_T^2 + m^2} - k\, p_T \le c`, an interval of
    :math:`p_T` whose ends have :math:`\Delta y = 0`; a transverse momentum outside it is brought to its
    nearer end. A child too heavy for any (:math:`c < m \sqrt{m_{T,k}^2 - k^2}`, or :math:`c < m_{T,k} m`
    flying against its sibling: a top generated far below its W and b) is built massless, which always
    closes the parent; a parent lighter than its children is raised to their threshold.
    """
    known_mass = invariant_mass_squared(known).clamp_min(0.0).sqrt()
    known_mt = (known[..., 0] ** 2 - known[..., 3] ** 2).clamp_min(1e-12).sqrt()
    phi = torch.atan2(transverse[..., 1], transverse[..., 0])
    k = transverse_momentum(known) * torch.cos(phi - azimuth(known))
    spread = (known_mt**2 - k**2).clamp_min(1e-12)
    c = (parent_mass**2 - known_mass**2 - mass**2) / 2
    mass = torch.where((c > 0) & (c**2 >= mass**2 * spread) & ((k > 0) | (c >= known_mt * mass)), mass, 0.0)
    c = ((parent_mass**2 - known_mass**2 - mass**2) / 2).clamp_min(known_mass * mass + 1e-9)
    root = (c**2 - mass**2 * spread).clamp_min(0.0).sqrt()
    low, high = (c * k - known_mt * root) / spread, (c * k + known_mt * root) / spread
    pt = torch.hypot(transverse[..., 0], transverse[..., 1]).clamp(low, high).clamp_min(0.0)
    mt = (pt**2 + mass**2).sqrt()
    cosh = ((c + k * pt) / (known_mt * mt).clamp_min(1e-12)).clamp_min(1.0)
    y = rapidity(known) + torch.where(side < 0, -1.0, 1.0) * torch.acosh(cosh)
    return torch.stack([mt * torch.cosh(y), pt * torch.cos(phi), pt * torch.sin(phi), mt * torch.sinh(y)], -1)


class AnchoredDecayChainRepresentation(DecayChainRepresentation):
    """The decay chain with ``anchored`` (the lepton) generated relative to its detector object.

    Features: the lab momentum and mass of every other root; the anchored daughter's
    ``log(pT / pT_measured)``, ``eta - eta_measured`` and ``phi - phi_measured`` (wrapped); the
    rest-frame directions of the decays off its branch; the (px, py) of each sibling built on its
    branch and its rapidity minus its known sibling's (:func:`sibling_momentum`); the masses
    of every decay product and of the branch's root. Encoding, fitting and decoding take the (E, 4)
    anchor of the anchored daughter.

    Raises:
        UnfoldError: If ``anchored`` is not a daughter that some decay produces.
    """

    def __init__(
        self,
        *,
        daughters: Sequence[str],
        composites: Mapping[str, Sequence[str]],
        pt_ordered: Sequence[tuple[str, str]] = (),
        anchored: str = "lepton",
    ) -> None:
        self._anchored = anchored  # the feature names, which the base class sizes its buffers by, need it
        if not any(anchored in parts for parts in composites.values()):
            raise UnfoldError(f"the anchored daughter must be a decay product of {list(daughters)}, got {anchored!r}")
        super().__init__(daughters=daughters, composites=composites, pt_ordered=pt_ordered)

    @property
    def anchored(self) -> tuple[str, ...]:
        return (self._anchored,)

    @cached_property
    def upward_decays(self) -> tuple[UpwardDecay, ...]:
        """The decays from the anchored daughter up to its root, each built from the child below."""
        upward, node = [], self._anchored
        while (decay := next((d for d in self.decays if node in (d.first, d.second)), None)) is not None:
            upward.append(UpwardDecay(decay, node, decay.second if node == decay.first else decay.first))
            node = decay.parent
        return tuple(upward)

    @cached_property
    def branch_root(self) -> str:
        """The root the anchored branch ends in (the leptonic top): its mass is a feature, its momentum is not."""
        return self.upward_decays[-1].decay.parent

    @cached_property
    def lab_roots(self) -> tuple[str, ...]:
        return tuple(name for name in self.roots if name != self.branch_root)

    @cached_property
    def rest_frame_decays(self) -> tuple[TwoBodyDecay, ...]:
        upward = {step.decay for step in self.upward_decays}
        return tuple(decay for decay in self.decays if decay not in upward)

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        roots = tuple(feature for name in self.lab_roots for feature in self._root_feature_names(name))
        directions = tuple(name for decay in self.rest_frame_decays for name in self._direction_names(decay))
        built = tuple(name for step in self.upward_decays for name in self._built_names(step))
        masses = tuple(self._mass_feature(name) for name in (*self.massive_nodes, self.branch_root))
        return roots + self._anchor_names + directions + built + masses

    def physical_features(self, partons: PartonTruth, anchors: Anchors | None = None) -> Tensor:
        """Float64 (E, F) features of truth, the anchored daughter relative to its (E, 4) anchor."""
        nodes = self.node_four_momenta(partons)
        measured = self.check_anchors(anchors, len(nodes[self._anchored]))[self._anchored]
        masses = self._mass_features(partons, nodes)
        roots = [torch.cat([nodes[name][:, 1:], masses[name][:, None]], 1) for name in self.lab_roots]
        pt, eta, phi, _ = to_cylindrical(nodes[self._anchored])
        pt_measured, eta_measured, phi_measured, _ = to_cylindrical(measured)
        anchor = torch.stack([torch.log(pt / pt_measured), eta - eta_measured, delta_phi(phi, phi_measured)], 1)
        directions = [self._rest_frame_direction(nodes, decay) for decay in self.rest_frame_decays]
        built = [torch.cat([nodes[step.built][:, 1:3], (rapidity(nodes[step.built]) - rapidity(nodes[step.known]))[:, None]], 1)
                 for step in self.upward_decays]
        mass_columns = torch.stack([masses[name] for name in (*self.massive_nodes, self.branch_root)], 1)
        return torch.cat([*roots, anchor, *directions, *built, mass_columns], dim=1)

    def _lab_nodes(self, features: Tensor, masses: Mapping[str, Tensor], anchors: Anchors | None) -> dict[str, Tensor]:
        """The other roots, then the anchored daughter and every node up its branch."""
        nodes = super()._lab_nodes(features, masses, None)
        measured = self.check_anchors(anchors, features.shape[0])[self._anchored]
        measured = measured.to(features.device).reshape(-1, *([1] * (features.ndim - 2)), 4)
        pt, eta, phi, _ = to_cylindrical(measured)
        log_ratio, eta_offset, phi_offset = self._columns(features, self._anchor_names).unbind(-1)
        nodes[self._anchored] = to_cartesian(pt * torch.exp(log_ratio), eta + eta_offset, phi + phi_offset,
                                             masses[self._anchored])
        for step in self.upward_decays:
            columns = self._columns(features, self._built_names(step))
            nodes[step.built] = sibling_momentum(nodes[step.known], masses[step.decay.parent], masses[step.built],
                                                 columns[..., :2], columns[..., 2])
            nodes[step.decay.parent] = nodes[step.known] + nodes[step.built]
        return nodes

    @staticmethod
    def _built_names(step: UpwardDecay) -> tuple[str, ...]:
        return f"{step.built}:px", f"{step.built}:py", f"{step.built}:delta_rapidity"

    @cached_property
    def _anchor_names(self) -> tuple[str, ...]:
        return tuple(f"{self._anchored}:{feature}" for feature in _ANCHOR_FEATURES)
