"""Anchored decay chain: the tree grown from the best-measured daughters, exact and consistent."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import vector

from unfold.errors import UnfoldError
from unfold.generation.processes import get_process
from unfold.models.parton import AnchoredChainRepresentation, TwoBodyStep


@pytest.fixture
def truth(synthetic_truth) -> dict:
    """Random decay products within |eta| < 2.5, so every momentum stays below the beam energy."""
    events = synthetic_truth(400)
    for features in events.values():
        features["eta"] = np.clip(features["eta"], -2.5, 2.5)
    return events


@pytest.fixture
def chain(truth) -> AnchoredChainRepresentation:
    module = AnchoredChainRepresentation.for_process(get_process("ttbar-semileptonic"))
    module.fit(truth)
    return module


def _vectors(decoded: dict) -> dict:
    return {name: vector.array({k: np.asarray(v[k], dtype=np.float64) for k in ("pt", "eta", "phi", "mass")})
            for name, v in decoded.items()}


def _reachable(chain, step, x, nodes, masses) -> np.ndarray:
    """Whether the parent's generated mass can be made from the known part and the added daughter
    at its generated momentum: |cos theta| <= 1."""
    known = nodes[step.known].numpy()
    known_mass_squared = np.clip(known[:, 0] ** 2 - (known[:, 1:] ** 2).sum(1), 0, None)
    added_mass = masses[step.added]
    half_gap = (masses[step.parent] ** 2 - known_mass_squared - added_mass**2) / 2
    size = np.exp(chain.physical(x)[:, chain.feature_names.index(f"{step.added}_around_{step.known}:log_momentum")].numpy())
    cos_theta = (known[:, 0] * np.sqrt(size**2 + added_mass**2) - half_gap) / (np.linalg.norm(known[:, 1:], axis=1) * size)
    return np.abs(cos_theta) < 1


def test_semileptonic_chain_grows_from_the_lepton_and_the_harder_quark():
    module = AnchoredChainRepresentation.for_process(get_process("ttbar-semileptonic"))
    assert module.anchors == ("q1", "lepton")
    assert module.steps == (
        TwoBodyStep("W_had", "q1", "q2"),
        TwoBodyStep("t_had", "W_had", "b_had"),
        TwoBodyStep("W_lep", "lepton", "neutrino"),
        TwoBodyStep("t_lep", "W_lep", "b_lep"),
    )
    # (px, py, pz, m) per anchor + (log p, cos psi, sin psi) per step + the masses of each step's parent and daughter
    assert module.features == 2 * 4 + 3 * 4 + 8
    assert module.resonances == ("W_had", "t_had", "W_lep", "t_lep")
    assert module.feature_names[4:7] == ("lepton:px", "lepton:py", "lepton:pz")


def test_allhadronic_chain_grows_from_each_top_s_harder_quark():
    module = AnchoredChainRepresentation.for_process(get_process("ttbar-allhadronic"))
    assert module.anchors == ("t1_q1", "t2_q1")
    assert module.features == 28


def test_round_trip_recovers_every_decay_product(chain, truth):
    """Exact in float64 (``encode`` rounds to float32, which near cos theta = +-1 costs 1e-4 in angle)."""
    x = (chain.physical_features(truth) - chain.mean.double()) / chain.scale.double()
    decoded = chain.decode(x)
    assert list(decoded) == list(truth)
    for name, features in truth.items():
        np.testing.assert_allclose(decoded[name]["pt"].numpy(), features["pt"], rtol=1e-8)
        np.testing.assert_allclose(decoded[name]["eta"].numpy(), features["eta"], atol=1e-8)
        np.testing.assert_allclose(decoded[name]["phi"].numpy(), features["phi"], atol=1e-8)
        np.testing.assert_allclose(decoded[name]["mass"].numpy(), features["mass"], atol=1e-3)  # sqrt(E^2 - p^2) at TeV momenta


def test_any_tensor_decodes_to_an_exactly_consistent_event(chain, truth):
    """Generated (not encoded) values: resonance masses are those asked for, composites the sums."""
    x = chain.encode(truth).double() + 0.1 * torch.randn(400, chain.features, dtype=torch.float64)
    masses = {name: value.numpy() for name, value in chain.node_masses(x).items()}
    nodes = chain.decode_four_momenta(x)
    vectors = _vectors({name: {k: v.numpy() for k, v in values.items()} for name, values in chain.decode(x).items()})
    allowed = np.all([_reachable(chain, step, x, nodes, masses) for step in chain.steps], axis=0)
    assert 0.2 < allowed.mean() < 1.0  # both kinds of event are exercised
    for name in chain.resonances:
        parts = chain.composites[name]
        summed = vectors[parts[0]]
        for part in parts[1:]:
            summed = summed + vectors[part]
        np.testing.assert_allclose(summed.mass[allowed], masses[name][allowed], rtol=1e-6, atol=1e-5)
        assert np.all(np.isfinite(summed.mass))
    for step in chain.steps:
        torch.testing.assert_close(nodes[step.known] + nodes[step.added], nodes[step.parent], rtol=1e-9, atol=1e-6)
    assert torch.all(chain.consistency(x) == 0)


def test_the_anchor_comes_out_as_generated_whatever_the_rest_of_the_chain(chain, truth):
    """The lepton's lab momentum is a feature of its own: changing the W and top masses and the
    other directions moves the neutrino and the b quark, never the lepton."""
    x = chain.encode(truth).double()
    moved = x.clone()
    lepton = [chain.feature_names.index(f"lepton:{q}") for q in ("px", "py", "pz", "mass")]
    others = [i for i in range(chain.features) if i not in lepton]
    moved[:, others] += torch.randn(len(x), len(others), dtype=torch.float64)
    before, after = chain.decode(x), chain.decode(moved)
    for feature in ("pt", "eta", "phi"):
        torch.testing.assert_close(after["lepton"][feature], before["lepton"][feature])
    assert not torch.allclose(after["neutrino"]["pt"], before["neutrino"]["pt"])


@pytest.mark.parametrize(
    ("anchors", "message"),
    [
        (("q1", "photon"), r"anchors must be distinct daughters.*'photon'"),
        (("q1", "q1"), r"anchors must be distinct daughters"),
        (("q1",), r"do not reach the daughters \['b_lep', 'lepton', 'neutrino'\]"),
        (("q1", "q2", "lepton"), r"composite 'W_had' adds \['q1'\] to 'q2'"),
        (("b_had", "lepton"), r"composite 't_had' adds \['q1', 'q2'\] to 'b_had'"),
    ],
)
def test_anchors_that_cannot_grow_the_tree_are_rejected(anchors, message):
    process = get_process("ttbar-semileptonic")
    daughters = [slot.name for slot in process.partons]
    with pytest.raises(UnfoldError, match=message):
        AnchoredChainRepresentation(daughters=daughters, composites=process.composites, anchors=anchors)


def test_a_small_error_in_the_features_gives_a_small_error_in_the_momenta(semileptonic_files):
    """Steps store the added daughter's lab momentum, not a direction: the energy of a step by lab
    direction is m^2 / 2 E_A (1 - cos theta), which turns a small angular error near collinearity
    into a large one (on these events: 0.46 at the 99th percentile for q2 and 0.45 for the neutrino
    with lab directions, 0.10 and 0.09 as stored now), and a direction in the W rest frame is
    boosted into a larger error of the b quark."""
    with h5py.File(semileptonic_files[0]) as file:
        truth = {name: {k: file[f"PARTONS/{name}/{k}"][:] for k in ("pt", "eta", "phi", "mass")}
                 for name in ("b_had", "q1", "q2", "b_lep", "lepton", "neutrino")}
    chain = AnchoredChainRepresentation.for_process(get_process("ttbar-semileptonic"))
    chain.fit(truth)
    x = chain.encode(truth).double()
    nudged = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before, after = chain.decode_four_momenta(x), chain.decode_four_momenta(nudged)
    for step in chain.steps:
        change = (after[step.added][:, 0] / before[step.added][:, 0]).log().abs()
        assert torch.quantile(change, 0.99) < 0.2, step.added
