"""Parton representation: round trips against the `vector` package, standardisation, consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vector

from encoders.kinematics import rotate_and_reflect, to_cartesian
from unfold.errors import UnfoldError
from unfold.generation.processes import get_process
from unfold.models.parton import REPRESENTATIONS, DecayChainRepresentation, ObjectRepresentation


@pytest.fixture
def representation(synthetic_truth) -> ObjectRepresentation:
    module = ObjectRepresentation.for_process(get_process("ttbar-semileptonic"))
    module.fit(synthetic_truth(500))
    return module


@pytest.mark.parametrize("process", ["ttbar-semileptonic", "ttbar-allhadronic"])
def test_both_topologies_store_eleven_objects_of_five_features(process):
    module = ObjectRepresentation.for_process(get_process(process))
    assert len(module.daughters) == 6
    assert len(module.composites) == 5
    assert module.features == 55
    assert set(module.composites["ttbar"]) == set(module.daughters)


def test_standardised_training_data_has_zero_mean_and_unit_width(synthetic_truth):
    truth = synthetic_truth(400)
    module = ObjectRepresentation.for_process(get_process("ttbar-semileptonic"))
    module.fit(truth)
    x = module.encode(truth)
    assert x.shape == (400, 55)
    assert x.dtype == torch.float32
    varying = module.scale != 1.0
    torch.testing.assert_close(x.mean(0), torch.zeros(55), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, correction=0)[varying], torch.ones(int(varying.sum())), atol=1e-5, rtol=0)
    neutrino_mass = module.objects.index("neutrino") * 5 + 4
    assert not varying[neutrino_mass]
    assert torch.all(x[:, neutrino_mass] == 0)


def test_round_trip_recovers_the_decay_products(representation, synthetic_truth):
    truth = synthetic_truth(300)
    decoded = representation.decode(representation.encode(truth))
    assert list(decoded) == list(truth)
    for name, features in truth.items():
        np.testing.assert_allclose(decoded[name]["pt"].numpy(), features["pt"], rtol=1e-5)
        np.testing.assert_allclose(decoded[name]["eta"].numpy(), features["eta"], atol=1e-4)
        np.testing.assert_allclose(decoded[name]["phi"].numpy(), features["phi"], atol=1e-4)
        np.testing.assert_allclose(decoded[name]["mass"].numpy(), features["mass"], atol=1e-4)


def test_composites_are_the_four_vector_sums_of_their_daughters(representation, synthetic_truth):
    truth = synthetic_truth(300)
    composites = representation.decode_composites(representation.encode(truth))
    daughters = {
        name: vector.array({key: truth[name][key] for key in ("pt", "eta", "phi", "mass")})
        for name in truth
    }
    for name, parts in representation.composites.items():
        summed = daughters[parts[0]]
        for part in parts[1:]:
            summed = summed + daughters[part]
        np.testing.assert_allclose(composites[name]["mass"].numpy(), summed.mass, rtol=1e-4)
        np.testing.assert_allclose(composites[name]["pt"].numpy(), summed.pt, rtol=1e-4)


def test_consistency_is_zero_for_consistent_events(representation, synthetic_truth):
    x = representation.encode(synthetic_truth(200))
    terms = representation.consistency(x)
    assert terms.shape == (200, 5)
    assert terms.max() < 1e-6


def test_consistency_grows_when_a_daughter_is_perturbed(representation, synthetic_truth):
    x = representation.encode(synthetic_truth(200))
    q1_px = representation.objects.index("q1") * 5
    perturbed = x.clone()
    perturbed[:, q1_px] += 2.0
    terms = representation.consistency(perturbed)
    names = list(representation.composites)
    contains_q1 = [name for name in names if "q1" in representation.composites[name]]
    for name in names:
        column = terms[:, names.index(name)]
        if name in contains_q1:
            assert column.mean() > 1e-4
        else:
            assert column.max() < 1e-6


def test_consistency_passes_gradients(representation, synthetic_truth):
    x = representation.encode(synthetic_truth(50)) + 0.1
    x.requires_grad_(True)
    representation.consistency(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_statistics_survive_a_state_dict_round_trip(representation):
    fresh = ObjectRepresentation.for_process(get_process("ttbar-semileptonic"))
    fresh.load_state_dict(representation.state_dict())
    torch.testing.assert_close(fresh.mean, representation.mean)
    torch.testing.assert_close(fresh.scale, representation.scale)


def test_missing_parton_group_is_reported(representation, synthetic_truth):
    truth = synthetic_truth(10)
    del truth["neutrino"]
    with pytest.raises(UnfoldError, match="neutrino"):
        representation.encode(truth)


def test_missing_feature_and_bad_values_are_reported(representation, synthetic_truth):
    truth = synthetic_truth(10)
    del truth["q1"]["eta"]
    with pytest.raises(UnfoldError, match="eta"):
        representation.encode(truth)
    truth = synthetic_truth(10)
    truth["q2"]["pt"][3] = np.nan
    with pytest.raises(UnfoldError, match="NaN"):
        representation.encode(truth)


def test_wrong_tensor_width_is_reported(representation):
    with pytest.raises(UnfoldError, match="55"):
        representation.decode(torch.zeros(3, 54))


def test_composite_of_unknown_daughters_is_rejected():
    with pytest.raises(UnfoldError, match="W"):
        ObjectRepresentation(daughters=["a", "b"], composites={"W": ["a", "c"]})


@pytest.mark.parametrize(
    ("process", "pairs"),
    [
        ("ttbar-semileptonic", (("q1", "q2"),)),
        ("ttbar-allhadronic", (("t1_q1", "t1_q2"), ("t2_q1", "t2_q2"))),
    ],
)
def test_each_w_quark_pair_is_ordered_by_pt(process, pairs):
    assert ObjectRepresentation.for_process(get_process(process)).pt_ordered == pairs


@pytest.mark.parametrize("representation_class", [ObjectRepresentation, DecayChainRepresentation])
def test_decoding_swaps_a_pair_generated_softer_first(representation_class, synthetic_truth):
    """Labels follow truth's convention (q1 the harder); the other partons do not move, nor their sums (W, tops)."""
    module = representation_class.for_process(get_process("ttbar-semileptonic"))
    truth = synthetic_truth(200)
    module.fit(truth)
    unordered = representation_class(daughters=module.daughters, composites=module.composites)
    unordered.load_state_dict(module.state_dict())
    x = module.encode(truth).double()
    x = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    generated, ordered = unordered.decode(x), module.decode(x)
    swapped = generated["q1"]["pt"] < generated["q2"]["pt"]
    assert 0 < int(swapped.sum()) < len(swapped)
    assert bool((ordered["q1"]["pt"] >= ordered["q2"]["pt"]).all())
    for feature in ("pt", "eta", "phi", "mass"):
        torch.testing.assert_close(ordered["q1"][feature], torch.where(swapped, generated["q2"][feature], generated["q1"][feature]))
        torch.testing.assert_close(ordered["q2"][feature], torch.where(swapped, generated["q1"][feature], generated["q2"][feature]))
        for name in ("b_had", "b_lep", "lepton", "neutrino"):
            torch.testing.assert_close(ordered[name][feature], generated[name][feature])


