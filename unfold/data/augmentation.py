"""Data augmentation with the detector's symmetries, for jet-parton assignment and unfolding training.

A collider detector is (to a good approximation) symmetric under a rotation about the beam axis
and under the reflection z -> -z, and so are the pp -> ttbar cross section and the assignment: a
common azimuthal rotation of every object of an event, or the reflection eta -> -eta of all of
them, leaves every invariant mass, transverse momentum and jet-parton label unchanged. Drawing
one of each per event and training batch shows the network the orbit of every event, a symmetry
the pair features encode only in part (ParT arXiv 2202.03772; LorentzNet arXiv 2201.08187 builds
it into the network instead). The transforms act on the raw declared features, before the
encoder normalises them, and on the regression targets that change with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from encoders.event_encoder import EncoderInputs
from encoders.kinematics import rotate_and_reflect
from recon.event_topology import EventTopology
from unfold.data.recon_data import AssignmentBatch
from unfold.errors import UnfoldError

__all__ = ["AUGMENTATIONS", "Augmentation", "DetectorSymmetries", "allowed_augmentations", "detector_symmetries"]

Augmentation = Literal["rotate_phi", "reflect_eta"]
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)

# The components a symmetry changes, as a feature or regression target names them: the component
# itself or ``<object>_<component>`` (the SPANet ttH example regresses neutrino_px, _py, _pz, _eta).
# rotate_phi: azimuths, and (x, y) pairs rotated together; reflect_eta: sign flips.
_AZIMUTHS = ("phi",)
_XY_PAIRS = (("cos_phi", "sin_phi"), ("px", "py"))
_REFLECTED = ("eta", "pz", "rapidity")
# Longest first, so that sin_phi is not read as <sin>_phi.
_COMPONENTS = ("sin_phi", "cos_phi", "rapidity", "phi", "eta", "px", "py", "pz")


def _component(name: str) -> tuple[str, str] | None:
    """(prefix, component) of ``name`` = ``component`` or ``prefix_component``; None if it is no component."""
    for component in _COMPONENTS:
        if name == component:
            return "", component
        if name.endswith("_" + component):
            return name[: -len(component)], component
    return None


@dataclass(frozen=True)
class _Columns:
    """Columns of one tensor's last axis that the chosen symmetries change."""

    azimuths: tuple[int, ...] = ()
    xy_pairs: tuple[tuple[int, int], ...] = ()
    reflected: tuple[int, ...] = ()

    @classmethod
    def of(cls, names: Sequence[str], *, rotate: bool, reflect: bool, where: str) -> _Columns:
        """The columns among ``names`` that change; an (x, y) pair declared in part is refused."""
        index = {name: i for i, name in enumerate(names)}
        azimuths, pairs, reflected = [], [], []
        for name in names:
            found = _component(name)
            if found is None:
                continue
            prefix, component = found
            if rotate and component in _AZIMUTHS:
                azimuths.append(index[name])
            if reflect and component in _REFLECTED:
                reflected.append(index[name])
            for x, y in _XY_PAIRS:
                if rotate and component in (x, y):
                    partner = prefix + (y if component == x else x)
                    if partner not in index:
                        raise UnfoldError(f"{where}: {name} is declared without {partner}; a rotation needs both")
                    if component == x:
                        pairs.append((index[name], index[partner]))
        return cls(tuple(azimuths), tuple(pairs), tuple(reflected))

    @property
    def empty(self) -> bool:
        return not (self.azimuths or self.xy_pairs or self.reflected)


