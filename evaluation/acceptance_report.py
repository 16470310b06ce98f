"""The efficiency-corrected part of ``unfold report`` (issue 14; arXiv 2509.02708).

A samples file with ``ACCEPTANCE/`` (``unfold acceptance apply``) and ``MISSED/`` (``unfold sample``
on a ``unfold generate --keep-missed`` file) is compared with the truth of the whole target space,
not only of the detector-selected events: at parton level the inclusive space (selected + missed
events), at particle level the fiducial space (fiducial selected + fiducial missed events). Each
unfolding of that level is shown twice against this full truth: weighted by ``ACCEPTANCE/weight``
(p_fid / efficiency per draw: corrected) and with the event weights only (uncorrected), with the
report's distances, bootstrap errors and the full truth's noise floor. Per key observable (one value
per event), a figure shows the efficiency (and, at particle level, the fake rate) observed in the
truth counts against the one the unfolding predicts, and the cross sections of that level become
dsigma/dx of the full space.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from evaluation import html
from evaluation.cross_section_report import CrossSectionReport
from evaluation.cross_sections import DifferentialCrossSection, differential_cross_section
from evaluation.errors import ReportError
from evaluation.metrics import (
    BOOTSTRAP_DRAWS,
    DIMENSIONFUL,
    METRIC_LABELS,
    METRICS,
    DistanceSummary,
    Metric,
    bootstrap_weights,
    effective_events,
    histogram_edges,
    noise_floor,
    weighted_distances,
)
from evaluation.observables import Observable, compute_observables
from evaluation.plots import (
    DETECTOR_COLOUR,
    STYLE,
    TRUTH_COLOUR,
    UNFOLDING_COLOURS,
    PlotJob,
    _density,
    _safe_ratio,
    _save,
    _simulation_label,
    axis_label,
)
from evaluation.samples_file import Collection, ParticleLevel, PartonLevel, SamplesFile

__all__ = ["AcceptanceReport", "FileAcceptance", "acceptance_report", "read_acceptance"]

MISSED = "MISSED"
SPACES = {
    "parton": "the inclusive parton-level space: every generated event, detector-selected and missed",
    "particle": "the fiducial particle-level space: the fiducial events, detector-selected and missed "
                "(README, 'Efficiency, acceptance and fakes')",
}
SEED = 2  # bootstrap of the corrected comparison, fixed so reports are reproducible
RATE_BINS = 12  # bins of the efficiency and fake-rate figures
CENTRAL_LOW = stats.norm.cdf(-1.0)  # lower tail of a central 68.3 % interval


@dataclass(frozen=True)
class FileAcceptance:
    """One samples file's corrections.

    Attributes:
        level: "parton" or "particle", the level the corrections apply to.
        efficiency: (E, n) p(selected | drawn truth) of every draw.
        fiducial_probability: (E,) p(fiducial | detector event) (ones at parton level).
        draw_weights: (E, n) p_fid / max(efficiency, min_efficiency): ``ACCEPTANCE/weight`` without the event weight.
    """

    level: str
    efficiency: np.ndarray
    fiducial_probability: np.ndarray
    draw_weights: np.ndarray


def read_acceptance(samples: SamplesFile) -> FileAcceptance | None:
    """The ``ACCEPTANCE/`` group of a samples file, or None without one."""
    with h5py.File(samples.path, "r") as file:
        if "ACCEPTANCE/weight" not in file:
            return None
        group = file["ACCEPTANCE"]
        level = str(group.attrs.get("level", ""))
        if level not in SPACES:
            raise ReportError(f"{samples.path}: ACCEPTANCE attribute 'level': expected parton or particle, got {level!r}")
        for key in ("efficiency", "fiducial_probability"):
            if key not in group:
                raise ReportError(f"{samples.path}: ACCEPTANCE/{key}: missing; expected the output of unfold acceptance apply")
        efficiency = group["efficiency"][()].astype(np.float64)
        fiducial = group["fiducial_probability"][()].astype(np.float64)
        minimum = float(group.attrs.get("min_efficiency", 0.01))
    shape = (samples.n_events, samples.n_draws)
    if efficiency.shape != shape or fiducial.shape != shape[:1]:
        raise ReportError(f"{samples.path}: ACCEPTANCE: efficiency {efficiency.shape} and fiducial_probability "
                          f"{fiducial.shape}, expected {shape} and {shape[:1]} (re-run unfold acceptance apply)")
    return FileAcceptance(level, efficiency, fiducial, fiducial[:, None] / np.clip(efficiency, minimum, None))


@dataclass(frozen=True)
class _FullTruth:
    """The truth of the target space: the selected events inside it and the missed ones.

    Attributes:
        in_space: (E,) selected events inside the space (all at parton level).
        missed: observable name -> (R_m,) values of the missed events inside the space.
        n_missed: missed events inside the space.
    """

    in_space: np.ndarray
    missed: Mapping[str, np.ndarray]
    n_missed: int


def _missed_truth(samples: SamplesFile, level: str) -> _FullTruth:
    """Read ``MISSED/`` and the fiducial flags; compute the missed events' observables as the report does."""
    group = "PARTONS" if level == "parton" else "PARTICLES"
    with h5py.File(samples.path, "r") as file:
        if f"{MISSED}/{group}" not in file:
            raise ReportError(f"{samples.path}: ACCEPTANCE/ without {MISSED}/{group}: the full truth is missing; run unfold "
                              "sample (this version) on a file from unfold generate --keep-missed, then unfold acceptance apply")
        if level == "parton":
            truth = {p: {f: file[f"{MISSED}/PARTONS/{p}/{f}"][()].astype(np.float64) for f in features}
                     for p, features in samples.partons.truth.items()}
            events = len(next(iter(next(iter(truth.values())).values())))
            keep = np.ones(events, bool)
            in_space = np.ones(samples.n_events, bool)
        else:
            for key in ("PARTICLES/fiducial", f"{MISSED}/PARTICLES/fiducial"):
                if key not in file:
                    raise ReportError(f"{samples.path}: {key}: missing; expected the fiducial flags (unfold sample of a "
                                      "--keep-missed file)")
            in_space = file["PARTICLES/fiducial"][()].astype(bool)
            keep = file[f"{MISSED}/PARTICLES/fiducial"][()].astype(bool)
            collections = {}
            for name, like in samples.particles.truth.items():
                prefix = f"{MISSED}/PARTICLES/{name}"
                mask = file[f"{prefix}/MASK"][()].astype(bool)[keep] if like.mask is not None else None
                collections[name] = Collection(
                    {f: file[f"{prefix}/{f}"][()].astype(np.float64)[keep] for f in like.features}, mask)
    if len(in_space) != samples.n_events:
        raise ReportError(f"{samples.path}: PARTICLES/fiducial has {len(in_space)} events, expected {samples.n_events}")
    if level == "parton":
        truth = {p: {f: v[keep] for f, v in features.items()} for p, features in truth.items()}
        draws = {p: {f: v[:, None] for f, v in features.items()} for p, features in truth.items()}
        parton, particle = PartonLevel(truth, draws, {}, {}), None
        n_missed = int(keep.sum())
    else:
        draws = {name: Collection({f: v[:, None] for f, v in c.features.items()},
                                  None if c.mask is None else c.mask[:, None]) for name, c in collections.items()}
        parton, particle = None, ParticleLevel(collections, draws, {})
        n_missed = int(keep.sum())
    missed = SamplesFile(samples.path, n_missed, 1, parton, particle, samples.composites, {})
    return _FullTruth(in_space, {o.name: o.truth for o in compute_observables(missed)}, n_missed)


