"""The shared sampling loop: scheduler choice, reproducibility and an analytic Gaussian oracle."""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from unfold.errors import UnfoldError
from unfold.models.diffusion import (
    DEFAULT_SAMPLER,
    SAMPLER_NAMES,
    add_noise,
    denoise,
    make_sampling_scheduler,
    make_training_scheduler,
    resolve_sampler,
    training_target,
)
from unfold.models.particle import SetLatentDiffusion
from unfold.models.parton import VariationalLatentDiffusion

TARGET_MEAN, TARGET_STD = 1.0, 0.5


def gaussian_oracle(scheduler: DDPMScheduler):
    """The perfect denoiser for data x_0 ~ N(TARGET_MEAN, TARGET_STD^2): exact E[eps | x_t], or for a
    scheduler of ``prediction_type`` v_prediction E[v | x_t] = sqrt(abar) E[eps | x_t] - sqrt(1 - abar) E[x_0 | x_t]."""
    alphas_cumprod = scheduler.alphas_cumprod

    def predict_noise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        signal = alphas_cumprod[t].sqrt()[:, None]
        noise = (1 - alphas_cumprod[t]).sqrt()[:, None]
        variance = signal**2 * TARGET_STD**2 + noise**2
        eps = noise * (x - signal * TARGET_MEAN) / variance
        if scheduler.config.prediction_type == "epsilon":
            return eps
        clean = TARGET_MEAN + signal * TARGET_STD**2 * (x - signal * TARGET_MEAN) / variance
        return signal * eps - noise * clean

    return predict_noise


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [("ddpm", DDPMScheduler), ("ddim", DDIMScheduler), ("dpm-solver", DPMSolverMultistepScheduler),
     ("ddpm-large", DDPMScheduler)],
)
def test_sampling_scheduler_is_built_from_the_training_config(sampler, expected):
    training = make_training_scheduler(num_train_timesteps=200)
    built = make_sampling_scheduler(training, sampler)
    assert type(built) is expected
    assert built is not training
    torch.testing.assert_close(built.alphas_cumprod, training.alphas_cumprod)
    if sampler.startswith("ddpm"):
        assert built.config.variance_type == ("fixed_large" if sampler == "ddpm-large" else "fixed_small")


def test_the_larger_step_variance_keeps_the_width_that_few_ddpm_steps_lose():
    """With an exact denoiser, 25 ancestral steps with the posterior's variance (beta-tilde) narrow a Gaussian of
    width 0.5 by about 13 %; with beta_t ("ddpm-large") the width stays within 5 %."""
    training = make_training_scheduler()
    widths = {
        sampler: denoise(gaussian_oracle(training), (8_000, 1), training_scheduler=training, sampler=sampler, steps=25,
                         generator=torch.Generator().manual_seed(0)).std().item()
        for sampler in ("ddpm", "ddpm-large")
    }
    assert widths["ddpm"] < 0.92 * TARGET_STD
    assert widths["ddpm-large"] == pytest.approx(TARGET_STD, rel=0.05)


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(UnfoldError, match="ddpm, ddim, dpm-solver"):
        make_sampling_scheduler(make_training_scheduler(), "euler")
    with pytest.raises(UnfoldError, match="ddpm, ddim, dpm-solver"):
        denoise(
            lambda x, t: x, (2, 1), training_scheduler=make_training_scheduler(), sampler="heun"
        )


@pytest.mark.parametrize("steps", [0, 1001])
def test_steps_out_of_range_raise(steps):
    with pytest.raises(UnfoldError, match="steps"):
        denoise(lambda x, t: x, (2, 1), training_scheduler=make_training_scheduler(), steps=steps)


def test_add_noise_is_the_closed_form_forward_process():
    scheduler = make_training_scheduler()
    x0, noise = torch.randn(5, 3), torch.randn(5, 3)
    t = torch.tensor([0, 10, 500, 900, 999])
    abar = scheduler.alphas_cumprod[t][:, None]
    torch.testing.assert_close(
        add_noise(scheduler, x0, noise, t), abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    )


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", 100), ("ddim", 25), ("dpm-solver", 25), ("ddpm-large", 100)])
def test_perfect_denoiser_recovers_the_data_distribution(sampler, steps):
    training = make_training_scheduler()
    generator = torch.Generator().manual_seed(0)
    x = denoise(
        gaussian_oracle(training),
        (8_000, 1),
        training_scheduler=training,
        sampler=sampler,
        steps=steps,
        generator=generator,
    )
    assert x.shape == (8_000, 1)
    # Leading spacing starts below T, from noise without the sqrt(abar) ~ 0.06 share of the mean.
    assert abs(x.mean().item() - TARGET_MEAN) < 0.06
    # Finite-step discretisation shrinks the width slightly; the limit is the exact 0.5.
    assert x.std().item() == pytest.approx(TARGET_STD, rel=0.15)


