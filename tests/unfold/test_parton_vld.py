"""VLD contract: shapes, gradients, seeded sampling, errors, and a closure test on a known posterior."""

from __future__ import annotations

import pytest
import torch

from unfold.errors import UnfoldError
from unfold.generation.processes import get_process
from unfold.models.parton import ObjectRepresentation, VariationalLatentDiffusion, VLDLoss

SMALL = {"latent_width": 4, "width": 32, "depth": 1, "time_embedding_width": 16}


def small_model(
    latent: bool, features: int = 3, condition_width: int = 5, **extra
) -> VariationalLatentDiffusion:
    torch.manual_seed(0)
    return VariationalLatentDiffusion(
        features=features, condition_width=condition_width, latent=latent, **SMALL, **extra
    )


@pytest.mark.parametrize("latent", [True, False])
def test_sample_shapes_and_loss_terms(latent):
    model = small_model(latent)
    loss = model(torch.randn(8, 3), torch.randn(8, 5))
    assert isinstance(loss, VLDLoss)
    for term in (loss.reconstruction, loss.kl, loss.diffusion, loss.consistency, loss.total):
        assert term.shape == ()
        assert torch.isfinite(term)
    torch.testing.assert_close(
        loss.total, loss.reconstruction + loss.kl + loss.diffusion + loss.consistency
    )
    if not latent:
        assert loss.reconstruction == 0
        assert loss.kl == 0
    draws = model.eval().sample(torch.randn(6, 5), 4, sampler="ddim", steps=5)
    assert draws.shape == (6, 4, 3)


@pytest.mark.parametrize("latent", [True, False])
def test_gradients_reach_every_parameter_and_the_condition(latent):
    model = small_model(latent)
    with (
        torch.no_grad()
    ):  # the denoiser's output layer starts at zero, which blocks its inputs' gradients
        model.denoiser.output[-1].weight.normal_(0.0, 0.1)
    condition = torch.randn(16, 5, requires_grad=True)
    model(torch.randn(16, 3), condition).total.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    assert condition.grad.abs().sum() > 0


def test_consistency_term_is_used_with_a_representation(rng):
    representation = ObjectRepresentation.for_process(get_process("ttbar-allhadronic"))
    model = VariationalLatentDiffusion(
        features=55, condition_width=5, latent=True, representation=representation, **SMALL
    )
    loss = model(torch.randn(8, 55), torch.randn(8, 5))
    assert loss.consistency > 0
    with pytest.raises(UnfoldError, match="55"):
        VariationalLatentDiffusion(features=54, condition_width=5, representation=representation)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm-solver"])
def test_sampling_is_reproducible_with_a_seed(sampler):
    model = small_model(True).eval()
    condition = torch.randn(3, 5)

    def draw(seed: int) -> torch.Tensor:
        return model.sample(
            condition, 5, sampler=sampler, steps=4, generator=torch.Generator().manual_seed(seed)
        )

    torch.testing.assert_close(draw(7), draw(7), rtol=0, atol=0)
    assert not torch.allclose(draw(7), draw(8))


