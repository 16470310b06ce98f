"""SymmetricTensorAttention: exact daughter symmetry, forbidden tuples, normalisation, any K."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from recon import ReconError, SymmetricTensorAttention, allowed_tuples
from recon.event_topology import generate_group

CASES = {
    "K1": (1, []),
    "K2-swap": (2, [(1, 0)]),
    "K3-swap": (3, [(0, 2, 1)]),
    "K3-cycle": (3, [(1, 2, 0)]),
    "K3-full": (3, [(1, 0, 2), (1, 2, 0)]),
    "K4-pairs": (4, [(1, 0, 2, 3), (0, 1, 3, 2)]),
    "K4-trivial": (4, []),
}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run fastest (by far) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(order: int, generators: list[tuple[int, ...]]) -> SymmetricTensorAttention:
    torch.manual_seed(3)
    group = generate_group(generators, order)
    return SymmetricTensorAttention(
        width=16, order=order, group=group, attention_width=8 if order < 4 else 4
    )


def random_objects(
    rng: np.random.Generator, events: int = 3, count: int = 6
) -> tuple[torch.Tensor, torch.Tensor]:
    objects = torch.as_tensor(rng.normal(size=(events, count, 16)), dtype=torch.float64)
    mask = torch.as_tensor(rng.random((events, count)) < 0.8)
    mask[:, :4] = True
    return objects, mask


@pytest.mark.parametrize("case", CASES)
def test_probabilities_are_symmetric_exactly_under_the_daughter_group(
    case: str, rng: np.random.Generator
) -> None:
    order, generators = CASES[case]
    attention = build(order, generators).double()
    objects, mask = random_objects(rng)
    log_probs = attention(objects, mask)
    group = set(attention.group)
    for permutation in itertools.permutations(range(order)):
        permuted = log_probs.permute(0, *(1 + p for p in permutation))
        if permutation in group:
            # Exact up to float64 rounding of the contraction order.
            torch.testing.assert_close(permuted, log_probs, rtol=1e-12, atol=1e-12)
        else:
            assert not torch.allclose(permuted, log_probs), permutation


@pytest.mark.parametrize("case", CASES)
def test_tuple_scores_are_the_written_out_sum(case: str, rng: np.random.Generator) -> None:
    """O_{j1..jK} = sum S_{i1..iK} x_{j1 i1} ... x_{jK iK}, against an explicit loop over every tuple."""
    order, generators = CASES[case]
    attention = build(order, generators).double()
    objects, _ = random_objects(rng, events=2, count=4)
    weight = attention.symmetric_weight().detach()
    projected = attention.project(objects).detach()
    scores = attention.tuple_scores(weight, projected)
    assert scores.shape == (2,) + (4,) * order
    for event in range(2):
        for objects_of_tuple in itertools.product(range(4), repeat=order):
            expected = weight
            for index in objects_of_tuple:  # contract the leading weight axis with each object in turn
                expected = torch.tensordot(projected[event, index], expected, dims=([0], [0]))
            torch.testing.assert_close(scores[(event, *objects_of_tuple)], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_forbidden_tuples_get_no_probability_and_the_rest_sums_to_one(
    case: str, rng: np.random.Generator
) -> None:
    order, generators = CASES[case]
    objects, mask = random_objects(rng)
    log_probs = build(order, generators).double()(objects, mask)
    probs = log_probs.detach().exp()
    for event in range(mask.shape[0]):
        for index in itertools.product(range(mask.shape[1]), repeat=order):
            legal = len(set(index)) == order and all(bool(mask[event, i]) for i in index)
            value = float(probs[(event, *index)])
            assert (value > 0) if legal else value == 0.0
    torch.testing.assert_close(
        probs.flatten(1).sum(1), torch.ones(mask.shape[0], dtype=torch.float64)
    )


def test_events_without_enough_objects_give_zero_probability_and_finite_gradients(
    rng: np.random.Generator,
) -> None:
    attention = build(3, [(0, 2, 1)])
    objects, mask = random_objects(rng)
    mask[0] = False
    mask[1, 2:] = False
    objects = objects.float().requires_grad_(True)
    log_probs = attention(objects, mask)
    assert bool(torch.isneginf(log_probs[:2]).all())
    log_probs[2].exp().pow(2).sum().backward()
    assert bool(torch.isfinite(objects.grad).all())
    assert bool(torch.isfinite(attention.theta.grad).all())


def test_allowed_tuples_agrees_with_enumeration() -> None:
    mask = torch.tensor([[True, True, False, True]])
    allowed = allowed_tuples(mask, 2)
    expected = torch.tensor(
        [[a != b and bool(mask[0, a]) and bool(mask[0, b]) for b in range(4)] for a in range(4)]
    )
    assert torch.equal(allowed[0], expected)


def test_invalid_groups_raise() -> None:
    with pytest.raises(ReconError, match="not a permutation"):
        SymmetricTensorAttention(width=4, order=2, group=[(0, 0)])
    with pytest.raises(ReconError, match="closed"):
        SymmetricTensorAttention(width=4, order=3, group=[(0, 1, 2), (1, 2, 0)])
