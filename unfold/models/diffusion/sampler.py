"""The shared diffusion sampling loop over ``diffusers`` schedulers, written in the open.

Training draws noisy states with :meth:`diffusers.DDPMScheduler.add_noise`; sampling builds a
fresh scheduler ``from_config`` of the training one on every call (schedulers hold run state)
and runs the loop of diffusers' ``pipelines/ddpm/pipeline_ddpm.py``: ``set_timesteps``, start
from Gaussian noise scaled by ``init_noise_sigma``, ``scale_model_input``, predict the noise,
``step(...).prev_sample``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor

from unfold.errors import UnfoldError

__all__ = [
    "DEFAULT_SAMPLER",
    "SAMPLER_NAMES",
    "SamplerName",
    "add_noise",
    "denoise",
    "make_sampling_scheduler",
    "make_training_scheduler",
]

SamplerName = Literal["ddpm", "ddim", "dpm-solver"]
# DDPM by default: on the trained models it beat DPM-Solver at 25 steps on all parton observables but
# the lepton pT (W1 of m(ttbar) 14.8 vs 37.7 GeV) and on every particle-level kinematic one (MET 5.3 vs
# 31 GeV); the deterministic solvers follow the learned score's errors exactly.
DEFAULT_SAMPLER: SamplerName = "ddpm"
SAMPLER_NAMES: tuple[str, ...] = get_args(SamplerName)

_SCHEDULER_CLASSES: dict[str, type[SchedulerMixin]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm-solver": DPMSolverMultistepScheduler,
}


def make_training_scheduler(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "squaredcos_cap_v2",
    prediction_type: str = "epsilon",
) -> DDPMScheduler:
    """The DDPM noise schedule used for training and as the template of every sampler.

    Samples are standardised, not images in [-1, 1], so ``clip_sample`` is off. Timesteps are
    spaced ``"leading"``: with the cosine schedule the last step has sqrt(abar) ~ 5e-5 (its beta
    is capped at 0.999), so a few-step sampler that started there would multiply the denoiser's
    error by the ratio of signal scales of consecutive steps (~1e3) and diverge; leading spacing
    starts at t = T - T / steps (sqrt(abar) ~ 0.06 for 25 of 1000 steps). The price: starting
    from pure noise there drops that fraction of the data's mean, a bias of a few percent of the
    mean in standardised units that shrinks with more steps.

    Args:
        num_train_timesteps: Number T of discrete diffusion steps.
        beta_schedule: A ``diffusers`` beta schedule; the default is the cosine schedule of
            Nichol & Dhariwal (arXiv 2102.09672).
        prediction_type: What the denoiser predicts: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.

    Returns:
        A configured :class:`diffusers.DDPMScheduler`.
    """
    if num_train_timesteps < 2:
        raise UnfoldError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,
        timestep_spacing="leading",
    )


def make_sampling_scheduler(training: DDPMScheduler, sampler: SamplerName) -> SchedulerMixin:
    """A fresh sampling scheduler built ``from_config`` of the training scheduler.

    Args:
        training: The scheduler the denoiser was trained with.
        sampler: ``"ddpm"`` (ancestral, stochastic), ``"ddim"`` (deterministic, eta = 0) or
            ``"dpm-solver"`` (DPM-Solver++ multistep, arXiv 2211.01095).

    Returns:
        A new scheduler sharing the training noise schedule.

    Raises:
        UnfoldError: If ``sampler`` is not one of the choices.
    """
    if sampler not in _SCHEDULER_CLASSES:
        raise UnfoldError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    return _SCHEDULER_CLASSES[sampler].from_config(training.config)


def add_noise(scheduler: DDPMScheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """The forward process q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise.

    Args:
        scheduler: The training scheduler.
        x0: Clean states, shape (E, ...).
        noise: Standard Gaussian noise, same shape as ``x0``.
        t: Integer timesteps, shape (E,).

    Returns:
        Noisy states x_t, same shape as ``x0``.
    """
    return scheduler.add_noise(x0, noise, t)


def denoise(
    predict_noise: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, ...],
    *,
    training_scheduler: DDPMScheduler,
    sampler: SamplerName = DEFAULT_SAMPLER,
    steps: int = 25,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> Tensor:
    """Run the reverse diffusion from Gaussian noise to clean states.

    Args:
        predict_noise: ``predict_noise(x_t, t)`` with x_t of ``shape`` and t a LongTensor of
            shape (shape[0],) returns the predicted noise, of ``shape``.
        shape: Shape of the states, (E, ...).
        training_scheduler: The scheduler the denoiser was trained with.
        sampler: Which sampling scheduler to use.
        steps: Number of denoising steps.
        generator: Source of the initial noise and of every stochastic step; a seeded generator
            makes sampling reproducible. It must live on ``device``.
        device: Where the states live.
        dtype: Floating-point type of the states.
        progress: Show a progress bar over the steps.

    Returns:
        The denoised states, of ``shape``.

    Raises:
        UnfoldError: If ``sampler`` is unknown, ``steps`` is not positive or exceeds the
            number of training timesteps, or ``shape`` is empty.
    """
    scheduler = make_sampling_scheduler(training_scheduler, sampler)
    num_train = training_scheduler.config.num_train_timesteps
    if not 1 <= steps <= num_train:
        raise UnfoldError(f"steps must be between 1 and {num_train}, got {steps}")
    if len(shape) == 0 or shape[0] < 1:
        raise UnfoldError(f"shape must start with a positive batch size, got {shape}")
    scheduler.set_timesteps(steps, device=device)
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    x = x * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm

        timesteps = tqdm(timesteps, desc=f"{sampler} sampling", leave=False)
    for t in timesteps:
        model_input = scheduler.scale_model_input(x, t)
        t_batch = torch.full((shape[0],), int(t), device=x.device, dtype=torch.long)
        noise = predict_noise(model_input, t_batch)
        x = scheduler.step(noise, t, x, generator=generator).prev_sample
    return x
