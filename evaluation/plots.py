"""Publication plots in HEP style (mplhep's CMS style without an experiment label), Agg backend.

Each function draws one figure and writes it to every path given (PNG for the HTML, PDF for
papers); units in GeV, axis labels in LaTeX (mathtext).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mplhep
import numpy as np
from matplotlib.figure import Figure

from evaluation.calibration import CalibrationResult

__all__ = [
    "PlotJob",
    "Reference",
    "Series",
    "axis_label",
    "plot_calibration",
    "plot_correlation",
    "plot_distribution",
    "plot_migration",
    "plot_recon_masses",
]

# Resolution of every image: 150 dpi, the usual minimum for a figure shown in a talk or printed.
DPI = 150
TRUTH_COLOUR = "black"
DETECTOR_COLOUR = "0.55"
# Okabe-Ito colour-blind-safe palette for the unfoldings.
UNFOLDING_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
STYLE = {**mplhep.style.CMS, "font.size": 18, "axes.labelsize": 20, "legend.fontsize": 14}
# Panels without a 1-D spectrum drop the minor ticks: they are most of the drawing time.
PANEL_STYLE = {**STYLE, "xtick.minor.visible": False, "ytick.minor.visible": False}


@dataclass(frozen=True)
class PlotJob:
    """One figure to draw: its file stem and the drawing function taking the output paths."""

    stem: str
    draw: Callable[[Sequence[Path]], None]


class Series(NamedTuple):
    """One unfolding's values for a plot: its label, (R, n) draws and (R,) row weights (None: ones)."""

    label: str
    draws: np.ndarray
    weights: np.ndarray | None = None


def axis_label(label: str, unit: str) -> str:
    """Label with its unit in brackets, HEP style: '$m(t)$ [GeV]'."""
    return f"{label} [{unit}]" if unit else label


def _save(figure: Figure, paths: Sequence[Path]) -> None:
    """Write and close; margins are fixed per figure (a tight bounding box costs a second draw)."""
    for path in paths:
        figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _simulation_label(axis: matplotlib.axes.Axes, com_tev: float | None) -> None:
    """The HEP label above the axes as ``mplhep.label.exp_label(llabel="Simulation", com=13)`` draws
    it: 'Simulation' (italic) on the left, '(13 TeV)' on the right. Placed directly: exp_label
    measures its text with two full draws of the figure, 1.5 s per plot in this style."""
    axis.text(0.0, 1.01, "Simulation", transform=axis.transAxes, ha="left", va="bottom", style="italic")
    if com_tev is not None:
        axis.text(1.0, 1.01, f"({com_tev:g} TeV)", transform=axis.transAxes, ha="right", va="bottom")


