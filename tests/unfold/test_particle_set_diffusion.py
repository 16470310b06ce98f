"""SetLatentDiffusion: loss terms and gradients, sampled multiplicity, seeds, padding, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unfold.errors import UnfoldError
from unfold.models.diffusion.sampler import SAMPLER_NAMES
from unfold.models.particle.representation import ParticleBatch, ParticleRepresentation
from unfold.models.particle.set_diffusion import SetLatentDiffusion

EVENTS, OBJECTS, CONDITION, SLOTS = 3, 6, 16, 9


def make_model(**overrides: object) -> SetLatentDiffusion:
    torch.manual_seed(0)
    options = {
        "condition_width": CONDITION,
        "max_particles": SLOTS,
        "latent_width": 6,
        "width": 32,
        "depth": 2,
        "vae_depth": 2,
        "num_train_timesteps": 100,
    }
    return SetLatentDiffusion(**{**options, **overrides}).eval()


def make_condition() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    objects = torch.randn(EVENTS, OBJECTS, CONDITION, generator=generator)
    object_mask = torch.arange(OBJECTS) < torch.tensor([[6], [4], [0]])
    event = torch.randn(EVENTS, CONDITION, generator=generator)
    return objects, object_mask, event


def make_batch() -> ParticleBatch:
    generator = torch.Generator().manual_seed(2)
    mask = torch.arange(SLOTS) < torch.tensor([[5], [9], [0]])
    features = torch.randn(EVENTS, SLOTS, 5, generator=generator) * mask.unsqueeze(-1)
    types = torch.randint(0, 4, (EVENTS, SLOTS), generator=generator) * mask
    return ParticleBatch(features, types, mask, torch.randn(EVENTS, 2, generator=generator))


def test_loss_total_is_weighted_sum_and_gradients_reach_everything() -> None:
    model = make_model(kl_weight=0.5, diffusion_weight=2.0, multiplicity_weight=3.0).train()
    objects, object_mask, event = make_condition()
    objects.requires_grad_()
    event.requires_grad_()
    loss = model.loss(
        make_batch(), objects, object_mask, event, generator=torch.Generator().manual_seed(3)
    )
    expected = (
        3.0 * loss.multiplicity
        + loss.reconstruction
        + loss.type_cross_entropy
        + loss.event_reconstruction
        + 0.5 * loss.kl
        + 2.0 * loss.diffusion
    )
    torch.testing.assert_close(loss.total, expected)
    loss.total.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    assert objects.grad[object_mask].abs().sum() > 0
    assert (objects.grad[~object_mask] == 0).all()
    assert event.grad.abs().sum() > 0


def test_the_diffusion_loss_leaves_the_vae_encoders_alone() -> None:
    """The denoiser learns the latents as the VAE makes them: its loss trains the denoiser and the
    condition, never the encoders (whose latents it would otherwise shrink toward a constant)."""
    model = make_model().train()
    objects, object_mask, event = make_condition()
    event.requires_grad_()
    model.loss(make_batch(), objects, object_mask, event, generator=torch.Generator().manual_seed(3)).diffusion.backward()
    for name, parameter in model.named_parameters():
        reached = parameter.grad is not None and parameter.grad.abs().sum() > 0
        assert reached == name.startswith("denoiser."), name
    assert event.grad.abs().sum() > 0


def test_loss_ignores_padded_particle_slots() -> None:
    model = make_model()
    batch = make_batch()
    junk = ParticleBatch(
        torch.where(batch.mask.unsqueeze(-1), batch.features, 50.0),
        torch.where(batch.mask, batch.types, 3),
        batch.mask,
        batch.event_features,
    )
    condition = make_condition()
    reference = model.loss(batch, *condition, generator=torch.Generator().manual_seed(4))
    changed = model.loss(junk, *condition, generator=torch.Generator().manual_seed(4))
    for name in (
        "multiplicity",
        "reconstruction",
        "type_cross_entropy",
        "kl",
        "diffusion",
        "total",
    ):
        torch.testing.assert_close(getattr(changed, name), getattr(reference, name), msg=name)


def test_loss_ignores_the_order_and_padding_of_the_detector_objects() -> None:
    """Real objects moved behind padding, junk in the padding, and padded columns added: same loss."""
    model = make_model(anchor_width=5)
    objects, object_mask, event = make_condition()
    anchors = torch.randn(EVENTS, OBJECTS, 5, generator=torch.Generator().manual_seed(6)) * object_mask.unsqueeze(-1)
    reference = model.loss(make_batch(), objects, object_mask, event, anchors=anchors,
                           generator=torch.Generator().manual_seed(4))
    order = torch.tensor([5, 3, 0, 4, 1, 2])
    extra = lambda values, fill: torch.cat([values[:, order], torch.full_like(values[:, :4], fill)], dim=1)
    shuffled = model.loss(make_batch(), extra(objects, 7.0), extra(object_mask, False), event,
                          anchors=extra(anchors, -3.0), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(shuffled.total, reference.total)
    torch.testing.assert_close(shuffled.diffusion, reference.diffusion)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
@pytest.mark.parametrize("distribution", ["categorical", "negative-binomial"])
def test_sampled_sets_have_exactly_the_sampled_multiplicity(
    sampler: str, distribution: str
) -> None:
    model = make_model(multiplicity_distribution=distribution)
    sample = model.sample(
        *make_condition(), 4, sampler=sampler, steps=3, generator=torch.Generator().manual_seed(5)
    )
    assert sample.features.shape == (EVENTS, 4, SLOTS, 5)
    assert sample.types.shape == sample.mask.shape == (EVENTS, 4, SLOTS)
    assert sample.event_features.shape == (EVENTS, 4, 2)
    assert torch.equal(sample.mask.sum(-1), sample.multiplicity)
    assert torch.equal(sample.mask, torch.arange(SLOTS) < sample.multiplicity.unsqueeze(-1))
    assert (sample.features[~sample.mask] == 0).all()
    assert (sample.types[~sample.mask] == 0).all()
    assert sample.types.min() >= 0
    assert sample.types.max() < 4
    assert torch.isfinite(sample.features).all()
    assert torch.isfinite(sample.event_features).all()
    assert sample.multiplicity.unique().numel() > 1


@pytest.mark.parametrize(("leptons", "b_jets"), [(0, 2), (1, 2), (2, 0)])
def test_every_draw_holds_the_drawn_numbers_of_leptons_and_b_jets(leptons: int, b_jets: int) -> None:
    """With the lepton and b-jet counts forced, every draw holds exactly that many electrons or muons
    and b jets, whatever the (untrained) decoder's type logits say; the light-jet count still varies."""
    model = make_model()
    with torch.no_grad():
        for head, count in zip(model.multiplicity.heads[:2], (leptons, b_jets), strict=True):
            head.network[-1].weight.zero_()
            head.network[-1].bias.copy_(torch.where(torch.arange(SLOTS + 1) == count, 50.0, -50.0))
    sample = model.sample(*make_condition(), 8, steps=3, generator=torch.Generator().manual_seed(5))
    assert (((sample.types >= 2) & sample.mask).sum(-1) == leptons).all()
    assert (((sample.types == 1) & sample.mask).sum(-1) == b_jets).all()
    light = ((sample.types == 0) & sample.mask).sum(-1)
    assert torch.equal(light, sample.multiplicity - leptons - b_jets)
    assert light.unique().numel() > 1


