"""TupleMassPrior: exact tuple and pair masses, daughter-group symmetry, equivariance, and that it learns masses."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
import vector

from encoders.kinematics import to_cartesian
from recon import ReconError
from recon.mass_prior import TupleMassPrior, tuple_mass_features
from recon.symmetric_attention import allowed_tuples, masked_log_softmax

W_SWAP = ((0, 1, 2), (0, 2, 1))  # (b, q1, q2) with q1 <-> q2


def jets(rng: np.random.Generator, events: int, count: int) -> tuple[np.ndarray, ...]:
    """pt, eta, phi, mass of random jets [GeV]."""
    return (rng.uniform(20, 200, (events, count)), rng.uniform(-2.5, 2.5, (events, count)),
            rng.uniform(-np.pi, np.pi, (events, count)), rng.uniform(0, 20, (events, count)))


def four_momenta(pt, eta, phi, mass) -> torch.Tensor:
    return to_cartesian(*(torch.as_tensor(x, dtype=torch.float32) for x in (pt, eta, phi, mass)))


def test_features_are_the_tuple_and_pair_masses(rng: np.random.Generator) -> None:
    pt, eta, phi, mass = jets(rng, 3, 5)
    features = tuple_mass_features(four_momenta(pt, eta, phi, mass), order=3)
    p4 = vector.array({"pt": pt, "eta": eta, "phi": phi, "mass": mass})
    for event, (a, b, c) in [(0, (0, 1, 2)), (1, (4, 2, 3)), (2, (3, 0, 1))]:
        tuple_ = (a, b, c)
        expected = [sum((p4[event, i] for i in tuple_[1:]), p4[event, a]).mass]
        expected += [(p4[event, tuple_[i]] + p4[event, tuple_[j]]).mass for i, j in combinations(range(3), 2)]
        np.testing.assert_allclose(features[event, a, b, c].numpy() * 100, expected, rtol=2e-3)


def test_the_prior_is_symmetric_under_the_daughter_group_and_equivariant(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    prior = TupleMassPrior(order=3, group=W_SWAP)
    p4 = four_momenta(*jets(rng, 4, 6))
    logits = prior(p4)
    torch.testing.assert_close(logits, logits.transpose(2, 3))
    assert not torch.allclose(logits, logits.transpose(1, 2))  # b is not interchangeable with q1
    order = torch.as_tensor(rng.permutation(6))
    expected = logits[:, order][:, :, order][:, :, :, order]
    torch.testing.assert_close(prior(p4[:, order]), expected, atol=1e-5, rtol=1e-5)


def test_the_prior_learns_to_pick_the_tuple_at_the_top_mass(rng: np.random.Generator) -> None:
    """Closure on a simple case: the true tuple is the one whose mass is nearest 173 GeV."""
    torch.manual_seed(0)
    events, count = 512, 6
    p4 = four_momenta(*jets(rng, events, count))
    masses = tuple_mass_features(p4, order=3)[..., 0] * 100
    allowed = allowed_tuples(torch.ones(events, count, dtype=torch.bool), 3)
    distance = torch.where(allowed, (masses - 173.0).abs(), torch.inf).flatten(1)
    truth = distance.argmin(1)
    prior = TupleMassPrior(order=3, group=W_SWAP, hidden=16)
    optimiser = torch.optim.Adam(prior.parameters(), lr=0.02)

    def log_probs() -> torch.Tensor:
        return masked_log_softmax(prior(p4), allowed).flatten(1)

    chance = (log_probs().argmax(1) == truth).float().mean()
    for _ in range(150):
        optimiser.zero_grad()
        loss = -log_probs().gather(1, truth[:, None]).mean()
        loss.backward()
        optimiser.step()
    # Two tuples per event (q1 <-> q2) share the mass: either is the nearest one.
    picked = log_probs().argmax(1)
    correct = (masses.flatten(1).gather(1, picked[:, None]) == masses.flatten(1).gather(1, truth[:, None])).float().mean()
    assert chance < 0.2
    assert correct > 0.7


def test_orders_below_two_are_refused() -> None:
    with pytest.raises(ReconError, match="at least 2"):
        TupleMassPrior(order=1, group=((0,),))
