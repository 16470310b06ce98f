"""Parton-level unfolding: the parton representation, the consistency term and the VLD model."""

from unfold.parton.consistency import squared_mass_consistency
from unfold.parton.representation import OBJECT_FEATURES, PHYSICAL_FEATURES, PartonRepresentation
from unfold.parton.vld import VariationalLatentDiffusion, VLDLoss

__all__ = [
    "OBJECT_FEATURES",
    "PHYSICAL_FEATURES",
    "PartonRepresentation",
    "VLDLoss",
    "VariationalLatentDiffusion",
    "squared_mass_consistency",
]
