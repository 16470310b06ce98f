"""Decay-chain parton representation: exact round trips, tree building, consistency by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vector
from scipy import stats

from unfold.errors import UnfoldError
from unfold.generation.processes import get_process
from unfold.models.parton import (
    DecayChainRepresentation,
    HadronicPolarDecayChainRepresentation,
    PolarDecayChainRepresentation,
    TwoBodyDecay,
)


@pytest.fixture(params=[DecayChainRepresentation, PolarDecayChainRepresentation, HadronicPolarDecayChainRepresentation])
def chain(request, synthetic_truth) -> DecayChainRepresentation:
    """The chain with each top's transverse momentum as (px, py), as (log pT, azimuth), and as (log pT, azimuth) for
    the hadronic top only."""
    module = request.param.for_process(get_process("ttbar-semileptonic"))
    module.fit(synthetic_truth(500))
    return module


def _vectors(truth: dict) -> dict:
    return {name: vector.array({k: np.asarray(v[k], dtype=np.float64) for k in ("pt", "eta", "phi", "mass")})
            for name, v in truth.items()}


def _sum(vectors: dict, parts) -> vector.MomentumNumpy4D:
    total = vectors[parts[0]]
    for part in parts[1:]:
        total = total + vectors[part]
    return total


def test_semileptonic_tree_is_the_ttbar_decay_chain():
    module = DecayChainRepresentation.for_process(get_process("ttbar-semileptonic"))
    assert module.roots == ("t_had", "t_lep")
    assert module.decays == (
        TwoBodyDecay("t_had", "W_had", "b_had"),
        TwoBodyDecay("t_lep", "W_lep", "b_lep"),
        TwoBodyDecay("W_had", "q1", "q2"),
        TwoBodyDecay("W_lep", "lepton", "neutrino"),
    )
    # (px, py, pz, m) per top + 3 per decay + the masses of the 8 decay products
    assert module.features == 2 * 4 + 3 * 4 + 8
    assert module.resonances == ("t_had", "t_lep", "W_had", "W_lep")
    assert "W_had:mass_normal_score" in module.feature_names
    assert "b_had:mass" in module.feature_names


def test_allhadronic_tree_has_the_same_shape():
    module = DecayChainRepresentation.for_process(get_process("ttbar-allhadronic"))
    assert module.roots == ("t1", "t2")
    assert module.features == 28


def test_the_hadronic_polar_chain_keeps_px_py_for_a_top_with_a_charged_lepton():
    semileptonic = HadronicPolarDecayChainRepresentation.for_process(get_process("ttbar-semileptonic"))
    assert semileptonic.polar_roots == ("t_had",)
    assert {"t_had:log_pt", "t_had:azimuth_x", "t_lep:px", "t_lep:py"} <= set(semileptonic.feature_names)
    assert "t_lep:log_pt" not in semileptonic.feature_names
    allhadronic = HadronicPolarDecayChainRepresentation.for_process(get_process("ttbar-allhadronic"))
    assert allhadronic.polar_roots == allhadronic.roots


def test_round_trip_recovers_every_decay_product(chain, synthetic_truth):
    truth = synthetic_truth(300)
    chain.fit(truth)  # masses outside the fitted range would be clipped to it
    decoded = chain.decode(chain.encode(truth).double())
    assert list(decoded) == list(truth)
    for name, features in truth.items():
        # float32 standardised features, and these random "resonances" sit far apart in the mass table's
        # tails, where a rounded normal score moves the mass most: 1e-4 relative
        np.testing.assert_allclose(decoded[name]["pt"].numpy(), features["pt"], rtol=1e-4)
        np.testing.assert_allclose(decoded[name]["eta"].numpy(), features["eta"], atol=1e-4)
        np.testing.assert_allclose(decoded[name]["phi"].numpy(), features["phi"], atol=1e-4)
        # masses 2e-4: the float32 directions also turn back from the parent's helicity axes
        np.testing.assert_allclose(decoded[name]["mass"].numpy(), features["mass"], atol=2e-4)


def test_stored_masses_are_those_of_the_summed_daughters(chain, synthetic_truth):
    truth = synthetic_truth(300)
    chain.fit(truth)
    features = chain.physical_features(truth).numpy()
    masses = chain.node_masses(chain.encode(truth).double())
    vectors = _vectors(truth)
    for name in chain.resonances:
        np.testing.assert_allclose(masses[name].numpy(), _sum(vectors, chain.composites[name]).mass, rtol=1e-4)
    top = _sum(vectors, chain.composites["t_had"])
    direction = features[:, [chain.feature_names.index(f"W_had_in_t_had:helicity_{a}") for a in "xyz"]]
    w_at_rest = _sum(vectors, chain.composites["W_had"]).boostCM_of_p4(top)
    lab = np.stack([w_at_rest.px, w_at_rest.py, w_at_rest.pz], 1) / w_at_rest.p[:, None]
    # on the top's helicity axes: z' along its flight, y' across the beam and the flight, x' = y' x z'
    flight = np.stack([top.px, top.py, top.pz], 1) / top.p[:, None]
    across = np.cross([0.0, 0.0, 1.0], flight)
    across /= np.linalg.norm(across, axis=1, keepdims=True)
    axes = np.stack([np.cross(across, flight), across, flight], 1)
    np.testing.assert_allclose(direction, np.einsum("eij,ej->ei", axes, lab), atol=1e-9)
    np.testing.assert_allclose(direction[:, 2], (lab * flight).sum(1), atol=1e-9)  # cos theta*


def test_any_tensor_decodes_to_an_exactly_consistent_event(chain, synthetic_truth):
    """Generated (not encoded) values: masses are those asked for, composites the daughters' sums."""
    x = chain.encode(synthetic_truth(400)).double() + 0.1 * torch.randn(400, chain.features, dtype=torch.float64)
    masses = {name: value.numpy() for name, value in chain.node_masses(x).items()}
    allowed = np.all([masses[name] > 1.0 for name in chain.resonances], axis=0)
    for decay in chain.decays:
        allowed &= masses[decay.parent] > masses[decay.first] + masses[decay.second]
    assert 0.2 < allowed.mean() < 1.0  # both kinds of event are exercised
    nodes = chain.decode_four_momenta(x)
    decoded = chain.decode(x)
    vectors = _vectors({name: {k: v.numpy() for k, v in values.items()} for name, values in decoded.items()})
    for name in ("W_had", "t_had", "W_lep", "t_lep"):
        summed = _sum(vectors, chain.composites[name]).mass
        np.testing.assert_allclose(summed[allowed], masses[name][allowed], rtol=1e-6, atol=1e-5)
        assert np.all(np.isfinite(summed))
    for decay in chain.decays:
        torch.testing.assert_close(nodes[decay.first] + nodes[decay.second], nodes[decay.parent], rtol=1e-9, atol=1e-6)
    assert torch.all(chain.consistency(x) == 0)


