"""The partons as a decay chain: masses and rest-frame decay directions, consistent by construction.

Each composite decays into two children (``t_had -> W_had b_had``, ``W_had -> q1 q2``, ...).
An event is stored as

* every root, a node no decay produces (the tops): its lab :math:`p_x, p_y, p_z, m`; a composite
  holding every daughter (ttbar) is their sum, not a decay, so top momenta are generated directly;
* for every two-body decay P -> A B: the unit vector of A's momentum in P's rest frame, reached
  from the lab by a pure boost, on P's helicity axes (z' along P's flight, y' across the beam and
  the flight), so its last component is the decay's cos theta* (three numbers, normalised again on
  decoding; the hadronic top's lifted off the sphere in training, :meth:`DecayChainRepresentation.lifted`);
* the mass of every decay product, composites (W) and daughters alike; resonance masses (tops,
  W) as their normal score :math:`\\Phi^{-1}(F(m))`, F the training truth's distribution of that mass.

Decoding walks each tree from its root: A gets the two-body momentum
:math:`p^* = \\sqrt{\\lambda(M^2, m_A^2, m_B^2)} / 2M` along its direction, is boosted back to the
lab, and B is P - A. Every composite is then exactly the sum of its daughters, and each mass,
the W and top Breit-Wigner peaks included, is a feature the model generates directly instead
of a cancellation between daughter momenta (the sharp-feature problem of arXiv 2305.10399,
which that paper attacks with a consistency loss). It is the sequential two-body parametrisation
that phase-space generators use for resonance chains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from encoders.kinematics import (
    invariant_mass,
    lorentz_boost,
    rest_frame_direction,
    to_cylindrical,
    unit_vector,
)
from unfold.errors import UnfoldError
from unfold.models.parton.representation import (
    Anchors,
    DecodedPartons,
    PartonRepresentation,
    PartonTruth,
)

__all__ = ["DecayChainRepresentation", "HadronicPolarDecayChainRepresentation", "PolarDecayChainRepresentation", "TwoBodyDecay"]

_DIRECTION = ("x", "y", "z")
# Lightest composite mass decoded (GeV): a generated mass at or below zero still gives its
# daughters a finite boost and non-zero momenta.
_MIN_COMPOSITE_MASS = 1e-3
# Knots of each resonance's mass distribution, evenly spaced in the normal score between the scores of the
# training truth's lightest and heaviest masses.
_MASS_KNOTS = 257
# exp(12) GeV ~ 160 TeV: far above any top's pT at 13 TeV, so only runaway values are clamped.
_MAX_LOG_PT = 12.0
# The daughter name of the charged lepton (as the lepton-anchored chain's default anchor).
_CHARGED_LEPTON = "lepton"


@dataclass(frozen=True)
class TwoBodyDecay:
    """Node ``parent`` decaying to ``first`` (whose rest-frame direction is stored) and ``second``."""

    parent: str
    first: str
    second: str


def _kallen(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Källén function lambda(a, b, c) = a^2 + b^2 + c^2 - 2ab - 2ac - 2bc."""
    return a**2 + b**2 + c**2 - 2 * (a * b + a * c + b * c)


def _decay_in_flight(parent: Tensor, direction: Tensor, first_mass: Tensor, second_mass: Tensor) -> tuple[Tensor, Tensor]:
    """Both children (..., 4) of a parent decaying with the first child along the rest-frame unit ``direction``.

    The first child gets the two-body momentum sqrt(lambda(M^2, m_1^2, m_2^2)) / 2M and is boosted
    back to the lab; the second is the parent minus the first. Children heavier together than the
    parent are scaled to half its mass.
    """
    parent_mass = invariant_mass(parent).clamp_min(_MIN_COMPOSITE_MASS)
    children_mass = first_mass + second_mass
    shrink = torch.where(children_mass >= parent_mass, 0.5 * parent_mass / children_mass.clamp_min(1e-12), 1.0)
    first_mass, second_mass = first_mass * shrink, second_mass * shrink
    rest_momentum = torch.sqrt(_kallen(parent_mass**2, first_mass**2, second_mass**2).clamp_min(0.0)) / (2 * parent_mass)
    first_at_rest = torch.cat([torch.sqrt(rest_momentum**2 + first_mass**2)[..., None], rest_momentum[..., None] * direction], -1)
    first = lorentz_boost(first_at_rest, -parent[..., 1:] / parent[..., :1])
    return first, parent - first


