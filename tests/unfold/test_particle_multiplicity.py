"""MultiplicityPredictor: normalisation, NB oracle, sampling law, calibration measures, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from unfold.errors import UnfoldError
from unfold.models.particle.multiplicity import (
    MULTIPLICITY_DISTRIBUTIONS,
    MultiplicityPredictor,
    TypedMultiplicity,
    empirical_log_probs,
    multiplicity_calibration,
)


@pytest.mark.parametrize("distribution", MULTIPLICITY_DISTRIBUTIONS)
def test_log_probs_normalised_and_samples_in_support(distribution: str) -> None:
    torch.manual_seed(0)
    predictor = MultiplicityPredictor(condition_width=8, max_particles=11, distribution=distribution)
    event = torch.randn(5, 8)
    log_probs = predictor.log_probs(event)
    assert log_probs.shape == (5, 12)
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(5), atol=1e-5, rtol=0)
    draws = predictor.sample(event, 7, torch.Generator().manual_seed(1))
    assert draws.shape == (5, 7)
    assert draws.dtype == torch.long
    assert draws.min() >= 0
    assert draws.max() <= 11
    torch.testing.assert_close(
        predictor.log_prob(event, draws[:, 0]), log_probs.gather(1, draws[:, :1]).squeeze(1)
    )


@pytest.mark.parametrize("distribution", MULTIPLICITY_DISTRIBUTIONS)
def test_truncation_renormalises_below_the_limit(distribution: str) -> None:
    torch.manual_seed(0)
    predictor = MultiplicityPredictor(condition_width=8, max_particles=9, distribution=distribution)
    event, most = torch.randn(4, 8), torch.tensor([0, 3, 7, 9])
    full, truncated = predictor.log_probs(event).exp(), predictor.log_probs(event, most).exp()
    for row, limit in enumerate(most.tolist()):
        assert (truncated[row, limit + 1 :] == 0).all()
        expected = full[row, : limit + 1] / full[row, : limit + 1].sum()
        torch.testing.assert_close(truncated[row, : limit + 1], expected)
    draws = predictor.sample(event, 200, torch.Generator().manual_seed(1), most=most)
    assert (draws <= most.unsqueeze(-1)).all()


@pytest.mark.parametrize("distribution", MULTIPLICITY_DISTRIBUTIONS)
def test_typed_counts_form_one_normalised_law_within_the_slots(distribution: str) -> None:
    torch.manual_seed(0)
    slots = 5
    counts = TypedMultiplicity(condition_width=5, num_classes=3, max_particles=slots, distribution=distribution)
    event = torch.randn(2, 5)
    grid = torch.cartesian_prod(*[torch.arange(slots + 1)] * 3)
    grid = grid[grid.sum(-1) <= slots]
    for row in range(2):
        total = counts.log_prob(event[row].expand(len(grid), -1), grid).exp().sum()
        torch.testing.assert_close(total, torch.tensor(1.0), atol=1e-5, rtol=0)
    drawn = counts.sample(event, 500, torch.Generator().manual_seed(2))
    assert drawn.shape == (2, 500, 3)
    assert (drawn >= 0).all() and (drawn.sum(-1) <= slots).all()
    assert all(drawn[..., c].unique().numel() > 1 for c in range(3))


def test_each_count_follows_the_counts_drawn_before_it() -> None:
    counts = TypedMultiplicity(condition_width=2, num_classes=2, max_particles=8)
    with torch.no_grad():  # p(N_0) uniform
        counts.heads[0].network[-1].weight.zero_()
        counts.heads[0].network[-1].bias.zero_()
    table = torch.full((9, 9), -30.0)  # p(N_1 | N_0): everything on N_1 = 2 N_0
    table[torch.arange(5), 2 * torch.arange(5)] = 30.0
    counts.heads[1].network = _OneHotTail(table, condition_width=2)
    drawn = counts.sample(torch.zeros(2, 2), 300, torch.Generator().manual_seed(3))
    first, second = drawn.unbind(-1)
    fits = 3 * first <= 8
    assert torch.equal(second[fits], 2 * first[fits])
    assert fits.any() and (~fits).any()
    assert (first[~fits] + second[~fits] <= 8).all()  # no room for 2 N_0: truncated to the slots


class _OneHotTail(torch.nn.Module):
    """Logits of the second count read off the first count's one-hot that follows the event features."""

    def __init__(self, table: torch.Tensor, condition_width: int) -> None:
        super().__init__()
        self.table, self.condition_width = table, condition_width

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs[:, self.condition_width :] @ self.table


def test_sample_frequencies_follow_probabilities() -> None:
    torch.manual_seed(0)
    predictor = MultiplicityPredictor(condition_width=4, max_particles=6)
    event = torch.randn(1, 4)
    probs = predictor.log_probs(event).exp()[0].detach()
    draws = predictor.sample(event, 40_000, torch.Generator().manual_seed(2))[0]
    frequencies = torch.bincount(draws, minlength=7).double() / 40_000
    chi2 = (40_000 * (frequencies - probs) ** 2 / probs).sum()
    assert float(chi2) < stats.chi2(6).ppf(0.999)


