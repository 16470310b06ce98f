"""Event-indexed tensors for Lightning: the encoder's inputs from a file, batched by slicing."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from encoders import EncoderInputs
from recon.event_topology import EventTopology
from unfold.data.hdf5_schema import SpanetData

__all__ = ["IndexedTensors", "encoder_inputs", "map_tensors", "take_events"]


def encoder_inputs(data: SpanetData, topology: EventTopology) -> EncoderInputs:
    """The shared encoder's inputs of every event of ``data`` (raw features; the encoder normalises)."""
    return EncoderInputs(
        sequential_features=tuple(torch.from_numpy(data.sequential[s.name]) for s in topology.sequential),
        sequential_masks=tuple(torch.from_numpy(data.masks[s.name]) for s in topology.sequential),
        global_features=tuple(torch.from_numpy(data.globals[s.name]) for s in topology.globals),
        four_momenta=None if data.four_momenta is None else torch.from_numpy(data.four_momenta),
    )


def map_tensors(function: Callable[[Tensor], Tensor], value):
    """Apply ``function`` to every tensor inside nested NamedTuples/tuples (None stays None)."""
    if isinstance(value, Tensor):
        return function(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_tensors(function, v) for v in value))
    if isinstance(value, tuple):
        return tuple(map_tensors(function, v) for v in value)
    return value


def take_events(value, rows: Tensor):
    """Index every tensor inside nested NamedTuples/tuples by ``rows`` along the event axis."""
    return map_tensors(lambda tensor: tensor[rows], value)


class IndexedTensors(torch.utils.data.Dataset):
    """A (nested) tuple of tensors with events first; items are indices and :meth:`collate`
    slices a whole batch at once (much faster than stacking single events)."""

    def __init__(self, tensors: tuple, n_events: int) -> None:
        self.tensors = tensors
        self.n_events = n_events

    def __len__(self) -> int:
        return self.n_events

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]):
        return take_events(self.tensors, torch.as_tensor(indices))
