"""The decay chain grown from the best-measured daughters: lab momenta where the detector is precise.

:class:`~unfold.models.parton.decay_chain.DecayChainRepresentation` generates the tops in the lab
and walks down to their daughters, so a lepton's momentum is the product of four generated
quantities (the top's momentum, the W's and the lepton's rest-frame directions, the W mass) and
comes out much less sharp than the detector measured it. This representation walks the same tree
upwards from one *anchor* daughter per top, the one the detector measures best (the lepton; in a
hadronic top the harder W quark):

* each anchor: its lab :math:`p_x, p_y, p_z` and mass, generated directly (the condition holds
  the measured object, so a well-measured lepton can come out as sharp as it went in);
* each step up the tree, P = A + B with A already built (the anchor, then the W) and B one
  daughter: the mass of B, the mass of P (a resonance, as the Breit-Wigner coordinate of the decay
  chain), :math:`\log |\vec p_B|` in the lab and the azimuth :math:`\psi` of B around A's
  direction (as cos, sin, measured from the plane of A and the beam). The opening angle follows
  from :math:`m_P^2 = m_A^2 + m_B^2 + 2 (E_A E_B - |\vec p_A| |\vec p_B| \cos\theta)`.

Every momentum is generated in the lab, where the detector measured its object. Two other
choices were trained and measured worse (60 epochs, default data): B's lab direction with the
energy from the mass, :math:`\propto 1 / (1 - \cos\theta)`, blew small angular errors near
collinearity up into TeV tails (neutrino pT W1 87 GeV); the b quark's direction in the W rest
frame, boosted back, turned small errors into large ones in the lab (b pT W1 39 GeV, top pT 56).

Every composite is the exact sum of its daughters and every resonance mass a generated feature,
as in the top-down chain; what changes is which momenta the model generates directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from encoders.kinematics import invariant_mass, invariant_mass_squared
from unfold.errors import UnfoldError
from unfold.models.parton.decay_chain import DecayChainRepresentation
from unfold.models.parton.representation import PartonTruth

if TYPE_CHECKING:
    from unfold.generation.processes import Process

__all__ = ["AnchoredChainRepresentation", "TwoBodyStep"]

_AROUND = ("log_momentum", "cos_azimuth", "sin_azimuth")
# Momentum range (GeV) a step can give its new daughter: the beam energy at 13 TeV at most,
# and enough to keep a direction (a finite pseudorapidity).
_MIN_MOMENTUM, _MAX_MOMENTUM = 1e-3, 6500.0
# Anchor preference per top, by PartonSlot role: the lepton, else the harder W quark.
_ANCHOR_ROLES = ("lepton", "q1")


@dataclass(frozen=True)
class TwoBodyStep:
    """Build ``parent`` = ``known`` + ``added`` from the lab momentum of ``added`` and its azimuth
    around ``known``."""

    parent: str
    known: str
    added: str


class AnchoredChainRepresentation(DecayChainRepresentation):
    """Anchor momenta and masses, three numbers per step for the added daughter, node masses; F = 4 a + 5 s (a anchors, s steps).

    Args:
        daughters, composites: as :class:`~unfold.models.parton.representation.PartonRepresentation`.
        anchors: One daughter per top-level composite (e.g. ``("q1", "lepton")``), from which its
            tree is grown; a daughter in no composite is an anchor of its own.

    Raises:
        UnfoldError: If an anchor is not a daughter, two anchors share a tree, a step up the tree
            adds more than one daughter, or a daughter is reached by no anchor.
    """

    def __init__(
        self, *, daughters: Sequence[str], composites: Mapping[str, Sequence[str]], anchors: Sequence[str]
    ) -> None:
        unknown = sorted(set(anchors) - set(daughters))
        if unknown or len(set(anchors)) != len(anchors):
            raise UnfoldError(f"anchors must be distinct daughters of {list(daughters)}, got {list(anchors)}")
        self.anchors: tuple[str, ...] = tuple(anchors)
        super().__init__(daughters=daughters, composites=composites)
        reached = set(self.anchors) | {step.added for step in self.steps}
        if reached != set(self.daughters):
            raise UnfoldError(
                f"the anchors {list(self.anchors)} do not reach the daughters {sorted(set(self.daughters) - reached)}; "
                "expected one anchor in every top-level composite"
            )

    @classmethod
    def for_process(cls, process: Process) -> AnchoredChainRepresentation:
        """Anchored at each top's lepton, else its harder W quark (``PartonSlot.role``)."""
        anchors = []
        for top in dict.fromkeys(slot.top for slot in process.partons):
            slots = [slot for slot in process.partons if slot.top == top]
            anchors.append(next(slot.name for role in _ANCHOR_ROLES for slot in slots if slot.role == role))
        return cls(daughters=[slot.name for slot in process.partons], composites=process.composites, anchors=anchors)

    @cached_property
    def steps(self) -> tuple[TwoBodyStep, ...]:
        """From each anchor up to its top-level composite, one daughter added per step."""
        contents = self._contents
        system = frozenset(self.daughters)
        steps, claimed = [], set()
        for anchor in self.anchors:
            node = anchor
            while True:
                holders = [name for name in self.composites if contents[node] < contents[name] != system]
                if not holders:
                    break
                parent = min(holders, key=lambda name: len(contents[name]))
                added = contents[parent] - contents[node]
                if len(added) != 1 or parent in claimed:
                    raise UnfoldError(
                        f"the anchored chain adds one daughter per step, but composite {parent!r} adds "
                        f"{sorted(added)} to {node!r} (anchors {list(self.anchors)})"
                    )
                claimed.add(parent)
                (daughter,) = added
                steps.append(TwoBodyStep(parent, node, daughter))
                node = parent
        return tuple(steps)

    @cached_property
    def roots(self) -> tuple[str, ...]:
        """The anchors: their lab momenta are features."""
        return self.anchors

    @cached_property
    def massive_nodes(self) -> tuple[str, ...]:
        """Each step's parent and added daughter: their masses are features."""
        return tuple(name for step in self.steps for name in (step.parent, step.added))

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        anchors = tuple(
            feature for name in self.anchors for feature in (f"{name}:px", f"{name}:py", f"{name}:pz", f"{name}:mass")
        )
        directions = tuple(f"{step.added}_around_{step.known}:{name}" for step in self.steps for name in _AROUND)
        return anchors + directions + tuple(self._mass_feature(name) for name in self.massive_nodes)

    def physical_features(self, partons: PartonTruth) -> Tensor:
        """Float64 (E, F): anchor momenta and masses, the added daughters' momenta, node masses."""
        nodes = self.node_four_momenta(partons)
        masses = dict(zip(self.daughters, self.daughter_masses(partons).unbind(1), strict=True))
        masses.update({name: self._breit_wigner_coordinate(name, invariant_mass(nodes[name])) for name in self.resonances})
        anchors = [torch.cat([nodes[name][:, 1:], masses[name][:, None]], 1) for name in self.anchors]
        directions = [_momentum_around(nodes[step.known], nodes[step.added]) for step in self.steps]
        return torch.cat([*anchors, *directions, torch.stack([masses[n] for n in self.massive_nodes], 1)], dim=1)

    def decode_four_momenta(self, x: Tensor) -> dict[str, Tensor]:
        """Float64 (..., 4) four-momenta of every node of a standardised (..., F) tensor.

        Masses are those of :meth:`node_masses`. Where a parent's mass is out of reach of the
        generated momentum at any angle (a generated tail), the added daughter is put back to back
        with, or along, the known part, whichever is nearer; every composite stays the exact sum of
        its daughters.
        """
        features = self.physical(x.double())
        masses = self._node_masses(features)
        nodes = {}
        for index, name in enumerate(self.anchors):
            momentum = features[..., 4 * index : 4 * index + 3]
            energy = torch.sqrt(masses[name] ** 2 + (momentum**2).sum(-1))
            nodes[name] = torch.cat([energy[..., None], momentum], -1)
        offset = 4 * len(self.anchors)
        for index, step in enumerate(self.steps):
            values = features[..., offset + 3 * index : offset + 3 * index + 3]
            known = nodes[step.known]
            nodes[step.added] = _added_around(known, values, masses[step.parent], masses[step.added])
            nodes[step.parent] = known + nodes[step.added]
        for name, parts in self.composites.items():
            nodes.setdefault(name, sum(nodes[part] for part in parts))
        return nodes


