"""TupleMassPrior: exact tuple and pair masses, daughter-group symmetry, equivariance, and that it learns masses."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
import vector

from encoders.kinematics import to_cartesian
from recon import ReconError
from recon.mass_prior import TupleMassPrior, tuple_masses
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
    whole, pairs = tuple_masses(four_momenta(pt, eta, phi, mass), order=3)
    features = torch.stack([whole, *(p.expand_as(whole) for p in pairs)], dim=-1)
    p4 = vector.array({"pt": pt, "eta": eta, "phi": phi, "mass": mass})
    for event, (a, b, c) in [(0, (0, 1, 2)), (1, (4, 2, 3)), (2, (3, 0, 1))]:
        tuple_ = (a, b, c)
        expected = [sum((p4[event, i] for i in tuple_[1:]), p4[event, a]).mass]
        expected += [(p4[event, tuple_[i]] + p4[event, tuple_[j]]).mass for i, j in combinations(range(3), 2)]
        np.testing.assert_allclose(features[event, a, b, c].numpy() * 100, expected, rtol=2e-3)


def chi_square_truth(p4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A toy truth: per event, the (b, q1, q2) with the smallest top and W mass chi-square.

    Returns the tuple masses [GeV], the allowed-tuple mask and the flat index of the true tuple.
    """
    events, count = p4.shape[:2]
    whole, pairs = tuple_masses(p4, order=3)
    chi2 = ((whole * 100 - 173) / 20) ** 2 + ((pairs[2] * 100 - 80) / 10) ** 2  # pairs[2]: (q1, q2)
    allowed = allowed_tuples(torch.ones(events, count, dtype=torch.bool), 3)
    return whole * 100, allowed, torch.where(allowed, chi2, torch.inf).flatten(1).argmin(1)


def unflatten(flat: torch.Tensor, count: int) -> torch.Tensor:
    """(E,) flat tuple index -> (E, 3) object indices."""
    return torch.stack([flat // count**2, flat // count % count, flat % count], dim=1)


def test_the_prior_is_symmetric_under_the_daughter_group_and_equivariant(rng: np.random.Generator) -> None:
    p4 = four_momenta(*jets(rng, 64, 6))
    prior = TupleMassPrior(order=3, group=W_SWAP)
    prior.fit(p4, unflatten(chi_square_truth(p4)[2], 6))
    logits = prior(p4)
    torch.testing.assert_close(logits, logits.transpose(2, 3))
    assert not torch.allclose(logits, logits.transpose(1, 2))  # b is not interchangeable with q1
    order = torch.as_tensor(rng.permutation(6))
    expected = logits[:, order][:, :, order][:, :, :, order]
    torch.testing.assert_close(prior(p4[:, order]), expected, atol=1e-5, rtol=1e-5)


def test_the_fitted_prior_finds_the_chi_square_tuple_and_training_sharpens_it(rng: np.random.Generator) -> None:
    """Closure on a simple case: the truth is a top and W mass chi-square; the prior, fitted on
    the true tuples' masses, must pick them far above chance, and learning must improve it."""
    torch.manual_seed(0)
    events, count = 512, 8
    p4 = four_momenta(*jets(rng, events, count))
    masses, allowed, truth = chi_square_truth(p4)
    prior = TupleMassPrior(order=3, group=W_SWAP)

    def accuracy() -> float:
        picked = masked_log_softmax(prior(p4), allowed).flatten(1).argmax(1)
        same = masses.flatten(1).gather(1, picked[:, None]) == masses.flatten(1).gather(1, truth[:, None])
        return float(same.float().mean())  # q1 <-> q2 give the same tuple

    unfitted = accuracy()
    prior.fit(p4, unflatten(truth, count))
    fitted = accuracy()
    optimiser = torch.optim.Adam(prior.parameters(), lr=0.02)
    for _ in range(30):
        optimiser.zero_grad()
        loss = -masked_log_softmax(prior(p4), allowed).flatten(1).gather(1, truth[:, None]).mean()
        loss.backward()
        optimiser.step()
    trained = accuracy()
    assert fitted > unfitted + 0.1, "the fit puts the centres at the true masses"
    assert trained > fitted + 0.05


def test_orders_below_two_are_refused() -> None:
    with pytest.raises(ReconError, match="at least 2"):
        TupleMassPrior(order=1, group=((0,),))
