"""Each particle slot's detector counterpart: the detector object of the same class and pT rank.

With counts by class and ranked slots the particle model knows, before it generates anything, that a
slot is "the second-hardest b jet". The detector has its own second-hardest b-tagged jet, measured to
the detector's resolution; often it is the same jet (for 46-76 % of the first jet slots of the default
data, Delta R < 0.4: the b-tag misses b jets and close pTs swap ranks), and the lepton nearly always is.
Pairing them lets the model generate
the particle-level object relative to its measured counterpart (the issue's "parametrise relative to
the reconstructed objects"), so a well-measured jet or lepton comes out as sharp as it went in.
The pairing reads the detector only (classes from the inputs' lepton and b-tag flags, ranks from the
measured pT; :func:`unfold.data.detector_slots.detector_slots` reads them from the inputs), so it is
the same in training, where the slots are the truth's, and in sampling, where they are the drawn
counts'.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from unfold.errors import UnfoldError
from unfold.models.particle.representation import SLOT_CLASS_NAMES

__all__ = [
    "B_JET_CLASS",
    "LEPTON_CLASS",
    "LIGHT_JET_CLASS",
    "NO_CLASS",
    "DetectorSlots",
    "ResidualScale",
    "class_ranks",
    "pair_slots",
]

NO_CLASS = -1  # a padded detector object, or a slot without class
LEPTON_CLASS, B_JET_CLASS, LIGHT_JET_CLASS = (SLOT_CLASS_NAMES.index(name) for name in ("lepton", "b jet", "light jet"))


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


class ResidualScale(nn.Module):
    """Each class's running root mean square of the paired residuals (particle minus counterpart), per feature.

    The detector measures a lepton to about 1 % and a jet to about 10 %, so in the representation's units a
    lepton's residual is a tenth of a jet's and below the VAE's reconstruction error: the VAE handed back the
    counterpart unchanged and the lepton's per-event posterior came out too narrow (68 / 95 % coverage 57-64
    / 85-91). Divided by its class's RMS every paired residual is of unit size. Like BatchNorm's running
    statistics the RMS follows the training batches (``momentum`` per batch, unweighted: a scale, not a
    distribution) and is fixed in evaluation; a class never seen divides by one. The RMS is floored at
    ``floor`` of the feature's standardised spread: the detector keeps the lepton's direction (residual RMS
    5e-8), and dividing by that would hand the VAE float rounding blown up to unit size.

    Args:
        num_classes: slot classes C.
        num_features: features F per slot.
        momentum: weight of each training batch in the running RMS.
        floor: the smallest divisor.
    """

    def __init__(self, num_classes: int, num_features: int, *, momentum: float = 0.01, floor: float = 1e-3) -> None:
        super().__init__()
        self.momentum = momentum
        self.floor = floor
        self.register_buffer("rms", torch.zeros(num_classes, num_features))

    @torch.no_grad()
    def update(self, residuals: Tensor, classes: Tensor, paired: Tensor) -> None:
        """Fold a training batch in: residuals (S, F), classes (S,) and paired (S,) bool of its real slots.
        All classes at once, without a host synchronisation (it runs at every training step)."""
        classes, squares = classes[paired], residuals[paired].pow(2)
        counts = torch.zeros_like(self.rms[:, 0]).index_add_(0, classes, torch.ones_like(squares[:, 0]))
        batch = (torch.zeros_like(self.rms).index_add_(0, classes, squares) / counts.clamp(min=1).unsqueeze(-1)).sqrt()
        seen = self.rms.any(dim=-1, keepdim=True)
        updated = torch.where(seen, torch.lerp(self.rms, batch, self.momentum), batch)
        self.rms.copy_(torch.where((counts > 0).unsqueeze(-1), updated, self.rms))

    def forward(self, classes: Tensor, paired: Tensor) -> Tensor:
        """(..., F) divisor of each slot: its class's RMS where it has a counterpart, one elsewhere."""
        rms = torch.where(self.rms > 0, self.rms.clamp(min=self.floor), torch.ones_like(self.rms))[classes.clamp(min=0)]
        return torch.where(paired.unsqueeze(-1), rms, torch.ones_like(rms))
