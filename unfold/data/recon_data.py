"""Tensors for the assignment network from a SPANet-layout file, batched by index."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from encoders import EncoderInputs
from recon.assignment_loss import AssignmentTargets
from recon.chi_square import DetectorEvents
from recon.event_topology import EventTopology
from unfold.data.event_tensors import IndexedTensors, encoder_inputs
from unfold.data.hdf5_schema import SpanetData

__all__ = ["AssignmentBatch", "assignment_tensors", "detector_events", "jet_multiplicity"]


class AssignmentBatch(NamedTuple):
    inputs: EncoderInputs
    targets: AssignmentTargets


def assignment_tensors(data: SpanetData, topology: EventTopology) -> IndexedTensors:
    """Encoder inputs and SPANet targets of every event, batched as :class:`AssignmentBatch`."""
    names = topology.resonance_names
    targets = AssignmentTargets(
        indices=tuple(torch.from_numpy(data.targets[n]) for n in names),
        regressions=torch.from_numpy(data.regressions) if data.regressions.shape[1] else None,
        classifications=torch.from_numpy(data.classifications) if data.classifications.shape[1] else None,
        resonance_masks=tuple(torch.from_numpy(data.target_masks[n]) for n in names),
        resonance_weights=tuple(torch.from_numpy(data.weights[n]) for n in names),
        event_weights=torch.from_numpy(data.event_weights),
    )
    return IndexedTensors(AssignmentBatch(encoder_inputs(data, topology), targets), data.n_events)


def detector_events(data: SpanetData, topology: EventTopology) -> DetectorEvents:
    """The chi-square baseline's view of the inputs, read as the event file declares them
    (:meth:`DetectorEvents.from_inputs`); its slots are the concatenated objects the targets index."""
    return DetectorEvents.from_inputs(data.sequential, data.masks, data.globals, topology, origin=data.path)


def jet_multiplicity(data: SpanetData, topology: EventTopology) -> np.ndarray:
    """(E,) number of real objects that are not leptons (etag/utag) in the sequential sources."""
    count = np.zeros(data.n_events, dtype=np.int64)
    for source in topology.sequential:
        real = data.masks[source.name].copy()
        for tag in ("etag", "utag"):
            if tag in source.features:
                real &= data.sequential[source.name][..., source.features.index(tag)] <= 0
        count += real.sum(axis=1)
    return count