def _azimuth_axes(known: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit vectors (a, u, v): A's direction, then u = z x a / |z x a| (normal to the plane of A and
    the beam) and v = a x u; the azimuth around A is measured from u towards v."""
    along = known[..., 1:] / known[..., 1:].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    beam = torch.zeros_like(along)
    beam[..., 2] = 1.0
    normal = torch.linalg.cross(beam, along)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return along, normal, torch.linalg.cross(along, normal)


def _momentum_around(known: Tensor, added: Tensor) -> Tensor:
    """(log |p_B|, cos psi, sin psi): B's lab momentum and its azimuth psi around A's direction."""
    along, normal, binormal = _azimuth_axes(known)
    momentum = added[..., 1:]
    psi = torch.atan2((momentum * binormal).sum(-1), (momentum * normal).sum(-1))
    size = momentum.norm(dim=-1).clamp_min(_MIN_MOMENTUM)
    return torch.stack([size.log(), psi.cos(), psi.sin()], -1)


def _added_around(known: Tensor, values: Tensor, parent_mass: Tensor, added_mass: Tensor) -> Tensor:
    """B's lab four-momentum from (log |p_B|, cos psi, sin psi): the opening angle to A solves
    m_P^2 = m_A^2 + m_B^2 + 2 (E_A E_B - |p_A| |p_B| cos theta), clipped to [-1, 1] where the mass
    is out of reach of that momentum."""
    along, normal, binormal = _azimuth_axes(known)
    size = values[..., 0].exp().clamp(_MIN_MOMENTUM, _MAX_MOMENTUM)
    azimuth = values[..., 1:] / values[..., 1:].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    energy = torch.sqrt(size**2 + added_mass**2)
    half_gap = (parent_mass**2 - invariant_mass_squared(known).clamp_min(0.0) - added_mass**2) / 2
    known_size = known[..., 1:].norm(dim=-1).clamp_min(1e-12)
    cos_theta = ((known[..., 0] * energy - half_gap) / (known_size * size)).clamp(-1.0, 1.0)
    sin_theta = (1 - cos_theta**2).clamp_min(0.0).sqrt()
    across = azimuth[..., :1] * normal + azimuth[..., 1:] * binormal
    direction = cos_theta[..., None] * along + sin_theta[..., None] * across
    return torch.cat([energy[..., None], size[..., None] * direction], -1)
