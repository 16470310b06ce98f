"""Conditional flow matching (arXiv 2210.02747, 2209.03003) in the diffusion code path: training
state and target, the Euler sampler, closure on a conditional Gaussian, the CLI and old checkpoints."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from unfold.cli import main
from unfold.errors import UnfoldError
from unfold.models.diffusion import (
    add_noise,
    denoise,
    draw_timesteps,
    make_sampling_scheduler,
    make_training_scheduler,
    training_target,
)
from unfold.models.particle import ParticleBatch, SetLatentDiffusion
from unfold.models.parton import VariationalLatentDiffusion
from unfold.training.unfolding_modules import PartonModule

T = 1000
DATA_MEAN, DATA_STD = 1.0, 0.5


def test_flow_state_and_target_at_a_known_time():
    """x_t = (1 - t) x_0 + t noise and the velocity noise - x_0, at t = 0.25, 0.5 and 1."""
    scheduler = make_training_scheduler(T, objective="flow-matching")
    assert isinstance(scheduler, FlowMatchEulerDiscreteScheduler)
    x0, noise = torch.randn(3, 4), torch.randn(3, 4)
    t = torch.tensor([0.25, 0.5, 1.0]) * T
    expected = torch.stack([0.75 * x0[0] + 0.25 * noise[0], 0.5 * x0[1] + 0.5 * noise[1], noise[2]])
    torch.testing.assert_close(add_noise(scheduler, x0, noise, t), expected)
    torch.testing.assert_close(training_target(scheduler, x0, noise, t), noise - x0)
    # diffusion keeps epsilon prediction
    torch.testing.assert_close(training_target(make_training_scheduler(T), x0, noise, t.long()), noise)


def test_flow_times_are_continuous_and_span_the_path():
    scheduler = make_training_scheduler(T, objective="flow-matching")
    t = draw_timesteps(scheduler, 20_000, generator=torch.Generator().manual_seed(0))
    assert t.is_floating_point()
    assert t.min() >= 0
    assert t.max() < T
    assert t.mean().item() == pytest.approx(T / 2, rel=0.02)
    assert draw_timesteps(make_training_scheduler(T), 5).dtype == torch.long


def test_the_vld_regresses_the_velocity_at_a_known_time(monkeypatch):
    """Through the model: the state the denoiser sees at t = T/2 and the loss against noise - x."""
    import unfold.models.parton.vld as vld_module

    model = VariationalLatentDiffusion(features=3, condition_width=2, latent=False, width=8, depth=1,
                                       time_embedding_width=4, objective="flow-matching", noise_draws=1)
    monkeypatch.setattr(vld_module, "draw_timesteps", lambda scheduler, count, **_: torch.full((count,), T / 2))
    seen = {}

    def predict(noisy, t, condition, modulation=None):
        seen["noisy"], seen["t"] = noisy, t
        return torch.zeros_like(noisy)

    monkeypatch.setattr(model, "predict_noise", predict)
    x = torch.randn(5, 3)
    loss = model(x, torch.randn(5, 2))
    noise = 2 * seen["noisy"] - x  # x_t = x / 2 + noise / 2
    torch.testing.assert_close(seen["t"], torch.full((5,), T / 2))
    torch.testing.assert_close(loss.diffusion, (noise - x).pow(2).mean())


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact E[noise - x_0 | x_t] for x_0 ~ N(DATA_MEAN, DATA_STD^2) on the linear path."""
    s = (t / T)[:, None]
    variance = (1 - s) ** 2 * DATA_STD**2 + s**2
    centred = x - (1 - s) * DATA_MEAN
    noise = s / variance * centred
    x0 = DATA_MEAN + (1 - s) * DATA_STD**2 / variance * centred
    return noise - x0


def test_the_euler_sampler_integrates_the_exact_velocity_from_noise_to_data():
    training = make_training_scheduler(T, objective="flow-matching")
    times = []

    def velocity(x, t):
        times.append(t)
        return gaussian_velocity(x, t)

    x = denoise(velocity, (20_000, 1), training_scheduler=training, steps=100,
                generator=torch.Generator().manual_seed(0))
    assert len(times) == 100
    assert times[0][0] == T
    assert all(t.is_floating_point() and t.shape == (20_000,) for t in times)
    assert x.mean().item() == pytest.approx(DATA_MEAN, abs=0.02)
    assert x.std().item() == pytest.approx(DATA_STD, rel=0.02)
    # Euler is first order: 10 steps narrow the width by ~13 % (0.433 measured), 100 by ~1 %.
    coarse = denoise(gaussian_velocity, (20_000, 1), training_scheduler=training, steps=10,
                     generator=torch.Generator().manual_seed(0))
    assert coarse.std().item() < 0.95 * x.std().item()


