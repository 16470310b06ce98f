"""AssignmentNetwork contract: shapes, equivariance, padding, gradients, the real ttH file, overfitting; ensembles."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from encoders import EncoderError, EncoderInputs
from encoders.kinematics import to_cartesian
from recon import (
    AssignmentNetwork,
    AssignmentTargets,
    EventTopology,
    ReconError,
    decode_assignments,
)
from recon.assignment_loss import assignment_loss
from recon.efficiency import event_correctness
from recon.ensemble import AssignmentEnsemble, mix_outputs

SEMILEPTONIC = EventTopology.from_yaml(files("configs") / "events" / "ttbar_semileptonic.yaml")
COUNT = 10


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run fastest (by far) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_inputs(rng: np.random.Generator, events: int = 6, count: int = COUNT) -> EncoderInputs:
    """Momenta (mass, pt, eta, sin_phi, cos_phi, btag, qtag, etag, utag) and Met (met, sin_phi, cos_phi)."""
    mass, pt = rng.uniform(0, 20, (events, count)), rng.uniform(20, 300, (events, count))
    eta, phi = rng.uniform(-2.5, 2.5, (events, count)), rng.uniform(-np.pi, np.pi, (events, count))
    flags = (rng.random((events, count, 4)) < 0.3).astype(float)
    momenta = np.concatenate([np.stack([mass, pt, eta, np.sin(phi), np.cos(phi)], -1), flags], -1)
    met_phi = rng.uniform(-np.pi, np.pi, events)
    met = np.stack([rng.uniform(0, 200, events), np.sin(met_phi), np.cos(met_phi)], -1)
    mask = rng.random((events, count)) < 0.8
    mask[:, :6] = True
    four_momenta = to_cartesian(
        *(torch.as_tensor(x, dtype=torch.float32) for x in (pt, eta, phi, mass))
    )
    return EncoderInputs(
        (torch.as_tensor(momenta, dtype=torch.float32),),
        (torch.as_tensor(mask),),
        (torch.as_tensor(met, dtype=torch.float32),),
        four_momenta,
    )


def build(pair_bias: bool = True, topology: EventTopology = SEMILEPTONIC, mass_prior: bool = False) -> AssignmentNetwork:
    torch.manual_seed(0)
    return AssignmentNetwork(
        topology=topology, width=32, depth=2, heads=4, pair_bias=pair_bias, attention_width=8, mass_prior=mass_prior
    )


@pytest.mark.parametrize("pair_bias", [False, True])
def test_output_shapes(pair_bias: bool, rng: np.random.Generator) -> None:
    output = build(pair_bias).eval()(random_inputs(rng))
    assert [tuple(lp.shape) for lp in output.log_probs] == [
        (6, COUNT, COUNT),
        (6, COUNT, COUNT, COUNT),
    ]
    assert output.detection_logits.shape == (6, 2)
    assert output.regression_mean.shape == output.regression_log_scale.shape == (6, 5)
    assert output.classification_logits == ()
    torch.testing.assert_close(output.log_probs[1].exp().flatten(1).sum(1), torch.ones(6))


def test_the_mass_prior_needs_four_momenta(rng: np.random.Generator) -> None:
    inputs = random_inputs(rng)._replace(four_momenta=None)
    with pytest.raises(ReconError, match="mass prior needs four-momenta"):
        build(pair_bias=False, mass_prior=True)(inputs)


def test_the_mass_prior_keeps_the_hadronic_top_symmetric_in_its_w_daughters(rng: np.random.Generator) -> None:
    output = build(mass_prior=True).eval()(random_inputs(rng))
    hadronic = output.log_probs[SEMILEPTONIC.resonance_names.index("ht")]  # (b, q1, q2)
    torch.testing.assert_close(hadronic, hadronic.transpose(2, 3))


def test_topology_without_event_targets_keeps_the_output_types(rng: np.random.Generator) -> None:
    bare = EventTopology(SEMILEPTONIC.sources, SEMILEPTONIC.resonances, SEMILEPTONIC.event_group)
    output = build(topology=bare).eval()(random_inputs(rng))
    assert output.regression_mean.shape == (6, 0)
    assert output.classification_logits == ()


@pytest.mark.parametrize(("pair_bias", "mass_prior"), [(False, False), (True, False), (False, True)])
def test_permuting_objects_permutes_every_assignment_axis(
    pair_bias: bool, mass_prior: bool, rng: np.random.Generator
) -> None:
    model = build(pair_bias, mass_prior=mass_prior).eval()
    inputs = random_inputs(rng)
    order = torch.as_tensor(rng.permutation(COUNT))
    permuted = EncoderInputs(
        (inputs.sequential_features[0][:, order],),
        (inputs.sequential_masks[0][:, order],),
        inputs.global_features,
        inputs.four_momenta[:, order],
    )
    output, output_permuted = model(inputs), model(permuted)
    for lp, lp_permuted in zip(output.log_probs, output_permuted.log_probs, strict=True):
        expected = lp
        for axis in range(1, lp.dim()):
            expected = expected.index_select(axis, order)
        torch.testing.assert_close(lp_permuted, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        output_permuted.detection_logits, output.detection_logits, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        output_permuted.regression_mean, output.regression_mean, atol=1e-5, rtol=1e-5
    )


def test_gradients_reach_every_parameter(rng: np.random.Generator) -> None:
    topology = EventTopology.from_dict(
        {
            "INPUTS": {
                "SEQUENTIAL": {
                    "Momenta": dict(
                        zip(
                            (
                                "mass",
                                "pt",
                                "eta",
                                "sin_phi",
                                "cos_phi",
                                "btag",
                                "qtag",
                                "etag",
                                "utag",
                            ),
                            ["log_normalize"] * 2 + ["normalize"] * 3 + ["none"] * 4,
                            strict=True,
                        )
                    )
                },
                "GLOBAL": {
                    "Met": {"met": "log_normalize", "sin_phi": "normalize", "cos_phi": "normalize"}
                },
            },
            "EVENT": {"lt": ["b", "l"], "ht": ["b", "q1", "q2"]},
            "PERMUTATIONS": {"ht": [["q1", "q2"]]},
            "REGRESSIONS": {"EVENT": ["neutrino_pz"]},
            "CLASSIFICATIONS": {"EVENT": ["signal"]},
        }
    )
    model = build(topology=topology)
    inputs = random_inputs(rng)
    output = model(inputs)
    targets = AssignmentTargets(
        indices=(torch.tensor([[0, 1]] * 6), torch.tensor([[2, 3, 4]] * 6)),
        regressions=torch.as_tensor(rng.normal(size=(6, 1)), dtype=torch.float32),
        classifications=torch.tensor([[0], [1], [1], [0], [1], [0]]),
    )
    assignment_loss(output, targets, topology=topology).total.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(parameter.grad.abs().sum() > 0), name


def test_padding_is_inert_and_empty_events_are_finite(rng: np.random.Generator) -> None:
    model = build().eval()
    inputs = random_inputs(rng)
    mask = inputs.sequential_masks[0]
    noisy = torch.where(
        mask[..., None],
        inputs.sequential_features[0],
        torch.full_like(inputs.sequential_features[0], 7e3),
    )
    output = model(inputs)
    output_noisy = model(inputs._replace(sequential_features=(noisy,)))
    for lp, lp_noisy in zip(output.log_probs, output_noisy.log_probs, strict=True):
        torch.testing.assert_close(lp_noisy, lp)
    empty = mask.clone()
    empty[0] = False
    output_empty = model(inputs._replace(sequential_masks=(empty,)))
    assert bool(torch.isfinite(output_empty.detection_logits).all())
    assert bool(torch.isfinite(output_empty.regression_mean).all())
    assert all(bool(torch.isneginf(lp[0]).all()) for lp in output_empty.log_probs)
    assert all(
        bool(torch.isfinite(lp[1:].logsumexp(dim=tuple(range(1, lp.dim())))).all())
        for lp in output_empty.log_probs
    )


def test_nan_features_raise_a_clear_error(rng: np.random.Generator) -> None:
    inputs = random_inputs(rng)
    features = inputs.sequential_features[0].clone()
    features[2, 1, 3] = float("nan")
    with pytest.raises(EncoderError, match="INPUTS/Momenta: NaN"):
        build()(inputs._replace(sequential_features=(features,)))


def test_state_dict_round_trip_keeps_normalisation(rng: np.random.Generator) -> None:
    model = build()
    inputs = random_inputs(rng, events=40)
    model.fit_normalization(
        inputs, regressions=torch.as_tensor(rng.normal(50, 10, (40, 5)), dtype=torch.float32)
    )
    restored = AssignmentNetwork(
        topology=SEMILEPTONIC, width=32, depth=2, heads=4, pair_bias=True, attention_width=8
    )
    restored.load_state_dict(model.state_dict())
    model.eval()
    restored.eval()
    for a, b in zip(model(inputs), restored(inputs), strict=True):
        if isinstance(a, tuple):
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y)
        else:
            torch.testing.assert_close(a, b)
    assert float(restored.regression.location.mean()) == pytest.approx(50, abs=5)


def test_classification_class_counts_must_match_the_topology() -> None:
    topology = EventTopology(
        SEMILEPTONIC.sources,
        SEMILEPTONIC.resonances,
        SEMILEPTONIC.event_group,
        classifications=("signal",),
    )
    with pytest.raises(ReconError, match="signal"):
        AssignmentNetwork(topology=topology, classification_classes=(2, 3))


def test_real_spanet_ttH_file_builds_and_runs(spanet_example: tuple[Path, Path]) -> None:
    data_path, event_file = spanet_example
    topology = EventTopology.from_yaml(event_file)
    events = 16
    with h5py.File(data_path, "r") as data:

        def read(group: str, source) -> torch.Tensor:
            return torch.as_tensor(
                np.stack([data[f"INPUTS/{group}/{f}"][:events] for f in source.features], -1)
            )

        sequential, global_ = topology.sequential[0], topology.globals[0]
        inputs = EncoderInputs(
            (read(sequential.name, sequential),),
            (torch.as_tensor(data[f"INPUTS/{sequential.name}/MASK"][:events]),),
            (read(global_.name, global_),),
        )
        targets = AssignmentTargets(
            indices=tuple(
                torch.as_tensor(
                    np.stack([data[f"TARGETS/{r.name}/{d}"][:events] for d in r.daughters], -1)
                )
                for r in topology.resonances
            ),
            regressions=torch.as_tensor(
                np.stack(
                    [data[f"REGRESSIONS/EVENT/{n}"][:events] for n in topology.regressions], -1
                )
            ),
            classifications=torch.as_tensor(
                np.stack(
                    [data[f"CLASSIFICATIONS/EVENT/{n}"][:events] for n in topology.classifications],
                    -1,
                )
            ),
        )
    assert [r.order for r in topology.resonances] == [1, 3, 2]
    torch.manual_seed(0)
    model = AssignmentNetwork(topology=topology, width=32, depth=2, heads=4, attention_width=16)
    model.fit_normalization(inputs, regressions=targets.regressions)
    output = model(inputs)
    objects = inputs.sequential_masks[0].shape[1]
    assert [tuple(lp.shape) for lp in output.log_probs] == [
        (events,) + (objects,) * k for k in (1, 3, 2)
    ]
    assert output.classification_logits[0].shape == (events, 2)
    loss = assignment_loss(output, targets, topology=topology)
    assert bool(torch.isfinite(loss.total))
    loss.total.backward()
    decoded = decode_assignments(output)
    assert [tuple(i.shape) for i in decoded.indices] == [(events, 1), (events, 3), (events, 2)]


@pytest.mark.slow
def test_tiny_model_learns_synthetic_assignments() -> None:
    """Daughters carry a role flag; a small model must find them in nearly every event."""
    topology = EventTopology.from_dict(
        {
            "INPUTS": {
                "SEQUENTIAL": {
                    "Jets": {
                        "pt": "log_normalize",
                        "r1": "none",
                        "r2": "none",
                        "r3": "none",
                        "r4": "none",
                    }
                }
            },
            "EVENT": {"lt": ["b", "l"], "ht": ["b", "q1", "q2"]},
            "PERMUTATIONS": {"ht": [["q1", "q2"]]},
        }
    )
    generator = np.random.default_rng(7)
    events, count = 200, 8
    features = np.zeros((events, count, 5), dtype=np.float32)
    features[..., 0] = generator.uniform(20, 200, (events, count))
    mask = np.ones((events, count), dtype=bool)
    lt, ht = np.zeros((events, 2), dtype=np.int64), np.zeros((events, 3), dtype=np.int64)
    for event in range(events):
        real = generator.integers(6, count + 1)
        mask[event, real:] = False
        slots = generator.permutation(real)[:5]
        lt[event], ht[event] = slots[:2], slots[2:]
        for slot, role in zip(slots, (1, 2, 3, 4, 4), strict=True):
            features[event, slot, role] = 1.0
    inputs = EncoderInputs((torch.as_tensor(features),), (torch.as_tensor(mask),))
    targets = AssignmentTargets(indices=(torch.as_tensor(lt), torch.as_tensor(ht)))
    torch.manual_seed(0)
    model = AssignmentNetwork(topology=topology, width=32, depth=2, heads=4, attention_width=16)
    model.fit_normalization(inputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    accuracy = 0.0
    for step in range(400):
        optimizer.zero_grad()
        assignment_loss(model(inputs), targets, topology=topology).total.backward()
        optimizer.step()
        if step % 20 == 19:
            with torch.no_grad():
                decoded = decode_assignments(model.eval()(inputs))
            model.train()
            predicted = {"lt": decoded.indices[0].numpy(), "ht": decoded.indices[1].numpy()}
            outcome = event_correctness(predicted, {"lt": lt, "ht": ht}, topology)
            accuracy = float(outcome.correct.all(1).mean())
            if accuracy >= 0.98:
                break
    assert accuracy >= 0.98


# ---- ensembles: several networks' mixture (recon/ensemble.py)

def members(count: int) -> list[AssignmentNetwork]:
    networks = []
    for seed in range(count):
        torch.manual_seed(seed)
        networks.append(AssignmentNetwork(topology=SEMILEPTONIC, width=32, depth=2, heads=4, attention_width=8).eval())
    return networks


@torch.no_grad()
def test_an_ensemble_of_one_network_predicts_what_it_does(rng: np.random.Generator) -> None:
    network, inputs = build().eval(), random_inputs(rng)
    alone, mixed = network(inputs), AssignmentEnsemble([network])(inputs)
    for single, mixture in zip(alone.log_probs, mixed.log_probs, strict=True):
        torch.testing.assert_close(mixture, single)
    torch.testing.assert_close(mixed.detection_logits, alone.detection_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mixed.regression_mean, alone.regression_mean)
    torch.testing.assert_close(mixed.regression_log_scale, alone.regression_log_scale)


@torch.no_grad()
def test_the_mixture_is_the_mean_probability_of_its_members(rng: np.random.Generator) -> None:
    networks, inputs = members(3), random_inputs(rng)
    outputs = [network(inputs) for network in networks]
    mixed = AssignmentEnsemble(networks)(inputs)
    for r, mixture in enumerate(mixed.log_probs):
        expected = torch.stack([o.log_probs[r].exp() for o in outputs]).mean(0)
        torch.testing.assert_close(mixture.exp(), expected)
        torch.testing.assert_close(mixture.exp().flatten(1).sum(1), torch.ones(len(mixture)))
        # a tuple every member forbids (a repeated or padded object) stays forbidden
        assert torch.equal(torch.isinf(mixture), torch.isinf(outputs[0].log_probs[r]))
    detection = torch.stack([o.detection_logits.sigmoid() for o in outputs]).mean(0)
    torch.testing.assert_close(mixed.detection_logits.sigmoid(), detection)
    assert not torch.allclose(outputs[0].log_probs[1], outputs[1].log_probs[1])  # the members differ


@pytest.mark.parametrize(("distribution", "factor"), [("gaussian", 1.0), ("laplacian", 2.0)])
def test_the_mixture_regression_spread_is_the_law_of_total_variance(distribution: str, factor: float) -> None:
    """Two members predicting 0 and 2 with scale 1: mixture mean 1; variance factor * 1 + 1 (the spread of the
    means), so its scale is sqrt(1 + 1 / factor) in the family's own units."""
    template = members(1)[0](random_inputs(np.random.default_rng(0)))
    ones = torch.ones_like(template.regression_mean)
    outputs = [template._replace(regression_mean=value * ones, regression_log_scale=0 * ones) for value in (0.0, 2.0)]
    mixed = mix_outputs(outputs, distribution)
    torch.testing.assert_close(mixed.regression_mean, ones)
    torch.testing.assert_close(mixed.regression_log_scale.exp(), (1 + 1 / factor) ** 0.5 * ones)


def test_an_unknown_regression_distribution_is_refused() -> None:
    output = members(1)[0](random_inputs(np.random.default_rng(0)))
    with pytest.raises(ReconError, match="unknown regression distribution 'cauchy'"):
        mix_outputs([output], "cauchy")


def test_members_of_other_event_files_are_refused() -> None:
    hadronic = EventTopology.from_yaml(files("configs") / "events" / "ttbar_allhadronic.yaml")
    other = AssignmentNetwork(topology=hadronic, width=32, depth=2, heads=4, attention_width=8)
    with pytest.raises(ReconError, match=r"ensemble member 2 predicts .* every member needs the same event file"):
        AssignmentEnsemble([build(), other])
    with pytest.raises(ReconError, match="at least one"):
        AssignmentEnsemble([])
