"""The shared generative loop over ``diffusers`` schedulers, for two objectives, written in the open.

``diffusion`` (DDPM, arXiv 2006.11239): training draws integer timesteps and noisy states with
:meth:`diffusers.DDPMScheduler.add_noise`, and the network predicts the noise. ``flow-matching``
(conditional flow matching / rectified flow, Lipman et al. arXiv 2210.02747, Liu et al. arXiv
2209.03003): x_t = (1 - t) x_0 + t noise with t ~ U(0, 1), and the network predicts the velocity
noise - x_0; it sees the time as t T, on the scale of the diffusion timesteps, so both objectives
share the networks and their time embeddings. The training scheduler's class is the objective:
:func:`draw_timesteps`, :func:`add_noise` and :func:`training_target` read it, and so does
:func:`denoise`, which builds a fresh sampling scheduler ``from_config`` of the training one on
every call (schedulers hold run state) and runs the loop of diffusers' ``pipelines/ddpm/
pipeline_ddpm.py``: ``set_timesteps``, start from Gaussian noise scaled by ``init_noise_sigma``,
``scale_model_input``, predict, ``step(...).prev_sample``. A flow-matching run integrates the ODE
from t = 1 to 0 with :class:`diffusers.FlowMatchEulerDiscreteScheduler`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor

from unfold.errors import UnfoldError

__all__ = [
    "DEFAULT_OBJECTIVE",
    "DEFAULT_SAMPLER",
    "OBJECTIVES",
    "PRECISIONS",
    "PREDICTION_TYPES",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "Objective",
    "Precision",
    "PredictionType",
    "SamplerName",
    "TrainingScheduler",
    "add_noise",
    "check_precision",
    "denoise",
    "draw_timesteps",
    "make_sampling_scheduler",
    "make_training_scheduler",
    "network_precision",
    "objective_of",
    "resolve_sampler",
    "training_target",
]

Objective = Literal["diffusion", "flow-matching"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
DEFAULT_OBJECTIVE: Objective = "diffusion"
DiffusionSampler = Literal["ddpm", "ddim", "dpm-solver", "ddpm-large"]
SamplerName = Literal[DiffusionSampler, "euler"]
# The samplers of each objective, its default first (the unfolding runs choose their own:
# ConditionedModule.DEFAULT_SAMPLING). DDPM for diffusion: on the epsilon parton models it beat DPM-Solver at
# 25 steps on all observables but the lepton pT (W1 of m(ttbar) 14.8 vs 37.7 GeV); the deterministic
# solvers follow the learned score's errors exactly. Parton runs that predict v take DPM-Solver
# (PartonModule.CLEAN_STATE_SAMPLING). Flow matching has one: the Euler ODE step.
SAMPLERS: dict[str, tuple[str, ...]] = {"diffusion": get_args(DiffusionSampler), "flow-matching": ("euler",)}
# The diffusion samplers (the speed-fidelity table's rows).
SAMPLER_NAMES: tuple[str, ...] = SAMPLERS["diffusion"]
# None: the default of the run's objective (ddpm for diffusion, euler for flow matching).
DEFAULT_SAMPLER: SamplerName | None = None

TrainingScheduler = DDPMScheduler | FlowMatchEulerDiscreteScheduler
# What a diffusion denoiser predicts (diffusers' names): the noise, the clean state, or v.
PredictionType = Literal["epsilon", "sample", "v_prediction"]
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)

# The arithmetic of the denoising network during sampling. "bfloat16" runs its matrix products and
# attention in bfloat16 (torch.autocast) where the hardware has it (CPUs with AVX512-BF16 or AMX,
# recent GPUs); the states, the scheduler's steps, the multiplicities and the decoding stay float32.
Precision = Literal["float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def check_precision(precision: str) -> None:
    """Refuse, in one line, a precision that is not one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise UnfoldError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def network_precision(precision: Precision, device: torch.device | str | None) -> torch.autocast:
    """The autocast context that runs the denoising network at ``precision`` on ``device``."""
    check_precision(precision)
    return torch.autocast(torch.device(device or "cpu").type, dtype=torch.bfloat16, enabled=precision == "bfloat16")

