"""Parton-level truth as one standardised tensor per event, and back.

:class:`PartonRepresentation` holds what every choice of features shares: the decay products
(daughters) and the composites summed from them, reading truth, and a per-feature standardisation
fitted on training data. Two representations build on it:

* :class:`ObjectRepresentation`, the public VLD code's (arXiv 2305.10399): every object, daughters
  and composites, as :math:`(p_x, p_y, p_z, \\log(E + 1), m)` in GeV. Composites are redundant,
  so generated events are consistent only as far as the model learns it (the consistency term).
* :class:`unfold.models.parton.decay_chain.DecayChainRepresentation`: the decay tree, with masses and
  rest-frame directions, consistent by construction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from encoders.kinematics import rotate_and_reflect, to_cartesian, to_cylindrical
from encoders.normalization import fit_standardisation
from unfold.errors import UnfoldError
from unfold.models.parton.consistency import squared_mass_consistency

if TYPE_CHECKING:
    from unfold.generation.processes import Process

__all__ = ["OBJECT_FEATURES", "PHYSICAL_FEATURES", "Anchors", "ObjectRepresentation", "PartonRepresentation"]

OBJECT_FEATURES: tuple[str, ...] = ("px", "py", "pz", "log_energy", "mass")
PHYSICAL_FEATURES: tuple[str, ...] = ("pt", "eta", "phi", "mass")
# How each feature (by its quantity, the name after ":") changes under the detector's symmetries: the (x, y)
# components that turn with a rotation about the beam, the z components, rapidity differences and decay directions'
# x' components on their parent's helicity axes that flip under z -> -z, and the quantities neither changes (masses,
# energies, azimuth differences, transverse momentum ratios, the helicity axes' y' and z' components).
_XY_QUANTITIES = (("px", "py"), ("azimuth_x", "azimuth_y"))
_REFLECTED_QUANTITIES = ("pz", "helicity_x", "delta_eta", "delta_rapidity")
_INVARIANT_QUANTITIES = ("mass", "mass_normal_score", "helicity_y", "helicity_z", "log_energy", "log_pt", "log_pt_ratio", "delta_phi")
# exp(12) - 1 ~ 160 TeV: far above any parton energy at 13 TeV, so only runaway values are clamped.
_MAX_LOG_ENERGY = 12.0

PartonTruth = Mapping[str, Mapping[str, np.ndarray | Tensor]]
DecodedPartons = dict[str, dict[str, Tensor]]
# Daughter name -> (E, 4) = (E, px, py, pz) of the detector object it is generated relative to.
Anchors = Mapping[str, Tensor]


class PartonRepresentation(nn.Module, ABC):
    """Standardised (E, F) tensor of the decay products and their composites.

    Subclasses name their F features (:attr:`feature_names`), compute them from truth
    (:meth:`physical_features`) and turn a standardised tensor back into decay products
    (:meth:`decode`). A representation may generate some daughters relative to a measured
    detector object (:attr:`anchored`); it then needs each event's anchors wherever it meets truth
    or draws.

    Args:
        daughters: Names of the K decay products, e.g. ``("b_had", "q1", "q2", "b_lep",
            "lepton", "neutrino")``; their truth is read from ``PARTONS/<name>/{pt,eta,phi,mass}``.
        composites: Name -> daughters summed into it, e.g. ``{"W_had": ("q1", "q2"), ...}``.
        pt_ordered: pairs of daughters that truth labels by transverse momentum, the harder first
            (a W's two quarks, ``("q1", "q2")``). A generated pair may come out in the other order;
            :meth:`decode` then swaps it, so each label means what it means in truth.
    """

    def __init__(
        self,
        *,
        daughters: Sequence[str],
        composites: Mapping[str, Sequence[str]],
        pt_ordered: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__()
        if len(daughters) == 0 or len(set(daughters)) != len(daughters):
            raise UnfoldError(f"daughters must be distinct and non-empty, got {list(daughters)}")
        for name, parts in composites.items():
            unknown = sorted(set(parts) - set(daughters))
            if len(parts) < 2 or unknown:
                raise UnfoldError(
                    f"composite {name!r} must sum at least two of the daughters {list(daughters)}, got {list(parts)}"
                )
        self.daughters: tuple[str, ...] = tuple(daughters)
        unknown = sorted({name for pair in pt_ordered for name in pair} - set(daughters))
        if unknown or any(len(pair) != 2 or pair[0] == pair[1] for pair in pt_ordered):
            raise UnfoldError(
                f"pt_ordered must pair two different daughters of {list(daughters)}, got {[list(p) for p in pt_ordered]}"
            )
        self.pt_ordered: tuple[tuple[str, str], ...] = tuple((first, second) for first, second in pt_ordered)
        self.composites: dict[str, tuple[str, ...]] = {
            name: tuple(parts) for name, parts in composites.items()
        }
        membership = torch.zeros(len(self.composites), len(self.daughters))
        for row, parts in enumerate(self.composites.values()):
            for part in parts:
                membership[row, self.daughters.index(part)] = 1.0
        self.register_buffer("membership", membership, persistent=False)
        self.register_buffer("mean", torch.zeros(self.features))
        self.register_buffer("scale", torch.ones(self.features))

    @classmethod
    def for_process(cls, process: Process) -> PartonRepresentation:
        """The representation of a process definition, e.g. ``get_process("ttbar-semileptonic")``.

        The definition is passed in, not looked up, so the models need no generation code. Each top's
        ``q1`` and ``q2`` (the harder and the softer quark of its W) are a :attr:`pt_ordered` pair.
        """
        quarks = {(slot.top, slot.role): slot.name for slot in process.partons if slot.role in ("q1", "q2")}
        pairs = [(name, quarks[top, "q2"]) for (top, role), name in quarks.items() if role == "q1"]
        return cls(daughters=[slot.name for slot in process.partons], composites=process.composites, pt_ordered=pairs)

    @property
    @abstractmethod
    def feature_names(self) -> tuple[str, ...]:
        """Names of the F features, in tensor order (``"<object>:<quantity>"``)."""

    @property
    def features(self) -> int:
        """Width F of the standardised tensor."""
        return len(self.feature_names)

    @property
    def anchored(self) -> tuple[str, ...]:
        """Daughters generated relative to a measured detector object: none unless a subclass says so."""
        return ()

    def check_anchors(self, anchors: Anchors | None, events: int) -> dict[str, Tensor]:
        """The float64 (E, 4) anchor of every :attr:`anchored` daughter.

        Raises:
            UnfoldError: If one is missing or is not (``events``, 4).
        """
        anchors = anchors or {}
        checked = {}
        for name in self.anchored:
            if name not in anchors:
                raise UnfoldError(f"this parton representation generates {name!r} relative to the measured detector "
                                  f"object; expected its (E, 4) anchor, got anchors for {sorted(anchors)}")
            anchor = torch.as_tensor(anchors[name]).double()
            if tuple(anchor.shape) != (events, 4):
                raise UnfoldError(f"anchor of {name!r}: expected shape ({events}, 4), got {tuple(anchor.shape)}")
            checked[name] = anchor
        return checked

    @abstractmethod
    def physical_features(self, partons: PartonTruth, anchors: Anchors | None = None) -> Tensor:
        """Unstandardised float64 (E, F) features of truth ``name -> feature -> (E,)``."""

    def decode(self, x: Tensor, anchors: Anchors | None = None) -> DecodedPartons:
        """The decay products ``name -> {pt, eta, phi, mass}`` of a standardised (E, ..., F) tensor, every
        :attr:`pt_ordered` pair the harder first. Swapping two daughters of one parent leaves every
        composite as it was. ``anchors`` (E, 4) serve every draw of an event."""
        decoded = self._decode_daughters(x, anchors)
        for first, second in self.pt_ordered:
            swap = decoded[first]["pt"] < decoded[second]["pt"]
            harder, softer = decoded[first], decoded[second]
            decoded[first] = {key: torch.where(swap, softer[key], value) for key, value in harder.items()}
            decoded[second] = {key: torch.where(swap, harder[key], value) for key, value in softer.items()}
        return decoded

    def relabel(self, x: Tensor, swap: Tensor) -> Tensor:
        """Standardised (E, F) partons with the two labels of every :attr:`pt_ordered` pair exchanged where
        ``swap`` (E, pairs) is True: the same event, its W's quarks named the other way round. Training on
        pairs labelled at random lets a model learn the unordered pair, whose density has no edge where
        the two quarks' transverse momenta cross; :meth:`decode` restores the order."""
        physical = self.physical(x)
        for pair, mask in zip(self.pt_ordered, swap.unbind(-1), strict=True):
            physical = torch.where(mask[:, None], self._exchange(physical, *pair), physical)
        return (physical - self.mean.to(x)) / self.scale.to(x)

    def lifted(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Standardised (E, F) partons with the unit vectors a representation lifts scaled by random radii, for
        training: the same events, as decoding normalises (:meth:`DecayChainRepresentation.lifted`). None here:
        ``x`` itself."""
        return x

    def rotated_and_reflected(self, x: Tensor, angle: Tensor, sign: Tensor) -> Tensor:
        """Standardised (E, F) partons of the same events turned about the beam by ``angle`` (E,) and reflected
        z -> -z where ``sign`` (E,) is -1: with the same draw applied to the detector inputs
        (:class:`unfold.data.augmentation.DetectorSymmetries`), another event the detector and the pp -> ttbar
        cross section make as likely."""
        physical = rotate_and_reflect(self.physical(x), angle, sign, **self._symmetry_columns)
        return (physical - self.mean.to(x)) / self.scale.to(x)

    @cached_property
    def _symmetry_columns(self) -> dict[str, tuple]:
        """The (x, y) column pairs and the reflected columns of :meth:`rotated_and_reflected`.

        Raises:
            UnfoldError: If a feature's quantity is in none of the three classes (a new feature must say how it
                transforms).
        """
        index = {name: i for i, name in enumerate(self.feature_names)}
        pairs, reflected = [], []
        for name in self.feature_names:
            node, _, quantity = name.rpartition(":")
            pairs += [(index[name], index[f"{node}:{y}"]) for x, y in _XY_QUANTITIES if quantity == x]
            if quantity in _REFLECTED_QUANTITIES:
                reflected.append(index[name])
            elif quantity not in (*_INVARIANT_QUANTITIES, *(q for pair in _XY_QUANTITIES for q in pair)):
                raise UnfoldError(f"parton feature {name!r}: no rule for how {quantity!r} turns with the detector's symmetries")
        return {"xy_pairs": tuple(pairs), "reflected": tuple(reflected)}

    @abstractmethod
    def _exchange(self, physical: Tensor, first: str, second: str) -> Tensor:
        """Unstandardised (E, F) features with daughters ``first`` and ``second`` exchanged."""

    @abstractmethod
    def _decode_daughters(self, x: Tensor, anchors: Anchors | None = None) -> DecodedPartons:
        """The decay products ``name -> {pt, eta, phi, mass}`` of a standardised (..., F) tensor, as generated."""

    @abstractmethod
    def consistency(self, x: Tensor) -> Tensor:
        """Physics-consistency terms (..., m) of a standardised (..., F) tensor; zero when consistent."""

    def fit(self, partons: PartonTruth, weights: Tensor | None = None, anchors: Anchors | None = None) -> None:
        """Fit the per-feature mean and width on training truth (:func:`encoders.normalization.fit_standardisation`),
        weighted by the (E,) event weights when given."""
        flat = self.physical_features(partons, anchors)
        if flat.shape[0] < 2:
            raise UnfoldError(
                f"fitting the parton standardisation needs at least 2 events, got {flat.shape[0]}"
            )
        mean, scale = fit_standardisation(flat, weights)
        self.mean.copy_(mean.to(self.mean))
        self.scale.copy_(scale.to(self.scale))

    def encode(self, partons: PartonTruth, anchors: Anchors | None = None) -> Tensor:
        """Standardised float32 (E, F) tensor from truth ``name -> feature -> (E,)``."""
        flat = self.physical_features(partons, anchors)
        return ((flat - self.mean.double()) / self.scale.double()).to(torch.float32)

    def physical(self, x: Tensor) -> Tensor:
        """Unstandardised (..., F) features of a standardised (..., F) tensor."""
        if x.shape[-1] != self.features:
            raise UnfoldError(
                f"parton tensor must have last dimension {self.features}, got shape {tuple(x.shape)}"
            )
        return x * self.scale.to(x) + self.mean.to(x)

    def daughter_four_momenta(self, partons: PartonTruth) -> Tensor:
        """Float64 (E, K, 4) = (E, px, py, pz) of the daughters, validating the truth.

        Raises:
            UnfoldError: If a daughter or one of its features is missing, shapes differ or a
                value is not finite.
        """
        return torch.stack([self._daughter_four_momenta(partons, name) for name in self.daughters], dim=1)

    def daughter_masses(self, partons: PartonTruth) -> Tensor:
        """Float64 (E, K) truth masses of the daughters."""
        return torch.stack(
            [torch.as_tensor(np.asarray(partons[name]["mass"]), dtype=torch.float64) for name in self.daughters],
            dim=1,
        )

    def _daughter_four_momenta(self, partons: PartonTruth, name: str) -> Tensor:
        if name not in partons:
            raise UnfoldError(
                f"parton truth has no group {name!r}; expected {list(self.daughters)}"
            )
        group = partons[name]
        missing = [feature for feature in PHYSICAL_FEATURES if feature not in group]
        if missing:
            raise UnfoldError(
                f"parton truth group {name!r} lacks {missing}; expected {list(PHYSICAL_FEATURES)}"
            )
        values = [
            torch.as_tensor(np.asarray(group[feature]), dtype=torch.float64)
            for feature in PHYSICAL_FEATURES
        ]
        if any(value.ndim != 1 or value.shape != values[0].shape for value in values):
            raise UnfoldError(
                f"parton truth group {name!r} must hold 1-D arrays of one length (E,), got "
                f"{[tuple(value.shape) for value in values]}"
            )
        if not all(bool(torch.isfinite(value).all()) for value in values):
            raise UnfoldError(f"parton truth group {name!r} holds NaN or infinite values")
        return to_cartesian(*values)


class ObjectRepresentation(PartonRepresentation):
    """Every object as :math:`(p_x, p_y, p_z, \\log(E + 1), m)`, F = 5 (K + m), as the VLD code.

    Daughters come first, composites after, in the order of the constructor arguments. The
    composites are the four-vector sums of their daughters, so encoded truth is exactly
    consistent; a generative model must learn to keep it so (:meth:`consistency`).
    """

    @property
    def objects(self) -> tuple[str, ...]:
        """Daughters then composites: the object order of the tensor."""
        return self.daughters + tuple(self.composites)

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"{name}:{feature}" for name in self.objects for feature in OBJECT_FEATURES)

    def physical_features(self, partons: PartonTruth, anchors: Anchors | None = None) -> Tensor:
        """Float64 (E, 5 (K + m)): each object's (px, py, pz, log(E + 1), m)."""
        four_momenta = self.daughter_four_momenta(partons)
        composite_four_momenta = torch.einsum(
            "mk,ekc->emc", self.membership.to(four_momenta), four_momenta
        )
        everything = torch.cat([four_momenta, composite_four_momenta], dim=1)
        composite_masses = to_cylindrical(composite_four_momenta)[3]
        energy, px, py, pz = everything.unbind(-1)
        masses = torch.cat([self.daughter_masses(partons), composite_masses], dim=1)
        return torch.stack([px, py, pz, torch.log1p(energy), masses], dim=-1).flatten(1)

    def unstandardise(self, x: Tensor) -> Tensor:
        """Physical (..., K + m, 5) object features from a standardised (..., F) tensor."""
        return self.physical(x).unflatten(-1, (len(self.objects), len(OBJECT_FEATURES)))

    def _decode_daughters(self, x: Tensor, anchors: Anchors | None = None) -> DecodedPartons:
        """The decay products ``name -> {pt, eta, phi, mass}`` of a standardised (..., F) tensor.

        Momenta come from (px, py, pz); the mass is the stored mass, clipped at zero (the energy
        feature is redundant and not used).
        """
        return self._to_physical(x, self.daughters, offset=0)

    def _exchange(self, physical: Tensor, first: str, second: str) -> Tensor:
        """The two daughters' five features trade places; the composites are their sum, so stay."""
        width = len(OBJECT_FEATURES)
        columns = torch.arange(physical.shape[-1], device=physical.device)
        a, b = self.objects.index(first) * width, self.objects.index(second) * width
        columns[a : a + width], columns[b : b + width] = columns[b : b + width].clone(), columns[a : a + width].clone()
        return physical[..., columns]

    def decode_composites(self, x: Tensor) -> DecodedPartons:
        """The stored composites ``name -> {pt, eta, phi, mass}`` of a standardised (..., F) tensor."""
        return self._to_physical(x, tuple(self.composites), offset=len(self.daughters))

    def consistency(self, x: Tensor) -> Tensor:
        """Physics-consistency terms (..., m) of a standardised (..., F) tensor; zero when consistent.

        See :func:`unfold.models.parton.consistency.squared_mass_consistency`. Daughter energies come
        from the log-energy feature, clamped so an untrained decoder cannot overflow the
        exponential; each composite's mass scale is its mean training mass (at least 1 GeV).
        """
        objects = self.unstandardise(x)
        daughters = objects[..., : len(self.daughters), :]
        energy = torch.expm1(daughters[..., 3].clamp(max=_MAX_LOG_ENERGY))
        four_momenta = torch.stack(
            [energy, daughters[..., 0], daughters[..., 1], daughters[..., 2]], dim=-1
        )
        stored_masses = objects[..., len(self.daughters) :, 4]
        mass_index = (
            torch.arange(len(self.daughters), len(self.objects), device=x.device)
            * len(OBJECT_FEATURES)
            + 4
        )
        mass_scales = self.mean[mass_index].abs().clamp_min(1.0)
        return squared_mass_consistency(four_momenta, stored_masses, self.membership, mass_scales)

    def _to_physical(
        self, x: Tensor, names: tuple[str, ...], offset: int
    ) -> dict[str, dict[str, Tensor]]:
        objects = self.unstandardise(x)
        decoded = {}
        for index, name in enumerate(names, start=offset):
            px, py, pz, _, mass = objects[..., index, :].unbind(-1)
            pt = torch.hypot(px, py)
            decoded[name] = {
                "pt": pt,
                "eta": torch.asinh(pz / pt),
                "phi": torch.atan2(py, px),
                "mass": mass.clamp_min(0.0),
            }
        return decoded