def test_each_prediction_type_has_its_target():
    """The noise, the clean state, or v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0 at each row's time."""
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor([0, 300, 700, 999])
    abar = make_training_scheduler().alphas_cumprod[t][:, None]
    expected = {"epsilon": noise, "sample": x0, "v_prediction": abar.sqrt() * noise - (1 - abar).sqrt() * x0}
    for prediction_type, target in expected.items():
        torch.testing.assert_close(training_target(make_training_scheduler(prediction_type=prediction_type), x0, noise, t), target)
    with pytest.raises(UnfoldError, match="unknown prediction_type 'score'; choose one of epsilon, sample, v_prediction"):
        make_training_scheduler(prediction_type="score")
    flow = make_training_scheduler(prediction_type="v_prediction", objective="flow-matching")  # the velocity, always
    torch.testing.assert_close(training_target(flow, x0, noise, t.float()), noise - x0)


@pytest.mark.parametrize("sampler", ["dpm-solver", "ddim"])
def test_v_prediction_starts_from_pure_noise_without_the_mean_bias(sampler):
    """An epsilon denoiser's samplers start below T (leading spacing) and lose about sqrt(abar) ~ 0.06 of the
    data's mean (7 % here) with 10 DPM-Solver or DDIM steps; a v denoiser's start at T - 1 (trailing) and keep it."""
    means = {}
    for prediction_type in ("epsilon", "v_prediction"):
        training = make_training_scheduler(prediction_type=prediction_type)
        x = denoise(gaussian_oracle(training), (8_000, 1), training_scheduler=training, sampler=sampler, steps=10,
                    generator=torch.Generator().manual_seed(0))
        means[prediction_type] = x.mean().item()
    assert make_training_scheduler().config.timestep_spacing == "leading"
    assert make_training_scheduler(prediction_type="v_prediction").config.timestep_spacing == "trailing"
    assert TARGET_MEAN - means["epsilon"] > 0.05
    assert abs(means["v_prediction"] - TARGET_MEAN) < 0.015  # three errors of the mean of 8,000 draws


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_sampling_is_reproducible_with_a_seed(sampler):
    training = make_training_scheduler()

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return denoise(
            gaussian_oracle(training),
            (64, 2),
            training_scheduler=training,
            sampler=sampler,
            steps=10,
            generator=generator,
        )

    torch.testing.assert_close(draw(1), draw(1), rtol=0, atol=0)
    assert not torch.allclose(draw(1), draw(2))


def test_bfloat16_network_gives_float32_states_close_to_the_float32_draws():
    """The network's arithmetic in bfloat16 (a linear layer that computes the Gaussian oracle's noise):
    the states stay float32 and follow the float32 draws to bfloat16's rounding; an unknown precision is refused."""
    training = make_training_scheduler()
    oracle = gaussian_oracle(training)
    projection = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(projection.weight)

    def predict_noise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return projection(oracle(x, t))  # autocast runs the product in bfloat16

    def draw(precision: str) -> torch.Tensor:
        return denoise(predict_noise, (4_000, 1), training_scheduler=training, sampler="dpm-solver", steps=10,
                       generator=torch.Generator().manual_seed(0), precision=precision)

    full, half = draw("float32"), draw("bfloat16")
    assert half.dtype == torch.float32
    assert 0 < (half - full).abs().max() < 0.05  # bfloat16 keeps 8 bits of mantissa: rounding, not a new draw
    assert abs(half.mean().item() - full.mean().item()) < 0.005 and abs(half.std().item() / full.std().item() - 1) < 0.01
    with pytest.raises(UnfoldError, match="precision 'float16': expected one of float32, bfloat16"):
        denoise(predict_noise, (2, 1), training_scheduler=training, precision="float16")


def test_predict_noise_receives_one_timestep_per_row():
    training = make_training_scheduler()
    seen = []

    def predict_noise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        return torch.zeros_like(x)

    denoise(predict_noise, (3, 4), training_scheduler=training, sampler="ddim", steps=5)
    assert len(seen) == 5
    assert all(t.dtype == torch.long and t.shape == (3,) and bool((t == t[0]).all()) for t in seen)
    assert [int(t[0]) for t in seen] == sorted((int(t[0]) for t in seen), reverse=True)


def test_library_and_cli_share_one_default_sampler():
    """The sampling loop, both models and `unfold sample` default to one constant, None, which each
    objective resolves to its own sampler: DDPM for diffusion, Euler for flow matching."""
    from unfold.cli import build_parser
    from unfold.tasks import sample

    assert DEFAULT_SAMPLER is None
    assert resolve_sampler("diffusion", DEFAULT_SAMPLER) == "ddpm"
    assert resolve_sampler("flow-matching", DEFAULT_SAMPLER) == "euler"
    assert sample.DEFAULT_SAMPLER is DEFAULT_SAMPLER
    assert build_parser().parse_args(["sample"]).sampler is DEFAULT_SAMPLER
    assert build_parser().parse_args(["sample"]).steps is None  # the run's own (module.sampling())
    for function in (denoise, VariationalLatentDiffusion.sample, SetLatentDiffusion.sample, sample.sample_unfoldings):
        assert inspect.signature(function).parameters["sampler"].default == DEFAULT_SAMPLER, function
