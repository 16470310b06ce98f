"""ParticleRepresentation: physics of the features, round trip, standardisation, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vector

from unfold.errors import UnfoldError
from unfold.models.particle.representation import (
    B_JET,
    ELECTRON,
    LIGHT_JET,
    MUON,
    ParticleRepresentation,
)


def make_particles(
    rng: np.random.Generator, num_events: int = 200, max_jets: int = 9
) -> dict[str, dict[str, np.ndarray]]:
    """Random particle-level events: 2..max_jets jets (holes in the mask allowed), 0 or 1 lepton."""
    shape = (num_events, max_jets)
    jet_mask = np.zeros(shape, dtype=bool)
    for event, count in enumerate(rng.integers(2, max_jets + 1, num_events)):
        jet_mask[event, rng.choice(max_jets, count, replace=False)] = True
    lepton_mask = rng.random((num_events, 1)) < 0.9
    jets = {
        "pt": rng.uniform(20, 300, shape),
        "eta": rng.uniform(-2.5, 2.5, shape),
        "phi": rng.uniform(-np.pi, np.pi, shape),
        "mass": rng.uniform(2, 40, shape),
        "btag": (rng.random(shape) < 0.3).astype(np.float32),
        "MASK": jet_mask,
    }
    lepton = {
        "pt": rng.uniform(25, 200, (num_events, 1)),
        "eta": rng.uniform(-2.4, 2.4, (num_events, 1)),
        "phi": rng.uniform(-np.pi, np.pi, (num_events, 1)),
        "mass": np.full((num_events, 1), 0.105),
        "pdgid": rng.choice([-13, -11, 11, 13], (num_events, 1)),
        "MASK": lepton_mask,
    }
    met = {"met": rng.uniform(0, 200, num_events), "phi": rng.uniform(-np.pi, np.pi, num_events)}
    return {"jets": jets, "lepton": lepton, "met": met}


def test_cartesian_features_match_vector_kinematics(rng: np.random.Generator) -> None:
    particles = make_particles(rng)
    representation = ParticleRepresentation(max_particles=12, kinematics="cartesian").fit(particles)
    batch = representation.encode(particles)
    physical = (batch.features * representation.feature_std + representation.feature_mean).double()
    jets, lepton = particles["jets"], particles["lepton"]
    rows = np.arange(len(jets["pt"]))
    hardest = np.argmax(np.where(jets["MASK"], jets["pt"], -np.inf), axis=1)
    lepton_leads = lepton["MASK"][:, 0] & (lepton["pt"][:, 0] > jets["pt"][rows, hardest])
    oracle = vector.array({
        name: np.where(lepton_leads, lepton[name][:, 0], jets[name][rows, hardest]) for name in ("pt", "eta", "phi", "mass")
    })
    expected = np.stack(
        [oracle.px, oracle.py, oracle.pz, np.log1p(oracle.E), np.log1p(oracle.mass)], axis=-1
    )
    np.testing.assert_allclose(physical[:, 0].numpy(), expected, rtol=1e-5, atol=1e-4)
    jet_type = np.where(jets["btag"][rows, hardest] > 0.5, B_JET, LIGHT_JET)
    assert (batch.types[:, 0] >= ELECTRON).numpy().tolist() == lepton_leads.tolist()
    assert (batch.types[:, 0][~lepton_leads] == torch.from_numpy(jet_type[~lepton_leads])).all()


def test_objects_are_hardest_first_whatever_the_file_order(rng: np.random.Generator) -> None:
    """The slots hold the real objects in descending pT: shuffling the file's jets changes nothing."""
    particles = make_particles(rng)
    representation = ParticleRepresentation(max_particles=12).fit(particles)
    batch = representation.encode(particles)
    log_pt = batch.features[..., 0].masked_fill(~batch.mask, -torch.inf)
    assert (log_pt[:, :-1] >= log_pt[:, 1:]).all()
    order = rng.permuted(np.tile(np.arange(9), (200, 1)), axis=1)
    shuffled = {**particles, "jets": {name: np.take_along_axis(v, order, axis=1) for name, v in particles["jets"].items()}}
    again = representation.encode(shuffled)
    assert torch.equal(again.types, batch.types) and torch.equal(again.mask, batch.mask)
    torch.testing.assert_close(again.features, batch.features)


def test_mask_is_prefix_with_counts_and_padding_zero(rng: np.random.Generator) -> None:
    particles = make_particles(rng)
    representation = ParticleRepresentation(max_particles=12).fit(particles)
    batch = representation.encode(particles)
    counts = particles["jets"]["MASK"].sum(1) + particles["lepton"]["MASK"].sum(1)
    assert batch.features.shape == (200, 12, 5)
    assert batch.event_features.shape == (200, 2)
    np.testing.assert_array_equal(batch.multiplicity.numpy(), counts)
    prefix = torch.arange(12) < batch.multiplicity.unsqueeze(-1)
    assert torch.equal(batch.mask, prefix)
    assert (batch.features[~batch.mask] == 0).all()
    assert (batch.types[~batch.mask] == 0).all()


