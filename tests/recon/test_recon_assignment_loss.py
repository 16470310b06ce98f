"""The symmetric assignment loss against brute-force oracles over the event and daughter groups."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from importlib.resources import files

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recon import (
    AssignmentOutput,
    AssignmentTargets,
    EventTopology,
    ReconError,
    allowed_tuples,
    masked_log_softmax,
    pattern_balance_weights,
    regression_nll,
)
from recon.assignment_loss import assignment_loss

CYCLIC = EventTopology.from_dict(
    {
        "INPUTS": {"SEQUENTIAL": {"Jets": {"pt": "log_normalize"}}},
        "EVENT": {"a": ["x", "y"], "b": ["x", "y"], "c": ["x", "y"]},
        "PERMUTATIONS": {
            "EVENT": [["a", "b", "c"]],
            "a": [["x", "y"]],
            "b": [["x", "y"]],
            "c": [["x", "y"]],
        },
    }
)
TOPOLOGIES = {
    "allhadronic": EventTopology.from_yaml(files("configs") / "events" / "ttbar_allhadronic.yaml"),
    "semileptonic": EventTopology.from_yaml(
        files("configs") / "events" / "ttbar_semileptonic.yaml"
    ),
    "cyclic": CYCLIC,
}
COUNT = 9


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run fastest (by far) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_output(
    topology: EventTopology, rng: np.random.Generator, events: int
) -> AssignmentOutput:
    mask = torch.as_tensor(rng.random((events, COUNT)) < 0.85)
    mask[:, :7] = True
    log_probs = []
    for resonance in topology.resonances:
        logits = torch.as_tensor(
            rng.normal(size=(events,) + (COUNT,) * resonance.order), dtype=torch.float64
        )
        log_probs.append(masked_log_softmax(logits, allowed_tuples(mask, resonance.order)))
    regressions = len(topology.regressions)
    return AssignmentOutput(
        log_probs=tuple(log_probs),
        detection_logits=torch.as_tensor(rng.normal(size=(events, len(topology.resonances)))),
        regression_mean=torch.as_tensor(rng.normal(size=(events, regressions))),
        regression_log_scale=torch.as_tensor(rng.normal(size=(events, regressions)) * 0.3),
        classification_logits=(),
        object_mask=mask,
    )


def random_targets(
    topology: EventTopology, output: AssignmentOutput, rng: np.random.Generator
) -> AssignmentTargets:
    """Distinct real objects for every daughter, then some daughters unmatched (partial events)."""
    events = output.object_mask.shape[0]
    indices = [np.full((events, r.order), -1) for r in topology.resonances]
    for event in range(events):
        objects = rng.permutation(np.flatnonzero(output.object_mask[event].numpy()))
        start = 0
        for r, resonance in enumerate(topology.resonances):
            indices[r][event] = objects[start : start + resonance.order]
            start += resonance.order
            if rng.random() < 0.35:
                indices[r][event, rng.integers(resonance.order)] = -1
    weights = tuple(torch.as_tensor(rng.uniform(0.5, 2.0, events)) for _ in topology.resonances)
    return AssignmentTargets(
        indices=tuple(torch.as_tensor(i) for i in indices),
        regressions=torch.as_tensor(rng.normal(size=(events, len(topology.regressions)))),
        resonance_weights=weights,
        event_weights=torch.as_tensor(rng.uniform(0.5, 2.0, events)),
    )


def permute_resonances(
    targets: AssignmentTargets, permutation: tuple[int, ...]
) -> AssignmentTargets:
    def apply(items: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...] | None:
        return None if items is None else tuple(items[j] for j in permutation)

    return targets._replace(
        indices=apply(targets.indices), resonance_weights=apply(targets.resonance_weights)
    )


def brute_force_assignment(
    topology: EventTopology, output: AssignmentOutput, targets: AssignmentTargets
) -> float:
    """Mean over events with a present resonance of min over G_E of the summed orbit cross-entropies."""
    total, counted = 0.0, 0
    for event in range(output.object_mask.shape[0]):
        present = [bool((t[event] >= 0).all()) for t in targets.indices]
        if not any(present):
            continue
        best = math.inf
        for sigma in topology.event_group:
            loss = 0.0
            for i, j in enumerate(sigma):
                if present[j]:
                    truth = targets.indices[j][event].tolist()
                    terms = [
                        -float(output.log_probs[i][(event, *(truth[k] for k in g))])
                        for g in topology.resonances[i].group
                    ]
                    loss += sum(terms) / len(terms)
            best = min(best, loss)
        total += best
        counted += 1
    return total / counted


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_assignment_term_matches_brute_force_minimum(name: str, rng: np.random.Generator) -> None:
    topology = TOPOLOGIES[name]
    output = random_output(topology, rng, events=12)
    targets = random_targets(topology, output, rng)._replace(
        resonance_weights=None, event_weights=None
    )
    loss = assignment_loss(output, targets, topology=topology, detection_weight=0.0)
    assert float(loss.assignment) == pytest.approx(
        brute_force_assignment(topology, output, targets), rel=1e-10
    )


@pytest.mark.parametrize("name", ["allhadronic", "cyclic"])
def test_loss_is_invariant_under_the_event_group(name: str, rng: np.random.Generator) -> None:
    topology = TOPOLOGIES[name]
    output = random_output(topology, rng, events=16)
    targets = random_targets(topology, output, rng)
    reference = assignment_loss(output, targets, topology=topology)
    without_min = dataclasses.replace(topology, event_group=topology.event_group[:1])
    changed_without_min = False
    for permutation in topology.event_group[1:]:
        permuted = permute_resonances(targets, permutation)
        loss = assignment_loss(output, permuted, topology=topology)
        for term in ("total", "assignment", "detection"):
            assert float(getattr(loss, term)) == pytest.approx(
                float(getattr(reference, term)), rel=1e-12
            ), term
        changed_without_min |= not math.isclose(
            float(assignment_loss(output, permuted, topology=without_min).total),
            float(assignment_loss(output, targets, topology=without_min).total),
        )
    assert changed_without_min


def test_daughter_group_equivalent_targets_give_the_same_loss(rng: np.random.Generator) -> None:
    topology = TOPOLOGIES["semileptonic"]
    output = random_output(topology, rng, events=10)
    targets = random_targets(topology, output, rng)
    hadronic_top = topology.resonance_names.index("ht")
    swapped_quarks = list(targets.indices)
    swapped_quarks[hadronic_top] = targets.indices[hadronic_top][:, [0, 2, 1]]
    swapped_b_and_quark = list(targets.indices)
    swapped_b_and_quark[hadronic_top] = targets.indices[hadronic_top][:, [1, 0, 2]]
    reference = float(assignment_loss(output, targets, topology=topology).total)
    assert float(
        assignment_loss(
            output, targets._replace(indices=tuple(swapped_quarks)), topology=topology
        ).total
    ) == pytest.approx(reference, rel=1e-12)
    assert float(
        assignment_loss(
            output, targets._replace(indices=tuple(swapped_b_and_quark)), topology=topology
        ).total
    ) != pytest.approx(reference, rel=1e-6)


def test_absent_resonances_and_empty_events_do_not_contribute(rng: np.random.Generator) -> None:
    topology = TOPOLOGIES["semileptonic"]
    output = random_output(topology, rng, events=8)
    targets = random_targets(topology, output, rng)
    indices = [t.clone() for t in targets.indices]
    indices[0][:4, 0] = -1
    targets = targets._replace(indices=tuple(indices))
    reference = assignment_loss(output, targets, topology=topology)

    scrambled = output.log_probs[0].detach().clone()
    scrambled[:4] = torch.roll(scrambled[:4], shifts=1, dims=1)
    changed = assignment_loss(
        output._replace(log_probs=(scrambled, output.log_probs[1])), targets, topology=topology
    )
    assert float(changed.assignment) == pytest.approx(float(reference.assignment), rel=1e-12)

    empty_mask = torch.cat([output.object_mask, torch.zeros(1, COUNT, dtype=torch.bool)])
    padded = AssignmentOutput(
        log_probs=tuple(
            torch.cat([lp, torch.full_like(lp[:1], float("-inf"))]) for lp in output.log_probs
        ),
        detection_logits=torch.cat(
            [output.detection_logits, torch.zeros(1, 2, dtype=torch.float64)]
        ),
        regression_mean=torch.cat([output.regression_mean, torch.zeros(1, 5, dtype=torch.float64)]),
        regression_log_scale=torch.cat(
            [output.regression_log_scale, torch.zeros(1, 5, dtype=torch.float64)]
        ),
        classification_logits=(),
        object_mask=empty_mask,
    )
    padded_targets = AssignmentTargets(
        indices=tuple(torch.cat([t, torch.full_like(t[:1], -1)]) for t in targets.indices),
        regressions=torch.cat([targets.regressions, torch.ones(1, 5, dtype=torch.float64)]),
        resonance_weights=tuple(
            torch.cat([w, torch.ones(1, dtype=torch.float64)]) for w in targets.resonance_weights
        ),
        event_weights=torch.cat([targets.event_weights, torch.ones(1, dtype=torch.float64)]),
    )
    leaves = tuple(lp.clone().requires_grad_(True) for lp in padded.log_probs)
    with_empty = assignment_loss(
        padded._replace(log_probs=leaves), padded_targets, topology=topology
    )
    for term in ("total", "assignment", "detection", "regression"):
        assert float(getattr(with_empty, term).detach()) == pytest.approx(
            float(getattr(reference, term)), rel=1e-12
        ), term
    with_empty.total.backward()
    for leaf in leaves:
        assert leaf.grad is not None
        assert bool(torch.isfinite(leaf.grad).all())
        assert bool((leaf.grad[-1] == 0).all())


def test_pattern_weights_balance_event_group_classes() -> None:
    present = torch.tensor(
        [[1, 1]] * 6 + [[1, 0]] * 3 + [[0, 1]] * 1 + [[0, 0]] * 2, dtype=torch.bool
    )
    weights = pattern_balance_weights(present, TOPOLOGIES["allhadronic"].event_group)
    codes = (present.long() * torch.tensor([1, 2])).sum(1)
    assert float(weights[1]) == float(weights[2])
    per_class_total = {c: float(weights[codes][codes == c].sum()) for c in (0, 3)}
    one_or_other = float(weights[codes][(codes == 1) | (codes == 2)].sum())
    assert per_class_total[0] == pytest.approx(one_or_other) == pytest.approx(per_class_total[3])
    assert float(weights[codes].mean()) == pytest.approx(1.0)


def test_pattern_weights_scale_the_assignment_term(rng: np.random.Generator) -> None:
    topology = TOPOLOGIES["semileptonic"]
    output = random_output(topology, rng, events=10)
    targets = random_targets(topology, output, rng)
    plain = assignment_loss(output, targets, topology=topology, detection_weight=0.0)
    doubled = assignment_loss(
        output,
        targets,
        topology=topology,
        detection_weight=0.0,
        pattern_weights=torch.full((4,), 2.0),
    )
    assert float(doubled.assignment) == pytest.approx(2 * float(plain.assignment), rel=1e-12)


@pytest.mark.parametrize(
    ("distribution", "law"),
    [("gaussian", torch.distributions.Normal), ("laplacian", torch.distributions.Laplace)],
)
def test_regression_nll_is_the_negative_log_density(
    distribution: str, law: type, rng: np.random.Generator
) -> None:
    mean, log_scale, target = (torch.as_tensor(rng.normal(size=(6, 3))) for _ in range(3))
    target[0, 1] = float("nan")
    nll = regression_nll(mean, log_scale, target, distribution)  # type: ignore[arg-type]
    expected = -law(mean, log_scale.exp()).log_prob(target.nan_to_num())
    valid = ~torch.isnan(target)
    torch.testing.assert_close(nll[valid], expected[valid])
    assert float(nll[0, 1]) == 0.0
    with pytest.raises(ReconError, match="gaussian"):
        regression_nll(mean, log_scale, target, "cauchy")  # type: ignore[arg-type]


def test_classification_ignores_missing_labels(rng: np.random.Generator) -> None:
    topology = dataclasses.replace(TOPOLOGIES["semileptonic"], classifications=("signal",))
    output = random_output(topology, rng, events=8)
    logits = torch.as_tensor(rng.normal(size=(8, 3)))
    output = output._replace(classification_logits=(logits,))
    labels = torch.tensor([[0], [2], [-1], [1], [1], [-1], [0], [2]])
    targets = random_targets(topology, output, rng)._replace(
        classifications=labels, event_weights=None
    )
    loss = assignment_loss(output, targets, topology=topology)
    expected = F.cross_entropy(logits, labels[:, 0], ignore_index=-1)
    assert float(loss.classification) == pytest.approx(float(expected), rel=1e-12)


def test_bad_targets_raise_recon_error(rng: np.random.Generator) -> None:
    topology = TOPOLOGIES["semileptonic"]
    output = random_output(topology, rng, events=4)
    output.object_mask[0, 8] = False
    targets = random_targets(topology, output, rng)
    with pytest.raises(ReconError, match=r"TARGETS/lt: shape"):
        assignment_loss(
            output,
            targets._replace(indices=(targets.indices[0][:, :1], targets.indices[1])),
            topology=topology,
        )
    padded = targets.indices[1].clone()
    padded[0] = torch.tensor([8, 1, 2])
    with pytest.raises(ReconError, match="padded"):
        assignment_loss(
            output, targets._replace(indices=(targets.indices[0], padded)), topology=topology
        )
    repeated = targets.indices[1].clone()
    repeated[1] = torch.tensor([3, 3, 2])
    with pytest.raises(ReconError, match="twice"):
        assignment_loss(
            output, targets._replace(indices=(targets.indices[0], repeated)), topology=topology
        )
    with pytest.raises(ReconError, match="laplacian"):
        assignment_loss(output, targets, topology=topology, regression_distribution="student")  # type: ignore[arg-type]