_SCHEDULER_CLASSES: dict[str, type[SchedulerMixin]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm-solver": DPMSolverMultistepScheduler,
    "ddpm-large": DDPMScheduler,
    "euler": FlowMatchEulerDiscreteScheduler,
}
# Settings a sampler adds to the training configuration. "ddpm-large": the larger of the two fixed
# variances of each ancestral step (Ho et al., arXiv 2006.11239, section 3.2: beta_t instead of the
# posterior's beta-tilde_t). On the parton model (README) it brings the single-top spectra to the
# truth (pT(t_had) W1 6.7 -> 2.3 GeV) and loosens the two tops' correlation (m(ttbar) 5.2 -> 15.4).
_SCHEDULER_SETTINGS: dict[str, dict[str, str]] = {"ddpm-large": {"variance_type": "fixed_large"}}


def make_training_scheduler(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "squaredcos_cap_v2",
    prediction_type: PredictionType = "epsilon",
    objective: Objective = DEFAULT_OBJECTIVE,
) -> TrainingScheduler:
    """The training schedule of an objective, and the template of every sampler.

    Diffusion: the DDPM noise schedule. Samples are standardised, not images in [-1, 1], so
    ``clip_sample`` is off. Timesteps are spaced ``"leading"``: with the cosine schedule the last
    step has sqrt(abar) ~ 5e-5 (its beta is capped at 0.999), so a few-step sampler that started
    there would multiply the denoiser's error by the ratio of signal scales of consecutive steps
    (~1e3) and diverge; leading spacing starts at t = T - T / steps (sqrt(abar) ~ 0.06 for 25 of
    1000 steps). The price: starting from pure noise there drops that fraction of the data's
    mean, a bias of a few percent of the mean in standardised units that shrinks with more steps.
    A denoiser that predicts v or the clean state reads x_0 off the noisiest state without that
    amplification, so its samplers start at t = T - 1 (``"trailing"``, Lin et al., arXiv 2305.08891,
    section 3.3): from pure noise where the schedule has no signal left, without the bias.

    Flow matching: the linear path of :class:`diffusers.FlowMatchEulerDiscreteScheduler` without
    shift; ``num_train_timesteps`` only scales the time the network sees (t T), and
    ``beta_schedule`` and ``prediction_type`` do not apply (the target is the velocity).

    Args:
        num_train_timesteps: Number T of discrete diffusion steps (the time scale of flow matching).
        beta_schedule: A ``diffusers`` beta schedule; the default is the cosine schedule of
            Nichol & Dhariwal (arXiv 2102.09672).
        prediction_type: What the denoiser predicts: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        objective: ``"diffusion"`` or ``"flow-matching"``.

    Returns:
        A configured :class:`diffusers.DDPMScheduler` or :class:`diffusers.FlowMatchEulerDiscreteScheduler`.
    """
    if num_train_timesteps < 2:
        raise UnfoldError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
    if objective == "flow-matching":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=1.0)
    if objective != "diffusion":
        raise UnfoldError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if prediction_type not in PREDICTION_TYPES:
        raise UnfoldError(f"unknown prediction_type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,
        timestep_spacing="leading" if prediction_type == "epsilon" else "trailing",
    )


def objective_of(scheduler: TrainingScheduler) -> Objective:
    """The objective a training scheduler stands for."""
    return "flow-matching" if isinstance(scheduler, FlowMatchEulerDiscreteScheduler) else "diffusion"


def resolve_sampler(objective: Objective, sampler: SamplerName | None) -> SamplerName:
    """The sampler a run of ``objective`` uses: ``sampler``, or the objective's default for None.

    Raises:
        UnfoldError: If ``sampler`` belongs to no objective or to the other one.
    """
    if sampler is None:
        return SAMPLERS[objective][0]
    if sampler in SAMPLERS[objective]:
        return sampler
    if sampler in _SCHEDULER_CLASSES:
        raise UnfoldError(f"sampler {sampler!r} does not apply to a {objective} run; choose one of "
                          f"{', '.join(SAMPLERS[objective])} (default {SAMPLERS[objective][0]})")
    raise UnfoldError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS[objective])}")


def make_sampling_scheduler(training: TrainingScheduler, sampler: SamplerName | None) -> SchedulerMixin:
    """A fresh sampling scheduler built ``from_config`` of the training scheduler.

    Args:
        training: The scheduler the denoiser was trained with.
        sampler: Diffusion: ``"ddpm"`` (ancestral, stochastic), ``"ddim"`` (deterministic, eta = 0),
            ``"dpm-solver"`` (DPM-Solver++ multistep, arXiv 2211.01095) or ``"ddpm-large"`` (ancestral
            with the larger step variance beta_t); flow matching: ``"euler"``; None for the objective's default.

    Returns:
        A new scheduler sharing the training schedule.

    Raises:
        UnfoldError: If ``sampler`` is not one of the objective's choices.
    """
    name = resolve_sampler(objective_of(training), sampler)
    return _SCHEDULER_CLASSES[name].from_config(training.config, **_SCHEDULER_SETTINGS.get(name, {}))


