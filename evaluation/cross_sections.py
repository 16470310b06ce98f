"""Differential cross sections dsigma/dx of the truth and of unfoldings, with statistical errors.

A sample of events with weights w_e and integrated luminosity L [fb^-1] gives, in a bin of
width dx, dsigma/dx = sum_e w_e c_e / (L dx) [fb per unit of x], c_e the event's entries in the
bin (0 or 1 for a per-event observable; its objects for a per-object one, every jet). An
unfolding has n draws per event: its value is the mean over draws of the per-draw histograms,
so c_e is the event's entries in the bin averaged over its draws. Two statistical errors:

* data: the size of the sample. The events are a Poisson sample, so the bin content is a
  compound Poisson sum with variance sum_e (w_e c_e)^2 (the sum of weights squared of a weighted
  histogram; what a bootstrap over events gives for many events).
* draws: the spread (sd over draws, ddof 1) of the per-draw histograms: how much one draw's
  unfolded histogram scatters for the same data. The mean over n draws scatters by sd / sqrt(n).

The phase space is that of the events given: in a report, the detector-selected events of the
samples file. Efficiency and acceptance corrections enter as per-event (or per-draw) weights
(e.g. 1 / efficiency) multiplied into the samples' weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import mplhep
import numpy as np

from evaluation.errors import ReportError
from evaluation.observables import Observable
from evaluation.plots import (
    STYLE,
    TRUTH_COLOUR,
    UNFOLDING_COLOURS,
    _save,
    _simulation_label,
    axis_label,
)

__all__ = [
    "LUMINOSITY_ATTRIBUTE",
    "PHASE_SPACE",
    "DifferentialCrossSection",
    "differential_cross_section",
    "observable_cross_sections",
    "plot_cross_sections",
    "resolve_luminosity",
]

LUMINOSITY_ATTRIBUTE = "luminosity_fb_inv"  # written by `unfold generate` (and carried by `unfold sample`)
TRUTH = "truth"
PHASE_SPACE = (
    "the detector-selected events of the samples file (no efficiency, acceptance or fake-rate "
    "correction); entries outside the bin range are in no bin"
)


@dataclass(frozen=True)
class DifferentialCrossSection:
    """dsigma/dx of one observable from one source (the truth or one unfolding).

    Attributes:
        observable: ``<level>/<object>/<quantity>``; label: its axis label; unit: the unit of x.
        source: "truth" or the unfolding's label.
        edges: (B + 1,) bin edges in ``unit``.
        values: (B,) dsigma/dx [fb per unit of x].
        stat_data: (B,) sd from the sample's size [same unit].
        stat_draws: (B,) sd of the per-draw histograms [same unit]; zeros for the truth.
        n_draws: draws behind the values (1 for the truth).
        luminosity_fb_inv: the luminosity the values are divided by.
        total: (sigma, data sd, draws sd) in the bin range [fb]: the integral of dsigma/dx, its
            compound-Poisson sd (an event's entries in several bins counted together) and the sd of
            the per-draw integrals.
    """

    observable: str
    label: str
    unit: str
    source: str
    edges: np.ndarray
    values: np.ndarray
    stat_data: np.ndarray
    stat_draws: np.ndarray
    n_draws: int
    luminosity_fb_inv: float
    total: tuple[float, float, float]

    @property
    def sigma_unit(self) -> str:
        """Unit of dsigma/dx: fb/GeV, fb/rad, or fb for a dimensionless x."""
        return f"fb/{self.unit}" if self.unit else "fb"



def resolve_luminosity(given: float | None, attrs: Mapping[str, str], path: Path) -> tuple[float | None, str]:
    """The luminosity to divide by [fb^-1] and a one-line note saying where it came from.

    ``given`` (``--luminosity``) wins; otherwise the samples file's ``luminosity_fb_inv``
    attribute (the equivalent luminosity of the generated events it unfolds). Neither: (None,
    why cross sections are off). A given value that is not a positive finite number raises."""
    if given is not None:
        if not (math.isfinite(given) and given > 0):
            raise ReportError(f"--luminosity: expected a positive integrated luminosity in fb^-1, got {given}")
        return float(given), f"luminosity {given:.6g} fb^-1 (--luminosity)"
    text = attrs.get(LUMINOSITY_ATTRIBUTE)
    if text is None:
        return None, (
            f"cross sections off: {path.name} has no {LUMINOSITY_ATTRIBUTE} attribute (data generated or "
            "sampled before it was recorded); pass --luminosity FB_INV"
        )
    try:
        value = float(text)
    except ValueError:
        raise ReportError(f"{path}: attribute {LUMINOSITY_ATTRIBUTE!r}: expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ReportError(f"{path}: attribute {LUMINOSITY_ATTRIBUTE!r}: expected a positive luminosity, got {value}")
    return value, f"luminosity {value:.6g} fb^-1 (the equivalent luminosity of the generated events, from {path.name})"


def _binned(values: np.ndarray, weights: np.ndarray, events: np.ndarray, edges: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-draw weighted histograms (n, B) of (R, n) ``values`` with (R, n) ``weights``, the
    compound-Poisson variance (B,) of their mean (sum over events of the event's mean content
    squared) and that of their total. ``events``: (R,) event index of each row. NaN values and
    values outside the edges are dropped."""
    rows, n = values.shape
    bins = edges.size - 1
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = bins - 1  # the last bin is closed, as numpy.histogram's
    keep = np.isfinite(values) & (index >= 0) & (index < bins)
    draw = np.broadcast_to(np.arange(n), (rows, n))[keep]
    event = np.broadcast_to(events[:, None], (rows, n))[keep]
    index, entry_weights = index[keep], weights[keep]
    per_draw = np.bincount(draw * bins + index, entry_weights, minlength=n * bins).reshape(n, bins)
    pairs, inverse = np.unique(event * bins + index, return_inverse=True)
    contents = np.bincount(inverse.ravel(), entry_weights / n, minlength=pairs.size)
    variance = np.bincount(pairs % bins, contents**2, minlength=bins)
    total_variance = float(np.sum(np.bincount(pairs // bins, contents) ** 2))
    return per_draw, variance, total_variance


def differential_cross_section(
    values: np.ndarray,
    edges: np.ndarray,
    luminosity_fb_inv: float,
    *,
    event_weights: np.ndarray | None = None,
    n_events: int | None = None,
    observable: str = "",
    label: str = "",
    unit: str = "",
    source: str = TRUTH,
) -> DifferentialCrossSection:
    """dsigma/dx of (R,) truth values or (R, n) draws, R = E events or E blocks of M objects.

    Args:
        values: (R,) or (R, n) values; NaN (an absent object) counts nowhere.
        edges: (B + 1,) increasing bin edges.
        luminosity_fb_inv: integrated luminosity of the events [fb^-1], > 0.
        event_weights: (E,) per-event weights, or (E, n) per event and draw (e.g. the samples'
            weights times 1 / efficiency of each draw); None for ones.
        n_events: E, when no weights give it (default: R).

    Raises:
        ReportError: non-positive luminosity, bad edges, or rows that do not split into events.
    """
    if not (math.isfinite(luminosity_fb_inv) and luminosity_fb_inv > 0):
        raise ReportError(f"cross section of {observable or 'values'}: expected a positive luminosity, got {luminosity_fb_inv}")
    edges = np.asarray(edges, np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ReportError(f"cross section of {observable or 'values'}: expected increasing bin edges, got {edges}")
    draws = np.asarray(values, np.float64)
    draws = draws[:, None] if draws.ndim == 1 else draws
    rows, n = draws.shape
    weights = None if event_weights is None else np.asarray(event_weights, np.float64)
    if weights is not None and weights.ndim not in (1, 2):
        raise ReportError(f"cross section of {observable or 'values'}: weights of shape {weights.shape}, expected (E,) or (E, n)")
    events = n_events if n_events is not None else (weights.shape[0] if weights is not None else rows)
    if events < 1 or rows % events:
        raise ReportError(f"cross section of {observable or 'values'}: {rows} rows do not split into {events} events")
    event_of_row = np.arange(rows) // (rows // events)
    if weights is None:
        row_weights = np.ones((rows, n))
    else:
        if weights.shape[0] != events or (weights.ndim == 2 and weights.shape[1] != n):
            raise ReportError(f"cross section of {observable or 'values'}: weights of shape {weights.shape}, "
                              f"expected ({events},) or ({events}, {n})")
        row_weights = np.broadcast_to(weights[event_of_row].reshape(rows, -1), (rows, n))
    per_draw, variance, total_variance = _binned(draws, row_weights, event_of_row, edges)
    scale = 1.0 / (luminosity_fb_inv * np.diff(edges))
    totals = per_draw.sum(axis=1) / luminosity_fb_inv
    spread = per_draw.std(axis=0, ddof=1) if n > 1 else np.zeros(edges.size - 1)
    return DifferentialCrossSection(
        observable=observable, label=label, unit=unit, source=source, edges=edges,
        values=per_draw.mean(axis=0) * scale, stat_data=np.sqrt(variance) * scale, stat_draws=spread * scale,
        n_draws=n, luminosity_fb_inv=float(luminosity_fb_inv),
        total=(float(totals.mean()), math.sqrt(total_variance) / luminosity_fb_inv,
               float(totals.std(ddof=1)) if n > 1 else 0.0),
    )


def observable_cross_sections(
    truth: Observable,
    unfoldings: Sequence[Observable],
    labels: Sequence[str],
    edges: np.ndarray,
    luminosity_fb_inv: float,
    *,
    n_events: int,
    event_weights: np.ndarray | None = None,
    draw_weights: np.ndarray | None = None,
    truth_source: str = TRUTH,
) -> list[DifferentialCrossSection]:
    """dsigma/dx of one observable: the truth's (first), then each unfolding's (``labels``).

    ``event_weights`` (E,) weight truth and draws alike (the samples' weights); ``draw_weights``
    (E, n) multiply the draws' only (e.g. 1 / efficiency of each drawn particle-level event)."""
    common = {"observable": truth.name, "label": truth.label, "unit": truth.unit, "n_events": n_events}
    weights = event_weights
    if draw_weights is not None:
        weights = np.asarray(draw_weights, np.float64) * (1.0 if event_weights is None else np.asarray(event_weights)[:, None])
    sections = [differential_cross_section(truth.truth, edges, luminosity_fb_inv, event_weights=event_weights,
                                           source=truth_source, **common)]
    sections += [
        differential_cross_section(o.draws, edges, luminosity_fb_inv, event_weights=weights, source=label, **common)
        for label, o in zip(labels, unfoldings, strict=True)
    ]
    return sections


def plot_cross_sections(paths: Sequence[Path], sections: Sequence[DifferentialCrossSection],
                        com_tev: float | None) -> None:
    """dsigma/dx of the truth (points, data error bars) and each unfolding (line, data error
    bars, the draws' spread as a band), with a ratio-to-truth panel; ``sections[0]`` is the truth."""
    truth, unfoldings = sections[0], sections[1:]
    with plt.style.context(STYLE):
        figure, (main, ratio) = plt.subplots(
            2, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05}
        )
        figure.subplots_adjust(left=0.16, right=0.97, top=0.94, bottom=0.1)
        edges = truth.edges
        mplhep.histplot(truth.values, edges, yerr=truth.stat_data, histtype="errorbar", color=TRUTH_COLOUR,
                        markersize=4, label="Truth (stat. unc.)", ax=main)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(truth.values > 0, truth.stat_data / truth.values, np.nan)
            ratio.stairs(1 + relative, edges, baseline=1 - relative, fill=True, color="0.8", linewidth=0)
            ratio.axhline(1.0, color=TRUTH_COLOUR, linewidth=1)
            centres = 0.5 * (edges[1:] + edges[:-1])
            for colour, section in zip(itertools.cycle(UNFOLDING_COLOURS), unfoldings, strict=False):
                value, band = section.values, section.stat_draws
                main.stairs(value, edges, color=colour, linewidth=2,
                            label=f"{section.source}: mean of {section.n_draws} draws (data stat. unc.)")
                main.errorbar(centres, value, yerr=section.stat_data, fmt="none", ecolor=colour)
                main.stairs(value + band, edges, baseline=value - band, fill=True, color=colour, alpha=0.3,
                            linewidth=0, label=f"{section.source}: spread of draws ($\\pm$1 sd)")
                ratio.stairs(np.where(truth.values > 0, value / truth.values, np.nan), edges, color=colour, linewidth=2)
        main.set_ylabel(f"$d\\sigma/dx$ [{truth.sigma_unit}]")
        main.set_ylim(bottom=0, top=1.35 * main.get_ylim()[1])
        main.legend(loc="upper right", frameon=False, fontsize=11)
        _simulation_label(main, com_tev)
        main.text(0.02, 0.95, f"$L$ = {truth.luminosity_fb_inv:.3g} fb$^{{-1}}$", transform=main.transAxes,
                  ha="left", va="top", fontsize=12)
        ratio.set_ylim(0.5, 1.5)
        ratio.set_ylabel("Ratio to truth")
        ratio.set_xlabel(axis_label(truth.label, truth.unit))
        ratio.set_xlim(edges[0], edges[-1])
        _save(figure, paths)
