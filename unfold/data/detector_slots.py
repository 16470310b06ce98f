"""The detector objects' slot classes and pT ranks, read from a batch of the encoder's raw inputs."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from encoders import EncoderInputs
from recon.chi_square import DetectorEvents
from recon.event_topology import EventTopology
from unfold.models.particle.pairing import (
    B_JET_CLASS,
    LEPTON_CLASS,
    LIGHT_JET_CLASS,
    NO_CLASS,
    DetectorSlots,
    class_ranks,
)

__all__ = ["detector_slots"]


def detector_slots(inputs: EncoderInputs, topology: EventTopology) -> DetectorSlots:
    """The :class:`DetectorSlots` of a batch of raw detector inputs, read as :meth:`DetectorEvents.from_inputs`
    reads them (leptons flagged by etag/utag or held in the lepton's source, jets b-tagged by a btag feature)."""
    def numpy(values: tuple[Tensor, ...], sources) -> dict[str, np.ndarray]:
        return {source.name: value.detach().cpu().numpy() for source, value in zip(sources, values, strict=True)}

    events = DetectorEvents.from_inputs(
        numpy(inputs.sequential_features, topology.sequential), numpy(inputs.sequential_masks, topology.sequential),
        numpy(inputs.global_features, topology.globals), topology, origin="the particle unfolding's detector inputs",
    )
    jets = np.where(events.btag, B_JET_CLASS, LIGHT_JET_CLASS)
    classes = np.where(events.is_lepton, LEPTON_CLASS, np.where(events.is_jet, jets, NO_CLASS))
    device = inputs.sequential_masks[0].device
    classes = torch.from_numpy(classes).to(device)
    return DetectorSlots(classes, class_ranks(classes, torch.from_numpy(events.pt).to(device)))
