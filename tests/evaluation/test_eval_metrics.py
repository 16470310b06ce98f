"""Distances against cases with known answers: identical samples, shifted Gaussians, scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from evaluation.errors import ReportError
from evaluation.metrics import (
    METRICS,
    binned_probabilities,
    distance,
    histogram_edges,
    kl_divergence,
    peak_position,
    summarise_draws,
    triangular_discrimination,
)


def _mean_abs_normal(mu: float, sigma: float) -> float:
    """E|Z| for Z ~ N(mu, sigma^2) (folded normal mean)."""
    return sigma * np.sqrt(2 / np.pi) * np.exp(-(mu**2) / (2 * sigma**2)) + mu * special.erf(
        mu / (np.sqrt(2) * sigma)
    )


@pytest.mark.parametrize("metric", METRICS)
def test_identical_samples_are_at_zero_distance(metric, rng):
    sample = rng.normal(size=2000)
    edges = histogram_edges(sample, 64)
    assert distance(metric, sample, sample.copy(), edges) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("shift", [0.3, 1.0, 2.5])
def test_shifted_gaussian_distances_match_closed_forms(shift, rng):
    a = rng.normal(size=200_000)
    b = rng.normal(loc=shift, size=200_000)
    edges = histogram_edges(a, 64)
    # Wasserstein-1 between two equal-width Gaussians is the shift of their means.
    assert distance("wasserstein", a, b, edges) == pytest.approx(shift, abs=0.02)
    # KS: sup |Phi(x) - Phi(x - d)| = 2 Phi(d / 2) - 1.
    assert distance("ks", a, b, edges) == pytest.approx(2 * stats.norm.cdf(shift / 2) - 1, abs=0.01)
    # Energy distance (scipy's, the square root of Szekely's): 2E|X-Y| - E|X-X'| - E|Y-Y'|.
    squared = 2 * _mean_abs_normal(shift, np.sqrt(2)) - 2 * _mean_abs_normal(0.0, np.sqrt(2))
    assert distance("energy", a, b, edges) == pytest.approx(np.sqrt(squared), rel=0.05)


def test_kl_matches_scipy_entropy_on_common_bins(rng):
    a, b = rng.normal(size=5000), rng.normal(0.5, 1.3, size=5000)
    edges = histogram_edges(a, 64)
    p, q = binned_probabilities(a, edges), binned_probabilities(b, edges)
    both = (p > 0) & (q > 0)
    assert kl_divergence(p, q) == pytest.approx(stats.entropy(p[both], q[both]))
    assert distance("kl", a, b, edges) > 0


def test_triangular_discrimination_is_bounded_symmetric_and_scaled():
    p = np.array([0.5, 0.5, 0.0, 0.0])
    q = np.array([0.0, 0.0, 0.5, 0.5])
    assert triangular_discrimination(p, q) == pytest.approx(1.0)
    r = np.array([0.1, 0.2, 0.3, 0.4])
    assert triangular_discrimination(p, r) == pytest.approx(triangular_discrimination(r, p))
    a, b = np.array([0.0, 0.1, 0.9]), np.array([2.0, 2.1, 2.9])
    # Disjoint samples: Delta = 1, reported x 10^3.
    assert distance("triangular", a, b, np.array([-0.5, 1.0, 1.5, 3.5])) == pytest.approx(1000.0)


def test_overflow_is_counted_in_the_edge_bins():
    edges = np.array([0.0, 1.0, 2.0])
    probabilities = binned_probabilities(np.array([-5.0, 0.5, 1.5, 9.0, np.nan]), edges)
    np.testing.assert_allclose(probabilities, [0.5, 0.5])


def test_summary_over_draws_brackets_the_mean_and_compares_with_the_reference(rng):
    truth = rng.normal(size=3000)
    draws = truth[:, None] + 0.01 * rng.normal(size=(3000, 5))
    reference = truth + 1.0
    summary = summarise_draws(truth, draws, reference, histogram_edges(truth, 64))
    for metric in METRICS:
        s = summary[metric]
        assert s.minimum <= s.mean <= s.maximum
        assert s.beats_reference is True
    assert summary["wasserstein"].reference == pytest.approx(1.0, abs=1e-9)
    no_reference = summarise_draws(truth, draws, None, histogram_edges(truth, 64))
    assert no_reference["ks"].beats_reference is None


def test_discrete_edges_put_one_integer_per_bin():
    edges = histogram_edges(np.array([4.0, 5.0, 7.0]), 64, discrete=True)
    np.testing.assert_allclose(edges, [3.5, 4.5, 5.5, 6.5, 7.5])


def test_unknown_metric_is_refused():
    with pytest.raises(ReportError, match="choose from"):
        distance("chi2", np.zeros(3), np.zeros(3), np.linspace(0, 1, 3))


def test_peak_position_finds_a_breit_wigner_core_under_broad_tails():
    rng = np.random.default_rng(3)
    # W-like resonance: Cauchy in m with Gamma = 2.1 GeV, plus a flat combinatorial background
    resonance = 80.4 + 1.05 * rng.standard_cauchy(4000)
    background = rng.uniform(20.0, 200.0, 4000)
    assert peak_position(np.concatenate([resonance, background])) == pytest.approx(80.4, abs=0.3)


def test_peak_position_of_a_skewed_distribution_is_its_mode_not_its_mean():
    values = np.random.default_rng(4).gamma(shape=3.0, scale=10.0, size=20000)  # mode 20, mean 30
    assert peak_position(values) == pytest.approx(20.0, abs=1.5)


def test_peak_position_ignores_nan_and_needs_two_values():
    values = np.array([np.nan, 1.0, 1.1, 0.9, 1.0, np.nan])
    assert peak_position(values) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ReportError, match="at least 2 finite"):
        peak_position(np.array([np.nan, 3.0]))
