"""Calibration of per-event posteriors: rank histograms and coverage of central intervals.

If the truth of an event is a draw from the same posterior as its n unfoldings, its rank among
them (the number of draws below it) is uniform on {0, ..., n}: the rank histogram is flat. The
interval between the k-th and (n + 1 - k)-th smallest draws then contains the truth with
probability exactly (n + 1 - 2k) / (n + 1), so the coverage of a central interval is compared
with that value rather than with a nominal level that n draws cannot resolve (for n = 8 the
narrowest central interval already covers 7/9).

With event weights (the samples file's WEIGHTS/weight; negative NLO weights allowed) the rank
histogram holds the sum of weights per rank and a coverage is a weighted share, so an event of
weight 2 counts as two events with the same rank. The flatness test then uses Kish's effective
number of events, n_eff = (sum w)^2 / sum w^2, which is the number of events for unit weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from evaluation.errors import ReportError
from evaluation.metrics import effective_events

__all__ = [
    "NOMINAL_LEVELS",
    "CalibrationResult",
    "Coverage",
    "calibrate",
    "coverage",
    "coverage_curve",
    "ranks",
]

NOMINAL_LEVELS = (0.68, 0.95)


@dataclass(frozen=True)
class Coverage:
    """Coverage of one central interval.

    Attributes:
        nominal: the level asked for (0.68, 0.95).
        expected: what a calibrated posterior gives with this n, (n + 1 - 2k) / (n + 1).
        observed: fraction of events whose truth lies in the interval.
        k: the interval runs from the k-th to the (n + 1 - k)-th smallest draw.
    """

    nominal: float
    expected: float
    observed: float
    k: int


@dataclass(frozen=True)
class CalibrationResult:
    """Rank histogram and coverages of one observable for one unfolding.

    Attributes:
        rank_counts: (n + 1,) events (sum of event weights) per rank of the truth among its n draws.
        flatness_p_value: chi-square test of the rank histogram against uniform, on n_eff events.
        coverages: one per nominal level (none with a single draw).
        expected_levels: (L,) exact coverage of each central order-statistic interval.
        observed_levels: (L,) observed coverage of the same intervals (the calibration curve).
        effective_events: Kish's n_eff of the weights (the number of events when unweighted).
    """

    rank_counts: np.ndarray
    flatness_p_value: float
    coverages: tuple[Coverage, ...]
    expected_levels: np.ndarray
    observed_levels: np.ndarray
    effective_events: float


def ranks(truth: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of each event's truth among its draws, ties broken at random (for discrete ones).

    Args:
        truth: (E,) truth values, all finite.
        draws: (E, n) draws, all finite.
        rng: source of the tie-breaking.

    Returns:
        (E,) integers in [0, n]: draws below the truth plus a uniform share of those equal to it.
    """
    below = (draws < truth[:, None]).sum(axis=1)
    equal = (draws == truth[:, None]).sum(axis=1)
    return below + rng.integers(0, equal + 1)


def coverage(event_ranks: np.ndarray, n_draws: int, k: int, weights: np.ndarray | None = None) -> float:
    """Share of events (of event weight) whose truth lies between the k-th and (n + 1 - k)-th smallest draws.

    Args:
        event_ranks: (E,) ranks from :func:`ranks`.
        n_draws: n.
        k: 1 <= k <= n / 2.
        weights: (E,) event weights; None for ones.
    """
    if not 1 <= k <= n_draws // 2:
        raise ReportError(f"interval index k={k} outside [1, {n_draws // 2}] for n={n_draws}")
    inside = (event_ranks >= k) & (event_ranks <= n_draws - k)
    if weights is None:
        return float(np.mean(inside))
    return float(np.sum(weights * inside) / np.sum(weights))


def coverage_curve(
    event_ranks: np.ndarray, n_draws: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Expected and observed (weighted) coverage of every central order-statistic interval, k = 1 .. n/2.

    Returns:
        (expected, observed), each (L,) with L = n // 2 (empty for one draw), expected increasing.
    """
    ks = np.arange(n_draws // 2, 0, -1)
    expected = (n_draws + 1 - 2 * ks) / (n_draws + 1)
    observed = np.array([coverage(event_ranks, n_draws, int(k), weights) for k in ks])
    return expected, observed


def _interval_for(level: float, n_draws: int) -> int:
    """k whose exact coverage (n + 1 - 2k) / (n + 1) is closest to ``level``."""
    k = round((n_draws + 1) * (1 - level) / 2)
    return int(min(max(k, 1), n_draws // 2))


def calibrate(
    truth: np.ndarray, draws: np.ndarray, rng: np.random.Generator, weights: np.ndarray | None = None
) -> CalibrationResult | None:
    """Rank histogram, its flatness p-value and the coverages, over events where all are finite.

    Args:
        truth: (E,) per-event truth.
        draws: (E, n) draws of the same events.
        rng: tie-breaking for discrete observables.
        weights: (E,) event weights (negative ones allowed); None for ones.

    Returns:
        The result, or None when no event has finite truth and draws, or their weights do not
        sum to a positive total.
    """
    usable = np.isfinite(truth) & np.isfinite(draws).all(axis=1)
    event_weights = np.ones(truth.shape[0]) if weights is None else np.asarray(weights, np.float64)
    event_weights = event_weights[usable]
    total = event_weights.sum()
    if not usable.any() or total <= 0:
        return None
    n_draws = draws.shape[1]
    event_ranks = ranks(truth[usable], draws[usable], rng)
    counts = np.bincount(event_ranks, weights=event_weights, minlength=n_draws + 1)
    effective = float(effective_events(event_weights))
    # Kish scaling: the weighted histogram as n_eff unit-weight events would fill it.
    p_value = float(stats.chisquare(counts * effective / total).pvalue)
    coverages = []
    for level in NOMINAL_LEVELS if n_draws >= 2 else ():
        k = _interval_for(level, n_draws)
        expected = (n_draws + 1 - 2 * k) / (n_draws + 1)
        coverages.append(Coverage(level, expected, coverage(event_ranks, n_draws, k, event_weights), k))
    expected_levels, observed_levels = coverage_curve(event_ranks, n_draws, event_weights)
    return CalibrationResult(counts, p_value, tuple(coverages), expected_levels, observed_levels, effective)
