"""Diffusion utilities shared by the parton- and particle-level unfolding models."""

from unfold.models.diffusion.sampler import (
    DEFAULT_SAMPLER,
    SAMPLER_NAMES,
    SamplerName,
    add_noise,
    denoise,
    make_sampling_scheduler,
    make_training_scheduler,
)

__all__ = [
    "DEFAULT_SAMPLER",
    "SAMPLER_NAMES",
    "SamplerName",
    "add_noise",
    "denoise",
    "make_sampling_scheduler",
    "make_training_scheduler",
]
