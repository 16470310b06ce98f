"""Tensors for the assignment network from a SPANet-layout file, batched by index."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from encoders import EncoderInputs
from recon.assignment_loss import AssignmentTargets
from recon.chi_square import DetectorEvents
from recon.event_topology import EventTopology
from unfold.hdf5_schema import SpanetData

__all__ = ["AssignmentBatch", "AssignmentTensors", "detector_events", "jet_multiplicity"]


class AssignmentBatch(NamedTuple):
    inputs: EncoderInputs
    targets: AssignmentTargets


class AssignmentTensors(torch.utils.data.Dataset):
    """All events of a file as tensors; items are indices and :meth:`collate` slices a batch."""

    def __init__(self, data: SpanetData, topology: EventTopology) -> None:
        self.inputs = EncoderInputs(
            sequential_features=tuple(torch.from_numpy(data.sequential[s.name]) for s in topology.sequential),
            sequential_masks=tuple(torch.from_numpy(data.masks[s.name]) for s in topology.sequential),
            global_features=tuple(torch.from_numpy(data.globals[s.name]) for s in topology.globals),
            four_momenta=None if data.four_momenta is None else torch.from_numpy(data.four_momenta),
        )
        names = topology.resonance_names
        self.targets = AssignmentTargets(
            indices=tuple(torch.from_numpy(data.targets[n]) for n in names),
            regressions=torch.from_numpy(data.regressions) if data.regressions.shape[1] else None,
            classifications=torch.from_numpy(data.classifications) if data.classifications.shape[1] else None,
            resonance_masks=tuple(torch.from_numpy(data.target_masks[n]) for n in names),
            resonance_weights=tuple(torch.from_numpy(data.weights[n]) for n in names),
        )
        self.n_events = data.n_events

    def __len__(self) -> int:
        return self.n_events

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> AssignmentBatch:
        rows = torch.as_tensor(indices)
        return AssignmentBatch(_take(self.inputs, rows), _take(self.targets, rows))


def _take(value, rows: Tensor):
    """Index every tensor inside nested NamedTuples/tuples by ``rows`` along the event axis."""
    if isinstance(value, Tensor):
        return value[rows]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_take(v, rows) for v in value))
    if isinstance(value, tuple):
        return tuple(_take(v, rows) for v in value)
    return value


def detector_events(data: SpanetData, topology: EventTopology) -> DetectorEvents:
    """The chi-square baseline's view of the first sequential source and the first global source."""
    source = topology.sequential[0]
    momenta = {f: data.sequential[source.name][..., i] for i, f in enumerate(source.features)}
    momenta["MASK"] = data.masks[source.name]
    for tag in ("etag", "utag"):
        momenta.setdefault(tag, np.zeros_like(momenta["pt"]))
    met_source = next((s for s in topology.globals), None)
    met = {f: data.globals[met_source.name][:, i] for i, f in enumerate(met_source.features)} if met_source else {}
    return DetectorEvents.from_spanet(momenta, met, origin=data.path)


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