def test_negative_binomial_matches_scipy_truncated_pmf() -> None:
    predictor = MultiplicityPredictor(
        condition_width=3, max_particles=15, distribution="negative-binomial"
    )
    mean, dispersion = 6.5, 3.0
    final = predictor.network[-1]
    with torch.no_grad():
        final.weight.zero_()
        final.bias.copy_(torch.tensor([mean, dispersion]).sub(1e-4).expm1().log())
    pmf = stats.nbinom(dispersion, dispersion / (dispersion + mean)).pmf(np.arange(16))
    expected = torch.from_numpy(pmf / pmf.sum()).float()
    torch.testing.assert_close(
        predictor.log_probs(torch.randn(2, 3)).exp()[1], expected, atol=1e-5, rtol=1e-4
    )


def test_calibration_measures_against_known_answers() -> None:
    generator = torch.Generator().manual_seed(3)
    truth = torch.tensor([0.1, 0.2, 0.4, 0.2, 0.1])
    observed = torch.multinomial(truth, 20_000, replacement=True, generator=generator)
    right = multiplicity_calibration(truth.log(), observed, generator)
    shifted = multiplicity_calibration(truth.roll(1).log(), observed, generator)
    assert right.pit_ks < 0.015
    assert right.frequency_error < 0.015
    assert shifted.pit_ks > 0.1
    assert shifted.nll > right.nll
    assert shifted.ranked_probability_score > right.ranked_probability_score
    point_mass = torch.full((1, 5), -1e9)
    point_mass[0, 2] = 0.0
    exact = multiplicity_calibration(point_mass, torch.tensor([2]))
    assert exact.ranked_probability_score == pytest.approx(0.0, abs=1e-9)
    off_by_one = multiplicity_calibration(point_mass, torch.tensor([3]))
    assert off_by_one.ranked_probability_score == pytest.approx(1.0)


def test_empirical_marginal_matches_frequencies() -> None:
    multiplicity = torch.tensor([0, 2, 2, 3, 3, 3])
    probs = empirical_log_probs(multiplicity, 4).exp()
    torch.testing.assert_close(probs, torch.tensor([1.5, 0.5, 2.5, 3.5, 0.5]) / 8.5)


def test_bad_options_and_values_raise() -> None:
    with pytest.raises(UnfoldError, match="categorical, negative-binomial"):
        MultiplicityPredictor(condition_width=4, distribution="gamma")  # type: ignore[arg-type]
    predictor = MultiplicityPredictor(condition_width=4, max_particles=5)
    with pytest.raises(UnfoldError, match=r"0\.\.5"):
        predictor.log_prob(torch.randn(2, 4), torch.tensor([1, 6]))
    with pytest.raises(UnfoldError, match="positive"):
        predictor.sample(torch.randn(2, 4), 0)
    counts = TypedMultiplicity(condition_width=4, num_classes=2, max_particles=5)
    with pytest.raises(UnfoldError, match="at most 5 in all; got smallest count 1, largest total 6"):
        counts.log_prob(torch.randn(2, 4), torch.tensor([[1, 1], [4, 2]]))
    with pytest.raises(UnfoldError, match="smallest count -1"):
        counts.log_prob(torch.randn(2, 4), torch.tensor([[1, -1], [0, 2]]))
    with pytest.raises(UnfoldError, match=r"counts must have shape \(2, 2\), got \(2, 3\)"):
        counts.log_prob(torch.randn(2, 4), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(UnfoldError, match="num_classes must be at least 1"):
        TypedMultiplicity(condition_width=4, num_classes=0)



def synthetic_multiplicity(
    num_events: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Condition (E', 6) and M ~ Poisson(3 exp(0.4 x_0 - 0.25 x_1)) truncated to M <= 12."""
    condition = torch.randn(num_events, 6, generator=generator)
    rate = 3.0 * torch.exp(0.4 * condition[:, 0] - 0.25 * condition[:, 1])
    multiplicity = torch.poisson(rate, generator=generator).long()
    kept = multiplicity <= 12
    return condition[kept], multiplicity[kept]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("distribution", MULTIPLICITY_DISTRIBUTIONS)
def test_trained_predictor_beats_training_marginal(distribution: str) -> None:
    torch.manual_seed(4)
    generator = torch.Generator().manual_seed(5)
    train_x, train_m = synthetic_multiplicity(8192, generator)
    test_x, test_m = synthetic_multiplicity(8192, generator)
    predictor = MultiplicityPredictor(
        condition_width=6, max_particles=12, distribution=distribution, width=64
    )
    optimiser = torch.optim.Adam(predictor.parameters(), lr=3e-3)
    for _ in range(500):
        rows = torch.randint(0, len(train_m), (512,), generator=generator)
        loss = -predictor.log_prob(train_x[rows], train_m[rows]).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        model = multiplicity_calibration(predictor.log_probs(test_x), test_m, generator)
    marginal = multiplicity_calibration(empirical_log_probs(train_m, 12), test_m, generator)
    assert model.nll < marginal.nll - 0.1
    assert model.ranked_probability_score < 0.85 * marginal.ranked_probability_score
    assert model.pit_ks < 0.05
    assert model.frequency_error < 0.04