def _events_of_rows(rows: int, events: int, name: str) -> np.ndarray:
    """(rows,) event index of each value: rows are the events, or E blocks of M object slots."""
    if events == 0:
        return np.zeros(0, np.int64)
    if rows % events:
        raise ReportError(f"{name}: {rows} values do not split into {events} events")
    return np.arange(rows) // (rows // events)


@dataclass(frozen=True)
class _Comparison:
    """One observable against the full truth.

    Attributes:
        observable: the first file's observable (its truth: the selected events).
        unfoldings: (R, n) draws of each file's unfolding.
        selected, missed: the full truth's two parts, (R_s,) values of the selected events inside the
            space (weighted by their event weights ``selected_weights``) and (R_m,) of the missed ones (weight 1).
        edges: bin edges over the full truth; noise: its noise floor per metric.
        effective_noise: label -> (Kish effective events n_eff of its corrected weights, the mean distance
            between the full truth and n_eff of its events drawn with replacement): the floor of a weighted
            sample of that size.
        rows: source -> distances to the full truth.
    """

    observable: Observable
    unfoldings: tuple[np.ndarray, ...]
    selected: np.ndarray
    selected_weights: np.ndarray
    missed: np.ndarray
    edges: np.ndarray
    noise: Mapping[Metric, float]
    rows: Mapping[str, Mapping[Metric, DistanceSummary]]
    effective_noise: Mapping[str, tuple[int, Mapping[Metric, float]]] = dataclasses.field(default_factory=dict)

    @property
    def full(self) -> np.ndarray:
        return np.concatenate([self.selected, self.missed])

    @property
    def full_weights(self) -> np.ndarray:
        return np.concatenate([self.selected_weights, np.ones(self.missed.size)])


