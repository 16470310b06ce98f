"""What the unfoldings read of a batch of the encoder's raw inputs: the objects' slot classes and pT ranks, the
measured lepton."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from encoders import EncoderInputs
from encoders.kinematics import to_cartesian
from recon.chi_square import DetectorEvents
from recon.event_topology import EventTopology
from unfold.errors import UnfoldError
from unfold.models.particle.pairing import (
    B_JET_CLASS,
    LEPTON_CLASS,
    LIGHT_JET_CLASS,
    NO_CLASS,
    DetectorSlots,
    class_ranks,
)

__all__ = ["detector_slots", "measured_leptons"]


def _detector_events(inputs: EncoderInputs, topology: EventTopology, origin: str) -> DetectorEvents:
    """A batch of raw detector inputs read as :meth:`DetectorEvents.from_inputs` reads them (leptons flagged by
    etag/utag or held in the lepton's source, jets b-tagged by a btag feature)."""
    def numpy(values: tuple[Tensor, ...], sources) -> dict[str, np.ndarray]:
        return {source.name: value.detach().cpu().numpy() for source, value in zip(sources, values, strict=True)}

    return DetectorEvents.from_inputs(
        numpy(inputs.sequential_features, topology.sequential), numpy(inputs.sequential_masks, topology.sequential),
        numpy(inputs.global_features, topology.globals), topology, origin=origin,
    )


def measured_leptons(inputs: EncoderInputs, topology: EventTopology) -> Tensor:
    """Float64 (E, 4) = (E, px, py, pz) of each event's leading detector lepton.

    Raises:
        UnfoldError: If an event has no lepton.
    """
    events = _detector_events(inputs, topology, origin="the parton unfolding's detector inputs")
    pt = np.where(events.is_lepton, events.pt, -np.inf)
    missing = np.flatnonzero(~events.is_lepton.any(axis=1))
    if len(missing):
        raise UnfoldError(f"the lepton-anchored parton representation needs a detector lepton in every event; "
                          f"{len(missing)} of {len(pt)} events (first: {missing[0]}) have none")
    rows, leading = np.arange(len(pt)), pt.argmax(axis=1)
    kinematics = [torch.from_numpy(np.asarray(getattr(events, name))[rows, leading]) for name in ("pt", "eta", "phi", "mass")]
    return to_cartesian(*kinematics).to(inputs.sequential_masks[0].device)


def detector_slots(inputs: EncoderInputs, topology: EventTopology) -> DetectorSlots:
    """The :class:`DetectorSlots` of a batch of raw detector inputs (:func:`_detector_events`)."""
    events = _detector_events(inputs, topology, origin="the particle unfolding's detector inputs")
    jets = np.where(events.btag, B_JET_CLASS, LIGHT_JET_CLASS)
    classes = np.where(events.is_lepton, LEPTON_CLASS, np.where(events.is_jet, jets, NO_CLASS))
    device = inputs.sequential_masks[0].device
    classes = torch.from_numpy(classes).to(device)
    return DetectorSlots(classes, class_ranks(classes, torch.from_numpy(events.pt).to(device)))
