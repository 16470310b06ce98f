"""SetDenoiser and ObjectVAE contracts: equivariance, padding inert, gradients, KL oracle."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from unfold.errors import UnfoldError
from unfold.models.particle.set_denoiser import SetDenoiser
from unfold.models.particle.set_vae import ObjectVAE

BATCH, PARTICLES, OBJECTS, LATENT, CONDITION = 3, 7, 5, 6, 10


def make_denoiser() -> SetDenoiser:
    torch.manual_seed(0)
    return SetDenoiser(
        latent_width=LATENT, condition_width=CONDITION, width=32, depth=2, heads=4
    ).eval()


def make_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    particle_mask = torch.rand(BATCH, PARTICLES, generator=generator) < 0.6
    particle_mask[:, 0] = True
    particle_mask[2] = False
    object_mask = torch.rand(BATCH, OBJECTS, generator=generator) < 0.7
    object_mask[:, 0] = True
    return {
        "particles": torch.randn(BATCH, PARTICLES, LATENT, generator=generator),
        "particle_mask": particle_mask,
        "event_slot": torch.randn(BATCH, LATENT, generator=generator),
        "timesteps": torch.tensor([0, 500, 999]),
        "objects": torch.randn(BATCH, OBJECTS, CONDITION, generator=generator),
        "object_mask": object_mask,
        "event": torch.randn(BATCH, CONDITION, generator=generator),
    }


@pytest.mark.parametrize("grad_enabled", [False, True])
def test_permuting_particles_permutes_outputs(grad_enabled: bool) -> None:
    denoiser, inputs = make_denoiser(), make_inputs()
    permutation = torch.randperm(PARTICLES, generator=torch.Generator().manual_seed(2))
    permuted = dict(
        inputs,
        particles=inputs["particles"][:, permutation],
        particle_mask=inputs["particle_mask"][:, permutation],
    )
    with torch.set_grad_enabled(grad_enabled):
        reference = denoiser(**inputs)
        output = denoiser(**permuted)
    torch.testing.assert_close(
        output.particles, reference.particles[:, permutation], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(output.event_slot, reference.event_slot, atol=1e-5, rtol=1e-5)


def test_permuting_detector_objects_changes_nothing() -> None:
    denoiser, inputs = make_denoiser(), make_inputs()
    permutation = torch.randperm(OBJECTS, generator=torch.Generator().manual_seed(3))
    permuted = dict(
        inputs,
        objects=inputs["objects"][:, permutation],
        object_mask=inputs["object_mask"][:, permutation],
    )
    reference, output = denoiser(**inputs), denoiser(**permuted)
    torch.testing.assert_close(output.particles, reference.particles, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.event_slot, reference.event_slot, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grad_enabled", [False, True])
def test_padding_never_leaks(grad_enabled: bool) -> None:
    denoiser, inputs = make_denoiser(), make_inputs()
    particle_pad = ~inputs["particle_mask"]
    object_pad = ~inputs["object_mask"]
    changed = dict(
        inputs,
        particles=torch.where(particle_pad.unsqueeze(-1), 1e3, inputs["particles"]),
        objects=torch.where(object_pad.unsqueeze(-1), -1e3, inputs["objects"]),
    )
    extra = 4
    widened = dict(
        inputs,
        particles=torch.cat([inputs["particles"], torch.randn(BATCH, extra, LATENT)], dim=1),
        particle_mask=torch.cat(
            [inputs["particle_mask"], torch.zeros(BATCH, extra, dtype=torch.bool)], dim=1
        ),
    )
    with torch.set_grad_enabled(grad_enabled):
        reference = denoiser(**inputs)
        after_change = denoiser(**changed)
        after_widening = denoiser(**widened)
    real = inputs["particle_mask"]
    assert (reference.particles[particle_pad] == 0).all()
    assert (after_change.particles[particle_pad] == 0).all()
    assert reference.particles[real].abs().min() > 0
    for output in (after_change, after_widening):
        torch.testing.assert_close(
            output.particles[:, :PARTICLES][real], reference.particles[real], atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(output.event_slot, reference.event_slot, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(reference.event_slot[2]).all()


def test_gradients_reach_every_parameter_and_the_condition() -> None:
    denoiser, inputs = make_denoiser(), make_inputs()
    objects = inputs["objects"].requires_grad_()
    event = inputs["event"].requires_grad_()
    output = denoiser(**inputs)
    (output.particles.square().sum() + output.event_slot.square().sum()).backward()
    for name, parameter in denoiser.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    assert objects.grad[inputs["object_mask"]].abs().sum() > 0
    assert (objects.grad[~inputs["object_mask"]] == 0).all()
    assert event.grad.abs().sum() > 0


def test_heads_must_divide_width() -> None:
    with pytest.raises(UnfoldError, match="divisible"):
        SetDenoiser(latent_width=4, condition_width=4, width=30, heads=4)


def test_object_vae_is_per_object_and_masked() -> None:
    torch.manual_seed(0)
    vae = ObjectVAE(num_features=5, num_types=4, latent_width=6, width=16, depth=2)
    features = torch.randn(2, 4, 5)
    types = torch.randint(0, 4, (2, 4))
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    posterior = vae.encode(features, types, mask)
    assert (posterior.mean[~mask] == 0).all()
    assert (posterior.log_var[~mask] == 0).all()
    changed = features.clone()
    changed[:, 1] += 10.0
    other = vae.encode(changed, types, mask)
    torch.testing.assert_close(other.mean[:, [0, 2, 3]], posterior.mean[:, [0, 2, 3]])
    decoded = vae.decode(posterior.sample(torch.Generator().manual_seed(1)), mask)
    assert decoded.features.shape == (2, 4, 5)
    assert decoded.type_logits.shape == (2, 4, 4)
    assert (decoded.features[~mask] == 0).all()
    assert (decoded.type_logits[~mask] == 0).all()
    oracle = kl_divergence(
        Normal(posterior.mean, (0.5 * posterior.log_var).exp()), Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(posterior.kl(), oracle)


def test_untyped_object_vae_has_no_type_logits() -> None:
    vae = ObjectVAE(num_features=2, num_types=0, latent_width=3, width=8, depth=1)
    mask = torch.ones(4, 1, dtype=torch.bool)
    posterior = vae.encode(torch.randn(4, 1, 2), torch.zeros(4, 1, dtype=torch.long), mask)
    decoded = vae.decode(posterior.mean, mask)
    assert decoded.features.shape == (4, 1, 2)
    assert decoded.type_logits.shape == (4, 1, 0)


def make_anchored_denoiser() -> SetDenoiser:
    torch.manual_seed(0)
    return SetDenoiser(
        latent_width=LATENT, condition_width=CONDITION, width=32, depth=2, heads=4, anchor_width=5
    ).eval()


def anchored_inputs() -> dict[str, torch.Tensor]:
    inputs = make_inputs()
    anchors = torch.randn(BATCH, OBJECTS, 5, generator=torch.Generator().manual_seed(4))
    return dict(inputs, anchors=anchors * inputs["object_mask"].unsqueeze(-1))


def test_anchors_travel_with_their_detector_objects() -> None:
    """Permuting the detector objects together with their anchors changes nothing; permuting the
    anchors alone (pairing them with other objects) does, so the pairing is what the denoiser reads."""
    denoiser, inputs = make_anchored_denoiser(), anchored_inputs()
    permutation = torch.randperm(OBJECTS, generator=torch.Generator().manual_seed(3))
    together = dict(inputs, **{k: inputs[k][:, permutation] for k in ("objects", "object_mask", "anchors")})
    reference = denoiser(**inputs)
    torch.testing.assert_close(denoiser(**together).particles, reference.particles, atol=1e-5, rtol=1e-5)
    inputs["object_mask"][:] = True
    anchors_only = dict(inputs, anchors=inputs["anchors"][:, permutation])
    assert not torch.allclose(denoiser(**anchors_only).particles, denoiser(**inputs).particles, atol=1e-4)


def test_anchors_are_required_exactly_when_built_with_them() -> None:
    inputs = anchored_inputs()
    with pytest.raises(UnfoldError, match=r"detector anchors: expected shape \(3, 5, 5\), got None"):
        make_anchored_denoiser()(**dict(inputs, anchors=None))
    with pytest.raises(UnfoldError, match=r"expected shape \(3, 5, 5\), got \(3, 5, 4\)"):
        make_anchored_denoiser()(**dict(inputs, anchors=inputs["anchors"][..., :4]))
    with pytest.raises(UnfoldError, match="has no detector anchors"):
        make_denoiser()(**inputs)


@pytest.mark.parametrize("grad_enabled", [False, True])
def test_one_way_attention_is_the_transformer_with_detector_queries_blind_to_generated_tokens(grad_enabled: bool) -> None:
    """The cached one-way path equals torch's transformer over all tokens, with an attention mask that
    keeps the detector tokens from reading the event slot and the particles."""
    denoiser, inputs = make_anchored_denoiser(), anchored_inputs()
    inputs["object_mask"][2] = False  # an event without detector objects
    with torch.set_grad_enabled(grad_enabled):
        output = denoiser(**inputs)
        _, event_condition = denoiser.detector_memory(
            inputs["objects"], inputs["object_mask"], inputs["event"], inputs["anchors"]
        )
        condition = denoiser.time_embedding(inputs["timesteps"]) + event_condition
        slot = denoiser.event_slot_in(inputs["event_slot"]) + condition + denoiser.role_embedding[0]
        particles = denoiser.particle_in(inputs["particles"]) + (condition + denoiser.role_embedding[1]).unsqueeze(1)
        detector = denoiser.object_in(inputs["objects"]) + denoiser.role_embedding[2] + denoiser.anchor_in(inputs["anchors"])
        tokens = torch.cat([slot.unsqueeze(1), particles, detector], dim=1)
        generated, size = 1 + PARTICLES, tokens.shape[1]
        padding = ~torch.cat([torch.ones(BATCH, 1, dtype=torch.bool), inputs["particle_mask"], inputs["object_mask"]], 1)
        blocked = padding[:, None, :].repeat(1, size, 1)  # (query, key) pairs kept apart
        blocked[:, generated:, :generated] = True  # detector queries never see generated keys
        blocked[2, generated, generated] = False  # as the one-way path: the empty event's first slot sees itself
        diagonal = torch.arange(generated, size)
        blocked[:, diagonal, diagonal] = False  # padded detector queries read themselves: finite, never read back
        hidden = denoiser.output_norm(denoiser.transformer(tokens, mask=blocked.repeat_interleave(denoiser.heads, 0)))
    keep = inputs["particle_mask"].unsqueeze(-1)
    expected = torch.where(keep, denoiser.particle_out(hidden[:, 1:generated]), 0.0)  # torch may leave padded rows NaN
    torch.testing.assert_close(output.particles, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.event_slot, denoiser.event_slot_out(hidden[:, 0]), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(output.event_slot).all()


def test_two_way_attention_lets_the_detector_tokens_read_the_particles() -> None:
    """With detector_reads_particles a particle changes the detector tokens' states, and through them
    the other particles; one-way, a particle reaches another only directly."""
    torch.manual_seed(0)
    two_way = SetDenoiser(latent_width=LATENT, condition_width=CONDITION, width=32, depth=2, heads=4,
                          detector_reads_particles=True).eval()
    one_way = make_denoiser()
    one_way.load_state_dict(two_way.state_dict())
    inputs = make_inputs()
    assert not torch.allclose(two_way(**inputs).particles, one_way(**inputs).particles, atol=1e-4)


def test_slot_classes_travel_with_their_particles_and_are_required_exactly_when_built_with_them() -> None:
    torch.manual_seed(0)
    denoiser = SetDenoiser(latent_width=LATENT, condition_width=CONDITION, width=32, depth=2, num_slot_classes=2).eval()
    inputs = make_inputs()
    classes = torch.randint(0, 2, (BATCH, PARTICLES), generator=torch.Generator().manual_seed(5))
    permutation = torch.randperm(PARTICLES, generator=torch.Generator().manual_seed(2))
    reference = denoiser(**inputs, particle_classes=classes)
    permuted = denoiser(**dict(inputs, particles=inputs["particles"][:, permutation],
                               particle_mask=inputs["particle_mask"][:, permutation]),
                        particle_classes=classes[:, permutation])
    torch.testing.assert_close(permuted.particles, reference.particles[:, permutation], atol=1e-5, rtol=1e-5)
    flipped = denoiser(**inputs, particle_classes=1 - classes)
    real = inputs["particle_mask"]
    assert not torch.allclose(flipped.particles[real], reference.particles[real], atol=1e-4)
    with pytest.raises(UnfoldError, match=r"particle_classes must be given exactly .* \(num_slot_classes 2\)"):
        denoiser(**inputs)
    with pytest.raises(UnfoldError, match=r"\(num_slot_classes 0\)"):
        make_denoiser()(**inputs, particle_classes=classes)
