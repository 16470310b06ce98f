"""The lepton-anchored decay chain: the lepton relative to its measurement, its top built upward with exact masses."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import vector

from encoders.kinematics import invariant_mass, to_cartesian, to_cylindrical
from recon.event_topology import EventTopology
from unfold.cli import main
from unfold.data.detector_slots import measured_leptons
from unfold.data.event_tensors import encoder_inputs
from unfold.data.hdf5_schema import read_spanet
from unfold.errors import UnfoldError
from unfold.generation.processes import get_process
from unfold.models.parton import AnchoredDecayChainRepresentation, TwoBodyDecay
from unfold.models.parton.anchored_chain import UpwardDecay, sibling_momentum
from unfold.training.options import saved_hyperparameters


def _smeared_leptons(truth: dict, rng: np.random.Generator) -> torch.Tensor:
    """(E, 4) "measured" leptons: the truth lepton with a 2 % pT and 0.01 angular resolution."""
    lepton = {key: torch.as_tensor(value, dtype=torch.float64) for key, value in truth["lepton"].items()}
    events = len(lepton["pt"])
    smear = torch.as_tensor(rng.normal(0.0, 1.0, (3, events)))
    return to_cartesian(lepton["pt"] * torch.exp(0.02 * smear[0]), lepton["eta"] + 0.01 * smear[1],
                        lepton["phi"] + 0.01 * smear[2], lepton["mass"])


@pytest.fixture
def anchored(synthetic_truth, rng):
    module = AnchoredDecayChainRepresentation.for_process(get_process("ttbar-semileptonic"))
    truth = synthetic_truth(400)
    module.fit(truth, anchors={"lepton": _smeared_leptons(truth, rng)})
    return module


def test_the_lepton_branch_is_built_upward_and_the_hadronic_top_downward():
    module = AnchoredDecayChainRepresentation.for_process(get_process("ttbar-semileptonic"))
    assert module.anchored == ("lepton",)
    assert module.upward_decays == (
        UpwardDecay(TwoBodyDecay("W_lep", "lepton", "neutrino"), known="lepton", built="neutrino"),
        UpwardDecay(TwoBodyDecay("t_lep", "W_lep", "b_lep"), known="W_lep", built="b_lep"),
    )
    assert module.branch_root == "t_lep"
    assert module.lab_roots == ("t_had",)
    assert module.rest_frame_decays == (TwoBodyDecay("t_had", "W_had", "b_had"), TwoBodyDecay("W_had", "q1", "q2"))
    # the plain chain's 28 features: t_lep's (px, py, pz) and two rest-frame directions give way to the anchor and
    # the neutrino's and the b's (px, py, Delta y); its mass stays
    assert module.features == 28
    assert {"lepton:log_pt_ratio", "neutrino:delta_rapidity", "b_lep:px", "t_lep:mass_normal_score"} <= set(
        module.feature_names
    )
    assert not {"t_lep:px", "W_lep_in_t_lep:helicity_x"} & set(module.feature_names)


def test_round_trip_recovers_every_decay_product_whatever_the_measurement(anchored, synthetic_truth, rng):
    truth = synthetic_truth(300)
    anchors = {"lepton": _smeared_leptons(truth, rng)}
    anchored.fit(truth, anchors=anchors)
    decoded = anchored.decode(anchored.encode(truth, anchors).double(), anchors)
    for name, features in truth.items():
        np.testing.assert_allclose(decoded[name]["pt"].numpy(), features["pt"], rtol=1e-4, err_msg=name)
        # a rapidity solved from a mass: near Delta y = 0, arccosh amplifies float32 rounding to ~1e-4
        np.testing.assert_allclose(decoded[name]["eta"].numpy(), features["eta"], atol=1e-3, err_msg=name)
        np.testing.assert_allclose(np.cos(decoded[name]["phi"].numpy() - features["phi"]), 1.0, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(decoded[name]["mass"].numpy(), features["mass"], atol=1e-4, err_msg=name)


def test_a_draw_without_lepton_offsets_returns_the_measured_lepton_in_every_draw(anchored, rng):
    events, draws = 50, 4
    x = torch.randn(events, draws, anchored.features, dtype=torch.float64)
    physical = anchored.physical(x)
    for name in ("lepton:log_pt_ratio", "lepton:delta_eta", "lepton:delta_phi"):
        physical[..., anchored.feature_names.index(name)] = 0.0
    measured = to_cartesian(*(torch.as_tensor(v) for v in (rng.uniform(25, 200, events), rng.normal(0, 1.5, events),
                                                          rng.uniform(-3, 3, events), np.full(events, 0.000511))))
    lepton = anchored.decode((physical - anchored.mean) / anchored.scale, {"lepton": measured})["lepton"]
    pt, eta, phi, _ = to_cylindrical(measured)
    np.testing.assert_allclose(lepton["pt"].numpy(), pt[:, None].expand(-1, draws).numpy(), rtol=1e-9)
    np.testing.assert_allclose(lepton["eta"].numpy(), eta[:, None].expand(-1, draws).numpy(), atol=1e-9)
    np.testing.assert_allclose(lepton["phi"].numpy(), phi[:, None].expand(-1, draws).numpy(), atol=1e-9)


def test_any_tensor_decodes_to_the_generated_w_and_top_masses(anchored, rng, synthetic_truth):
    truth = synthetic_truth(200)
    anchors = {"lepton": _smeared_leptons(truth, rng)}
    x = torch.randn(200, 3, anchored.features, dtype=torch.float64)
    nodes = anchored.decode_four_momenta(x, anchors)
    masses = anchored.node_masses(x)
    for parent, children in (("W_lep", ("lepton", "neutrino")), ("t_lep", ("W_lep", "b_lep"))):
        summed = nodes[children[0]] + nodes[children[1]]
        np.testing.assert_allclose(summed.numpy(), nodes[parent].numpy(), rtol=1e-12, atol=1e-9)
        above_threshold = masses[parent] > invariant_mass(nodes[children[0]]) + masses[children[1]]
        assert above_threshold.float().mean() > 0.5, parent  # random tensors: synthetic masses far off any peak
        np.testing.assert_allclose(invariant_mass(nodes[parent])[above_threshold].numpy(),
                                   masses[parent][above_threshold].numpy(), rtol=1e-5)
    built = invariant_mass(nodes["b_lep"])
    assert torch.all(torch.isclose(built, masses["b_lep"], rtol=1e-5, atol=1e-5) | (built < 1e-4))  # massless out of reach


def _four(vectors) -> torch.Tensor:
    return torch.as_tensor(np.stack([vectors.E, vectors.px, vectors.py, vectors.pz], 1))


def _vectors(four: torch.Tensor):
    four = four.numpy()
    return vector.array({"E": four[:, 0], "px": four[:, 1], "py": four[:, 2], "pz": four[:, 3]})


def test_the_neutrino_takes_the_textbook_root_on_the_side_asked_and_always_closes_the_w(rng):
    """Massless lepton: p_z = (mu p_z,l +- E_l sqrt(mu^2 - pT_l^2 pT_nu^2)) / pT_l^2, mu = m_W^2 / 2 + pT_l pT_nu
    cos(Delta phi), the two roots of every lepton+jets analysis; without a real root the neutrino keeps its azimuth
    and takes the largest pT that has one (mu = pT_l pT_nu)."""
    events = 2000
    lepton = vector.array({"pt": rng.uniform(25, 200, events), "eta": rng.normal(0, 1.5, events),
                           "phi": rng.uniform(-np.pi, np.pi, events), "mass": np.zeros(events)})
    pt, phi, side = rng.uniform(5, 150, events), rng.uniform(-np.pi, np.pi, events), rng.choice([-1.0, 1.0], events)
    w_mass = rng.normal(80.4, 2.0, events)
    neutrino = _vectors(sibling_momentum(_four(lepton), torch.as_tensor(w_mass), torch.zeros(events),
                                         torch.as_tensor(np.stack([pt * np.cos(phi), pt * np.sin(phi)], 1)),
                                         torch.as_tensor(side)))
    np.testing.assert_allclose((lepton + neutrino).mass, w_mass, rtol=1e-6)
    np.testing.assert_allclose(np.cos(neutrino.phi - phi), 1.0, atol=1e-12)
    mu = w_mass**2 / 2 + lepton.pt * pt * np.cos(phi - lepton.phi)
    discriminant = mu**2 - lepton.pt**2 * pt**2
    real = discriminant >= 0
    assert 0.2 < real.mean() < 0.95  # both branches exercised
    np.testing.assert_allclose(neutrino.pt[real], pt[real], rtol=1e-9)
    expected = (mu * lepton.pz + side * lepton.E * np.sqrt(discriminant.clip(0))) / lepton.pt**2
    np.testing.assert_allclose(neutrino.pz[real], expected[real], rtol=1e-6, atol=1e-6)
    assert np.all(neutrino.pt[~real] < pt[~real])
    mu = w_mass**2 / 2 + lepton.pt * neutrino.pt * np.cos(phi - lepton.phi)
    np.testing.assert_allclose(mu[~real], (lepton.pt * neutrino.pt)[~real], rtol=1e-9)


def test_a_b_beside_its_w_closes_the_top_or_is_built_massless(rng):
    events = 2000
    w = vector.array({"pt": rng.uniform(10, 400, events), "eta": rng.normal(0, 1.5, events),
                      "phi": rng.uniform(-np.pi, np.pi, events), "mass": rng.uniform(70, 90, events)})
    pt, phi, side = rng.uniform(5, 300, events), rng.uniform(-np.pi, np.pi, events), rng.choice([-1.0, 1.0], events)
    top_mass = rng.normal(173.0, 15.0, events)
    b = _vectors(sibling_momentum(_four(w), torch.as_tensor(top_mass), torch.full((events,), 4.8),
                                  torch.as_tensor(np.stack([pt * np.cos(phi), pt * np.sin(phi)], 1)), torch.as_tensor(side)))
    np.testing.assert_allclose((w + b).mass, top_mass, rtol=1e-6)
    np.testing.assert_allclose(np.cos(b.phi - phi), 1.0, atol=1e-12)
    massive = np.isclose(b.mass, 4.8, atol=1e-3)
    assert np.all(massive | (b.mass < 1e-2))
    # c >= E_W m_b reaches the top at any azimuth: W energies below ~2 TeV at the top's peak
    reached = (top_mass**2 - w.mass**2 - 4.8**2) / 2 >= w.E * 4.8
    assert reached.mean() > 0.8
    assert np.all(massive[reached])
    kept = np.isclose(b.pt, pt, rtol=1e-9)
    assert 0.2 < kept.mean() < 1.0  # both branches exercised: pT kept, or brought to the interval that closes the top
    assert np.all(np.sign(b.rapidity - w.rapidity)[kept] == side[kept])


def test_missing_or_misshapen_anchors_and_an_unknown_daughter_are_refused(anchored, synthetic_truth):
    truth = synthetic_truth(10)
    with pytest.raises(UnfoldError, match=r"generates 'lepton' relative to the measured .*got anchors for \[\]"):
        anchored.encode(truth)
    with pytest.raises(UnfoldError, match=r"anchor of 'lepton': expected shape \(10, 4\), got \(9, 4\)"):
        anchored.encode(truth, {"lepton": torch.zeros(9, 4)})
    with pytest.raises(UnfoldError, match=r"anchored daughter must be a decay product .* got 'photon'"):
        AnchoredDecayChainRepresentation(daughters=["a", "b"], composites={"W": ["a", "b"]}, anchored="photon")


def test_the_measured_lepton_is_the_leading_one_and_an_event_without_is_refused(semileptonic_files, event_files):
    topology = EventTopology.from_yaml(event_files["ttbar-semileptonic"])
    data = read_spanet(semileptonic_files[1], topology)
    inputs = encoder_inputs(data, topology)
    leptons = measured_leptons(inputs, topology)
    with h5py.File(semileptonic_files[1]) as file:
        momenta = file["INPUTS/Momenta"]
        flags = (momenta["etag"][...] + momenta["utag"][...]) > 0
        assert (flags.sum(1) >= 1).all()
        pt = np.where(flags, momenta["pt"][...], -1.0).max(1)
    np.testing.assert_allclose(to_cylindrical(leptons)[0].numpy(), pt, rtol=1e-5)
    features = list(inputs.sequential_features)
    tags = [topology.sequential[0].features.index(name) for name in ("etag", "utag")]
    features[0] = features[0].clone()
    features[0][3, :, tags] = 0.0
    with pytest.raises(UnfoldError, match=r"needs a detector lepton in every event; 1 of \d+ events \(first: 3\)"):
        measured_leptons(inputs._replace(sequential_features=tuple(features)), topology)


def test_an_anchored_run_trains_and_unfolds_the_lepton_at_its_measurement(semileptonic_files, event_files, tmp_path,
                                                                           capsys):
    train, test = semileptonic_files
    assert main(["train", "parton", "--representation", "lepton-anchored", "--epochs", "1", "--data", str(train),
                 "--out", str(tmp_path / "runs"), "--accelerator", "cpu", "--model.augment", "auto"]) == 0
    (run,) = (tmp_path / "runs" / "parton").iterdir()
    checkpoint = next(run.glob("checkpoints/*.ckpt"))
    assert saved_hyperparameters(checkpoint)["augment"] == ["rotate_phi", "reflect_eta"]  # trained on turned events
    out = tmp_path / "samples.h5"
    assert main(["sample", "parton", "--n", "3", "--checkpoint", str(run), "--data", str(test), "--out", str(out),
                 "--steps", "5"]) == 0
    topology = EventTopology.from_yaml(event_files["ttbar-semileptonic"])
    measured = to_cylindrical(measured_leptons(encoder_inputs(read_spanet(test, topology), topology), topology))[0]
    with h5py.File(out) as file:
        lepton = file["SAMPLES/PARTONS/lepton/pt"][...]
        truth = file["PARTONS/lepton/pt"][...]
    # one epoch from noise: every draw's lepton pT stays within 6 times the truth's largest log deviation from the
    # measurement (0.51 against 6 x 0.17 here); the plain decay chain after one epoch strays to 4.5
    ratio = lepton / measured.numpy()[:, None]
    spread = np.abs(np.log(truth / measured.numpy())).max()
    assert np.all(np.abs(np.log(ratio)) < 6 * spread), np.abs(np.log(ratio)).max()
    def refusal(state: dict) -> str:
        """The one-line error of unfold sample on ``state`` saved as a checkpoint; nothing written."""
        old = tmp_path / "old.ckpt"
        torch.save(state, old)
        capsys.readouterr()
        assert main(["sample", "parton", "--n", "1", "--checkpoint", str(old), "--data", str(test),
                     "--out", str(tmp_path / "old.h5"), "--steps", "2"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "retrain" in err
        assert not (tmp_path / "old.h5").exists()
        return err

    # a checkpoint whose stored parton features differ from those the representation reads now is refused
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["representation_features"][-1] = "neutrino:energy"
    assert "old.ckpt: its parton features ['neutrino:energy']" in refusal(state)
    # so is one saved before the features were stored, whose resonance masses were Breit-Wigner coordinates
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    del state["representation_features"]
    state["state_dict"] = {key.replace("mass_knots", "pole_mass_squared"): value for key, value in state["state_dict"].items()}
    assert ":breit_wigner_coordinate" in refusal(state)

