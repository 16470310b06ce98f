"""Prior dependence of an unfolding: does the unfolded distribution follow a change of the truth?

Two samples that differ in their physics (another top mass, a reweighted spectrum) are unfolded
with the same trained model. For each observable the shift of a location statistic between the
nominal and the alternative sample is measured in the truth, in the unfoldings and at detector
level; the fraction followed is the unfolded shift over the truth shift (1: the unfolding follows
the data, 0: it returns its training prior whatever the data say).

Two statistics: the mean within a window around the peak (robust to the tails; the windows are in
:func:`peak_window`) and the median of all values. Uncertainties: from the draws, the spread of the
per-draw shifts over sqrt(n) (the error of the pooled estimate); from the events, the standard
deviation over bootstrap resamples of the events of both samples (truth, draws and detector level
of an event stay together, so the truth-unfolding correlation is kept in the fraction's error).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from evaluation.errors import ReportError
from evaluation.html import figure, page, section, table, value_table
from evaluation.plots import DPI, STYLE, TRUTH_COLOUR, UNFOLDING_COLOURS, axis_label

__all__ = [
    "STATISTICS",
    "ClosureSample",
    "Shift",
    "closure_page",
    "peak_window",
    "plot_closure",
    "shift_statistics",
]

STATISTICS = ("window_mean", "median")
STATISTIC_NAMES = {"window_mean": "mean in window", "median": "median"}

# Windows of the "mean near the peak", GeV. Top: 165-180 GeV, the window of issue 14's measurement,
# around Pythia 8's default m_t = 173 GeV and PDG 2024's 172.6 GeV (Gamma_t = 1.4 GeV: the window
# holds the Breit-Wigner peak and most of its tails, and a 2.5 GeV mass variation stays inside);
# W: 74-87 GeV around m_W = 80.4 GeV (PDG 2024: 80.37 GeV, Gamma_W = 2.1 GeV; about +-3 widths).
MASS_WINDOWS = {"t": (165.0, 180.0), "W": (74.0, 87.0)}
# Anything else: the central 98 % of the nominal truth (its 1st to 99th percentile).
CENTRAL_QUANTILES = (0.01, 0.99)
BOOTSTRAP_SEED = 1


def peak_window(name: str, nominal_truth: np.ndarray) -> tuple[float, float, str]:
    """The window of the windowed mean of observable ``name`` and the rule that set it.

    Top and W masses (``parton/t_had/mass``, ``parton/W1/mass``...) get fixed windows around the
    pole mass (:data:`MASS_WINDOWS`); every other observable the central 98 % of the nominal truth.
    """
    _, obj, quantity = [*name.split("/"), "", ""][:3]
    kind = obj[:1] if obj[:1] in MASS_WINDOWS and (len(obj) == 1 or obj[1] in "_0123456789") else None
    if quantity == "mass" and kind is not None:
        low, high = MASS_WINDOWS[kind]
        return low, high, f"fixed around the {'top' if kind == 't' else 'W'} mass"
    finite = nominal_truth[np.isfinite(nominal_truth)]
    if finite.size < 2:
        raise ReportError(f"{name}: fewer than 2 finite nominal truth values; cannot set a window")
    low, high = np.quantile(finite, CENTRAL_QUANTILES)
    return float(low), float(high), "central 98 % of the nominal truth (1st-99th percentile)"


@dataclass(frozen=True)
class ClosureSample:
    """One sample of an observable: (E,) truth, (E, n) unfoldings and (E,) detector level (NaN where
    the event was not reconstructed), or None without a detector level; (E,) event weights of a
    weighted sample (a reweighted spectrum) and (E, n) weights of the draws (an unbiased unfolding,
    each event's summing to n), None for ones."""

    truth: np.ndarray
    draws: np.ndarray
    detector: np.ndarray | None = None
    weights: np.ndarray | None = None
    draw_weights: np.ndarray | None = None

    def event_weights(self) -> np.ndarray:
        """(E, 1) weights of the truth and the detector level."""
        return (np.ones(len(self.truth)) if self.weights is None else np.asarray(self.weights, np.float64))[:, None]

    def unfolded_weights(self) -> np.ndarray:
        """(E, n) weights of the draws: event weight times draw weight."""
        draws = np.ones(self.draws.shape) if self.draw_weights is None else np.asarray(self.draw_weights, np.float64)
        return self.event_weights() * draws


@dataclass(frozen=True)
class Shift:
    """Alternative minus nominal of one statistic, with its uncertainties.

    Attributes:
        truth: shift of the truth; truth_bootstrap its bootstrap standard deviation.
        unfolded: shift of the pooled draws; draws_error the spread of the per-draw shifts over
            sqrt(n) (None for one draw); bootstrap_error its bootstrap standard deviation;
            fit_error, for draws weighted by a fit to the data, the standard deviation of the shift
            over the fit's refits (None otherwise); error all three in quadrature.
        fraction: unfolded / truth; fraction_error from the bootstrap of the ratio (half its
            16-84 % range), the draws (draws_error / |truth|) and the fit (fit_error / |truth|) in
            quadrature.
        detector: shift at detector level (None without one), detector_fraction = detector / truth.
        per_draw: the shift of each draw.
    """

    truth: float
    truth_bootstrap: float
    unfolded: float
    draws_error: float | None
    bootstrap_error: float
    fit_error: float | None
    error: float
    fraction: float
    fraction_error: float
    detector: float | None
    detector_bootstrap: float | None
    detector_fraction: float | None
    per_draw: tuple[float, ...]

    def as_json(self) -> dict:
        return {key: (list(value) if isinstance(value, tuple) else value) for key, value in asdict(self).items()}


def _weighted_median(sorted_values: np.ndarray, weights: np.ndarray) -> float:
    """Median of sorted values with (B, R) or (R,) non-negative weights: the first value whose
    cumulative weight reaches half the total."""
    cumulative = np.cumsum(weights, axis=-1)
    index = np.argmax(cumulative >= 0.5 * cumulative[..., -1:], axis=-1)
    return sorted_values[index]


class _Statistic:
    """One statistic of one sample, evaluated on the pooled rows under any (B, E) event counts."""

    def __init__(self, statistic: str, values: np.ndarray, window: tuple[float, float],
                 weights: np.ndarray | None = None) -> None:
        values = values.reshape(len(values), -1)  # (E, k): k draws, 1 for truth or detector level
        weights = (np.ones(values.shape) if weights is None
                   else np.broadcast_to(np.reshape(weights, (len(values), -1)), values.shape))
        self.n_rows = len(values)
        finite = np.isfinite(values)
        if statistic == "window_mean":
            inside = finite & (values >= window[0]) & (values <= window[1])
            self.sums = np.where(inside, values * weights, 0.0).sum(axis=1)
            self.counts = np.where(inside, weights, 0.0).sum(axis=1)
        else:
            rows, _ = np.nonzero(finite)
            order = np.argsort(values[finite], kind="stable")
            self.sorted = values[finite][order]
            self.rows = rows[order]
            self.weights = weights[finite][order]
        self.statistic = statistic

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """The statistic with each event weighted by ``counts`` (E,) or (B, E) (bootstrap multiplicities)."""
        if self.statistic == "window_mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                return (counts @ self.sums) / (counts @ self.counts)
        if self.sorted.size == 0:
            return np.full(counts.shape[:-1], np.nan)
        return _weighted_median(self.sorted, counts[..., self.rows] * self.weights)


def _statistic(statistic: str, values: np.ndarray, window: tuple[float, float],
               weights: np.ndarray | None = None) -> float:
    return float(_Statistic(statistic, values, window, weights)(np.ones(len(values))))


def _std(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.std(ddof=1)) if finite.size > 1 else float("nan")


def _half_width(values: np.ndarray) -> float:
    """Half the 16th-84th percentile range: a ratio's bootstrap spread (its standard deviation
    explodes where a resampled truth shift comes near zero)."""
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return float("nan")
    low, high = np.quantile(finite, (0.16, 0.84))
    return float(high - low) / 2


def shift_statistics(
    nominal: ClosureSample,
    alternative: ClosureSample,
    window: tuple[float, float],
    *,
    resamples: int = 50,
    seed: int = BOOTSTRAP_SEED,
    refits: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> dict[str, Shift]:
    """The shift (alternative - nominal) of each of :data:`STATISTICS` in truth, unfoldings and detector level.

    Args:
        nominal, alternative: the two samples (the numbers of events may differ, not of draws).
        window: (low, high) of the windowed mean, in the observable's unit.
        resamples: bootstrap resamples of the events of both samples (at least 2).
        seed: of the bootstrap (the same resamples for every statistic).
        refits: where the draws are weighted by a fit to the data (an unbiasing), the (nominal,
            alternative) draw weights of each of the fit's bootstrap refits: their spread of the
            unfolded shift is the fit's error (at least 2 refits).
    """
    if resamples < 2:
        raise ReportError(f"--bootstrap {resamples}: expected at least 2 resamples for a bootstrap error")
    for label, sample in (("nominal", nominal), ("alternative", alternative)):
        if sample.draws.ndim != 2 or sample.draws.shape[0] != sample.truth.shape[0]:
            raise ReportError(f"{label}: draws of shape {sample.draws.shape}; expected (E, n) with E = {sample.truth.shape[0]}")
    n = nominal.draws.shape[1]
    if alternative.draws.shape[1] != n:
        raise ReportError(f"alternative: {alternative.draws.shape[1]} draws per event; expected {n} as the nominal")
    rng = np.random.default_rng(seed)
    counts = [np.stack([np.bincount(rng.integers(0, len(s.truth), len(s.truth)), minlength=len(s.truth))
                        for _ in range(resamples)]).astype(np.float64) for s in (nominal, alternative)]
    ones = [np.ones(len(s.truth)) for s in (nominal, alternative)]
    with_detector = nominal.detector is not None and alternative.detector is not None
    out = {}
    for statistic in STATISTICS:
        def shift(pick, counts_of, statistic=statistic):
            first, second = (_Statistic(statistic, pick(s)[0], window, pick(s)[1])(c)
                             for s, c in zip((nominal, alternative), counts_of, strict=True))
            return second - first

        def truth_of(s):
            return s.truth, s.event_weights()

        def draws_of(s):
            return s.draws, s.unfolded_weights()

        def detector_of(s):
            return s.detector, s.event_weights()

        truth, truth_boot = shift(truth_of, ones), shift(truth_of, counts)
        unfolded, unfolded_boot = shift(draws_of, ones), shift(draws_of, counts)
        def per_draw_statistics(s, statistic=statistic):
            weights = s.unfolded_weights()
            return np.array([_statistic(statistic, s.draws[:, j], window, weights[:, j]) for j in range(n)])

        per_draw = per_draw_statistics(alternative) - per_draw_statistics(nominal)
        draws_error = _std(per_draw) / np.sqrt(n) if n > 1 else None
        bootstrap_error = _std(unfolded_boot)
        def reweighted(s, draw_weights, statistic=statistic):
            return _statistic(statistic, s.draws, window, replace(s, draw_weights=draw_weights).unfolded_weights())

        fit_error = _std(np.array([reweighted(alternative, weights) - reweighted(nominal, nominal_weights)
                                   for nominal_weights, weights in refits])) if len(refits) > 1 else None
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = unfolded / truth
            fraction_boot = _half_width(unfolded_boot / truth_boot)
            fraction_draws = (draws_error or 0.0) / abs(truth)
            fraction_fit = (fit_error or 0.0) / abs(truth)
        detector = detector_boot = None
        if with_detector:
            detector = float(shift(detector_of, ones))
            detector_boot = _std(shift(detector_of, counts))
        out[statistic] = Shift(
            truth=float(truth),
            truth_bootstrap=_std(truth_boot),
            unfolded=float(unfolded),
            draws_error=None if draws_error is None else float(draws_error),
            bootstrap_error=bootstrap_error,
            fit_error=fit_error,
            error=float(np.sqrt((draws_error or 0.0) ** 2 + bootstrap_error**2 + (fit_error or 0.0) ** 2)),
            fraction=float(fraction),
            fraction_error=float(np.sqrt(fraction_boot**2 + fraction_draws**2 + fraction_fit**2)),
            detector=detector,
            detector_bootstrap=detector_boot,
            detector_fraction=None if detector is None else float(detector / truth) if truth else float("nan"),
            per_draw=tuple(float(x) for x in per_draw),
        )
    return out


def location(sample: ClosureSample, window: tuple[float, float]) -> dict[str, dict[str, float | None]]:
    """Each statistic of one sample's truth, pooled unfoldings and detector level."""
    return {
        statistic: {
            "truth": _statistic(statistic, sample.truth, window, sample.event_weights()),
            "unfolded": _statistic(statistic, sample.draws, window, sample.unfolded_weights()),
            "detector": None if sample.detector is None else _statistic(statistic, sample.detector, window,
                                                                        sample.event_weights()),
        }
        for statistic in STATISTICS
    }


def plot_closure(
    path: Path,
    *,
    label: str,
    unit: str,
    samples: Sequence[tuple[str, ClosureSample]],
    window: tuple[float, float],
    bins: int = 50,
) -> None:
    """Truth (dashed) and unfolded (solid: mean of the draws' histograms, band: their spread) of each
    sample, normalised, with the edges of the windowed mean's window dotted; below, each sample's truth and
    unfolded over the nominal's (a followed shift shows as solid lines on top of the dashed ones)."""
    truths = np.concatenate([s.truth for _, s in samples])
    low, high = np.quantile(truths[np.isfinite(truths)], (0.005, 0.995))
    low, high = min(low, window[0]), max(high, window[1])
    edges = np.linspace(low, high, bins + 1)

    def density(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
        finite = np.isfinite(values)
        counts, _ = np.histogram(values[finite], bins=edges, weights=weights[finite])
        return counts / max(weights[finite].sum(), np.finfo(float).tiny) / np.diff(edges)

    with plt.style.context(STYLE):
        fig, (main, ratio) = plt.subplots(2, 1, figsize=(8, 8), sharex=True,
                                          gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05})
        fig.subplots_adjust(left=0.16, right=0.97, top=0.94, bottom=0.1)
        nominal_truth = nominal_unfolded = None
        for colour, (name, sample) in zip(itertools.cycle(UNFOLDING_COLOURS), samples, strict=False):
            truth = density(sample.truth, sample.event_weights()[:, 0])
            per_draw = np.array([density(d, w) for d, w in zip(sample.draws.T, sample.unfolded_weights().T, strict=True)])
            mean, spread = per_draw.mean(axis=0), per_draw.std(axis=0)
            if nominal_truth is None:
                nominal_truth, nominal_unfolded = truth, mean
            main.stairs(truth, edges, color=colour, linestyle="--", linewidth=2, label=f"{name}: truth")
            main.stairs(mean, edges, color=colour, linewidth=2, label=f"{name}: unfolded ({sample.draws.shape[1]} draws)")
            main.stairs(mean + spread, edges, baseline=mean - spread, fill=True, color=colour, alpha=0.25, linewidth=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio.stairs(np.where(nominal_truth > 0, truth / nominal_truth, np.nan), edges, color=colour,
                             linestyle="--", linewidth=2)
                ratio.stairs(np.where(nominal_unfolded > 0, mean / nominal_unfolded, np.nan), edges, color=colour,
                             linewidth=2)
        for axis in (main, ratio):
            for edge in window:
                axis.axvline(edge, color="0.5", linestyle=":", linewidth=1.5)
        main.set_ylabel(f"$1/N\\,dN/dx$ [1/{unit}]" if unit else "$1/N\\,dN/dx$")
        main.set_ylim(bottom=0, top=1.4 * main.get_ylim()[1])
        main.legend(loc="upper right", frameon=False, fontsize=11)
        main.text(0.0, 1.01, "Simulation", transform=main.transAxes, ha="left", va="bottom", style="italic")
        ratio.axhline(1.0, color=TRUTH_COLOUR, linewidth=1)
        ratio.set_ylim(0.5, 1.5)
        ratio.set_ylabel("Ratio to nominal")
        ratio.set_xlabel(axis_label(label, unit))
        ratio.set_xlim(edges[0], edges[-1])
        fig.savefig(path, dpi=DPI)
        plt.close(fig)


def _number(value: float | None, error: float | None = None, digits: int = 2) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    if error is None or not np.isfinite(error):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} &plusmn; {error:.{digits}f}"


def closure_page(
    title: str,
    meta: Mapping[str, object],
    rows: Sequence[tuple[str, str, str, tuple[float, float, str], Mapping[str, Shift]]],
    images: Sequence[tuple[str, str]],
) -> str:
    """The HTML page: run and files, one table row per (observable, alternative, statistic), the plots.

    Args:
        rows: (observable name, unit, alternative label, window, {statistic: Shift}).
        images: (file name, caption) of each plot.
    """
    header = ["observable", "alternative", "statistic", "window", "truth shift", "unfolded shift",
              "± draws", "± bootstrap", "± fit", "fraction followed", "detector shift", "detector / truth"]
    cells = []
    for name, unit, alternative, window, shifts in rows:
        for statistic, shift in shifts.items():
            window_text = f"{window[0]:.4g}-{window[1]:.4g} {unit}".strip() if statistic == "window_mean" else "all"
            cells.append([
                (escape(name), "name"), (escape(alternative), "name"), (STATISTIC_NAMES[statistic], ""),
                (escape(window_text), ""), (_number(shift.truth, shift.truth_bootstrap), ""),
                (_number(shift.unfolded, shift.error), ""), (_number(shift.draws_error), ""),
                (_number(shift.bootstrap_error), ""), (_number(shift.fit_error), ""),
                (_number(shift.fraction, shift.fraction_error), ""),
                (_number(shift.detector, shift.detector_bootstrap), "ref"), (_number(shift.detector_fraction), "ref"),
            ])
    explanation = (
        "<p>Shift = alternative minus nominal, in the observable's unit. Unfolded shift: of the pooled draws, "
        "&plusmn; the draws', the bootstrap's and (unbiased rows) the prior fit's errors in quadrature, the fit's "
        "the spread of the shift over the fit's bootstrap refits. Fraction followed = unfolded shift / truth "
        "shift (1: the unfolding follows the data; 0: it returns the training prior). Windows: masses of tops "
        f"{MASS_WINDOWS['t'][0]:g}-{MASS_WINDOWS['t'][1]:g} GeV and W bosons {MASS_WINDOWS['W'][0]:g}-"
        f"{MASS_WINDOWS['W'][1]:g} GeV; any other observable the central 98 % of the nominal truth. Detector level: "
        "every event reconstructed without truth.</p>"
    )
    body = [
        section("Run and samples", [value_table(meta)]),
        section("Shifts", [explanation, table(header, cells)]),
        section("Distributions", ['<div class="figures">'] + [figure(image, caption) for image, caption in images]
                + ["</div>"]),
    ]
    return page(title, body)