def test_the_multiplicity_term_is_the_likelihood_of_the_counts_by_class() -> None:
    model, batch, (objects, object_mask, event) = make_model(), make_batch(), make_condition()
    real = batch.mask
    counts = torch.stack([((batch.types >= 2) & real).sum(-1), ((batch.types == 1) & real).sum(-1),
                          ((batch.types == 0) & real).sum(-1)], dim=-1)
    expected = -model.multiplicity.log_prob(event, counts).mean()
    loss = model.loss(batch, objects, object_mask, event, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss.multiplicity, expected)
    assert (counts[:, 0] > 0).any() and (counts[:, 1] > 0).any()


def test_ranked_slots_tell_the_denoiser_each_slot_s_class_and_rank() -> None:
    """Training codes follow the truth's order within each class; sampling codes count within each drawn class."""
    model = make_model(ranked_slots=2)
    seen = []
    forward = model.denoiser.forward
    model.denoiser.forward = lambda *args: seen.append(args[8]) or forward(*args)  # the codes
    types = torch.tensor([[0, 1, 0, 0, 2, 1, 0, 0, 0], [3, 0, 1, 0, 0, 0, 0, 0, 0], [0] * 9])
    batch = make_batch()
    batch = ParticleBatch(batch.features, types * batch.mask, batch.mask, batch.event_features)
    model.loss(batch, *make_condition(), generator=torch.Generator().manual_seed(3))
    codes = seen[-1][:, :5]  # light jets: class 2, b jets: class 1, leptons: class 0; two ranks each
    torch.testing.assert_close(codes[0], torch.tensor([4, 2, 5, 5, 0]))
    torch.testing.assert_close(codes[1], torch.tensor([0, 4, 2, 5, 5]))
    with torch.no_grad():
        for head, count in zip(model.multiplicity.heads, (1, 3, 2), strict=True):
            head.network[-1].weight.zero_()
            head.network[-1].bias.copy_(torch.where(torch.arange(SLOTS + 1) == count, 50.0, -50.0))
    calls = []
    predict = model.denoiser.predict
    model.denoiser.predict = lambda *args: calls.append(args[5]) or predict(*args)  # the codes
    model.sample(*make_condition(), 2, steps=1, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(codes, torch.tensor([0, 2, 3, 3, 4, 5]).expand_as(codes)) for codes in calls)