def _density(values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the finite values normalised by their total (weight), per unit x, with its
    statistical uncertainty sqrt(sum of w^2 per bin) (Poisson sqrt(N) for unit weights) on the same scale.

    Args:
        values: (R,) values; NaN dropped with their weights.
        edges: (B + 1,) bin edges.
        weights: (R,) event weights of the values (negative ones allowed); None for ones.
    """
    finite = np.isfinite(values)
    row_weights = np.ones(int(finite.sum())) if weights is None else np.asarray(weights, np.float64)[finite]
    counts, _ = np.histogram(values[finite], bins=edges, weights=row_weights)
    squares, _ = np.histogram(values[finite], bins=edges, weights=row_weights**2)
    total = row_weights.sum()
    scale = (1.0 / total if total > 0 else 1.0) / np.diff(edges)
    return counts * scale, np.sqrt(squares) * scale


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


class Reference(NamedTuple):
    """A detector-level line of a distribution plot: its legend label, (R',) values and their weights (None: ones)."""

    label: str
    values: np.ndarray
    weights: np.ndarray | None = None


def plot_distribution(
    paths: Sequence[Path],
    *,
    label: str,
    unit: str,
    edges: np.ndarray,
    truth: np.ndarray,
    references: Sequence[Reference],
    unfoldings: Sequence[Series],
    com_tev: float | None,
    truth_label: str = "Truth",
    truth_weights: np.ndarray | None = None,
) -> None:
    """Truth with its statistical error bars, detector-level references and each unfolding (the
    bin-wise mean over its draws, with the spread of the draws as a band), with a ratio-to-truth
    panel that shows the truth's statistical uncertainty and the draws' spread as separate bands.

    Args:
        paths: files to write.
        label: x-axis label (LaTeX); unit: its unit.
        edges: (B + 1,) bin edges.
        truth: (R,) truth values.
        references: detector-level lines (dashed, then dotted).
        unfoldings: each with (R_s, n) draws.
        com_tev: collision energy for the label [TeV], or None if unknown.
        truth_label: what the truth line is (the detector level for measured events).
        truth_weights: (R,) event weights of the truth values; every histogram is weighted alike
            (each reference and series carries its own); None for ones.
    """
    with plt.style.context(STYLE):
        figure, (main, ratio) = plt.subplots(
            2, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05}
        )
        figure.subplots_adjust(left=0.16, right=0.97, top=0.94, bottom=0.1)
        truth_density, truth_error = _density(truth, edges, truth_weights)
        mplhep.histplot(
            truth_density, edges, yerr=truth_error, histtype="errorbar", color=TRUTH_COLOUR,
            markersize=4, label=f"{truth_label} (stat. unc.)", ax=main,
        )
        relative = _safe_ratio(truth_error, truth_density)
        ratio.stairs(1 + relative, edges, baseline=1 - relative, fill=True, color="0.8", linewidth=0,
                     label=f"{truth_label} stat. unc.")
        ratio.axhline(1.0, color=TRUTH_COLOUR, linewidth=1)
        for style, reference in zip(("--", ":"), references, strict=False):
            if not np.isfinite(reference.values).any():
                continue
            detector, _ = _density(reference.values, edges, reference.weights)
            main.stairs(detector, edges, color=DETECTOR_COLOUR, linestyle=style, linewidth=2, label=reference.label)
            ratio.stairs(_safe_ratio(detector, truth_density), edges, color=DETECTOR_COLOUR, linestyle=style, linewidth=2)
        for colour, series in zip(itertools.cycle(UNFOLDING_COLOURS), unfoldings, strict=False):
            per_draw = np.array([_density(d, edges, series.weights)[0] for d in series.draws.T])
            mean, spread = per_draw.mean(axis=0), per_draw.std(axis=0)
            n = series.draws.shape[1]
            main.stairs(mean, edges, color=colour, linewidth=2, label=f"{series.label}: mean of {n} draws")
            main.stairs(mean + spread, edges, baseline=mean - spread, fill=True, color=colour, alpha=0.3,
                        linewidth=0, label=f"{series.label}: spread of draws ($\\pm$1 sd)")
            ratio.stairs(_safe_ratio(mean, truth_density), edges, color=colour, linewidth=2)
            ratio.stairs(_safe_ratio(mean + spread, truth_density), edges,
                         baseline=_safe_ratio(mean - spread, truth_density), fill=True, color=colour, alpha=0.3,
                         linewidth=0)
        main.set_ylabel(f"$1/N\\,dN/dx$ [1/{unit}]" if unit else "$1/N\\,dN/dx$")
        main.set_ylim(bottom=0, top=1.35 * main.get_ylim()[1])
        main.legend(loc="upper right", frameon=False, fontsize=11)
        _simulation_label(main, com_tev)
        ratio.set_ylim(0.5, 1.5)
        ratio.set_ylabel("Ratio to truth")
        ratio.set_xlabel(axis_label(label, unit))
        ratio.set_xlim(edges[0], edges[-1])
        ratio.legend(loc="upper left", frameon=False, fontsize=10)
        _save(figure, paths)


def plot_calibration(
    paths: Sequence[Path], *, label: str, results: Sequence[tuple[str, CalibrationResult]]
) -> None:
    """Rank histogram (flat when calibrated, band = binomial +- 1 std on n_eff events) and coverage curve
    (on the diagonal when calibrated) of one observable for each unfolding."""
    with plt.style.context(PANEL_STYLE):
        figure, (rank_axis, coverage_axis) = plt.subplots(1, 2, figsize=(14, 6.5))
        figure.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.13, wspace=0.25)
        for colour, (name, result) in zip(
            itertools.cycle(UNFOLDING_COLOURS), results, strict=False
        ):
            counts = result.rank_counts
            n_ranks = counts.size
            total = counts.sum()
            rank_edges = np.arange(n_ranks + 1) - 0.5
            rank_axis.stairs(
                counts * n_ranks / total,
                rank_edges,
                color=colour,
                linewidth=2,
                label=f"{name} ($p_{{\\chi^2}}$ = {result.flatness_p_value:.2g})",
            )
            coverage_axis.plot(
                result.expected_levels, result.observed_levels, "o-", color=colour, label=name
            )
        if results:
            n_ranks = results[0][1].rank_counts.size
            effective = results[0][1].effective_events  # Kish's n_eff: the number of events when unweighted
            band = np.sqrt((n_ranks - 1) / effective)  # binomial sd of a rank's share, relative to 1 / n_ranks
            rank_axis.axhspan(
                1 - band, 1 + band, color="0.85", zorder=0, label="Calibrated ($\\pm 1\\sigma$)"
            )
            rank_axis.axhline(1.0, color=TRUTH_COLOUR, linestyle=":")
            rank_axis.set_xlim(-0.5, n_ranks - 0.5)
        rank_axis.set_ylim(bottom=0)
        rank_axis.set_xlabel(f"Rank of truth among draws, {label}")
        rank_axis.set_ylabel("Events / expected")
        rank_axis.legend(loc="lower center", frameon=False)
        coverage_axis.plot([0, 1], [0, 1], color=TRUTH_COLOUR, linestyle=":", label="Calibrated")
        coverage_axis.set_xlim(0, 1)
        coverage_axis.set_ylim(0, 1)
        coverage_axis.set_xlabel("Expected coverage of central interval")
        coverage_axis.set_ylabel("Observed coverage")
        coverage_axis.legend(loc="upper left", frameon=False)
        _save(figure, paths)


