"""Diffusion and flow-matching utilities shared by the parton- and particle-level unfolding models."""

from unfold.models.diffusion.sampler import (
    DEFAULT_OBJECTIVE,
    DEFAULT_SAMPLER,
    OBJECTIVES,
    SAMPLER_NAMES,
    SAMPLERS,
    Objective,
    SamplerName,
    TrainingScheduler,
    add_noise,
    denoise,
    draw_timesteps,
    make_sampling_scheduler,
    make_training_scheduler,
    objective_of,
    resolve_sampler,
    training_target,
)

__all__ = [
    "DEFAULT_OBJECTIVE",
    "DEFAULT_SAMPLER",
    "OBJECTIVES",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "Objective",
    "SamplerName",
    "TrainingScheduler",
    "add_noise",
    "denoise",
    "draw_timesteps",
    "make_sampling_scheduler",
    "make_training_scheduler",
    "objective_of",
    "resolve_sampler",
    "training_target",
]