def _summary(full: np.ndarray, full_events: np.ndarray, full_weights: np.ndarray, values: np.ndarray,
             weights: np.ndarray, edges: np.ndarray, boot: np.ndarray) -> dict[Metric, DistanceSummary]:
    """Distances of (R, n) draws (each with its (E, n) event-and-draw ``weights``) to the weighted full
    truth, the mean over draws; the error is the sd of the paired bootstrap ``boot`` (K, union events)
    over the first BOOTSTRAP_DRAWS draws, as evaluation.metrics.summarise."""
    draws = values[:, None] if values.ndim == 1 else values
    n_events = weights.shape[0]
    events = _events_of_rows(draws.shape[0], n_events, "draws")
    truth_point = full_weights[None]
    truth_boot = boot[:, full_events] * full_weights[None]
    point, resampled = [], []
    for j, column in enumerate(draws.T):
        row_weights = weights[events, j]
        point.append([v[0] for v in weighted_distances(full, column, edges, truth_point, row_weights[None]).values()])
        if j < BOOTSTRAP_DRAWS:
            resampled.append(weighted_distances(full, column, edges, truth_boot, boot[:, events] * row_weights[None]))
    point = np.array(point)
    out = {}
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        for i, metric in enumerate(METRICS):
            per_draw = point[:, i][np.isfinite(point[:, i])]
            spread = np.nanmean([r[metric] for r in resampled], axis=0)
            if per_draw.size == 0:
                out[metric] = DistanceSummary(np.nan, np.nan, np.nan, np.nan, spread)
            else:
                out[metric] = DistanceSummary(float(per_draw.mean()), float(np.nanstd(spread)), float(per_draw.min()),
                                              float(per_draw.max()), spread)
    return out


@dataclass(frozen=True)
class _Rate:
    """Observed and predicted rates in bins of one observable (efficiency or fake rate)."""

    kind: str
    edges: np.ndarray
    observed: np.ndarray
    error: np.ndarray
    events: np.ndarray
    predicted: Mapping[str, tuple[np.ndarray, np.ndarray]]  # label -> (mean over draws, sd over draws)

    def as_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "observed": _listed(self.observed), "error_down": _listed(self.error[0]),
                "error_up": _listed(self.error[1]),
                "events": self.events.astype(int).tolist(),
                "predicted": {k: {"mean": _listed(m), "sd_over_draws": _listed(s)} for k, (m, s) in self.predicted.items()}}


