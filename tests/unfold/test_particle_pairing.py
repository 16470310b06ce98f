"""Paired slots: each particle slot is generated relative to the detector object of its class and pT rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recon.event_topology import EventTopology
from unfold.data.event_tensors import encoder_inputs
from unfold.data.hdf5_schema import read_spanet
from unfold.errors import UnfoldError
from unfold.data.detector_slots import detector_slots
from unfold.models.particle.pairing import NO_CLASS, DetectorSlots, ResidualScale, class_ranks, pair_slots
from unfold.models.particle.representation import ParticleBatch
from unfold.models.particle.set_diffusion import SetLatentDiffusion

EVENTS, OBJECTS, CONDITION, SLOTS, FEATURES = 3, 6, 16, 8, 5
LEPTON, B_JET, LIGHT_JET = 0, 1, 2  # SLOT_CLASS_NAMES
EVENT_FILE = Path(__file__).resolve().parents[2] / "configs" / "events" / "ttbar_semileptonic.yaml"


def make_model(**overrides: object) -> SetLatentDiffusion:
    torch.manual_seed(0)
    options = {"condition_width": CONDITION, "max_particles": SLOTS, "latent_width": 6, "width": 32, "depth": 2,
               "vae_depth": 2, "num_train_timesteps": 100, "anchor_width": FEATURES, "paired_slots": True}
    return SetLatentDiffusion(**{**options, **overrides}).eval()


def make_detector() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, DetectorSlots]:
    """Objects, mask, event vector, anchors and slots of three events: a lepton, two b jets and three light
    jets; a lepton and a light jet; nothing."""
    generator = torch.Generator().manual_seed(1)
    classes = torch.tensor([[LIGHT_JET, B_JET, LEPTON, LIGHT_JET, B_JET, LIGHT_JET],
                            [LIGHT_JET, LEPTON, NO_CLASS, NO_CLASS, NO_CLASS, NO_CLASS], [NO_CLASS] * OBJECTS])
    mask = classes != NO_CLASS
    pt = torch.tensor([[50.0, 90.0, 40.0, 120.0, 30.0, 70.0], [60.0, 35.0, 0, 0, 0, 0], [0.0] * OBJECTS])
    anchors = torch.randn(EVENTS, OBJECTS, FEATURES, generator=generator) * mask.unsqueeze(-1)
    objects = torch.randn(EVENTS, OBJECTS, CONDITION, generator=generator)
    event = torch.randn(EVENTS, CONDITION, generator=generator)
    return objects, mask, event, anchors, DetectorSlots(classes, class_ranks(classes, pt))


def test_ranks_count_the_harder_objects_of_the_same_class() -> None:
    *_, slots = make_detector()
    torch.testing.assert_close(slots.ranks[0], torch.tensor([2, 0, 0, 0, 1, 1]))  # light 50 < 120, 70; b 90 > 30
    torch.testing.assert_close(slots.ranks[1, :2], torch.tensor([0, 0]))
    tied = class_ranks(torch.tensor([[1, 1, 1]]), torch.tensor([[5.0, 5.0, 7.0]]))
    torch.testing.assert_close(tied, torch.tensor([[1, 2, 0]]))  # a tie goes to the earlier object


def test_each_slot_pairs_with_the_detector_object_of_its_class_and_rank() -> None:
    *_, anchors, detector = make_detector()
    classes = torch.tensor([[LEPTON, B_JET, B_JET, B_JET, LIGHT_JET, LIGHT_JET, LIGHT_JET, LIGHT_JET]] * EVENTS)
    ranks = torch.tensor([[0, 0, 1, 2, 0, 1, 2, 3]] * EVENTS)
    mask = torch.ones(EVENTS, SLOTS, dtype=torch.bool)
    mask[0, -1] = False  # a padded slot pairs with nothing
    counterparts, has_pair = pair_slots(anchors, detector, classes, ranks, mask)
    # event 0: lepton -> object 2, b jets -> 1, 4, none; light jets -> 3, 5, 0, (padding)
    expected = [2, 1, 4, None, 3, 5, 0, None]
    assert has_pair[0].tolist() == [index is not None for index in expected]
    for slot, index in enumerate(expected):
        torch.testing.assert_close(counterparts[0, slot], anchors[0, index] if index is not None else torch.zeros(FEATURES))
    assert has_pair[1].tolist() == [True, False, False, False, True, False, False, False]
    torch.testing.assert_close(counterparts[1, 4], anchors[1, 0])
    assert not has_pair[2].any() and (counterparts[2] == 0).all()


def test_detector_slots_read_the_files_lepton_and_b_tag_flags(semileptonic_files) -> None:
    topology = EventTopology.from_yaml(EVENT_FILE)
    data = read_spanet(semileptonic_files[1], topology, limit=50)
    slots = detector_slots(encoder_inputs(data, topology), topology)
    momenta = dict(zip(topology.sequential[0].features, np.moveaxis(data.sequential["Momenta"], -1, 0), strict=True))
    real = data.masks["Momenta"]
    lepton = real & ((momenta["etag"] > 0.5) | (momenta["utag"] > 0.5))
    expected = np.where(lepton, LEPTON, np.where(real & (momenta["btag"] > 0.5), B_JET, np.where(real, LIGHT_JET, NO_CLASS)))
    np.testing.assert_array_equal(slots.classes.numpy(), expected)
    assert (slots.classes == LEPTON).sum(dim=1).eq(1).all(), "one selected lepton per event"
    for event in range(50):  # the rank-0 object of each class is its hardest
        for cls in (LEPTON, B_JET, LIGHT_JET):
            members = np.flatnonzero(expected[event] == cls)
            if len(members):
                hardest = members[np.argmax(momenta["pt"][event, members])]
                assert slots.ranks[event, hardest] == 0


def test_a_paired_slot_is_its_detector_object_plus_the_generated_residual() -> None:
    """With a decoder that gives no residual, every drawn slot that has a counterpart comes out exactly at
    its detector object, and one without comes out at zero: the generated part is what the detector missed."""
    model = make_model()
    objects, mask, event, anchors, detector = make_detector()
    with torch.no_grad():
        last = model.particle_vae.decoder[-1]
        last.weight[:FEATURES].zero_()
        last.bias[:FEATURES].zero_()
        for head, count in zip(model.multiplicity.heads, (1, 2, 2), strict=True):  # one lepton, two b jets, two light
            head.network[-1].weight.zero_()
            head.network[-1].bias.copy_(torch.where(torch.arange(SLOTS + 1) == count, 50.0, -50.0))
    sample = model.sample(objects, mask, event, 4, steps=2, anchors=anchors, detector_slots=detector,
                          generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([LEPTON, B_JET, B_JET, LIGHT_JET, LIGHT_JET])
    ranks = torch.tensor([0, 0, 1, 0, 1])
    for index in range(EVENTS):
        counterparts, _ = pair_slots(anchors[index : index + 1], DetectorSlots(*(p[index : index + 1] for p in detector)),
                                     classes.unsqueeze(0), ranks.unsqueeze(0), torch.ones(1, 5, dtype=torch.bool))
        torch.testing.assert_close(sample.features[index, :, :5], counterparts.expand(4, -1, -1))
    assert (sample.features[0, :, :5] != 0).any(dim=-1).all() and (sample.features[2] == 0).all()


def encoded_truth(model: SetLatentDiffusion) -> tuple[torch.Tensor, torch.Tensor, DetectorSlots, torch.Tensor]:
    """The truth features of two events, the anchors, the detector slots and what the VAE encoder was given."""
    objects, mask, event, anchors, detector = make_detector()
    types = torch.tensor([[2, 1, 0, 0, 0, 0, 0, 0], [0, 0, 3, 0, 0, 0, 0, 0], [0] * SLOTS])  # hardest first in class
    truth_mask = torch.arange(SLOTS) < torch.tensor([[4], [3], [0]])
    features = torch.randn(EVENTS, SLOTS, FEATURES, generator=torch.Generator().manual_seed(4)) * truth_mask.unsqueeze(-1)
    batch = ParticleBatch(features, types * truth_mask, truth_mask, torch.randn(EVENTS, 2))
    seen = []
    encode = model.particle_vae.encode
    model.particle_vae.encode = lambda *args: seen.append(args[0]) or encode(*args)
    model.loss(batch, objects, mask, event, anchors=anchors, detector_slots=detector, generator=torch.Generator().manual_seed(3))
    return features, anchors, detector, seen[0]


def test_training_encodes_the_truth_minus_its_counterpart() -> None:
    features, anchors, _, residual = encoded_truth(make_model(scaled_residuals=False).train())
    # event 0: lepton -> object 2, b jet rank 0 -> object 1, light jets rank 0, 1 -> objects 3, 5
    for slot, index in enumerate((2, 1, 3, 5)):
        torch.testing.assert_close(residual[0, slot], features[0, slot] - anchors[0, index])
    # event 1: light rank 0 -> object 0, light rank 1 -> none, lepton -> object 1
    torch.testing.assert_close(residual[1, :3], torch.stack([features[1, 0] - anchors[1, 0], features[1, 1],
                                                              features[1, 2] - anchors[1, 1]]))


def test_the_residual_scale_follows_each_class_rms_of_the_paired_slots() -> None:
    scale = ResidualScale(3, 2, momentum=0.25, floor=0.05)
    residuals = torch.tensor([[3.0, 0.1], [-3.0, 0.1], [100.0, 100.0], [0.5, -0.01]])
    classes = torch.tensor([LEPTON, LEPTON, LEPTON, B_JET])
    paired = torch.tensor([True, True, False, True])  # the third has no counterpart: not a residual
    scale.update(residuals, classes, paired)
    torch.testing.assert_close(scale.rms, torch.tensor([[3.0, 0.1], [0.5, 0.01], [0.0, 0.0]]))
    scale.update(torch.tensor([[1.0, 0.3]]), torch.tensor([LEPTON]), torch.tensor([True]))
    torch.testing.assert_close(scale.rms[LEPTON], torch.tensor([0.75 * 3.0 + 0.25 * 1.0, 0.75 * 0.1 + 0.25 * 0.3]))
    divisors = scale(torch.tensor([[B_JET, LIGHT_JET, B_JET]]), torch.tensor([[True, True, False]]))
    # the floor; a class never seen and a slot without a counterpart: one
    torch.testing.assert_close(divisors, torch.tensor([[[0.5, 0.05], [1.0, 1.0], [1.0, 1.0]]]))


def test_training_divides_each_paired_residual_by_its_class_rms() -> None:
    """In training the VAE sees unit-size residuals of every class; evaluation leaves the running RMS alone."""
    model = make_model().train()
    features, anchors, detector, encoded = encoded_truth(model)
    rms = model.residual_scale.rms.clone()
    # event 0: lepton -> object 2, b jet rank 0 -> object 1, light jets -> objects 3, 5; event 1: light -> 0,
    # an unpaired light jet, lepton -> 1
    residuals = torch.stack([features[0, slot] - anchors[0, index] for slot, index in enumerate((2, 1, 3, 5))]
                            + [features[1, 0] - anchors[1, 0], features[1, 2] - anchors[1, 1]])
    classes = torch.tensor([LEPTON, B_JET, LIGHT_JET, LIGHT_JET, LIGHT_JET, LEPTON])
    for index in range(3):
        torch.testing.assert_close(rms[index], residuals[classes == index].pow(2).mean(0).sqrt())
    torch.testing.assert_close(encoded[0, :4], residuals[:4] / rms[classes[:4]])
    torch.testing.assert_close(encoded[1, :3], torch.stack([residuals[4] / rms[LIGHT_JET], features[1, 1],
                                                            residuals[5] / rms[LEPTON]]))
    encoded_truth(model.eval())
    torch.testing.assert_close(model.residual_scale.rms, rms)


def test_sampling_multiplies_the_decoded_residual_back_by_its_class_rms() -> None:
    model = make_model()
    objects, mask, event, anchors, detector = make_detector()
    with torch.no_grad():
        model.residual_scale.rms.copy_(torch.tensor([0.01, 0.1, 0.2]).unsqueeze(-1).expand(3, FEATURES))
        last = model.particle_vae.decoder[-1]
        last.weight[:FEATURES].zero_()
        last.bias[:FEATURES].fill_(1.0)  # every decoded residual is one RMS
        for head, count in zip(model.multiplicity.heads, (1, 2, 2), strict=True):
            head.network[-1].weight.zero_()
            head.network[-1].bias.copy_(torch.where(torch.arange(SLOTS + 1) == count, 50.0, -50.0))
    sample = model.sample(objects, mask, event, 2, steps=2, anchors=anchors, detector_slots=detector,
                          generator=torch.Generator().manual_seed(2))
    # event 1 (a lepton and a light jet measured): lepton -> object 1, b jets none, light jet rank 0 -> object 0
    expected = torch.stack([anchors[1, 1] + 0.01, torch.ones(FEATURES), torch.ones(FEATURES),
                            anchors[1, 0] + 0.2, torch.ones(FEATURES)])
    torch.testing.assert_close(sample.features[1, :, :5], expected.expand(2, -1, -1))


def test_pairing_refuses_what_it_cannot_pair() -> None:
    with pytest.raises(UnfoldError, match="paired_slots pairs each slot's class and rank.*needs typed_counts"):
        make_model(typed_counts=False)
    with pytest.raises(UnfoldError, match=r"detector anchors \(got typed_counts True, anchor_width 0\)"):
        make_model(anchor_width=0)
    objects, mask, event, anchors, detector = make_detector()
    with pytest.raises(UnfoldError, match="detector_slots, the detector objects' classes and ranks, are required"):
        make_model().sample(objects, mask, event, 2, steps=1, anchors=anchors)
    with pytest.raises(UnfoldError, match="pairs no slots with detector objects; got detector_slots"):
        make_model(paired_slots=False).sample(objects, mask, event, 2, steps=1, anchors=anchors, detector_slots=detector)
    with pytest.raises(UnfoldError, match=r"detector slot classes and ranks must be \(3, 6\)"):
        pair_slots(anchors, DetectorSlots(detector.classes[:, :2], detector.ranks), detector.classes, detector.ranks, mask)
    denoiser = make_model().denoiser
    with pytest.raises(UnfoldError, match=r"paired detector objects: expected shape \(3, 2, 6\), got None"):
        denoiser(torch.zeros(3, 2, 6), torch.ones(3, 2, dtype=torch.bool), torch.zeros(3, 6), torch.zeros(3, dtype=torch.long),
                 objects, mask, event, anchors, torch.zeros(3, 2, dtype=torch.long))
