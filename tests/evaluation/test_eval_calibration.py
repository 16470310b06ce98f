"""Rank histograms and coverage: a calibrated posterior passes, a too-narrow one fails."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.calibration import calibrate, coverage, coverage_curve, ranks
from evaluation.errors import ReportError

N_EVENTS = 4000
NOISE = 0.7


def _conjugate_gaussian(rng, n_draws, width_scale=1.0):
    """theta ~ N(0, 1), y = theta + N(0, s^2): the posterior is N(y / (1 + s^2), s^2 / (1 + s^2))."""
    theta = rng.normal(size=N_EVENTS)
    y = theta + NOISE * rng.normal(size=N_EVENTS)
    mean = y / (1 + NOISE**2)
    std = np.sqrt(NOISE**2 / (1 + NOISE**2)) * width_scale
    return theta, mean[:, None] + std * rng.normal(size=(N_EVENTS, n_draws))


def test_calibrated_posterior_gives_flat_ranks_and_nominal_coverage(rng):
    truth, draws = _conjugate_gaussian(rng, n_draws=99)
    result = calibrate(truth, draws, rng)
    assert result.flatness_p_value > 0.01
    for cov in result.coverages:
        # With n = 99 the order-statistic intervals resolve the nominal levels to 0.01.
        assert cov.expected == pytest.approx(cov.nominal, abs=0.011)
        tolerance = 3 * np.sqrt(cov.expected * (1 - cov.expected) / N_EVENTS)
        assert abs(cov.observed - cov.expected) < tolerance
    np.testing.assert_allclose(result.observed_levels, result.expected_levels, atol=0.03)


def test_too_narrow_posterior_fails_flatness_and_undercovers(rng):
    truth, draws = _conjugate_gaussian(rng, n_draws=99, width_scale=0.5)
    result = calibrate(truth, draws, rng)
    assert result.flatness_p_value < 0.01
    for cov in result.coverages:
        assert cov.observed < cov.expected - 0.1
    # A too-narrow posterior piles the truth into the extreme ranks (a U-shaped histogram).
    counts = result.rank_counts
    assert counts[0] + counts[-1] > 5 * counts.mean()


def test_few_draws_are_compared_with_their_exact_coverage(rng):
    truth, draws = _conjugate_gaussian(rng, n_draws=8)
    result = calibrate(truth, draws, rng)
    assert result.rank_counts.size == 9
    expected, observed = coverage_curve(ranks(truth, draws, rng), 8)
    np.testing.assert_allclose(expected, [1 / 9, 3 / 9, 5 / 9, 7 / 9])
    np.testing.assert_allclose(observed, expected, atol=0.04)


def test_ties_of_discrete_observables_are_broken_at_random(rng):
    truth = rng.poisson(3.0, size=N_EVENTS).astype(float)
    draws = rng.poisson(3.0, size=(N_EVENTS, 9)).astype(float)
    result = calibrate(truth, draws, rng)
    assert result.flatness_p_value > 0.01


def test_events_with_missing_values_are_skipped_and_all_missing_gives_none(rng):
    truth, draws = _conjugate_gaussian(rng, n_draws=8)
    truth[:100] = np.nan
    assert calibrate(truth, draws, rng).rank_counts.sum() == N_EVENTS - 100
    assert calibrate(np.full(5, np.nan), np.zeros((5, 8)), rng) is None


def test_interval_index_out_of_range_is_refused():
    with pytest.raises(ReportError, match="outside"):
        coverage(np.zeros(3, dtype=int), 8, 5)