def test_draws_differ_between_events_and_draws():
    model = small_model(False).eval()
    draws = model.sample(torch.randn(2, 5), 3, steps=4, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(draws[:, 0], draws[:, 1])


def test_loss_is_reproducible_with_a_generator():
    model = small_model(True)
    x, condition = torch.randn(8, 3), torch.randn(8, 5)
    first = model(x, condition, generator=torch.Generator().manual_seed(3)).total
    second = model(x, condition, generator=torch.Generator().manual_seed(3)).total
    assert first == second


def test_noise_draws_train_on_as_many_noisy_states_of_each_event():
    """noise_draws = k is the loss of every event repeated k times, each at its own time and noise."""
    x, condition, weights = torch.randn(6, 3), torch.randn(6, 5), torch.rand(6)
    drawn = small_model(False, noise_draws=4)(x, condition, weights=weights, generator=torch.Generator().manual_seed(5))
    repeated = small_model(False, noise_draws=1)(
        x.repeat_interleave(4, 0), condition.repeat_interleave(4, 0), weights=weights.repeat_interleave(4),
        generator=torch.Generator().manual_seed(5),
    )
    torch.testing.assert_close(drawn.diffusion, repeated.diffusion)
    single = small_model(False, noise_draws=1)(x, condition, weights=weights, generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(drawn.diffusion, single.diffusion)
    with pytest.raises(UnfoldError, match="noise_draws must be positive"):
        small_model(False, noise_draws=0)


def test_block_conditioning_starts_as_the_input_conditioned_network_and_then_reads_the_condition():
    """FiLM's layer starts at zero (the same predictions as without it); trained, the condition moves every block."""
    plain, modulated = small_model(False, block_conditioning=False), small_model(False, block_conditioning=True)
    modulated.load_state_dict(plain.state_dict(), strict=False)
    state, t, condition = torch.randn(6, 3), torch.randint(0, 1000, (6,)), torch.randn(6, 5)
    with torch.no_grad():
        for model in (plain, modulated):
            model.denoiser.output[-1].weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(modulated.predict_noise(state, t, condition), plain.predict_noise(state, t, condition))
        modulated.denoiser.modulator.weight.normal_(0.0, 0.3)
        assert not torch.allclose(modulated.predict_noise(state, t, condition), plain.predict_noise(state, t, condition))
    assert plain.denoiser.modulator is None


def test_block_conditioning_with_time_modulates_by_the_noise_level_and_bad_values_are_refused():
    """With ``"with-time"`` the noise level moves every block too (from zero at the start); other values refused."""
    event_only, with_time = small_model(False, block_conditioning=True), small_model(False, block_conditioning="with-time")
    with_time.load_state_dict(event_only.state_dict(), strict=False)
    state, condition = torch.randn(4, 3), torch.randn(4, 5)
    early, late = torch.full((4,), 10), torch.full((4,), 900)
    with torch.no_grad():
        for model in (event_only, with_time):
            model.denoiser.output[-1].weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(with_time.predict_noise(state, late, condition), event_only.predict_noise(state, late, condition))
        with_time.time_modulator.weight.normal_(0.0, 0.3)
        for t in (early, late):
            assert not torch.allclose(with_time.predict_noise(state, t, condition), event_only.predict_noise(state, t, condition))
    assert event_only.time_modulator is None
    with pytest.raises(UnfoldError, match="block_conditioning must be false, true or 'with-time'"):
        small_model(False, block_conditioning="always")


def test_block_conditioning_shares_one_modulation_between_the_noisy_states_and_draws_of_an_event():
    """The loss and the draws computed with each event's modulation repeated equal those of the repeated events."""
    model = small_model(False, block_conditioning=True, noise_draws=4)
    with torch.no_grad():
        model.denoiser.output[-1].weight.normal_(0.0, 0.1)
        model.denoiser.modulator.weight.normal_(0.0, 0.3)
    x, condition = torch.randn(5, 3), torch.randn(5, 5)
    drawn = model(x, condition, generator=torch.Generator().manual_seed(2)).diffusion
    model.noise_draws = 1
    repeated = model(x.repeat_interleave(4, 0), condition.repeat_interleave(4, 0),
                     generator=torch.Generator().manual_seed(2)).diffusion
    torch.testing.assert_close(drawn, repeated)
    draws = model.eval().sample(condition, 3, steps=4, generator=torch.Generator().manual_seed(0))
    one_by_one = model.sample(condition.repeat_interleave(3, 0), 1, steps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.reshape(15, 3), one_by_one.reshape(15, 3))


def test_state_dict_round_trip_reproduces_samples():
    model = small_model(True).eval()
    copy = small_model(True)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1)
    copy.load_state_dict(model.state_dict())
    condition = torch.randn(2, 5)
    torch.testing.assert_close(
        model.sample(condition, 2, steps=3, generator=torch.Generator().manual_seed(0)),
        copy.eval().sample(condition, 2, steps=3, generator=torch.Generator().manual_seed(0)),
    )


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_draws_raise(n):
    with pytest.raises(UnfoldError, match="positive"):
        small_model(True).sample(torch.randn(2, 5), n)


def test_bad_shapes_and_sampler_raise():
    model = small_model(True)
    with pytest.raises(UnfoldError, match=r"\(E, 5\)"):
        model.sample(torch.randn(2, 4), 1)
    with pytest.raises(UnfoldError, match=r"\(E, 3\)"):
        model(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(UnfoldError, match="ddpm, ddim, dpm-solver"):
        model.sample(torch.randn(2, 5), 1, sampler="euler")


SMEARING = 0.5  # detector resolution s: y = x + N(0, s^2), x ~ N(0, 1)



@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("latent", "iterations"), [(True, 800), (False, 1500)])
def test_closure_on_gaussian_smearing(latent, iterations):
    """Posterior of x given y is N(y / (1 + s^2), s^2 / (1 + s^2)); the model must recover it."""
    torch.manual_seed(0)
    model = VariationalLatentDiffusion(
        features=1, condition_width=1, latent=latent, latent_width=2, width=64, depth=2
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    for _ in range(iterations):  # about 10 s on one idle core
        x = torch.randn(512, 1)
        loss = model(x, x + SMEARING * torch.randn(512, 1))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        schedule.step()
    observed = torch.tensor([[-1.5], [-0.5], [0.5], [1.5]])
    draws = model.eval().sample(
        observed, 3000, sampler="dpm-solver", steps=25, generator=torch.Generator().manual_seed(1)
    )
    posterior_mean = observed[:, 0] / (1 + SMEARING**2)
    posterior_std = (SMEARING**2 / (1 + SMEARING**2)) ** 0.5
    # The prior has mean 0 and width 1: an unconditional or untrained model misses by 0.4 to 1.2.
    torch.testing.assert_close(draws[..., 0].mean(1), posterior_mean, atol=0.1, rtol=0)
    torch.testing.assert_close(
        draws[..., 0].std(1), torch.full((4,), posterior_std), atol=0.12, rtol=0
    )