class DetectorSymmetries:
    """Random azimuthal rotations and eta reflections of whole events, on raw training batches.

    Per event, ``rotate_phi`` adds one angle uniform in [0, 2 pi) to the azimuth of every object,
    of the global vectors and of the regressed ones (phi wrapped into [-pi, pi); cos_phi/sin_phi
    and px/py pairs rotated; the four-momenta's px, py too), and ``reflect_eta`` flips the sign of
    every eta, pz and rapidity with probability 1/2. Padded objects, the assignment targets and
    every other feature are left as they are.

    Args:
        topology: the event file the batches follow.
        augmentations: some of :data:`AUGMENTATIONS`.

    Raises:
        UnfoldError: at construction, in one line, for an augmentation the event file cannot take:
            no input declares anything it changes (no phi, no eta), such a feature is declared
            ``log_normalize`` (log(1 + x) of a signed angle clamps half of it away), or only half
            of a cos_phi/sin_phi or px/py pair is declared.
    """

    def __init__(self, topology: EventTopology, augmentations: Sequence[Augmentation]) -> None:
        unknown = [a for a in augmentations if a not in AUGMENTATIONS]
        if unknown:
            raise UnfoldError(f"model.augment: unknown {unknown}; expected some of {list(AUGMENTATIONS)}")
        self.rotate = "rotate_phi" in augmentations
        self.reflect = "reflect_eta" in augmentations
        self.augmentations = [a for a in AUGMENTATIONS if a in augmentations]
        where = f"{topology.path}: model.augment"
        for augmentation in dict.fromkeys(augmentations):
            _check(topology, augmentation, where)

        def columns(names: Sequence[str], group: str) -> _Columns:
            return _Columns.of(names, rotate=self.rotate, reflect=self.reflect, where=f"{where}: {group}")

        self.sequential = tuple(columns(s.features, f"INPUTS/{s.name}") for s in topology.sequential)
        self.globals = tuple(columns(s.features, f"INPUTS/{s.name}") for s in topology.globals)
        self.regressions = columns(topology.regressions, "REGRESSIONS/EVENT")
        self.four_momenta = _Columns(xy_pairs=((1, 2),) if self.rotate else (), reflected=(3,) if self.reflect else ())

    def draw(self, events: int, device: torch.device, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Each event's rotation angle (uniform in [0, 2 pi), or 0) and reflection sign (+-1 at even odds, or +1)."""
        angle = torch.zeros(events, dtype=torch.float64)
        sign = torch.ones(events, dtype=torch.float64)
        if self.rotate:
            angle = torch.rand(events, generator=generator, dtype=torch.float64) * (2 * math.pi)
        if self.reflect:
            sign = torch.where(torch.rand(events, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
        return angle.to(device), sign.to(device)

    def transform_inputs(self, inputs: EncoderInputs, angle: Tensor, sign: Tensor) -> EncoderInputs:
        """The detector inputs of every event rotated by its ``angle`` and reflected by its ``sign`` (E,)."""

        def transform(x: Tensor | None, columns: _Columns, mask: Tensor | None = None) -> Tensor | None:
            return None if x is None else _transform(x, columns, angle, sign, mask)

        return inputs._replace(
            sequential_features=tuple(
                transform(x, c, m) for x, c, m in zip(inputs.sequential_features, self.sequential, inputs.sequential_masks, strict=True)
            ),
            global_features=tuple(transform(x, c) for x, c in zip(inputs.global_features, self.globals, strict=True)),
            four_momenta=transform(inputs.four_momenta, self.four_momenta, torch.cat(inputs.sequential_masks, dim=1)),
        )

    def __call__(self, batch: AssignmentBatch, generator: torch.Generator | None = None) -> AssignmentBatch:
        """The batch with every event rotated and/or reflected by its own random draw."""
        inputs = batch.inputs
        angle, sign = self.draw(inputs.sequential_masks[0].shape[0], inputs.sequential_masks[0].device, generator)
        regressions = batch.targets.regressions
        if regressions is not None:
            regressions = _transform(regressions, self.regressions, angle, sign, None)
        return batch._replace(inputs=self.transform_inputs(inputs, angle, sign),
                              targets=batch.targets._replace(regressions=regressions))


def _transform(x: Tensor, columns: _Columns, angle: Tensor, sign: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` (E, N, F) or (E, F) with its columns rotated by ``angle`` (E,) and reflected by ``sign`` (E,)."""
    if columns.empty:
        return x
    y = rotate_and_reflect(x, angle, sign, azimuths=columns.azimuths, xy_pairs=columns.xy_pairs, reflected=columns.reflected)
    return y if mask is None else torch.where(mask[..., None], y, x)


def _check(topology: EventTopology, augmentation: str, where: str) -> None:
    """Refuse, in one line, an augmentation whose features are absent or log-normalised."""
    changed = (_AZIMUTHS + tuple(f for pair in _XY_PAIRS for f in pair)) if augmentation == "rotate_phi" else _REFLECTED
    touched = False
    for source in topology.sources:
        for feature, normalization in zip(source.features, source.normalizations, strict=True):
            found = _component(feature)
            if found is None or found[1] not in changed:
                continue
            touched = True
            if normalization == "log_normalize":
                raise UnfoldError(f"{where} {augmentation}: INPUTS/{source.name}/{feature} is declared log_normalize "
                                  "(log(1 + x) of a signed value); declare it normalize or drop the augmentation")
    if not touched:
        raise UnfoldError(f"{where} {augmentation}: no input declares any of {list(changed)}, so there is "
                          f"nothing to {'rotate' if augmentation == 'rotate_phi' else 'reflect'}")


def allowed_augmentations(topology: EventTopology) -> list[str]:
    """The augmentations the event file's inputs can take (``model.augment: auto``): those
    :class:`DetectorSymmetries` accepts, each checked alone."""
    allowed = []
    for augmentation in AUGMENTATIONS:
        try:
            DetectorSymmetries(topology, [augmentation])
        except UnfoldError:
            continue
        allowed.append(augmentation)
    return allowed


def detector_symmetries(
    topology: EventTopology, augment: Sequence[Augmentation] | Literal["auto"] | None
) -> DetectorSymmetries | None:
    """The symmetries a model's ``augment`` option asks for: ``"auto"`` every one the inputs allow
    (:func:`allowed_augmentations`), a list those, None or empty none."""
    if augment == "auto":
        augment = allowed_augmentations(topology)
    return DetectorSymmetries(topology, augment) if augment else None

