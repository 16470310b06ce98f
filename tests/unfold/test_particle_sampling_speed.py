"""The compact particle sampler draws what the padded one did: same seeds, same draws (float tolerance).

``padded_sample`` is ``SetLatentDiffusion.sample`` as it was before the compact path (commit 289109b):
every draw repeats its event's condition and runs the denoiser over all 1 + M_max + N tokens. Its
speed against the compact path is ``benchmarks/bench_particle_sampling.py``.
"""

from __future__ import annotations

import pytest
import torch

from unfold.errors import UnfoldError
from unfold.models.diffusion.sampler import denoise
from unfold.models.particle.pairing import NO_CLASS, DetectorSlots, class_ranks, pair_slots
from unfold.models.particle.set_diffusion import ParticleSample, SetLatentDiffusion

EVENTS, OBJECTS, CONDITION, SLOTS = 5, 7, 16, 9


@torch.no_grad()
def padded_sample(model: SetLatentDiffusion, objects: torch.Tensor, object_mask: torch.Tensor, event: torch.Tensor,
                  anchors: torch.Tensor | None, n: int, *, sampler: str | None, steps: int,
                  generator: torch.Generator, detector_slots: DetectorSlots | None = None) -> ParticleSample:
    """The padded reference: one denoiser call per step over E n draws of 1 + M_max + N tokens."""
    num_events, slots, width = event.shape[0], model.max_particles, model.latent_width
    if model.typed_counts:  # lepton, b-jet and light-jet slots in turn
        counts = model.multiplicity.sample(event, n, generator).flatten(0, 1)
        blocks = [torch.cat([c, slots - c.sum(0, True)]) for c in counts]  # padding last, as light jets
        classes = torch.stack([torch.repeat_interleave(torch.tensor([0, 1, 2, 2]), b) for b in blocks])
        ranks = torch.stack([torch.cat([torch.arange(int(k)) for k in b]) for b in blocks])
        codes = classes * model.ranked_slots + ranks.clamp(max=model.ranked_slots - 1) if model.ranked_slots else classes
        multiplicity = counts.sum(-1).view(num_events, n)
    else:
        multiplicity, classes = model.multiplicity.sample(event, n, generator), None
    mask = torch.arange(slots) < multiplicity.unsqueeze(-1)
    flat_mask = mask.flatten(0, 1)
    keep = flat_mask.unsqueeze(-1).to(event.dtype)
    condition = [None if t is None else t.repeat_interleave(n, dim=0) for t in (objects, object_mask, event, anchors)]
    counterparts, paired = torch.zeros(()), None
    if model.paired_slots:  # each slot's detector object of the same class and rank, and a flag that it has one
        repeated = DetectorSlots(*(part.repeat_interleave(n, dim=0) for part in detector_slots))
        counterparts, has_pair = pair_slots(condition[3], repeated, classes, ranks, flat_mask)
        paired = torch.cat([counterparts, has_pair.unsqueeze(-1).float()], dim=-1)

    def predict_noise(noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        prediction = model.denoiser(noisy[:, 1:] * keep, flat_mask, noisy[:, 0], timesteps, *condition,
                                    codes if model.typed_counts else None, paired)
        return torch.cat([prediction.event_slot.unsqueeze(1), prediction.particles * keep], dim=1)

    latents = denoise(predict_noise, (num_events * n, 1 + slots, width), training_scheduler=model.training_scheduler,
                      sampler=sampler, steps=steps, generator=generator, dtype=event.dtype)
    decoded = model.particle_vae.decode(latents[:, 1:] * keep, flat_mask)
    type_logits = decoded.type_logits
    if classes is not None:  # electron or muon (types 2, 3) in the lepton slots, b (1) and light (0) jets in theirs
        type_logits = type_logits.masked_fill(torch.tensor([2, 1, 0, 0]) != classes.unsqueeze(-1), float("-inf"))
    types = torch.where(flat_mask, type_logits.argmax(dim=-1), 0)
    event_features = model.event_vae.decode(latents[:, :1], torch.ones(num_events * n, 1, dtype=torch.bool))
    return ParticleSample((decoded.features + counterparts).unflatten(0, (num_events, n)), types.unflatten(0, (num_events, n)), mask,
                          multiplicity, event_features.features.squeeze(1).unflatten(0, (num_events, n)))


def make_model(objective: str = "diffusion", anchor_width: int = 0, typed_counts: bool = True,
               paired_slots: bool = False) -> SetLatentDiffusion:
    torch.manual_seed(0)
    return SetLatentDiffusion(condition_width=CONDITION, max_particles=SLOTS, latent_width=6, width=32, depth=2,
                              vae_depth=2, num_train_timesteps=100, objective=objective,
                              anchor_width=anchor_width, typed_counts=typed_counts, paired_slots=paired_slots).eval()


def make_detector_slots(object_mask: torch.Tensor) -> DetectorSlots:
    """Random classes (lepton, b jet, light jet) of the real detector objects and their ranks by a random pT."""
    generator = torch.Generator().manual_seed(3)
    classes = torch.randint(0, 3, object_mask.shape, generator=generator).masked_fill(~object_mask, NO_CLASS)
    return DetectorSlots(classes, class_ranks(classes, torch.rand(object_mask.shape, generator=generator)))


def make_condition(anchor_width: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Events with 7, 3 (not the first slots), 0, 5 and 1 real detector objects (and their anchors)."""
    generator = torch.Generator().manual_seed(1)
    objects = torch.randn(EVENTS, OBJECTS, CONDITION, generator=generator)
    object_mask = torch.arange(OBJECTS) < torch.tensor([[7], [0], [0], [5], [1]])
    object_mask[1, [1, 4, 6]] = True
    anchors = torch.randn(EVENTS, OBJECTS, anchor_width, generator=generator) * object_mask.unsqueeze(-1)
    return objects, object_mask, torch.randn(EVENTS, CONDITION, generator=generator), anchors if anchor_width else None


@pytest.mark.parametrize(("objective", "sampler", "rows_per_call", "anchor_width", "typed_counts", "paired_slots"), [
    ("diffusion", "ddpm", 1, 0, True, False), ("diffusion", "ddpm", 3, 0, True, False),
    ("diffusion", "ddpm", 1024, 0, True, False), ("diffusion", "ddim", 3, 0, True, False),
    ("diffusion", "dpm-solver", 1024, 0, True, False), ("flow-matching", "euler", 3, 0, True, False),
    ("diffusion", "ddpm", 3, 5, True, False), ("diffusion", "ddpm", 3, 0, False, False),
    ("diffusion", "ddpm", 3, 5, True, True), ("diffusion", "ddpm", 1024, 5, True, True)])
def test_compact_sampling_gives_the_padded_draws(objective: str, sampler: str, rows_per_call: int,
                                                 anchor_width: int, typed_counts: bool, paired_slots: bool) -> None:
    model = make_model(objective, anchor_width, typed_counts, paired_slots)
    *condition, anchors = make_condition(anchor_width)
    detector_slots = make_detector_slots(condition[1]) if paired_slots else None
    reference = padded_sample(model, *condition, anchors, 4, sampler=sampler, steps=6,
                              generator=torch.Generator().manual_seed(5), detector_slots=detector_slots)
    compact = model.sample(*condition, 4, sampler=sampler, steps=6, generator=torch.Generator().manual_seed(5),
                           rows_per_call=rows_per_call, anchors=anchors, detector_slots=detector_slots)
    assert reference.multiplicity.float().std() > 0  # the draws span several multiplicities
    torch.testing.assert_close(compact.multiplicity, reference.multiplicity)
    torch.testing.assert_close(compact.mask, reference.mask)
    torch.testing.assert_close(compact.features, reference.features, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compact.event_features, reference.event_features, atol=1e-4, rtol=1e-4)
    assert (compact.types == reference.types).float().mean() > 0.99  # an argmax may flip on a float tie


def test_bfloat16_set_denoiser_keeps_the_multiplicities_and_rounds_the_features() -> None:
    """The set denoiser in bfloat16: the multiplicities (drawn before the denoiser, in float32) are the float32
    run's, the features differ by bfloat16's rounding only."""
    model = make_model("diffusion", 5, True, True)
    *condition, anchors = make_condition(5)
    detector_slots = make_detector_slots(condition[1])
    draws = {precision: model.sample(*condition, 4, sampler="dpm-solver", steps=6, anchors=anchors,
                                     detector_slots=detector_slots, generator=torch.Generator().manual_seed(5),
                                     precision=precision) for precision in ("float32", "bfloat16")}
    full, half = draws["float32"], draws["bfloat16"]
    torch.testing.assert_close(half.multiplicity, full.multiplicity)
    assert half.features.dtype == torch.float32
    difference = (half.features - full.features)[full.mask].abs()
    assert 0 < difference.max() < 0.05 * full.features[full.mask].abs().max()


def test_compact_sampling_masks_variable_multiplicities() -> None:
    sample = make_model().sample(*make_condition()[:3], 6, steps=3, generator=torch.Generator().manual_seed(2),
                                 rows_per_call=4)
    assert sample.features.shape == (EVENTS, 6, SLOTS, 5)
    assert sample.types.shape == sample.mask.shape == (EVENTS, 6, SLOTS)
    torch.testing.assert_close(sample.mask.sum(-1), sample.multiplicity)
    assert (sample.features[~sample.mask] == 0).all()
    assert (sample.types[~sample.mask] == 0).all()
    assert (sample.features[sample.mask] != 0).any(dim=-1).all()
    assert torch.isfinite(sample.event_features).all()


def test_rows_per_call_must_be_positive() -> None:
    with pytest.raises(UnfoldError, match="rows_per_call must be positive"):
        make_model().sample(*make_condition()[:3], 2, steps=2, rows_per_call=0)