def test_lifted_directions_decode_to_the_same_event_with_chi3_radii(chain, synthetic_truth):
    """lifted() scales the hadronic top's decay directions by chi_3 radii and leaves every other feature alone: the same event
    decodes, the radii follow the length of a standard normal 3-vector, and a uniform direction so lifted is the
    standard normal vector (the direction columns are standardised to mean 0, scale 1)."""
    truth = synthetic_truth(2000)
    chain.fit(truth)
    x = chain.encode(truth).double()
    lifted = chain.lifted(x, torch.Generator().manual_seed(3))
    columns = chain._lifted_columns
    assert len(columns) == 2  # t_had -> W_had b_had and W_had -> q1 q2; the leptonic top's stay on the sphere
    others = torch.ones(chain.features, dtype=torch.bool)
    others[columns.flatten()] = False
    torch.testing.assert_close(lifted[:, others], x[:, others])
    decoded = chain.decode_four_momenta(lifted)
    for name, nodes in chain.decode_four_momenta(x).items():
        # the same four-momenta to double precision relative to each node's energy
        assert torch.all((decoded[name] - nodes).abs() <= 1e-9 * (1.0 + nodes[:, :1].abs())), name
    radii = lifted[:, columns].norm(dim=-1)
    assert stats.kstest(radii.flatten().numpy(), stats.chi(3).cdf).pvalue > 1e-3
    assert not torch.equal(chain.lifted(x, torch.Generator().manual_seed(4)), lifted)
    uniform = torch.nn.functional.normalize(torch.randn(4000, 3, generator=torch.Generator().manual_seed(5)), dim=1)
    x_uniform = x[:1].repeat(4000, 1)
    x_uniform[:, columns[0]] = uniform.to(x)
    components = chain.lifted(x_uniform, torch.Generator().manual_seed(6))[:, columns[0]]
    for component in components.T:
        assert stats.kstest(component.numpy(), "norm").pvalue > 1e-3


