"""Parton-level unfolding: the parton representations (decay chain, polar decay chain, lepton-anchored chain,
objects), the consistency term, the per-parton object queries and the VLD."""

from unfold.models.parton.anchored_chain import AnchoredDecayChainRepresentation
from unfold.models.parton.consistency import squared_mass_consistency
from unfold.models.parton.decay_chain import (
    DecayChainRepresentation,
    HadronicPolarDecayChainRepresentation,
    PolarDecayChainRepresentation,
    TwoBodyDecay,
)
from unfold.models.parton.object_queries import PartonQueries
from unfold.models.parton.representation import (
    OBJECT_FEATURES,
    PHYSICAL_FEATURES,
    ObjectRepresentation,
    PartonRepresentation,
)
from unfold.models.parton.vld import VariationalLatentDiffusion, VLDLoss

# The parton representations a model can be trained on, by their config name.
REPRESENTATIONS: dict[str, type[PartonRepresentation]] = {
    "decay-chain": DecayChainRepresentation,
    "polar-decay-chain": PolarDecayChainRepresentation,
    "hadronic-polar-decay-chain": HadronicPolarDecayChainRepresentation,
    "lepton-anchored": AnchoredDecayChainRepresentation,
    "objects": ObjectRepresentation,
}

__all__ = [
    "OBJECT_FEATURES",
    "PHYSICAL_FEATURES",
    "REPRESENTATIONS",
    "AnchoredDecayChainRepresentation",
    "DecayChainRepresentation",
    "HadronicPolarDecayChainRepresentation",
    "ObjectRepresentation",
    "PartonQueries",
    "PartonRepresentation",
    "PolarDecayChainRepresentation",
    "TwoBodyDecay",
    "VLDLoss",
    "VariationalLatentDiffusion",
    "squared_mass_consistency",
]
