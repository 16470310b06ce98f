"""Each particle slot's detector counterpart: the detector object of the same class and pT rank.

With counts by class and ranked slots the particle model knows, before it generates anything, that a
slot is "the second-hardest b jet". The detector has its own second-hardest b-tagged jet, measured to
the detector's resolution; most of the time it is the same jet. Pairing them lets the model generate
the particle-level object relative to its measured counterpart (the issue's "parametrise relative to
the reconstructed objects"), so a well-measured jet or lepton comes out as sharp as it went in.
The pairing reads the detector only (classes from the inputs' lepton and b-tag flags, ranks from the
measured pT), so it is the same in training, where the slots are the truth's, and in sampling, where
they are the drawn counts'.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from encoders import EncoderInputs
from recon.chi_square import DetectorEvents
from recon.event_topology import EventTopology
from unfold.errors import UnfoldError
from unfold.models.particle.representation import SLOT_CLASS_NAMES

__all__ = ["NO_CLASS", "DetectorSlots", "class_ranks", "detector_slots", "pair_slots"]

NO_CLASS = -1  # a padded detector object, or a slot without class
_LEPTON, _B_JET, _LIGHT_JET = (SLOT_CLASS_NAMES.index(name) for name in ("lepton", "b jet", "light jet"))


class DetectorSlots(NamedTuple):
    """The slot class and pT rank within the class of each detector object.

    Attributes:
        classes: (E, N) long ``SLOT_CLASS_NAMES`` index (lepton, b-tagged jet, untagged jet), NO_CLASS at padding.
        ranks: (E, N) long 0 for the hardest object of its class in the event, 1 for the next, ...
    """

    classes: Tensor
    ranks: Tensor


def class_ranks(classes: Tensor, pt: Tensor) -> Tensor:
    """(E, N) long rank of each object within its class by descending ``pt`` (ties: the earlier slot first).

    Args:
        classes: (E, N) long classes, NO_CLASS for objects that take no part.
        pt: (E, N) transverse momenta (any monotone function of them).
    """
    same = (classes.unsqueeze(-1) == classes.unsqueeze(-2)) & (classes != NO_CLASS).unsqueeze(-1)
    index = torch.arange(classes.shape[-1], device=classes.device)
    harder = (pt.unsqueeze(-1) > pt.unsqueeze(-2)) | ((pt.unsqueeze(-1) == pt.unsqueeze(-2)) & (index.unsqueeze(-1) < index))
    return (same & harder).sum(dim=-2)


def detector_slots(inputs: EncoderInputs, topology: EventTopology) -> DetectorSlots:
    """The :class:`DetectorSlots` of a batch of raw detector inputs, read as :meth:`DetectorEvents.from_inputs`
    reads them (leptons flagged by etag/utag or held in the lepton's source, jets b-tagged by a btag feature)."""
    def numpy(values: tuple[Tensor, ...], sources) -> dict[str, np.ndarray]:
        return {source.name: value.detach().cpu().numpy() for source, value in zip(sources, values, strict=True)}

    events = DetectorEvents.from_inputs(
        numpy(inputs.sequential_features, topology.sequential), numpy(inputs.sequential_masks, topology.sequential),
        numpy(inputs.global_features, topology.globals), topology, origin="the particle unfolding's detector inputs",
    )
    classes = np.where(events.is_lepton, _LEPTON, np.where(events.is_jet, np.where(events.btag, _B_JET, _LIGHT_JET), NO_CLASS))
    device = inputs.sequential_masks[0].device
    classes = torch.from_numpy(classes).to(device)
    return DetectorSlots(classes, class_ranks(classes, torch.from_numpy(events.pt).to(device)))


def pair_slots(anchors: Tensor, detector: DetectorSlots, slot_classes: Tensor, slot_ranks: Tensor,
               slot_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Each slot's detector counterpart: the detector object of the same class and rank.

    Args:
        anchors: (B, N, F) detector objects in the particle feature space.
        detector: their classes and ranks, each (B, N).
        slot_classes, slot_ranks: (B, M) long class and rank of each particle slot.
        slot_mask: (B, M) bool, True for the real slots.

    Returns:
        The paired anchors (B, M, F), zero where a slot has no counterpart, and (B, M) bool, True where it has one.
    """
    if detector.classes.shape != anchors.shape[:2] or detector.ranks.shape != anchors.shape[:2]:
        raise UnfoldError(f"detector slot classes and ranks must be {tuple(anchors.shape[:2])} like the anchors, got "
                          f"{tuple(detector.classes.shape)} and {tuple(detector.ranks.shape)}")
    match = ((slot_classes.unsqueeze(-1) == detector.classes.unsqueeze(-2))
             & (slot_ranks.unsqueeze(-1) == detector.ranks.unsqueeze(-2))
             & (detector.classes != NO_CLASS).unsqueeze(-2) & slot_mask.bool().unsqueeze(-1))
    return match.to(anchors.dtype) @ anchors, match.any(dim=-1)
