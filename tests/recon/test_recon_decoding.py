"""Greedy decoding: no object used twice, agreement with a per-event reference, quality scores
(its speed is benchmarks/bench_recon_decoding.py)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from recon import (
    AssignmentOutput,
    allowed_tuples,
    assignment_entropy,
    decode_assignments,
    masked_log_softmax,
)

ORDERS = (1, 3, 2)  # the ttH example: leptonic-top b, hadronic top, Higgs


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run fastest (by far) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_output(
    rng: np.random.Generator, events: int, count: int, orders: tuple[int, ...] = ORDERS
) -> AssignmentOutput:
    mask = torch.as_tensor(rng.random((events, count)) < 0.75)
    log_probs = tuple(
        masked_log_softmax(
            torch.as_tensor(
                rng.normal(scale=2.0, size=(events,) + (count,) * k), dtype=torch.float32
            ),
            allowed_tuples(mask, k),
        )
        for k in orders
    )
    return AssignmentOutput(
        log_probs=log_probs,
        detection_logits=torch.as_tensor(
            rng.normal(size=(events, len(orders))), dtype=torch.float32
        ),
        regression_mean=torch.zeros(events, 0),
        regression_log_scale=torch.zeros(events, 0),
        classification_logits=(),
        object_mask=mask,
    )


def reference_decode(output: AssignmentOutput, event: int) -> list[tuple[int, ...] | None]:
    """Per-event greedy by enumeration: the most probable remaining tuple over all unplaced resonances."""
    real = output.object_mask[event].nonzero()[:, 0].tolist()
    chosen: list[tuple[int, ...] | None] = [None] * len(output.log_probs)
    unplaced, used = set(range(len(output.log_probs))), set()
    while unplaced:
        best = (-math.inf, min(unplaced), None)
        for r in sorted(unplaced):
            order = output.log_probs[r].dim() - 1
            for index in itertools.permutations([i for i in real if i not in used], order):
                value = float(output.log_probs[r][(event, *index)])
                if value > best[0]:
                    best = (value, r, index)
        _, r, index = best
        chosen[r] = index
        if index is not None:
            used.update(index)
        unplaced.remove(r)
    return chosen


def test_no_object_is_used_twice_and_only_real_objects_are_used(rng: np.random.Generator) -> None:
    output = random_output(rng, events=500, count=9)
    decoded = decode_assignments(output)
    stacked = torch.cat(decoded.indices, dim=1)
    for event in range(stacked.shape[0]):
        taken = [i for i in stacked[event].tolist() if i >= 0]
        assert len(taken) == len(set(taken))
        assert all(bool(output.object_mask[event, i]) for i in taken)
        enough = int(output.object_mask[event].sum()) >= sum(ORDERS)
        assert (len(taken) == sum(ORDERS)) or not enough


def test_agrees_with_per_event_reference(rng: np.random.Generator) -> None:
    output = random_output(rng, events=40, count=7)
    decoded = decode_assignments(output)
    for event in range(40):
        expected = reference_decode(output, event)
        for r, index in enumerate(expected):
            got = tuple(decoded.indices[r][event].tolist())
            assert got == (index if index is not None else (-1,) * ORDERS[r]), (event, r)


def test_quality_scores(rng: np.random.Generator) -> None:
    output = random_output(rng, events=50, count=8)
    decoded = decode_assignments(output)
    for r, (indices, log_probs) in enumerate(zip(decoded.indices, output.log_probs, strict=True)):
        assigned = (indices >= 0).all(dim=1)
        picked = log_probs[(torch.arange(50)[assigned], *indices[assigned].T)].exp()
        torch.testing.assert_close(decoded.assignment_probability[assigned, r], picked)
        assert bool((decoded.assignment_probability[~assigned, r] == 0).all())
        allowed = allowed_tuples(output.object_mask, log_probs.dim() - 1).flatten(1).sum(1).double()
        entropy = decoded.entropy[:, r].double()
        assert bool((entropy >= -1e-6).all())
        assert bool((entropy <= torch.log(allowed.clamp_min(1)) + 1e-4).all())
    torch.testing.assert_close(
        decoded.detection_probability, torch.sigmoid(output.detection_logits)
    )
    torch.testing.assert_close(
        decoded.marginal_probability, decoded.assignment_probability * decoded.detection_probability
    )


def test_entropy_of_uniform_and_certain_distributions() -> None:
    uniform = torch.full((1, 4), math.log(0.25))
    certain = torch.tensor([[0.0, -math.inf, -math.inf, -math.inf]])
    torch.testing.assert_close(
        assignment_entropy(torch.cat([uniform, certain])), torch.tensor([math.log(4), 0.0])
    )


def test_entropy_matches_its_definition_on_masked_tuple_distributions() -> None:
    """-sum p ln p over the allowed tuples, forbidden ones (-inf) and vanishing ones (p ~ e^-120) adding nothing."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 12, 12, 12, generator=generator) * 3
    logits[:, 0, 1, 2] -= 120.0
    allowed = torch.rand(64, 12, 12, 12, generator=generator) < 0.6
    log_probs = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")).reshape(64, -1), 1).reshape(logits.shape)
    probabilities = log_probs.double().exp().reshape(64, -1)
    expected = -(probabilities * torch.where(probabilities > 0, probabilities.log(), 0.0)).sum(1)
    torch.testing.assert_close(assignment_entropy(log_probs).double(), expected, rtol=1e-5, atol=1e-5)