@pytest.mark.parametrize("pairs", [[("q1", "x")], [("q1", "q1")], [("q1",)]])
def test_pt_ordered_pairs_must_be_two_different_daughters(pairs):
    with pytest.raises(UnfoldError, match="pt_ordered"):
        ObjectRepresentation(daughters=["q1", "q2"], composites={"W": ["q1", "q2"]}, pt_ordered=pairs)


@pytest.mark.parametrize("representation_class", [ObjectRepresentation, DecayChainRepresentation])
def test_relabelling_is_the_encoding_of_the_exchanged_quarks(representation_class, synthetic_truth):
    """relabel() names the same event's W quarks the other way round: the encoding of truth with q1 and q2
    exchanged, undone by a second relabelling, and invisible after decoding (which orders the pair again)."""
    module = representation_class.for_process(get_process("ttbar-semileptonic"))
    truth = synthetic_truth(300)
    module.fit(truth)
    swap = torch.from_numpy(np.random.default_rng(4).random((300, 1)) < 0.5)
    exchanged = {name: dict(features) for name, features in truth.items()}
    for feature in truth["q1"]:
        exchanged["q1"][feature] = np.where(swap[:, 0].numpy(), truth["q2"][feature], truth["q1"][feature])
        exchanged["q2"][feature] = np.where(swap[:, 0].numpy(), truth["q1"][feature], truth["q2"][feature])
    x = module.encode(truth)
    relabelled = module.relabel(x, swap)
    torch.testing.assert_close(relabelled, module.encode(exchanged), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(module.relabel(relabelled, swap), x, atol=2e-5, rtol=1e-5)
    for name, features in module.decode(relabelled.double()).items():
        for feature, value in features.items():
            torch.testing.assert_close(value, module.decode(x.double())[name][feature], atol=1e-3, rtol=1e-4)


def test_decay_chain_pairs_must_be_the_children_of_one_decay():
    process = get_process("ttbar-semileptonic")
    with pytest.raises(UnfoldError, match="children of one decay"):
        DecayChainRepresentation(
            daughters=[slot.name for slot in process.partons], composites=process.composites, pt_ordered=[("q1", "b_had")]
        )


@pytest.mark.parametrize("name", ["decay-chain", "polar-decay-chain", "hadronic-polar-decay-chain", "lepton-anchored",
                                  "objects"])
def test_turning_the_encoded_partons_is_encoding_the_turned_event(name, synthetic_truth):
    """rotated_and_reflected() is the detector's symmetries acting on the features: a rotation by angle about the beam
    and a reflection z -> -z of the encoded truth (and of the measured lepton it may be anchored to) equal the
    encoding of the event with every azimuth shifted and every eta flipped."""
    events = 300
    rng = np.random.default_rng(8)
    module = REPRESENTATIONS[name].for_process(get_process("ttbar-semileptonic"))
    truth = synthetic_truth(events)
    measured = {"lepton": to_cartesian(*(torch.as_tensor(truth["lepton"][key]) for key in ("pt", "eta", "phi", "mass")))}
    measured["lepton"][:, 1:3] *= 1.02  # the detector's lepton a little off the parton's
    anchors = measured if module.anchored else None
    module.fit(truth, anchors=anchors)
    angle = torch.as_tensor(rng.uniform(0, 2 * np.pi, events))
    sign = torch.as_tensor(np.where(rng.random(events) < 0.5, -1.0, 1.0))
    turned = {part: {"pt": f["pt"], "mass": f["mass"], "eta": f["eta"] * sign.numpy(),
                     "phi": np.angle(np.exp(1j * (f["phi"] + angle.numpy())))} for part, f in truth.items()}
    turned_anchors = None
    if anchors is not None:
        lepton = rotate_and_reflect(measured["lepton"], angle, sign, xy_pairs=((1, 2),), reflected=(3,))
        turned_anchors = {"lepton": lepton}
    x = module.encode(truth, anchors).double()
    expected = module.encode(turned, turned_anchors).double()
    torch.testing.assert_close(module.rotated_and_reflected(x, angle, sign), expected, atol=2e-4, rtol=1e-4)
    assert not torch.allclose(x, expected, atol=1e-2)  # the turn changed the features