def test_samplers_of_the_other_objective_are_refused_in_one_line():
    flow, diffusion = make_training_scheduler(T, objective="flow-matching"), make_training_scheduler(T)
    assert isinstance(make_sampling_scheduler(flow, None), FlowMatchEulerDiscreteScheduler)
    with pytest.raises(UnfoldError, match=r"^sampler 'ddpm' does not apply to a flow-matching run; choose one of euler"):
        denoise(gaussian_velocity, (2, 1), training_scheduler=flow, sampler="ddpm")
    with pytest.raises(UnfoldError, match="'euler' does not apply to a diffusion run; choose one of ddpm, ddim, dpm-solver"):
        make_sampling_scheduler(diffusion, "euler")
    with pytest.raises(UnfoldError, match="unknown objective 'score'"):
        make_training_scheduler(T, objective="score")  # type: ignore[arg-type]


def test_closure_on_a_conditional_gaussian(one_thread):
    """x | c ~ N(c, 0.1^2), c ~ U(-1, 1), learned by the plain model's MLP with flow matching: the
    sampled mean and width at c = -0.6 and 0.6 are the data's."""
    torch.manual_seed(0)
    model = VariationalLatentDiffusion(features=1, condition_width=1, latent=False, width=64, depth=2,
                                       time_embedding_width=16, objective="flow-matching")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(400):
        condition = 2 * torch.rand(256, 1, generator=generator) - 1
        x = condition + 0.1 * torch.randn(256, 1, generator=generator)
        optimizer.zero_grad()
        model(x, condition, generator=generator).total.backward()
        optimizer.step()
    condition = torch.tensor([[-0.6], [0.6]])
    draws = model.eval().sample(condition, 4000, steps=25, generator=torch.Generator().manual_seed(2))[..., 0]
    torch.testing.assert_close(draws.mean(1), condition[:, 0], atol=0.04, rtol=0)
    torch.testing.assert_close(draws.std(1), torch.full((2,), 0.1), atol=0.03, rtol=0)


def test_a_flow_particle_model_trains_and_samples_with_euler_only():
    torch.manual_seed(0)
    model = SetLatentDiffusion(condition_width=8, max_particles=5, latent_width=4, width=16, depth=1, vae_depth=1,
                               objective="flow-matching")
    generator = torch.Generator().manual_seed(1)

    def make_condition():
        return torch.randn(3, 4, 8), torch.arange(4) < torch.tensor([[4], [2], [0]]), torch.randn(3, 8)

    mask = torch.arange(5) < torch.tensor([[5], [2], [0]])
    batch = ParticleBatch(torch.randn(3, 5, 5, generator=generator) * mask.unsqueeze(-1),
                          torch.randint(0, 4, (3, 5), generator=generator) * mask, mask, torch.randn(3, 2))
    loss = model.loss(batch, *make_condition(), generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(loss.total)
    assert loss.diffusion > 0
    loss.total.backward()
    assert model.denoiser.particle_out.weight.grad.abs().sum() > 0
    draws = model.eval().sample(*make_condition(), 2, steps=3, generator=torch.Generator().manual_seed(4))
    assert torch.isfinite(draws.features).all()
    assert draws.features.shape[:2] == (3, 2)
    with pytest.raises(UnfoldError, match="does not apply to a flow-matching run"):
        model.sample(*make_condition(), 2, sampler="ddim")


def test_a_flow_run_trains_and_samples_through_the_cli_and_an_old_checkpoint_loads_as_diffusion(
    semileptonic_files, tmp_path
):
    train, test = semileptonic_files
    assert main(["train", "parton", "--model.objective", "flow-matching", "--epochs", "1", "--limit", "200",
                 "--data", str(train), "--out", str(tmp_path / "runs"), "--accelerator", "cpu"]) == 0
    (run,) = (tmp_path / "runs" / "parton").iterdir()
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert PartonModule.load_from_checkpoint(checkpoint, map_location="cpu").objective == "flow-matching"
    out = tmp_path / "samples.h5"
    assert main(["sample", "parton", "--n", "2", "--checkpoint", str(run), "--data", str(test), "--out", str(out),
                 "--limit", "20", "--steps", "5"]) == 0
    with h5py.File(out) as file:
        assert file.attrs["sampler"] == "euler"
        assert file["SAMPLES/PARTONS/b_had/pt"].shape == (20, 2)
        assert np.isfinite(file["SAMPLES/PARTONS/b_had/pt"][...]).all()
    assert main(["sample", "parton", "--n", "2", "--checkpoint", str(run), "--data", str(test),
                 "--out", str(tmp_path / "refused.h5"), "--sampler", "ddpm"]) == 2
    assert not (tmp_path / "refused.h5").exists()
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    del saved["hyper_parameters"]["model"]["objective"]  # as written before the option existed
    torch.save(saved, tmp_path / "old.ckpt")
    old = PartonModule.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu")
    assert old.objective == "diffusion"
    assert old.hparams.model["objective"] == "diffusion"