def plot_migration(
    paths: Sequence[Path],
    *,
    label: str,
    unit: str,
    edges: np.ndarray,
    truth: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    weights: np.ndarray | None = None,
) -> None:
    """Migration matrices P(other bin | truth bin): each row (truth bin) normalised to one.

    Args:
        edges: (B + 1,) bin edges used on both axes.
        truth: (E,) per-event truth.
        panels: (title, (E,) per-event values) pairs, e.g. detector level and one draw.
        weights: (E,) event weights filling the matrices; None for ones.
    """
    with plt.style.context(PANEL_STYLE):
        figure, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 6.5), squeeze=False)
        figure.subplots_adjust(
            left=0.12 / len(panels), right=0.98, top=0.92, bottom=0.14, wspace=0.35
        )
        for axis, (title, values) in zip(axes[0], panels, strict=True):
            both = np.isfinite(truth) & np.isfinite(values)
            counts, _, _ = np.histogram2d(
                np.clip(truth[both], edges[0], edges[-1]),
                np.clip(values[both], edges[0], edges[-1]),
                bins=(edges, edges),
                weights=None if weights is None else weights[both],
            )
            rows = counts.sum(axis=1, keepdims=True)
            matrix = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
            image = axis.pcolormesh(edges, edges, matrix.T, cmap="Blues", vmin=0, vmax=1)
            diagonal = np.trace(matrix) / max(int((rows > 0).sum()), 1)
            axis.set_title(f"{title} (mean diagonal {diagonal:.2f})", fontsize=16)
            axis.set_xlabel(f"Truth {axis_label(label, unit)}")
            axis.set_ylabel(f"{title} {axis_label(label, unit)}")
            figure.colorbar(image, ax=axis, label="Fraction of truth bin")
        _save(figure, paths)


def plot_correlation(
    paths: Sequence[Path],
    *,
    x_label: str,
    y_label: str,
    x_edges: np.ndarray,
    y_edges: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    weights: Sequence[np.ndarray | None] | None = None,
) -> None:
    """2-D densities of an observable pair, one panel per source (truth, each unfolding's draws
    pooled), with Pearson's correlation coefficient in the title; ``weights``, one (R,) array (or
    None) per panel, weight the densities and the correlation."""
    with plt.style.context(PANEL_STYLE):
        figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6.5), squeeze=False)
        figure.subplots_adjust(
            left=0.12 / len(panels), right=0.98, top=0.92, bottom=0.14, wspace=0.3
        )
        for axis, (title, x, y), panel_weights in zip(axes[0], panels, weights or [None] * len(panels), strict=True):
            both = np.isfinite(x) & np.isfinite(y)
            w = np.ones(int(both.sum())) if panel_weights is None else np.asarray(panel_weights, np.float64)[both]
            counts, _, _ = np.histogram2d(x[both], y[both], bins=(x_edges, y_edges), density=True, weights=w)
            axis.pcolormesh(x_edges, y_edges, counts.T, cmap="viridis")
            rho = _weighted_correlation(x[both], y[both], w) if both.sum() > 1 else float("nan")
            axis.set_title(f"{title} ($\\rho$ = {rho:.2f})", fontsize=16)
            axis.set_xlabel(x_label)
            axis.set_ylabel(y_label)
        _save(figure, paths)


def _weighted_correlation(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Pearson's coefficient with event weights; with signed weights that leave a non-positive
    total or variance, the |w|-weighted one (NaN when still undefined)."""
    for weights in (w, np.abs(w)):
        total = weights.sum()
        if total <= 0:
            continue
        dx, dy = x - (weights @ x) / total, y - (weights @ y) / total
        vx, vy = weights @ (dx * dx), weights @ (dy * dy)
        if vx > 0 and vy > 0:
            return float((weights @ (dx * dy)) / np.sqrt(vx * vy))
    return float("nan")


def plot_recon_masses(
    paths: Sequence[Path],
    *,
    label: str,
    edges: np.ndarray,
    correct: np.ndarray,
    wrong: np.ndarray,
    com_tev: float | None = None,
    correct_weights: np.ndarray | None = None,
    wrong_weights: np.ndarray | None = None,
) -> None:
    """Reconstructed mass of the predicted daughters' jets, correct vs wrong assignments, each
    event counted with its weight (None: ones)."""
    with plt.style.context(STYLE):
        figure, axis = plt.subplots(figsize=(8, 6.5))
        figure.subplots_adjust(left=0.15, right=0.97, top=0.94, bottom=0.14)
        axis.hist(
            correct,
            bins=edges,
            weights=correct_weights,
            histtype="step",
            linewidth=2,
            color=UNFOLDING_COLOURS[0],
            label=f"Correct ({correct.size})",
        )
        axis.hist(
            wrong,
            bins=edges,
            weights=wrong_weights,
            histtype="step",
            linewidth=2,
            color=UNFOLDING_COLOURS[1],
            linestyle="--",
            label=f"Wrong ({wrong.size})",
        )
        axis.set_xlabel(axis_label(label, "GeV"))
        axis.set_ylabel("Events / bin")
        axis.legend(loc="best", frameon=False)
        _simulation_label(axis, com_tev)
        _save(figure, paths)