def _listed(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _observed_rate(values: np.ndarray, passed: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of ``passed`` events per bin of ``values``, its (2, B) binomial errors down and up (the
    central 68.3 % Clopper-Pearson interval, exact also for 0 or n passing) and the events per bin;
    NaN where a bin is empty."""
    finite = np.isfinite(values)
    total, _ = np.histogram(values[finite], edges)
    hits, _ = np.histogram(values[finite & passed], edges)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(total > 0, hits / np.maximum(total, 1), np.nan)
        low = np.where(hits > 0, stats.beta.ppf(CENTRAL_LOW, hits, total - hits + 1), 0.0)
        high = np.where(hits < total, stats.beta.ppf(1 - CENTRAL_LOW, hits + 1, total - hits), 1.0)
    error = np.where(total > 0, np.stack([fraction - low, high - fraction]), np.nan)
    return fraction, error, total


def _predicted_rate(draws: np.ndarray, numerator: np.ndarray, denominator: np.ndarray,
                    edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per draw, sum of ``numerator`` over sum of ``denominator`` (both (E, n)) in bins of the drawn
    (E, n) values; the mean and sd over draws."""
    ratios = []
    for j in range(draws.shape[1]):
        finite = np.isfinite(draws[:, j])
        top, _ = np.histogram(draws[finite, j], edges, weights=numerator[finite, j])
        bottom, _ = np.histogram(draws[finite, j], edges, weights=denominator[finite, j])
        ratios.append(_safe_ratio(top, bottom))
    ratios = np.array(ratios)
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        return np.nanmean(ratios, axis=0), (np.nanstd(ratios, axis=0, ddof=1) if len(ratios) > 1 else np.zeros(edges.size - 1))


@dataclass(frozen=True)
class AcceptanceReport:
    """The corrected comparison: per observable of the corrected level, the full truth against the
    corrected and uncorrected unfoldings; the efficiency (and fake-rate) figures; the cross sections."""

    level: str
    labels: tuple[str, ...]
    corrected: tuple[bool, ...]
    comparisons: tuple[_Comparison, ...]
    rates: Mapping[str, tuple[_Rate, ...]]
    n_selected: int
    n_selected_in_space: int
    n_missed: int
    draw_weights: tuple[np.ndarray | None, ...]
    event_weights: np.ndarray
    com_tev: float | None = None

    @property
    def space(self) -> str:
        return SPACES[self.level]

    def _table(self) -> list[list[str]]:
        rows = []
        for c in self.comparisons:
            name = f"{c.observable.name} [{c.observable.unit}]" if c.observable.unit else c.observable.name
            rows.append([name, f"noise floor (full truth vs itself, {np.isfinite(c.full).sum()} entries)",
                         *(f"{c.noise[m]:.3g}" for m in METRICS)])
            for label, (size, noise) in c.effective_noise.items():
                rows.append(["", f"noise floor at {label} corrected's effective size ({size} events)",
                             *(f"{noise[m]:.3g}" for m in METRICS)])
            for source, summary in c.rows.items():
                rows.append(["", source, *(f"{summary[m].value:.3g} ± {summary[m].error:.2g}" for m in METRICS)])
        return rows

    def _header(self) -> list[str]:
        return ["observable [unit]", "against the full truth",
                *(f"{METRIC_LABELS[m]} [obs. unit]" if m in DIMENSIONFUL else METRIC_LABELS[m] for m in METRICS)]

    def effective_events(self) -> dict[str, float]:
        """Kish's effective number of events (sum w)^2 / sum w^2 of each corrected unfolding's weights,
        mean over draws: the size whose noise the corrected distribution carries."""
        out = {}
        for label, weights in zip(self.labels, self.draw_weights, strict=True):
            if weights is not None:
                w = self.event_weights[:, None] * weights
                out[label] = float(np.mean(w.sum(axis=0) ** 2 / (w**2).sum(axis=0)))
        return out

    def _counts(self) -> str:
        effective = ", ".join(f"{label} {n:.0f}" for label, n in self.effective_events().items())
        return (f"{self.level} level, full truth = {self.space}: {self.n_selected_in_space} selected events in the space "
                f"(of {self.n_selected} selected) + {self.n_missed} missed; effective events of the corrected "
                f"unfoldings (Kish): {effective}")

    def selected_note(self) -> str:
        """The line of the main distance table saying which space its truth covers."""
        return (f'<p><b>Compared space here: the detector-selected events only</b> ({self.n_selected}). The {self.level}-level '
                f'unfoldings against {escape(self.space)}, with and without the efficiency correction: '
                '<a href="#acceptance">Efficiency, acceptance and fakes</a>.</p>')

    def headline(self) -> str:
        """The fixed-width table of distances to the full truth."""
        rows = [self._header(), *self._table()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return (f"efficiency and acceptance corrections: {self._counts()}\n" + lines[0] + "\n" + "-" * len(lines[0])
                + "\n" + "\n".join(lines[1:]))

    def jobs(self, slug: Callable[[str], str]) -> list[PlotJob]:
        """A distribution figure per observable (``accept_``) and a rate figure per per-event one (``efficiency_``)."""
        jobs = [PlotJob(f"accept_{slug(c.observable.name)}", lambda paths, c=c: self._plot_distribution(paths, c))
                for c in self.comparisons]
        jobs += [PlotJob(f"efficiency_{slug(name)}", lambda paths, name=name, rates=rates: self._plot_rates(paths, name, rates))
                 for name, rates in self.rates.items()]
        return jobs

    def _plot_distribution(self, paths: Sequence[Path], c: _Comparison) -> None:
        obs = c.observable
        edges = c.edges
        with plt.style.context(STYLE):
            figure, (main, ratio) = plt.subplots(2, 1, figsize=(8, 8), sharex=True,
                                                 gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05})
            figure.subplots_adjust(left=0.16, right=0.97, top=0.94, bottom=0.1)
            truth, truth_error = _density(c.full, edges, c.full_weights)
            centres = 0.5 * (edges[1:] + edges[:-1])
            main.errorbar(centres, truth, yerr=truth_error, fmt="o", color=TRUTH_COLOUR, markersize=4,
                          label="Truth, full space (selected + missed)")
            events = _events_of_rows(obs.truth.shape[0], len(self.event_weights), obs.name)
            selected, _ = _density(obs.truth, edges, self.event_weights[events])
            main.stairs(selected, edges, color=DETECTOR_COLOUR, linewidth=2, linestyle=":", label="Truth, selected events")
            ratio.stairs(_safe_ratio(selected, truth), edges, color=DETECTOR_COLOUR, linewidth=2, linestyle=":")
            ratio.axhline(1.0, color=TRUTH_COLOUR, linewidth=1)
            draw_events = _events_of_rows(obs.draws.shape[0], len(self.event_weights), obs.name)
            for colour, label, unfolding, weights in zip(UNFOLDING_COLOURS, self.labels, c.unfoldings, self.draw_weights,
                                                         strict=False):
                n = unfolding.shape[1]
                plain = np.repeat(self.event_weights[draw_events], n)
                density, _ = _density(unfolding.ravel(), edges, plain)
                main.stairs(density, edges, color=colour, linewidth=2, linestyle="--", label=f"{label} uncorrected")
                ratio.stairs(_safe_ratio(density, truth), edges, color=colour, linewidth=2, linestyle="--")
                if weights is not None:
                    rows = (self.event_weights[:, None] * weights)[draw_events]
                    density, _ = _density(unfolding.ravel(), edges, rows.ravel())
                    main.stairs(density, edges, color=colour, linewidth=2, label=f"{label} corrected")
                    ratio.stairs(_safe_ratio(density, truth), edges, color=colour, linewidth=2)
            main.set_ylabel("Normalised density")
            main.set_ylim(bottom=0, top=1.4 * main.get_ylim()[1])
            main.legend(loc="upper right", frameon=False, fontsize=11)
            _simulation_label(main, self.com_tev)
            ratio.set_ylim(0.5, 1.5)
            ratio.set_ylabel("Ratio to full")
            ratio.set_xlabel(axis_label(obs.label, obs.unit))
            ratio.set_xlim(edges[0], edges[-1])
            _save(figure, paths)

    def _plot_rates(self, paths: Sequence[Path], name: str, rates: Sequence[_Rate]) -> None:
        obs = next(c.observable for c in self.comparisons if c.observable.name == name)
        with plt.style.context(STYLE):
            figure, axes = plt.subplots(len(rates), 1, figsize=(8, 4.5 * len(rates) + 1.5), sharex=True, squeeze=False)
            figure.subplots_adjust(left=0.16, right=0.97, top=0.94, bottom=0.1, hspace=0.08)
            for axis, rate in zip(axes[:, 0], rates, strict=True):
                centres = 0.5 * (rate.edges[1:] + rate.edges[:-1])
                axis.errorbar(centres, rate.observed, yerr=rate.error, fmt="o", color=TRUTH_COLOUR, markersize=4,
                              label="observed (truth counts, 68 % binomial interval)")
                for colour, (label, (mean, sd)) in zip(UNFOLDING_COLOURS, rate.predicted.items(), strict=False):
                    # Per-bin lines and boxes: a bin without draws (NaN) is left empty, not drawn at zero.
                    axis.hlines(mean, rate.edges[:-1], rate.edges[1:], color=colour, linewidth=2, label=f"{label} predicted")
                    axis.bar(rate.edges[:-1], 2 * sd, bottom=mean - sd, width=np.diff(rate.edges), align="edge",
                             color=colour, alpha=0.3, linewidth=0)
                axis.set_ylabel("Efficiency" if rate.kind == "efficiency" else "Fake rate")
                axis.set_ylim(0, 1.05)
                axis.legend(loc="best", frameon=False, fontsize=11)
            _simulation_label(axes[0, 0], self.com_tev)
            axes[-1, 0].set_xlabel(axis_label(obs.label, obs.unit))
            axes[-1, 0].set_xlim(min(r.edges[0] for r in rates), max(r.edges[-1] for r in rates))
            _save(figure, paths)

    def html(self, images: Mapping[str, tuple[str, str | None]], slug: Callable[[str], str]) -> str:
        """The report page's section."""
        rows = [[(escape(c), "name" if i < 2 else "") for i, c in enumerate(row)] for row in self._table()]
        figures = [html.figure(images[stem][0], caption, images[stem][1])
                   for c in self.comparisons
                   for stem, caption in ((f"accept_{slug(c.observable.name)}", f"{c.observable.name}: full truth"),
                                         (f"efficiency_{slug(c.observable.name)}", f"{c.observable.name}: rates"))
                   if stem in images]
        fakes = " and fake rate (selected events outside the fiducial space)" if self.level == "particle" else ""
        text = (
            f"<p><b>Compared space: {escape(self.space)}.</b> {escape(self._counts())}. The efficiency-corrected "
            "unfolding weights every draw by ACCEPTANCE/weight = event weight x p<sub>fid</sub>(detector) / "
            "efficiency(draw) (arXiv 2509.02708, <code>unfold acceptance apply</code>); the uncorrected one carries the "
            "event weight only. Both are compared with the full truth: distances as above (mean over draws ± the sd of "
            "a paired bootstrap of selected and missed events); the noise floor is that of the full truth of its own "
            "size (the corrected sample, with unequal weights, has fewer effective events, which its bootstrap error "
            f"shows). Rates{escape(fakes)} per bin of each key per-event observable: <b>observed</b>, the fraction "
            "in the truth counts with its central 68 % Clopper-Pearson (binomial) interval; <b>predicted</b>, per draw the sum of p<sub>fid</sub> over "
            "the sum of p<sub>fid</sub> / efficiency of the draws in the bin (the harmonic mean of the efficiency: the "
            "rate the weights use, equal to the observed one for a calibrated efficiency; an arithmetic mean over the "
            "selected events is biased upward), the fake rate the mean of 1 - p<sub>fid</sub>; band: sd over draws.</p>"
        )
        return html.section("Efficiency, acceptance and fakes: the full space",
                            [text, html.table(self._header(), rows), '<div class="figures">' + "".join(figures) + "</div>"],
                            "acceptance")

    def metrics(self) -> dict:
        """The ``acceptance`` entry of metrics.json."""
        def summary(s: Mapping[Metric, DistanceSummary]) -> dict:
            return {m: {"value": _finite(v.value), "error": _finite(v.error)} for m, v in s.items()}

        return {
            "level": self.level, "space": self.space, "selected_events": self.n_selected,
            "selected_in_space": self.n_selected_in_space, "missed_in_space": self.n_missed,
            "corrected": dict(zip(self.labels, self.corrected, strict=True)),
            "effective_events": self.effective_events(),
            "observables": {c.observable.name: {"noise_floor": {m: _finite(v) for m, v in c.noise.items()},
                                                "effective_noise_floor": {
                                                    label: {"events": size, **{m: _finite(v) for m, v in noise.items()}}
                                                    for label, (size, noise) in c.effective_noise.items()},
                                                "distances": {k: summary(s) for k, s in c.rows.items()}}
                            for c in self.comparisons},
            "rates": {name: {r.kind: r.as_dict() for r in rates} for name, rates in self.rates.items()},
        }

    def cross_sections(self, cross: CrossSectionReport) -> CrossSectionReport:
        """``cross`` with this level's observables as dsigma/dx of the full space: the full truth first, and
        beside each unfolding (uncorrected) the same weighted by ACCEPTANCE/weight."""
        if not cross.observables:
            return cross
        by_name = {c.observable.name: c for c in self.comparisons}
        replaced = []
        for sections in cross.observables:
            c = by_name.get(sections[0].observable)
            if c is None:
                replaced.append(sections)
                continue
            truth = sections[0]
            common = {"observable": truth.observable, "label": truth.label, "unit": truth.unit}
            parts = [differential_cross_section(values, truth.edges, truth.luminosity_fb_inv, n_events=events,
                                                event_weights=_event_weights(weights, events), source=FULL_SOURCE, **common)
                     for values, weights, events in ((c.selected, c.selected_weights, self.n_selected_in_space),
                                                     (c.missed, np.ones(c.missed.size), self.n_missed)) if events]
            full = parts[0] if len(parts) == 1 else _sum_sections(*parts)
            unfoldings = []
            for section, draws, weights in zip(sections[1:], c.unfoldings, self.draw_weights, strict=True):
                unfoldings.append(section)
                if weights is None:
                    continue
                unfoldings.append(differential_cross_section(
                    draws, truth.edges, truth.luminosity_fb_inv, event_weights=self.event_weights[:, None] * weights,
                    n_events=len(self.event_weights), source=f"{section.source} (efficiency-corrected)", **common))
            replaced.append((full, *unfoldings))
        note = f"{cross.note}; {self.level}-level observables: dsigma/dx of {self.space}"
        return dataclasses.replace(cross, observables=tuple(replaced), note=note)


FULL_SOURCE = "truth, full space (selected + missed)"


def _event_weights(row_weights: np.ndarray, events: int) -> np.ndarray:
    """(events,) weights from (R,) row weights of E blocks of M slots (every slot carries its event's)."""
    return row_weights[:: max(row_weights.size // max(events, 1), 1)][:events] if events else np.ones(0)


def _sum_sections(a: DifferentialCrossSection, b: DifferentialCrossSection) -> DifferentialCrossSection:
    """dsigma/dx of two disjoint event sets together: values add, statistical variances add."""
    return dataclasses.replace(
        a, values=a.values + b.values, stat_data=np.hypot(a.stat_data, b.stat_data),
        stat_draws=np.hypot(a.stat_draws, b.stat_draws),
        total=(a.total[0] + b.total[0], float(np.hypot(a.total[1], b.total[1])), float(np.hypot(a.total[2], b.total[2]))))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def acceptance_report(
    samples: Sequence[SamplesFile],
    labels: Sequence[str],
    observables: Sequence[tuple[Observable, Sequence[Observable]]],
    bins: int,
    resamples: int,
    *,
    com_tev: float | None = None,
) -> AcceptanceReport | None:
    """The corrected comparison of the reported ``observables`` (the first file's, then each file's
    unfoldings) of the level the first file's ``ACCEPTANCE/`` corrects; None when no file has one.
    Files of another level's corrections are a ReportError; files without ACCEPTANCE are shown uncorrected."""
    found = [read_acceptance(s) for s in samples]
    present = [a for a in found if a is not None]
    if not present:
        return None
    level = present[0].level
    for s, a in zip(samples, found, strict=True):
        if a is not None and a.level != level:
            raise ReportError(f"{s.path}: ACCEPTANCE corrects the {a.level} level, but another file's corrects the {level} level")
    first = samples[next(i for i, a in enumerate(found) if a is not None)]
    if (first.partons if level == "parton" else first.particles) is None:
        raise ReportError(f"{first.path}: ACCEPTANCE corrects the {level} level, but the file has no {level}-level draws")
    full = _missed_truth(first, level)
    reference = samples[0]
    event_weights = np.ones(reference.n_events) if reference.weights is None else np.asarray(reference.weights, np.float64)
    n_events = reference.n_events
    # Union of events for the paired bootstrap: the selected ones (0 .. E-1), then the missed ones in the space.
    rng = np.random.default_rng(SEED)
    union = n_events + full.n_missed
    boot, first_noise, second_noise = (bootstrap_weights(union, resamples, rng) for _ in range(3))
    comparisons, rates = [], {}
    for truth, unfoldings in observables:
        if not truth.name.startswith(f"{level}/"):
            continue
        if truth.name not in full.missed:
            raise ReportError(f"{first.path}: {MISSED}/: observable {truth.name} cannot be computed for the missed events")
        selected_events = _events_of_rows(truth.truth.shape[0], n_events, truth.name)
        inside = full.in_space[selected_events]
        missed = full.missed[truth.name]
        missed_events = n_events + _events_of_rows(missed.shape[0], full.n_missed, truth.name)
        full_events = np.concatenate([selected_events[inside], missed_events])
        selected_weights = event_weights[selected_events[inside]]
        values = np.concatenate([truth.truth[inside], missed])
        weights = np.concatenate([selected_weights, np.ones(missed.size)])
        edges = histogram_edges(values, bins, discrete=truth.discrete, weights=weights)
        rows: dict[str, Mapping[Metric, DistanceSummary]] = {
            "truth of the selected events (no correction)": _summary(values, full_events, weights, truth.truth,
                                                                     event_weights[:, None], edges, boot)}
        for label, unfolding, acceptance in zip(labels, unfoldings, found, strict=True):
            if acceptance is not None:
                rows[f"{label} corrected (mean of {unfolding.draws.shape[1]} draws)"] = _summary(
                    values, full_events, weights, unfolding.draws, event_weights[:, None] * acceptance.draw_weights, edges, boot)
            rows[f"{label} uncorrected"] = _summary(values, full_events, weights, unfolding.draws,
                                                    np.broadcast_to(event_weights[:, None], (n_events, unfolding.draws.shape[1])),
                                                    edges, boot)
        noise = noise_floor(values, edges, first_noise[:, full_events] * weights[None],
                            second_noise[:, full_events] * weights[None])
        effective = {}
        for label, acceptance in zip(labels, found, strict=True):
            if acceptance is not None:
                size = _kish(event_weights[:, None] * acceptance.draw_weights)
                effective[label] = (size, _subsample_noise(values, full_events, weights, edges, size, first_noise, rng))
        comparisons.append(_Comparison(truth, tuple(u.draws for u in unfoldings), truth.truth[inside], selected_weights,
                                       missed, edges, noise, rows, effective))
        if truth.per_event:
            rates[truth.name] = _rates(truth, unfoldings, labels, found, full, missed, edges, bins)
    return AcceptanceReport(level, tuple(labels), tuple(a is not None for a in found), tuple(comparisons), rates,
                            n_events, int(full.in_space.sum()), full.n_missed,
                            tuple(None if a is None else a.draw_weights for a in found), event_weights, com_tev)


def _kish(weights: np.ndarray) -> int:
    """Kish's effective number of events (sum w)^2 / sum w^2 of (E, n) weights, mean over draws."""
    return max(1, round(float(np.mean(effective_events(weights, axis=0)))))


def _subsample_noise(values: np.ndarray, full_events: np.ndarray, weights: np.ndarray, edges: np.ndarray, size: int,
                     resample: np.ndarray, rng: np.random.Generator) -> dict[Metric, float]:
    """Mean distance between a bootstrap of the full truth (``resample``: (K, union events)) and ``size``
    of its events drawn with replacement: the noise of a sample of ``size`` events against the full truth."""
    events = np.unique(full_events)
    picks = events[rng.integers(0, events.size, size=(resample.shape[0], size))]
    counts = np.stack([np.bincount(row, minlength=resample.shape[1]) for row in picks]).astype(np.float64)
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        return {m: float(np.nanmean(v)) for m, v in weighted_distances(
            values, values, edges, resample[:, full_events] * weights[None], counts[:, full_events] * weights[None]).items()}


def _rates(truth: Observable, unfoldings: Sequence[Observable], labels: Sequence[str],
           found: Sequence[FileAcceptance | None], full: _FullTruth, missed: np.ndarray, edges: np.ndarray,
           bins: int) -> tuple[_Rate, ...]:
    """Efficiency (and at particle level fake rate) observed in the truth counts and predicted by each
    corrected unfolding, in ``RATE_BINS`` bins over the full truth's range."""
    coarse = edges if truth.discrete else np.linspace(edges[0], edges[-1], min(RATE_BINS, bins) + 1)
    inside = full.in_space
    values = np.concatenate([truth.truth[inside], missed])
    passed = np.concatenate([np.ones(int(inside.sum()), bool), np.zeros(missed.size, bool)])
    observed, error, events = _observed_rate(values, passed, coarse)
    predicted = {label: _predicted_rate(u.draws, np.broadcast_to(a.fiducial_probability[:, None], a.efficiency.shape),
                                        a.draw_weights, coarse)
                 for label, u, a in zip(labels, unfoldings, found, strict=True) if a is not None}
    out = [_Rate("efficiency", coarse, observed, error, events, predicted)]
    if len(found) and next(a for a in found if a is not None).level == "particle":
        # Fakes lie outside the fiducial space: their range is that of the selected events' truth.
        coarse = histogram_edges(truth.truth, min(RATE_BINS, bins), discrete=truth.discrete)
        observed, error, events = _observed_rate(truth.truth, ~inside, coarse)
        predicted = {label: _predicted_rate(u.draws, np.broadcast_to(1.0 - a.fiducial_probability[:, None], a.efficiency.shape),
                                            np.ones_like(a.efficiency), coarse)
                     for label, u, a in zip(labels, unfoldings, found, strict=True) if a is not None}
        out.append(_Rate("fake rate", coarse, observed, error, events, predicted))
    return tuple(out)