def draw_timesteps(
    scheduler: TrainingScheduler, count: int, *, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Training times, shape (count,): diffusion, integers uniform in [0, T); flow matching,
    t T with t ~ U(0, 1), as floats."""
    num_train = scheduler.config.num_train_timesteps
    if objective_of(scheduler) == "flow-matching":
        return num_train * torch.rand(count, generator=generator, device=device)
    return torch.randint(0, num_train, (count,), generator=generator, device=device)


def add_noise(scheduler: TrainingScheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """The noisy state at time t: diffusion, q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise;
    flow matching, (1 - t / T) x_0 + (t / T) noise.

    Args:
        scheduler: The training scheduler.
        x0: Clean states, shape (E, ...).
        noise: Standard Gaussian noise, same shape as ``x0``.
        t: Times of :func:`draw_timesteps`, shape (E,).

    Returns:
        Noisy states x_t, same shape as ``x0``.
    """
    if objective_of(scheduler) == "flow-matching":
        sigma = (t / scheduler.config.num_train_timesteps).to(x0).view(-1, *[1] * (x0.ndim - 1))
        return (1 - sigma) * x0 + sigma * noise
    return scheduler.add_noise(x0, noise, t)


def training_target(scheduler: TrainingScheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """What the network learns to predict at times t (E,): for flow matching the velocity
    d x_t / dt = noise - x_0; for diffusion what the scheduler's ``prediction_type`` names, the noise
    (epsilon), the clean state (sample) or v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0 (v_prediction,
    Salimans & Ho, arXiv 2202.00512)."""
    if objective_of(scheduler) == "flow-matching":
        return noise - x0
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    return x0 if prediction_type == "sample" else noise


def denoise(
    predict_noise: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, ...],
    *,
    training_scheduler: TrainingScheduler,
    sampler: SamplerName | None = DEFAULT_SAMPLER,
    steps: int = 25,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    precision: Precision = "float32",
    progress: bool = False,
) -> Tensor:
    """Run the reverse process from Gaussian noise to clean states.

    A flow-matching run takes ``steps`` equal Euler steps of t from 1 to 0 (the sigmas
    ``linspace(1, 1 / steps, steps)`` of diffusers' Flux pipeline; the scheduler appends t = 0).

    Args:
        predict_noise: ``predict_noise(x_t, t)`` with x_t of ``shape`` and t of shape (shape[0],)
            (LongTensor for diffusion, float t T for flow matching) returns the network's
            prediction (noise or velocity), of ``shape``.
        shape: Shape of the states, (E, ...).
        training_scheduler: The scheduler the network was trained with (its class is the objective).
        sampler: Which sampling scheduler to use; None for the objective's default.
        steps: Number of denoising (integration) steps.
        generator: Source of the initial noise and of every stochastic step; a seeded generator
            makes sampling reproducible. It must live on ``device``.
        device: Where the states live.
        dtype: Floating-point type of the states.
        precision: Arithmetic of ``predict_noise`` (:data:`Precision`); its prediction is cast back to
            ``dtype`` before the scheduler's step.
        progress: Show a progress bar over the steps.

    Returns:
        The denoised states, of ``shape``.

    Raises:
        UnfoldError: If ``sampler`` does not fit the objective, ``precision`` is unknown, ``steps`` is not positive or
            exceeds the number of training timesteps, or ``shape`` is empty.
    """
    scheduler = make_sampling_scheduler(training_scheduler, sampler)
    network = network_precision(precision, device)
    num_train = training_scheduler.config.num_train_timesteps
    if not 1 <= steps <= num_train:
        raise UnfoldError(f"steps must be between 1 and {num_train}, got {steps}")
    if len(shape) == 0 or shape[0] < 1:
        raise UnfoldError(f"shape must start with a positive batch size, got {shape}")
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), device=device)
    else:
        scheduler.set_timesteps(steps, device=device)
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    x = x * getattr(scheduler, "init_noise_sigma", 1.0)  # the flow starts from unit noise at t = 1
    timesteps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm

        timesteps = tqdm(timesteps, desc=f"{type(scheduler).__name__} sampling", leave=False)
    for t in timesteps:
        model_input = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        with network:
            prediction = predict_noise(model_input, t.to(x.device).repeat(shape[0]))
        x = scheduler.step(prediction.to(x.dtype), t, x, generator=generator).prev_sample
    return x