def test_sampling_is_reproducible_with_a_seed() -> None:
    model, condition = make_model(), make_condition()
    first = model.sample(*condition, 3, steps=4, generator=torch.Generator().manual_seed(7))
    again = model.sample(*condition, 3, steps=4, generator=torch.Generator().manual_seed(7))
    other = model.sample(*condition, 3, steps=4, generator=torch.Generator().manual_seed(8))
    for name in ("features", "types", "mask", "multiplicity", "event_features"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.event_features, other.event_features)


def test_padded_detector_objects_do_not_change_samples() -> None:
    model = make_model()
    objects, object_mask, event = make_condition()
    junk = torch.where(object_mask.unsqueeze(-1), objects, 1e3)
    reference = model.sample(
        objects, object_mask, event, 2, steps=3, generator=torch.Generator().manual_seed(9)
    )
    changed = model.sample(
        junk, object_mask, event, 2, steps=3, generator=torch.Generator().manual_seed(9)
    )
    torch.testing.assert_close(changed.features, reference.features, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        changed.event_features, reference.event_features, atol=1e-5, rtol=1e-5
    )


def test_samples_decode_to_collections_with_the_sampled_multiplicity() -> None:
    rng = np.random.default_rng(10)
    particles = {
        "jets": {
            "pt": rng.uniform(20, 200, (50, 6)),
            "eta": rng.uniform(-2, 2, (50, 6)),
            "phi": rng.uniform(-3, 3, (50, 6)),
            "mass": rng.uniform(1, 20, (50, 6)),
            "btag": rng.integers(0, 2, (50, 6)).astype(np.float32),
            "MASK": rng.random((50, 6)) < 0.7,
        },
        "lepton": {
            "pt": rng.uniform(25, 100, (50, 1)),
            "eta": rng.uniform(-2, 2, (50, 1)),
            "phi": rng.uniform(-3, 3, (50, 1)),
            "mass": np.zeros((50, 1)),
            "pdgid": rng.choice([11, -13], (50, 1)),
            "MASK": np.ones((50, 1), dtype=bool),
        },
        "met": {"met": rng.uniform(0, 100, 50), "phi": rng.uniform(-3, 3, 50)},
    }
    representation = ParticleRepresentation(max_particles=SLOTS).fit(particles)
    sample = make_model().sample(
        *make_condition(), 5, steps=2, generator=torch.Generator().manual_seed(11)
    )
    decoded = representation.decode(
        sample.features, sample.types, sample.mask, sample.event_features
    )
    counts = decoded["jets"]["MASK"].sum(-1) + decoded["lepton"]["MASK"].sum(-1)
    np.testing.assert_array_equal(counts, sample.multiplicity.numpy())
    assert decoded["jets"]["pt"].shape == (EVENTS, 5, SLOTS)
    assert decoded["met"]["met"].shape == (EVENTS, 5)
    assert (np.diff(decoded["jets"]["pt"], axis=-1)[decoded["jets"]["MASK"][..., 1:]] <= 0).all()


def test_bad_inputs_raise_clear_errors() -> None:
    model = make_model()
    objects, object_mask, event = make_condition()
    with pytest.raises(UnfoldError, match=r"objects \(E, N, D\)"):
        model.sample(objects, object_mask, event[:2], 2)
    with pytest.raises(UnfoldError, match="ddpm, ddim, dpm-solver"):
        model.sample(objects, object_mask, event, 2, sampler="euler")  # type: ignore[arg-type]
    batch = make_batch()
    narrow = ParticleBatch(
        batch.features[:, :4], batch.types[:, :4], batch.mask[:, :4], batch.event_features
    )
    with pytest.raises(UnfoldError, match=r"expected \(3, 9, F\)"):
        model.loss(narrow, objects, object_mask, event)
    with pytest.raises(UnfoldError, match="categorical, negative-binomial"):
        make_model(multiplicity_distribution="poisson")
    with pytest.raises(UnfoldError, match="typed_counts needs the 4 object types"):
        make_model(num_types=3)
