"""Distances against cases with known answers (identical samples, shifted Gaussians, disjoint
supports), against scipy, and their noise: bootstrap errors and the noise floor."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from evaluation.errors import ReportError
from evaluation.metrics import (
    KL_PSEUDOCOUNT,
    METRICS,
    bootstrap_weights,
    distance,
    histogram_edges,
    kl_divergence,
    noise_floor,
    peak_position,
    summarise,
    triangular_discrimination,
    verdict,
    weighted_distances,
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


def test_kl_is_scipy_entropy_of_the_smoothed_histograms(rng):
    a, b = rng.normal(size=5000), rng.normal(0.5, 1.3, size=5000)
    edges = histogram_edges(a, 64)
    counts_a = np.histogram(np.clip(a, edges[0], edges[-1]), edges)[0]
    counts_b = np.histogram(np.clip(b, edges[0], edges[-1]), edges)[0]
    expected = stats.entropy(counts_a + KL_PSEUDOCOUNT, counts_b + KL_PSEUDOCOUNT)
    assert distance("kl", a, b, edges) == pytest.approx(expected)
    assert kl_divergence(counts_a.astype(float), counts_b.astype(float)) == pytest.approx(expected)


def test_kl_sees_a_sample_that_misses_half_the_support(rng):
    # Skipping empty bins scored U(0,1) against U(0,0.5) at 0.0014; smoothed, an empty bin costs ~ln N.
    a, b = rng.uniform(0, 1, 5000), rng.uniform(0, 0.5, 5000)
    edges = histogram_edges(a, 64)
    missing_half = distance("kl", a, b, edges)
    same = distance("kl", a, rng.uniform(0, 1, 5000), edges)
    assert missing_half > 1.0
    assert missing_half > 50 * same


def test_unbinned_distances_match_scipy_with_weights_and_ties(rng):
    a = np.round(rng.normal(size=700), 1)  # ties inside and across the samples
    b = np.round(rng.normal(0.3, 1.2, size=500), 1)
    b[:5] = np.nan
    wa = rng.integers(0, 3, (1, a.size)).astype(float)
    wb = rng.integers(0, 3, (1, b.size)).astype(float)
    ours = weighted_distances(a, b, histogram_edges(a, 32), wa, wb)
    finite = np.isfinite(b)
    assert ours["wasserstein"][0] == pytest.approx(stats.wasserstein_distance(a, b[finite], wa[0], wb[0, finite]))
    assert ours["energy"][0] == pytest.approx(stats.energy_distance(a, b[finite], wa[0], wb[0, finite]))
    assert distance("ks", a, b, histogram_edges(a, 32)) == pytest.approx(stats.ks_2samp(a, b[finite]).statistic)


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
    # Everything below, inside and above two bins: half in each, so equal to a sample inside.
    outside = np.array([-5.0, 0.5, 1.5, 9.0, np.nan])
    assert distance("triangular", outside, np.array([0.2, 1.2]), edges) == pytest.approx(0.0)


def test_bootstrap_weights_resample_every_row_count_times():
    weights = bootstrap_weights(300, 40, np.random.default_rng(0))
    assert weights.shape == (40, 300)
    assert (weights.sum(axis=1) == 300).all()
    assert 0.55 < (weights > 0).mean() < 0.71  # 1 - 1/e of the rows appear in a resample


@pytest.mark.parametrize("metric", METRICS)
def test_noise_floor_is_what_two_independent_samples_of_that_size_score(metric):
    rng = np.random.default_rng(5)
    truth = rng.normal(size=300)
    first, second = bootstrap_weights(300, 200, rng), bootstrap_weights(300, 200, rng)
    floor = noise_floor(truth, histogram_edges(truth, 64), first, second)[metric]
    independent = []
    for _ in range(200):
        a, b = rng.normal(size=300), rng.normal(size=300)
        independent.append(distance(metric, a, b, histogram_edges(a, 64)))
    assert floor == pytest.approx(np.mean(independent), rel=0.2)


def test_summary_over_draws_brackets_the_mean_and_has_a_bootstrap_error(rng):
    truth = rng.normal(size=3000)
    draws = truth[:, None] + 0.01 * rng.normal(size=(3000, 5))
    edges = histogram_edges(truth, 64)
    weights = bootstrap_weights(3000, 30, rng)
    summary = summarise(truth, draws, edges, weights, weights)
    for metric in METRICS:
        s = summary[metric]
        assert s.minimum <= s.value <= s.maximum
        assert s.bootstrap.shape == (30,)
        assert s.error > 0
    shifted = summarise(truth, truth + 1.0, edges, weights, weights)
    assert shifted["wasserstein"].value == pytest.approx(1.0, abs=1e-9)
    assert shifted["wasserstein"].error < 0.01  # a pure shift stays a shift in every resample


def test_verdict_needs_a_difference_beyond_the_noise(rng):
    truth = rng.normal(size=2000)
    edges = histogram_edges(truth, 64)
    weights = bootstrap_weights(2000, 40, rng)
    noise = noise_floor(truth, edges, weights, bootstrap_weights(2000, 40, rng))
    far = summarise(truth, rng.normal(0.5, 1.0, 2000), edges, weights, weights)
    close = summarise(truth, rng.normal(0.0, 1.0, (2000, 4)), edges, weights, weights)
    also_close = summarise(truth, rng.normal(0.0, 1.0, (2000, 4)), edges, weights, weights)
    for metric in METRICS:
        assert verdict(close[metric], far[metric], noise[metric]) == "better"
        assert verdict(far[metric], close[metric], noise[metric]) == "worse"
        assert verdict(close[metric], also_close[metric], noise[metric]) == "compatible"


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