class DecayChainRepresentation(PartonRepresentation):
    """Root momenta, rest-frame decay directions and node masses; F = 4 r + 3 d + (children of decays).

    The roots are the top-level nodes (the tops), stored in the lab; a composite holding every
    daughter (ttbar) is not a decay but the sum of the roots, so each top's momentum is generated
    directly rather than through the ttbar rest frame.

    Raises:
        UnfoldError: If a composite does not split into exactly two children (composites or
            daughters), or a ``pt_ordered`` pair is not the two children of one decay.
    """

    def __init__(
        self,
        *,
        daughters: Sequence[str],
        composites: Mapping[str, Sequence[str]],
        pt_ordered: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(daughters=daughters, composites=composites, pt_ordered=pt_ordered)
        for pair in self.pt_ordered:
            self._decay_of(*pair)
        knots = torch.linspace(-1.0, 1.0, _MASS_KNOTS, dtype=torch.float64).repeat(len(self.resonances), 1)
        self.register_buffer("mass_knots", knots.clone())
        self.register_buffer("normal_score_knots", knots)

    @cached_property
    def _contents(self) -> dict[str, frozenset[str]]:
        """Each node (composites, then daughters) -> the daughters it holds."""
        contents = {name: frozenset(parts) for name, parts in self.composites.items()}
        contents.update({name: frozenset([name]) for name in self.daughters})
        return contents

    @cached_property
    def decays(self) -> tuple[TwoBodyDecay, ...]:
        """The two-body decays of the roots, parents before their children."""
        contents = self._contents
        decays = []
        for parent in sorted(self.composites, key=lambda name: -len(contents[name])):
            if contents[parent] == frozenset(self.daughters):
                continue
            inside = [name for name in contents if contents[name] < contents[parent]]
            children = [name for name in inside if not any(contents[name] < contents[other] for other in inside)]
            if len(children) != 2 or contents[children[0]] | contents[children[1]] != contents[parent]:
                raise UnfoldError(
                    f"the decay-chain representation needs two-body decays, but composite {parent!r} "
                    f"splits into {children}"
                )
            first, second = sorted(children, key=lambda name: (name not in self.composites, list(contents).index(name)))
            decays.append(TwoBodyDecay(parent, first, second))
        return tuple(decays)

    @cached_property
    def roots(self) -> tuple[str, ...]:
        """Nodes no decay produces (e.g. ``t_had``, ``t_lep``): their lab momenta are features."""
        produced = {name for decay in self.decays for name in (decay.first, decay.second)}
        systems = {name for name in self.composites if self._contents[name] == frozenset(self.daughters)}
        return tuple(name for name in self._contents if name not in produced | systems)

    @cached_property
    def massive_nodes(self) -> tuple[str, ...]:
        """The children of every decay, in the decay order: their masses are features."""
        return tuple(child for decay in self.decays for child in (decay.first, decay.second))

    @cached_property
    def resonances(self) -> tuple[str, ...]:
        """Composites whose mass is a feature (tops, W bosons), stored as normal scores."""
        return tuple(name for name in (*self.roots, *self.massive_nodes) if name in self.composites)

    @cached_property
    def lab_roots(self) -> tuple[str, ...]:
        """The roots whose lab momenta are features: all of them here."""
        return self.roots

    @cached_property
    def rest_frame_decays(self) -> tuple[TwoBodyDecay, ...]:
        """The decays stored as the first child's direction in the parent's rest frame: all of them here."""
        return self.decays

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        roots = tuple(feature for name in self.lab_roots for feature in self._root_feature_names(name))
        directions = tuple(name for decay in self.rest_frame_decays for name in self._direction_names(decay))
        return roots + directions + tuple(self._mass_feature(name) for name in self.massive_nodes)

    def fit(self, partons: PartonTruth, weights: Tensor | None = None, anchors: Anchors | None = None) -> None:
        """Tabulate each resonance's mass distribution in the training truth, then fit the standardisation.

        The knots are the masses at normal scores evenly spaced from :math:`\\Phi^{-1}(1 / 2E)` to its
        negative, the scores of the lightest and heaviest of E training masses, so the table spans what
        training saw and a generated outlier cannot decode to a resonance heavier (or lighter) than any
        in the training truth. Event ``weights`` enter the standardisation only; the table stays unweighted.
        """
        nodes = self.node_four_momenta(partons)
        for index, name in enumerate(self.resonances):
            mass = invariant_mass(nodes[name])
            edge = -torch.special.ndtri(torch.tensor(0.5 / len(mass), dtype=torch.float64))
            scores = torch.linspace(-edge.item(), edge.item(), _MASS_KNOTS, dtype=torch.float64)
            self.normal_score_knots[index] = scores
            knots = torch.quantile(mass, torch.special.ndtr(scores))
            knots[[0, -1]] = torch.stack([mass.min(), mass.max()])
            self.mass_knots[index] = knots
        super().fit(partons, weights, anchors)
        columns = self._lifted_columns.flatten()
        self.mean[columns], self.scale[columns] = 0.0, 1.0

    @cached_property
    def _lifted_columns(self) -> Tensor:
        """(d, 3) feature indices of the decay directions :meth:`lifted` scales: those of the decays inside a top
        without the charged lepton, which the detector leaves open (which jet is which quark)."""
        decays = [decay for decay in self.rest_frame_decays if _CHARGED_LEPTON not in self._contents[decay.parent]]
        return torch.tensor([[self.feature_names.index(name) for name in self._direction_names(decay)]
                             for decay in decays], dtype=torch.long).reshape(-1, 3)

    def lifted(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Standardised (E, F) partons with the decay directions of the tops without a charged lepton each scaled by
        an independent :math:`\\chi_3`-distributed radius (the length of a standard normal 3-vector).

        A unit vector lives on a sphere, a two-dimensional shell in its three features. Where the detector leaves
        a direction open (which jet is which quark of the hadronic W: a probe of the condition vector explains 5 %
        of the variance of the W's |cos theta*|), its posterior is the prior, which the denoiser has to learn as
        a law on that shell; the unfolded hadronic directions came out blurred through it (norms 0.34 to 1.59 at
        5-95 %). Lifted, a uniform direction is exactly the standard normal vector, the diffusion's own noise, and
        any direction law a full-dimensional density; decoding divides the radius out. The leptonic top's
        directions, pinned by the measured lepton, stay on the sphere: lifted, a sharp direction becomes a thin
        ray, and the leptonic W's decay angle came out twice as far from the truth (README). The lifted columns
        are standardised to mean 0 and scale 1 (:meth:`fit`), that normal law's.
        """
        columns = self._lifted_columns.to(x.device)
        if columns.numel() == 0:
            return x
        physical = self.physical(x)
        radius = torch.randn((*x.shape[:-1], len(columns), 3), generator=generator, device=x.device, dtype=x.dtype)
        lifted = physical.clone()
        lifted[..., columns] = unit_vector(physical[..., columns]) * radius.norm(dim=-1, keepdim=True)
        return (lifted - self.mean.to(x)) / self.scale.to(x)

    def physical_features(self, partons: PartonTruth, anchors: Anchors | None = None) -> Tensor:
        """Float64 (E, F): root momenta and masses, decay directions, decay products' masses."""
        nodes = self.node_four_momenta(partons)
        masses = self._mass_features(partons, nodes)
        roots = [torch.cat([self._root_momentum_features(name, nodes[name]), masses[name][:, None]], 1)
                 for name in self.lab_roots]
        directions = [self._rest_frame_direction(nodes, decay) for decay in self.rest_frame_decays]
        return torch.cat([*roots, *directions, torch.stack([masses[n] for n in self.massive_nodes], 1)], dim=1)

    def _mass_features(self, partons: PartonTruth, nodes: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Every daughter's truth mass and every resonance's normal score, (E,) each."""
        masses = dict(zip(self.daughters, self.daughter_masses(partons).unbind(1), strict=True))
        masses.update({name: self._normal_score(name, invariant_mass(nodes[name])) for name in self.resonances})
        return masses

    @staticmethod
    def _rest_frame_direction(nodes: Mapping[str, Tensor], decay: TwoBodyDecay) -> Tensor:
        """(E, 3) unit vector of the first child's momentum in its parent's rest frame (pure boost) on the parent's
        helicity axes (:func:`_helicity_axes`): its last component is the decay's cos theta*."""
        direction = rest_frame_direction(nodes[decay.first], nodes[decay.parent])
        return torch.einsum("...ij,...j->...i", _helicity_axes(nodes[decay.parent]), direction)

    def node_masses(self, x: Tensor) -> dict[str, Tensor]:
        """Float64 masses (GeV) of the roots and decay products of a standardised (..., F) tensor.

        Daughter masses are clipped at zero, resonance masses kept above 1 MeV.
        """
        return self._node_masses(self.physical(x.double()))

    def _node_masses(self, features: Tensor) -> dict[str, Tensor]:
        masses = {}
        for name in (*self.roots, *self.massive_nodes):
            value = features[..., self.feature_names.index(self._mass_feature(name))]
            masses[name] = self._resonance_mass(name, value) if name in self.composites else value.clamp_min(0.0)
        return masses

    def node_four_momenta(self, partons: PartonTruth) -> dict[str, Tensor]:
        """Float64 (E, 4) four-momenta of every daughter and composite of truth."""
        daughters = self.daughter_four_momenta(partons)
        nodes = dict(zip(self.daughters, daughters.unbind(1), strict=True))
        composites = torch.einsum("mk,ekc->emc", self.membership.to(daughters), daughters)
        nodes.update(zip(self.composites, composites.unbind(1), strict=True))
        return nodes

    def decode_four_momenta(self, x: Tensor, anchors: Anchors | None = None) -> dict[str, Tensor]:
        """Float64 (..., 4) four-momenta of every node of a standardised (..., F) tensor.

        Masses are those of :meth:`node_masses`. Where a parent is lighter than its children's
        masses (a generated tail), both children's masses are scaled down to sum to half the
        parent's, so they still move in its frame; every composite stays the exact sum of its
        daughters.
        """
        features = self.physical(x.double())
        masses = self._node_masses(features)
        nodes = self._lab_nodes(features, masses, anchors)
        for decay in self.rest_frame_decays:
            helicity = unit_vector(self._columns(features, self._direction_names(decay)))
            direction = torch.einsum("...ij,...i->...j", _helicity_axes(nodes[decay.parent]), helicity)
            nodes[decay.first], nodes[decay.second] = _decay_in_flight(
                nodes[decay.parent], direction, masses[decay.first], masses[decay.second]
            )
        for name, parts in self.composites.items():
            nodes.setdefault(name, sum(nodes[part] for part in parts))
        return nodes

    def _lab_nodes(self, features: Tensor, masses: Mapping[str, Tensor], anchors: Anchors | None) -> dict[str, Tensor]:
        """The nodes generated in the lab, before the rest-frame decays: the roots here."""
        nodes = {}
        for name in self.lab_roots:
            momentum = self._root_momentum(name, self._columns(features, self._root_feature_names(name)[:-1]))
            nodes[name] = torch.cat([torch.sqrt(masses[name] ** 2 + (momentum**2).sum(-1))[..., None], momentum], -1)
        return nodes

    def _root_momentum_features(self, name: str, momentum: Tensor) -> Tensor:
        """Root ``name``'s momentum features (E, k) from its lab four-momentum (E, 4): (px, py, pz) here."""
        return momentum[:, 1:]

    def _root_momentum(self, name: str, columns: Tensor) -> Tensor:
        """Root ``name``'s lab momentum (..., 3) from its momentum features (..., k): the inverse of
        :meth:`_root_momentum_features`."""
        return columns

    def _columns(self, features: Tensor, names: Sequence[str]) -> Tensor:
        """The (..., len(names)) features of those names."""
        return features[..., [self.feature_names.index(name) for name in names]]

    def _root_feature_names(self, name: str) -> tuple[str, ...]:
        return (f"{name}:px", f"{name}:py", f"{name}:pz", self._mass_feature(name))

    @staticmethod
    def _direction_names(decay: TwoBodyDecay) -> tuple[str, ...]:
        return tuple(f"{decay.first}_in_{decay.parent}:helicity_{axis}" for axis in _DIRECTION)

    def _exchange(self, physical: Tensor, first: str, second: str) -> Tensor:
        """In the parent's rest frame the second child flies opposite to the first: the stored direction flips
        and the two masses trade places."""
        decay = self._decay_of(first, second)
        direction = [self.feature_names.index(name) for name in self._direction_names(decay)]
        masses = [self.feature_names.index(self._mass_feature(name)) for name in (decay.first, decay.second)]
        exchanged = physical.clone()
        exchanged[..., direction] = -physical[..., direction]
        exchanged[..., masses] = physical[..., masses[::-1]]
        return exchanged

    def _decay_of(self, first: str, second: str) -> TwoBodyDecay:
        """The decay whose two children are ``first`` and ``second``."""
        for decay in self.decays:
            if {decay.first, decay.second} == {first, second}:
                return decay
        raise UnfoldError(f"{first!r} and {second!r} are not the two children of one decay of {list(self.decays)}")

    def _decode_daughters(self, x: Tensor, anchors: Anchors | None = None) -> DecodedPartons:
        """The decay products ``name -> {pt, eta, phi, mass}`` (dtype of x) of their decoded four-momenta."""
        nodes = self.decode_four_momenta(x, anchors)
        return {
            name: dict(zip(("pt", "eta", "phi", "mass"), (v.to(x.dtype) for v in to_cylindrical(nodes[name])), strict=True))
            for name in self.daughters
        }

    def consistency(self, x: Tensor) -> Tensor:
        """Zeros (..., m): composites are built as sums of their daughters, so always consistent."""
        return x.new_zeros((*x.shape[:-1], len(self.composites)))

    def _mass_feature(self, name: str) -> str:
        return f"{name}:mass_normal_score" if name in self.composites else f"{name}:mass"

    def _normal_score(self, name: str, mass: Tensor) -> Tensor:
        r"""The normal score :math:`u = \\Phi^{-1}(F(m))` of a resonance mass, F its distribution in the
        training truth (interpolated between the tabulated quantiles; clipped to the table's range).

        The training truth's masses become exactly the standard normal law, the diffusion's own noise,
        whatever the line shape (a Breit-Wigner, cut by phase space and parton luminosities in its
        tails): where the detector cannot resolve the width (a top's 1.4 GeV under a 15 GeV jet
        resolution) the posterior of the coordinate is the prior, a unit Gaussian for the denoiser to
        leave as it is. The earlier :math:`\\operatorname{asinh}((m^2 - M^2) / M\\Gamma)` left a
        hyperbolic-secant peak that came out too wide (README, "Resonance masses as normal scores").
        """
        index = self.resonances.index(name)
        return _interpolate(mass, self.mass_knots[index].to(mass), self.normal_score_knots[index].to(mass))

    def _resonance_mass(self, name: str, score: Tensor) -> Tensor:
        index = self.resonances.index(name)
        return _interpolate(score, self.normal_score_knots[index].to(score), self.mass_knots[index].to(score))


def _helicity_axes(parent: Tensor) -> Tensor:
    """(..., 3, 3) rows x', y', z' of a parent's (..., 4) helicity frame in lab axes: z' along its flight, y'
    across the beam and the flight, x' = y' x z'. A rotation about the beam turns the three with the event; the
    reflection z -> -z keeps the components on y' and z' and flips the one on x'."""
    flight = unit_vector(parent[..., 1:])
    beam = torch.zeros_like(flight)
    beam[..., 2] = 1.0
    across = unit_vector(torch.cross(beam, flight, dim=-1))
    return torch.stack([torch.cross(across, flight, dim=-1), across, flight], dim=-2)


def _interpolate(x: Tensor, knots: Tensor, values: Tensor) -> Tensor:
    """The piecewise-linear function through (knots, values) at x, knots increasing; constant beyond the ends."""
    x = x.clamp(knots[0], knots[-1])
    right = torch.searchsorted(knots, x.contiguous()).clamp(1, len(knots) - 1)
    left = right - 1
    fraction = (x - knots[left]) / (knots[right] - knots[left]).clamp_min(torch.finfo(knots.dtype).tiny)
    return values[left] + fraction * (values[right] - values[left])


class PolarDecayChainRepresentation(DecayChainRepresentation):
    """The decay chain with each root's transverse momentum as log pT and the unit vector of its azimuth
    (cos phi, sin phi) instead of (px, py); F = 5 r + 3 d + (children of decays).

    Where the detector leaves a top's azimuth uncertain (a jet assigned to the wrong top), its posterior in (px, py)
    is an arc about the origin, which a denoiser fills in toward pT = 0: the cartesian chain's hadronic top came out
    1 % soft over all, 4.6 % and 3.5 % in the two quarters of events whose draws' azimuths spread most (README). Here
    the size and the direction of the transverse momentum are generated apart, and decoding normalises the direction.
    """

    @property
    def polar_roots(self) -> tuple[str, ...]:
        """The roots whose transverse momentum is stored in polar coordinates: all of them here."""
        return self.lab_roots

    def _root_feature_names(self, name: str) -> tuple[str, ...]:
        if name not in self.polar_roots:
            return super()._root_feature_names(name)
        return (f"{name}:log_pt", f"{name}:azimuth_x", f"{name}:azimuth_y", f"{name}:pz", self._mass_feature(name))

    def _root_momentum_features(self, name: str, momentum: Tensor) -> Tensor:
        """(log pT, cos phi, sin phi, pz) of a polar root's lab four-momentum (E, 4)."""
        if name not in self.polar_roots:
            return super()._root_momentum_features(name, momentum)
        pt = torch.hypot(momentum[:, 1], momentum[:, 2])
        return torch.stack([torch.log(pt), momentum[:, 1] / pt, momentum[:, 2] / pt, momentum[:, 3]], dim=1)

    def _root_momentum(self, name: str, columns: Tensor) -> Tensor:
        """(px, py, pz) of a polar root's (log pT, azimuth vector, pz), the azimuth vector normalised and log pT
        clamped to a runaway value's (exp(12) GeV)."""
        if name not in self.polar_roots:
            return super()._root_momentum(name, columns)
        pt = torch.exp(columns[..., 0].clamp_max(_MAX_LOG_PT))
        direction = unit_vector(columns[..., 1:3])
        return torch.cat([pt[..., None] * direction, columns[..., 3:4]], dim=-1)


class HadronicPolarDecayChainRepresentation(PolarDecayChainRepresentation):
    """The polar decay chain for the tops that decay to jets only; a top with a charged lepton among its daughters
    keeps (px, py), which the measured lepton pins down (F = 4 or 5 per root)."""

    @property
    def polar_roots(self) -> tuple[str, ...]:
        return tuple(name for name in self.lab_roots if _CHARGED_LEPTON not in self._contents[name])
