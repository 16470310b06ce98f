"""Particle-level events as one padded set of typed objects plus event-level missing pT.

Representation (after Shmakov et al., arXiv 2404.14332):

* Objects: the particle-level jets and the prompt lepton(s) are pooled into one set of at most
  ``max_particles`` slots (M), valid objects first in descending pT (whatever the file's order),
  padding after. Each object carries five continuous features, standardised with a per-feature mean and
  standard deviation fitted on the training objects: with ``kinematics="log-pt"`` (log pT, eta,
  cos phi, sin phi, log(m+1)) [GeV], where a momentum's error is relative at every pT, as a
  detector's is; with ``"cartesian"`` (the first design) (px, py, pz, log(E+1), log(m+1)), where
  the few hard jets sit in the tails. And one discrete type: 0 light jet, 1 b jet (truth b label
  ``btag``), 2 electron, 3 muon.
* The lepton's charge is not modelled: ``pdgid`` is reduced to its magnitude (11 or 13), and the
  inverse returns the positive code.
* Event features: the missing transverse momentum as (MET_x, MET_y) [GeV], standardised the same
  way.
* Inverse: pt, eta, phi from (log pT, eta, atan2(sin, cos)) or from (px, py, pz); the mass from
  the log(m+1) feature (the cartesian energy feature is redundant with it and is not used); jets
  are the objects typed light or b (``btag`` = 1 for
  b), leptons those typed electron or muon. Each inverse collection has width M, is ordered by
  descending pt within the collection and carries its own MASK.

Padded slots hold zero features and type 0 and are ignored wherever the mask is False.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import torch
import vector
from torch import Tensor, nn

from encoders.kinematics import rotate_and_reflect
from encoders.normalization import fit_standardisation
from unfold.errors import UnfoldError

__all__ = [
    "B_JET",
    "ELECTRON",
    "EVENT_FEATURE_NAMES",
    "LIGHT_JET",
    "MUON",
    "NUM_TYPES",
    "OBJECT_FEATURE_NAMES",
    "SLOT_CLASS_NAMES",
    "SLOT_CLASS_OF_TYPE",
    "TYPE_NAMES",
    "ParticleBatch",
    "ParticleRepresentation",
]

LIGHT_JET: Final = 0
B_JET: Final = 1
ELECTRON: Final = 2
MUON: Final = 3
TYPE_NAMES: Final = ("light jet", "b jet", "electron", "muon")
NUM_TYPES: Final = len(TYPE_NAMES)
# The slot classes whose counts the particle model draws before the objects (SetLatentDiffusion's
# typed_counts), in drawing order, and the class of each type: the lepton's flavour is left to the
# decoder, the jets' flavour is the class.
SLOT_CLASS_NAMES: Final = ("lepton", "b jet", "light jet")
SLOT_CLASS_OF_TYPE: Final = (2, 1, 0, 0)
OBJECT_FEATURE_NAMES: Final = {
    "log-pt": ("log_pt", "eta", "cos_phi", "sin_phi", "log_mass_plus_1"),
    "cartesian": ("px", "py", "pz", "log_energy_plus_1", "log_mass_plus_1"),
}
Kinematics = Literal["log-pt", "cartesian"]
EVENT_FEATURE_NAMES: Final = ("met_x", "met_y")

_JET_FEATURES: Final = ("pt", "eta", "phi", "mass", "btag", "MASK")
_LEPTON_FEATURES: Final = ("pt", "eta", "phi", "mass", "pdgid", "MASK")
_MET_FEATURES: Final = ("met", "phi")
_PDGID_OF_TYPE: Final = {ELECTRON: 11, MUON: 13}
_MIN_PT: Final = 1e-3  # GeV: the log of a padded slot's or an empty object's pT stays finite

ParticleArrays = Mapping[str, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class ParticleBatch:
    """Standardised particle-level events ready for the model.

    Attributes:
        features: (E, M, F) standardised object features (the representation's ``kinematics``), zero at padding.
        types: (E, M) long object types (see ``TYPE_NAMES``), zero at padding.
        mask: (E, M) bool, True for real objects; always a prefix of the slots.
        event_features: (E, G) standardised (MET_x, MET_y).
    """

    features: Tensor
    types: Tensor
    mask: Tensor
    event_features: Tensor

    @property
    def multiplicity(self) -> Tensor:
        """(E,) long number of real objects per event."""
        return self.mask.sum(dim=-1)

    def to(self, device: torch.device | str) -> ParticleBatch:
        """The same batch on ``device``."""
        return ParticleBatch(
            self.features.to(device),
            self.types.to(device),
            self.mask.to(device),
            self.event_features.to(device),
        )


class ParticleRepresentation(nn.Module):
    """Maps ``PARTICLES/<collection>/<feature>`` arrays to a typed object set and back.

    The standardisation statistics are buffers, so they travel with a checkpoint; call
    :meth:`fit` once on the training events before :meth:`encode` or :meth:`decode`.
    See the module docstring for the representation (arXiv 2404.14332).

    Args:
        max_particles: number of object slots M; an event with more jets + leptons is an error.
        jet_collection: PARTICLES group of the jets (pt, eta, phi, mass, btag, MASK), each (E, M_j).
        lepton_collection: PARTICLES group of the leptons (pt, eta, phi, mass, pdgid, MASK), (E, M_l).
        met_collection: PARTICLES group of the missing pT (met, phi), each (E,).
        kinematics: the objects' five features, ``"log-pt"`` or ``"cartesian"`` (module docstring).
    """

    feature_mean: Tensor
    feature_std: Tensor
    event_mean: Tensor
    event_std: Tensor
    is_fitted: Tensor
    num_types: Final = len(TYPE_NAMES)
    num_features: Final = len(OBJECT_FEATURE_NAMES["log-pt"])  # five for either kinematics
    num_event_features: Final = len(EVENT_FEATURE_NAMES)

    def __init__(
        self,
        *,
        max_particles: int = 16,
        jet_collection: str = "jets",
        lepton_collection: str = "lepton",
        met_collection: str = "met",
        kinematics: Kinematics = "log-pt",
    ) -> None:
        super().__init__()
        if max_particles < 1:
            raise UnfoldError(f"max_particles must be at least 1, got {max_particles}")
        if kinematics not in OBJECT_FEATURE_NAMES:
            raise UnfoldError(f"unknown particle kinematics {kinematics!r}; expected one of {list(OBJECT_FEATURE_NAMES)}")
        self.kinematics = kinematics
        self.max_particles = max_particles
        self.jet_collection = jet_collection
        self.lepton_collection = lepton_collection
        self.met_collection = met_collection
        self.register_buffer("feature_mean", torch.zeros(self.num_features))
        self.register_buffer("feature_std", torch.ones(self.num_features))
        self.register_buffer("event_mean", torch.zeros(self.num_event_features))
        self.register_buffer("event_std", torch.ones(self.num_event_features))
        self.register_buffer("is_fitted", torch.tensor(False))

    def fit(self, particles: ParticleArrays, weights: np.ndarray | None = None) -> ParticleRepresentation:
        """Fit the per-feature means and standard deviations on training events, weighted by the
        (E,) event weights when given (each object carries its event's); returns self."""
        features, _, mask, event_features = self._physical(particles)
        objects = features[mask]
        if weights is None:
            object_weights = event_weights = None
        else:
            event_weights = torch.as_tensor(np.asarray(weights, np.float64))
            object_weights = torch.as_tensor(np.broadcast_to(np.asarray(weights, np.float64)[:, None], mask.shape)[mask])
        if objects.shape[0] < 2:
            raise UnfoldError(
                f"PARTICLES/{self.jet_collection} + PARTICLES/{self.lepton_collection}: "
                f"need at least 2 objects to fit the standardisation, got {objects.shape[0]}"
            )
        for mean, std, values, value_weights in (
            (self.feature_mean, self.feature_std, objects, object_weights),
            (self.event_mean, self.event_std, event_features, event_weights),
        ):
            fitted = fit_standardisation(torch.from_numpy(values), value_weights)
            mean.copy_(fitted.mean)
            std.copy_(fitted.scale)
        self.is_fitted.fill_(True)
        return self

    def encode(self, particles: ParticleArrays) -> ParticleBatch:
        """Physical arrays -> standardised :class:`ParticleBatch` (CPU tensors)."""
        self._require_fitted()
        features, types, mask, event_features = self._physical(particles)
        mean, std = self.feature_mean.cpu().numpy(), self.feature_std.cpu().numpy()
        standardised = np.where(mask[..., None], (features - mean) / std, 0.0)
        event_mean, event_std = self.event_mean.cpu().numpy(), self.event_std.cpu().numpy()
        return ParticleBatch(
            features=torch.from_numpy(standardised.astype(np.float32)),
            types=torch.from_numpy(types),
            mask=torch.from_numpy(mask),
            event_features=torch.from_numpy(
                ((event_features - event_mean) / event_std).astype(np.float32)
            ),
        )

    def rotated_and_reflected(self, batch: ParticleBatch, angle: Tensor, sign: Tensor) -> ParticleBatch:
        """The same standardised events turned about the beam by ``angle`` (E,) and reflected z -> -z where ``sign``
        (E,) is -1: every object's azimuth ((cos phi, sin phi) or (px, py)) and the missing pT turned, every eta (or
        pz) flipped; with the same draw applied to the detector inputs
        (:class:`unfold.data.augmentation.DetectorSymmetries`), another event as likely."""
        names = OBJECT_FEATURE_NAMES[self.kinematics]
        x, y, z = ("cos_phi", "sin_phi", "eta") if self.kinematics == "log-pt" else ("px", "py", "pz")
        columns = {"xy_pairs": ((names.index(x), names.index(y)),), "reflected": (names.index(z),)}
        keep = batch.mask.unsqueeze(-1).to(batch.features.dtype)
        mean, std = self.feature_mean.to(batch.features), self.feature_std.to(batch.features)
        physical = rotate_and_reflect(batch.features * std + mean, angle, sign, **columns)
        event_mean, event_std = self.event_mean.to(batch.event_features), self.event_std.to(batch.event_features)
        missing = rotate_and_reflect(batch.event_features * event_std + event_mean, angle, sign, xy_pairs=((0, 1),))
        return ParticleBatch(features=(physical - mean) / std * keep, types=batch.types, mask=batch.mask,
                             event_features=(missing - event_mean) / event_std)

    def detector_features(self, four_momenta: Tensor, mask: Tensor) -> Tensor:
        """Detector objects in the standardised particle feature space: the anchors of the set denoiser.

        Args:
            four_momenta: (E, N, 4) measured (energy, px, py, pz) [GeV] of the detector objects.
            mask: (E, N) bool, True for real objects.

        Returns:
            (E, N, F) standardised features of the representation's kinematics, zero at padding: where
            the particle-level object that a detector object measured would sit if it were measured exactly.
        """
        self._require_fitted()
        if four_momenta.dim() != 3 or four_momenta.shape[-1] != 4 or mask.shape != four_momenta.shape[:2]:
            raise UnfoldError(
                f"detector four-momenta must be (E, N, 4) with a mask (E, N), got {tuple(four_momenta.shape)} "
                f"and {tuple(mask.shape)}"
            )
        keep = mask.unsqueeze(-1).to(four_momenta.dtype)
        energy, px, py, pz = four_momenta.unbind(dim=-1)
        energy = energy.clamp_min(0.0)
        mass = (energy.square() - px.square() - py.square() - pz.square()).clamp_min(0.0).sqrt()
        if self.kinematics == "cartesian":
            physical = torch.stack([px, py, pz, energy.log1p(), mass.log1p()], dim=-1)
        else:
            pt = torch.hypot(px, py).clamp_min(_MIN_PT)
            phi = torch.atan2(py, px)
            physical = torch.stack([pt.log(), torch.asinh(pz / pt), phi.cos(), phi.sin(), mass.log1p()], dim=-1)
        return (physical * keep - self.feature_mean) / self.feature_std * keep

    def decode(
        self, features: Tensor, types: Tensor, mask: Tensor, event_features: Tensor
    ) -> dict[str, dict[str, np.ndarray]]:
        """Standardised model outputs -> physical arrays per collection.

        Args:
            features: (..., M, F) standardised object features.
            types: (..., M) long object types.
            mask: (..., M) bool real objects.
            event_features: (..., G) standardised (MET_x, MET_y).

        Returns:
            ``{jets: {pt, eta, phi, mass, btag, MASK}, lepton: {pt, eta, phi, mass, pdgid, MASK},
            met: {met, phi}}`` with object arrays of shape (..., M), ordered by descending pt
            within each collection, and MET arrays of shape (...).
        """
        self._require_fitted()
        physical = _unstandardise(features, self.feature_mean, self.feature_std)
        types_np = types.detach().cpu().numpy()
        mask_np = mask.detach().cpu().numpy().astype(bool)
        mass = np.expm1(np.maximum(physical[..., 4], 0.0))
        if self.kinematics == "cartesian":
            momentum = vector.array({"px": physical[..., 0], "py": physical[..., 1], "pz": physical[..., 2]})
            kinematics = {"pt": momentum.rho, "eta": momentum.eta, "phi": momentum.phi, "mass": mass}
        else:
            phi = np.arctan2(physical[..., 3], physical[..., 2])
            kinematics = {"pt": np.exp(physical[..., 0]), "eta": physical[..., 1], "phi": phi, "mass": mass}
        is_jet = mask_np & ((types_np == LIGHT_JET) | (types_np == B_JET))
        is_lepton = mask_np & ((types_np == ELECTRON) | (types_np == MUON))
        pdgid = np.where(types_np == MUON, _PDGID_OF_TYPE[MUON], _PDGID_OF_TYPE[ELECTRON])
        jets = _collection(kinematics, is_jet, "btag", (types_np == B_JET).astype(np.float32))
        leptons = _collection(kinematics, is_lepton, "pdgid", pdgid.astype(np.int64))
        event = _unstandardise(event_features, self.event_mean, self.event_std)
        missing = vector.array({"x": event[..., 0], "y": event[..., 1]})
        met = {"met": missing.rho.astype(np.float32), "phi": missing.phi.astype(np.float32)}
        return {
            self.jet_collection: jets,
            self.lepton_collection: leptons,
            self.met_collection: met,
        }

    def _require_fitted(self) -> None:
        if not bool(self.is_fitted):
            raise UnfoldError(
                "ParticleRepresentation is not fitted: call fit() on the training events "
                "or load its state from a checkpoint"
            )

    def _physical(
        self, particles: ParticleArrays
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Validated physical features (E, M, F), types (E, M), prefix mask (E, M), MET (E, 2)."""
        jets = self._read(particles, self.jet_collection, _JET_FEATURES, ndim=2)
        leptons = self._read(particles, self.lepton_collection, _LEPTON_FEATURES, ndim=2)
        met = self._read(particles, self.met_collection, _MET_FEATURES, ndim=1)
        num_events = {len(array) for group in (jets, leptons, met) for array in group.values()}
        if len(num_events) != 1:
            raise UnfoldError(
                f"PARTICLES/{self.jet_collection}, /{self.lepton_collection} and "
                f"/{self.met_collection} disagree on the number of events: {sorted(num_events)}"
            )
        lepton_mask = leptons["MASK"].astype(bool)
        flavour = np.abs(leptons["pdgid"]).astype(np.int64)
        bad = lepton_mask & ~np.isin(flavour, (11, 13))
        if bad.any():
            event, slot = np.argwhere(bad)[0]
            raise UnfoldError(
                f"PARTICLES/{self.lepton_collection}/pdgid: expected ±11 or ±13 for real leptons, "
                f"got {leptons['pdgid'][event, slot]} in event {event}, slot {slot}"
            )
        jet_types = np.where(jets["btag"] > 0.5, B_JET, LIGHT_JET)
        lepton_types = np.where(flavour == _PDGID_OF_TYPE[MUON], MUON, ELECTRON)
        features = np.concatenate(
            [_object_features(jets, self.kinematics), _object_features(leptons, self.kinematics)], axis=1
        )
        types = np.concatenate([jet_types, lepton_types], axis=1).astype(np.int64)
        mask = np.concatenate([jets["MASK"].astype(bool), lepton_mask], axis=1)
        counts = mask.sum(axis=1)
        if counts.max(initial=0) > self.max_particles:
            event = int(np.argmax(counts))
            raise UnfoldError(
                f"PARTICLES/{self.jet_collection} + PARTICLES/{self.lepton_collection}: event "
                f"{event} has {counts[event]} objects, more than max_particles="
                f"{self.max_particles}; raise max_particles to at least {counts.max()}"
            )
        if not np.isfinite(features[mask]).all():
            raise UnfoldError(
                f"PARTICLES/{self.jet_collection} or /{self.lepton_collection}: NaN or inf in "
                "the kinematics of a real object"
            )
        width = min(self.max_particles, mask.shape[1])
        # real objects first, hardest first: the particle model's ranked slots take each class's pT order from the slots
        pt = np.concatenate([jets["pt"], leptons["pt"]], axis=1).astype(np.float64)
        order = np.lexsort((-np.where(mask, pt, 0.0), ~mask), axis=1)[:, :width]
        padded = np.zeros((len(mask), self.max_particles), dtype=bool)
        padded[:, :width] = np.take_along_axis(mask, order, axis=1)
        features_out = np.zeros((len(mask), self.max_particles, self.num_features))
        features_out[:, :width] = np.take_along_axis(features, order[..., None], axis=1)
        types_out = np.zeros((len(mask), self.max_particles), dtype=np.int64)
        types_out[:, :width] = np.take_along_axis(types, order, axis=1)
        features_out[~padded] = 0.0
        types_out[~padded] = 0
        missing = vector.array({"rho": met["met"], "phi": met["phi"]})
        met_xy = np.stack([missing.x, missing.y], -1)
        if not np.isfinite(met_xy).all():
            raise UnfoldError(f"PARTICLES/{self.met_collection}: NaN or inf in met or phi")
        return features_out, types_out, padded, met_xy

    @staticmethod
    def _read(
        particles: ParticleArrays, collection: str, names: tuple[str, ...], *, ndim: int
    ) -> dict[str, np.ndarray]:
        if collection not in particles:
            raise UnfoldError(
                f"missing PARTICLES/{collection}: expected a group with {', '.join(names)}"
            )
        group = particles[collection]
        missing = [name for name in names if name not in group]
        if missing:
            raise UnfoldError(
                f"PARTICLES/{collection} lacks {', '.join(missing)}; expected {', '.join(names)}"
            )
        arrays = {name: np.asarray(group[name]) for name in names}
        shapes = {array.shape for array in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != ndim:
            expected = "(E, M)" if ndim == 2 else "(E,)"
            found = ", ".join(f"{name} {array.shape}" for name, array in arrays.items())
            raise UnfoldError(
                f"PARTICLES/{collection}: expected every feature {expected}, got {found}"
            )
        return arrays


def _object_features(group: Mapping[str, np.ndarray], kinematics: Kinematics) -> np.ndarray:
    """(E, M, 5) features of ``kinematics`` (``OBJECT_FEATURE_NAMES``) from pt, eta, phi, mass [GeV]."""
    pt, eta, phi, mass = (np.asarray(group[name], dtype=np.float64) for name in ("pt", "eta", "phi", "mass"))
    mass = np.maximum(mass, 0.0)
    if kinematics == "log-pt":
        return np.stack([np.log(np.maximum(pt, _MIN_PT)), eta, np.cos(phi), np.sin(phi), np.log1p(mass)], axis=-1)
    p4 = vector.array({"pt": pt, "eta": eta, "phi": phi, "mass": mass})
    return np.stack([p4.px, p4.py, p4.pz, np.log1p(p4.E), np.log1p(mass)], axis=-1)


def _unstandardise(values: Tensor, mean: Tensor, std: Tensor) -> np.ndarray:
    """values * std + mean as a float64 numpy array on the CPU."""
    cpu = values.detach().cpu().double()
    return (cpu * std.detach().cpu().double() + mean.detach().cpu().double()).numpy()


def _collection(
    kinematics: Mapping[str, np.ndarray], selected: np.ndarray, label: str, values: np.ndarray
) -> dict[str, np.ndarray]:
    """The ``selected`` objects (..., M) as a pt-ordered collection with ``label`` and MASK."""
    sort_key = np.where(selected, kinematics["pt"], -np.inf)
    order = np.argsort(-sort_key, axis=-1, kind="stable")
    mask = np.take_along_axis(selected, order, axis=-1)
    out = {
        name: np.where(mask, np.take_along_axis(array, order, axis=-1), 0.0).astype(np.float32)
        for name, array in kinematics.items()
    }
    out[label] = np.where(mask, np.take_along_axis(values, order, axis=-1), 0).astype(values.dtype)
    out["MASK"] = mask
    return out
