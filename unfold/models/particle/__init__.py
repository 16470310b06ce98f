"""Particle-level unfolding of variable-length events (arXiv 2404.14332): multiplicity + set denoiser."""

from unfold.models.particle.multiplicity import (
    MULTIPLICITY_DISTRIBUTIONS,
    MultiplicityCalibration,
    MultiplicityDistribution,
    MultiplicityPredictor,
    TypedMultiplicity,
    empirical_log_probs,
    multiplicity_calibration,
)
from unfold.models.particle.representation import ParticleBatch, ParticleRepresentation
from unfold.models.particle.set_denoiser import SetDenoiser, SetNoisePrediction
from unfold.models.particle.set_diffusion import ParticleLoss, ParticleSample, SetLatentDiffusion
from unfold.models.particle.set_vae import DecodedObjects, LatentPosterior, ObjectVAE

__all__ = [
    "MULTIPLICITY_DISTRIBUTIONS",
    "DecodedObjects",
    "LatentPosterior",
    "MultiplicityCalibration",
    "MultiplicityDistribution",
    "MultiplicityPredictor",
    "ObjectVAE",
    "ParticleBatch",
    "ParticleLoss",
    "ParticleRepresentation",
    "ParticleSample",
    "SetDenoiser",
    "SetLatentDiffusion",
    "SetNoisePrediction",
    "TypedMultiplicity",
    "empirical_log_probs",
    "multiplicity_calibration",
]