def test_composite_that_is_not_a_two_body_decay_is_rejected():
    with pytest.raises(UnfoldError, match=r"two-body.*'X'"):
        DecayChainRepresentation(daughters=["a", "b", "c", "d"], composites={"X": ["a", "b", "c"]})


def test_daughter_outside_every_composite_is_a_root_of_its_own():
    module = DecayChainRepresentation(daughters=["a", "b", "c"], composites={"W": ["a", "b"]})
    assert module.roots == ("W", "c")
    assert module.decays == (TwoBodyDecay("W", "a", "b"),)


def test_resonance_masses_become_standard_normal_scores_and_decode_back(rng, synthetic_truth):
    """A W line shape (a Breit-Wigner in m^2, cut at m = 1 GeV) maps to the standard normal law, the
    diffusion's own noise, on events the table was not fitted on; and decodes back to the same masses."""

    def truth_with_w_masses(events: int) -> tuple[dict, np.ndarray]:
        truth = synthetic_truth(events)
        w_mass = np.sqrt(np.clip(80.4**2 + 80.4 * 2.1 * rng.standard_cauchy(events), 1.0, None))
        # q1 and q2 back to back in the W frame, then boosted: a W of exactly that mass
        energy = w_mass / 2
        q1 = vector.array({"px": energy, "py": np.zeros(events), "pz": np.zeros(events), "E": energy})
        q2 = vector.array({"px": -energy, "py": np.zeros(events), "pz": np.zeros(events), "E": energy})
        frame = vector.array({"pt": truth["q1"]["pt"], "eta": truth["q1"]["eta"], "phi": truth["q1"]["phi"], "mass": w_mass})
        for name, quark in (("q1", q1.boost_p4(frame)), ("q2", q2.boost_p4(frame))):
            truth[name] = {"pt": quark.pt, "eta": quark.eta, "phi": quark.phi, "mass": np.zeros(events)}
        return truth, w_mass

    module = DecayChainRepresentation.for_process(get_process("ttbar-semileptonic"))
    module.fit(truth_with_w_masses(8000)[0])
    truth, w_mass = truth_with_w_masses(4000)
    scores = module.physical_features(truth)[:, module.feature_names.index("W_had:mass_normal_score")].numpy()
    inside = (w_mass > module.mass_knots[module.resonances.index("W_had"), 0].item()) & (
        w_mass < module.mass_knots[module.resonances.index("W_had"), -1].item())
    assert stats.kstest(scores, stats.norm.cdf).pvalue > 1e-3
    assert stats.kstest(scores, stats.hypsecant(scale=2 / np.pi).cdf).pvalue < 1e-3  # the test can tell
    decoded = module.node_masses(module.encode(truth).double())["W_had"].numpy()
    np.testing.assert_allclose(decoded[inside], w_mass[inside], rtol=1e-4)


def test_generated_resonance_masses_stay_within_the_training_range(chain, synthetic_truth):
    """A generated outlier coordinate would decode to an arbitrarily heavy top; it is clipped."""
    truth = synthetic_truth(500)
    chain.fit(truth)
    trained = {name: value.max() for name, value in chain.node_masses(chain.encode(truth).double()).items()}
    x = chain.encode(truth).double()
    for name in chain.resonances:
        x[:, chain.feature_names.index(f"{name}:mass_normal_score")] = 50.0
    masses = chain.node_masses(x)
    for name in chain.resonances:
        assert torch.all(masses[name] <= trained[name] * (1 + 1e-4)), name  # float32 encoding of the edge


def test_parton_module_builds_either_representation_and_refuses_others(event_files):
    from unfold.models.parton import ObjectRepresentation
    from unfold.training.unfolding_modules import PartonModule

    event_file = event_files["ttbar-semileptonic"].read_text()
    assert isinstance(PartonModule(event_file_yaml=event_file).representation, DecayChainRepresentation)
    assert isinstance(PartonModule(event_file_yaml=event_file, representation="objects").representation, ObjectRepresentation)
    with pytest.raises(UnfoldError, match=r"unknown parton representation 'polar'.*decay-chain"):
        PartonModule(event_file_yaml=event_file, representation="polar")