def test_standardised_objects_have_zero_mean_unit_std(rng: np.random.Generator) -> None:
    particles = make_particles(rng)
    batch = ParticleRepresentation(max_particles=12).fit(particles).encode(particles)
    objects = batch.features[batch.mask].double()
    torch.testing.assert_close(
        objects.mean(0), torch.zeros(5, dtype=torch.double), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        objects.std(0, correction=0), torch.ones(5, dtype=torch.double), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("kinematics", ["cartesian", "log-pt"])
def test_decode_inverts_encode_per_collection(rng: np.random.Generator, kinematics: str) -> None:
    particles = make_particles(rng)
    representation = ParticleRepresentation(max_particles=12, kinematics=kinematics).fit(particles)
    batch = representation.encode(particles)
    decoded = representation.decode(batch.features, batch.types, batch.mask, batch.event_features)

    for name, label in (("jets", "btag"), ("lepton", "pdgid")):
        truth, out = particles[name], decoded[name]
        np.testing.assert_array_equal(out["MASK"].sum(1), truth["MASK"].sum(1))
        assert out["pt"].shape == (200, 12)
        for event in range(20):
            order = np.argsort(-np.where(truth["MASK"][event], truth["pt"][event], -np.inf))
            count = truth["MASK"][event].sum()
            real = order[:count]
            for feature in ("pt", "eta", "phi", "mass"):
                np.testing.assert_allclose(
                    out[feature][event, :count], truth[feature][event, real], rtol=1e-4, atol=1e-4
                )
            expected = truth[label][event, real]
            if label == "pdgid":
                expected = np.abs(expected)
            np.testing.assert_array_equal(out[label][event, :count], expected)
            assert (out["pt"][event, count:] == 0).all()
    np.testing.assert_allclose(decoded["met"]["met"], particles["met"]["met"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(decoded["met"]["phi"], particles["met"]["phi"], atol=1e-4)


def test_lepton_flavour_becomes_type(rng: np.random.Generator) -> None:
    particles = make_particles(rng)
    batch = ParticleRepresentation(max_particles=12).fit(particles).encode(particles)
    has_lepton = particles["lepton"]["MASK"][:, 0]
    assert ((batch.types >= ELECTRON).sum(dim=1).numpy() == has_lepton).all()
    lepton_slot = torch.argmax((batch.types >= ELECTRON).int(), dim=1)
    types = batch.types[torch.arange(200), lepton_slot].numpy()
    flavour = np.abs(particles["lepton"]["pdgid"][:, 0])
    np.testing.assert_array_equal(
        types[has_lepton], np.where(flavour == 13, MUON, ELECTRON)[has_lepton]
    )


def test_state_dict_restores_standardisation(rng: np.random.Generator) -> None:
    particles = make_particles(rng)
    fitted = ParticleRepresentation(max_particles=12).fit(particles)
    restored = ParticleRepresentation(max_particles=12)
    restored.load_state_dict(fitted.state_dict())
    torch.testing.assert_close(
        restored.encode(particles).features, fitted.encode(particles).features
    )


def test_more_objects_than_slots_names_key_and_numbers(rng: np.random.Generator) -> None:
    particles = make_particles(rng, max_jets=6)
    particles["jets"]["MASK"][:] = False
    particles["jets"]["MASK"][:, :2] = True
    particles["jets"]["MASK"][5] = True
    particles["lepton"]["MASK"][5] = True
    with pytest.raises(
        UnfoldError, match=r"PARTICLES/jets.*event 5 has 7 objects.*max_particles=6"
    ):
        ParticleRepresentation(max_particles=6).fit(particles)
    ParticleRepresentation(max_particles=7).fit(particles)


def test_missing_collection_and_feature_are_named(rng: np.random.Generator) -> None:
    particles = make_particles(rng)
    without_lepton = {key: value for key, value in particles.items() if key != "lepton"}
    with pytest.raises(UnfoldError, match="missing PARTICLES/lepton"):
        ParticleRepresentation().fit(without_lepton)
    del particles["jets"]["btag"]
    with pytest.raises(UnfoldError, match="PARTICLES/jets lacks btag"):
        ParticleRepresentation().fit(particles)


def test_log_pt_features_are_relative_momenta(rng: np.random.Generator) -> None:
    """(log pT, eta, cos phi, sin phi, log(m+1)): scaling every momentum by 1.1 shifts log pT alone, by log 1.1."""
    particles = make_particles(rng)
    representation = ParticleRepresentation(max_particles=12, kinematics="log-pt").fit(particles)
    harder = {**particles, **{name: {**particles[name], "pt": particles[name]["pt"] * 1.1} for name in ("jets", "lepton")}}
    base, scaled = representation.encode(particles), representation.encode(harder)
    shift = (scaled.features - base.features) * representation.feature_std
    torch.testing.assert_close(shift[..., 0][base.mask], torch.full_like(shift[..., 0][base.mask], np.log(1.1)))
    assert shift[..., 1:][base.mask].abs().max() < 1e-5
    with pytest.raises(UnfoldError, match="unknown particle kinematics 'polar'"):
        ParticleRepresentation(kinematics="polar")


def test_bad_values_and_unfitted_use_raise(rng: np.random.Generator) -> None:
    particles = make_particles(rng)
    with pytest.raises(UnfoldError, match="not fitted"):
        ParticleRepresentation().encode(particles)
    particles["lepton"]["pdgid"][:] = 22
    particles["lepton"]["MASK"][0] = True
    with pytest.raises(UnfoldError, match="pdgid: expected ±11 or ±13"):
        ParticleRepresentation().fit(particles)
    particles = make_particles(rng)
    particles["met"] = {name: values[:-1] for name, values in particles["met"].items()}
    with pytest.raises(UnfoldError, match="disagree on the number of events"):
        ParticleRepresentation().fit(particles)
    particles = make_particles(rng)
    particles["jets"]["pt"][particles["jets"]["MASK"]] = np.nan
    with pytest.raises(UnfoldError, match="NaN"):
        ParticleRepresentation().fit(particles)


@pytest.mark.parametrize("kinematics", ["cartesian", "log-pt"])
def test_detector_features_put_a_measured_object_where_the_same_particle_sits(
    rng: np.random.Generator, kinematics: str
) -> None:
    """A detector object that measured its particle exactly anchors at that particle's own features."""
    particles = make_particles(rng)
    particles["lepton"]["MASK"][:] = False  # the first slot holds the hardest jet
    representation = ParticleRepresentation(max_particles=12, kinematics=kinematics).fit(particles)
    batch = representation.encode(particles)
    jets = particles["jets"]
    first = np.argmax(np.where(jets["MASK"], jets["pt"], -np.inf), axis=1)
    rows = np.arange(len(first))
    p4 = vector.array({name: jets[name][rows, first] for name in ("pt", "eta", "phi", "mass")})
    four_momenta = torch.tensor(np.stack([p4.E, p4.px, p4.py, p4.pz], -1), dtype=torch.float64)
    padding = torch.full_like(four_momenta, 1e4)  # a padded slot's values must not matter
    anchors = representation.detector_features(
        torch.stack([four_momenta, padding], dim=1), torch.tensor([[True, False]]).expand(len(rows), 2)
    )
    torch.testing.assert_close(anchors[:, 0].float(), batch.features[:, 0], atol=2e-5, rtol=1e-5)
    assert (anchors[:, 1] == 0).all()


def test_detector_features_refuse_bad_shapes(rng: np.random.Generator) -> None:
    representation = ParticleRepresentation(max_particles=12).fit(make_particles(rng))
    with pytest.raises(UnfoldError, match=r"detector four-momenta must be \(E, N, 4\)"):
        representation.detector_features(torch.zeros(2, 3, 5), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(UnfoldError, match="not fitted"):
        ParticleRepresentation().detector_features(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))


@pytest.mark.parametrize("kinematics", ["cartesian", "log-pt"])
def test_turning_an_encoded_batch_is_encoding_the_turned_event(rng: np.random.Generator, kinematics: str) -> None:
    """rotated_and_reflected() is the detector's symmetries on the particle set: the encoding of the events with every
    azimuth (objects and missing pT) shifted by the event's angle and every eta flipped where its sign is -1."""
    particles = make_particles(rng)
    representation = ParticleRepresentation(max_particles=12, kinematics=kinematics).fit(particles)
    angle = torch.as_tensor(rng.uniform(0, 2 * np.pi, 200))
    sign = torch.as_tensor(np.where(rng.random(200) < 0.5, -1.0, 1.0))
    turned = {name: dict(group) for name, group in particles.items()}
    for name in ("jets", "lepton"):
        turned[name]["eta"] = particles[name]["eta"] * sign.numpy()[:, None]
        turned[name]["phi"] = np.angle(np.exp(1j * (particles[name]["phi"] + angle.numpy()[:, None])))
    turned["met"]["phi"] = np.angle(np.exp(1j * (particles["met"]["phi"] + angle.numpy())))
    batch, expected = representation.encode(particles), representation.encode(turned)
    result = representation.rotated_and_reflected(batch, angle.float(), sign.float())
    torch.testing.assert_close(result.features, expected.features, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(result.event_features, expected.event_features, atol=1e-4, rtol=1e-4)
    assert torch.equal(result.types, expected.types)
    assert torch.equal(result.mask, expected.mask)
    assert (result.features[~result.mask] == 0).all()
    assert not torch.allclose(batch.features, expected.features, atol=1e-2)
