"""The distribution-comparison report: truth vs detector level vs one or more unfoldings.

:func:`write_report` reads samples files of the same events (or one recon predictions file),
computes distances and calibration per observable, draws the plots and writes
``<out>/index.html``, ``<out>/metrics.json`` and the images. Everything is written into a
temporary folder beside ``out`` and renamed at the end, so a failure leaves no partial report.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Literal, get_args

import h5py
import numpy as np

from evaluation import html
from evaluation.acceptance_report import AcceptanceReport, acceptance_report
from evaluation.calibration import CalibrationResult, calibrate
from evaluation.cross_section_report import CrossSectionReport, cross_section_report
from evaluation.errors import ReportError
from evaluation.metrics import (
    DIMENSIONFUL,
    KL_PSEUDOCOUNT,
    METRIC_LABELS,
    METRICS,
    DistanceSummary,
    Metric,
    Verdict,
    bootstrap_weights,
    histogram_edges,
    noise_floor,
    peak_position,
    summarise,
    verdict,
)
from evaluation.observables import Observable, compute_observables, correlation_pairs
from evaluation.plots import (
    PlotJob,
    Reference,
    Series,
    axis_label,
    plot_calibration,
    plot_correlation,
    plot_distribution,
    plot_migration,
)
from evaluation.recon_report import build_recon_report
from evaluation.samples_file import SamplesFile, read_samples_file

__all__ = [
    "FORMATS",
    "REPORT_MARKER",
    "ImageFormat",
    "ReportResult",
    "check_report_folder",
    "report_folder",
    "write_report",
]

ImageFormat = Literal["png", "pdf"]
FORMATS: tuple[ImageFormat, ...] = get_args(ImageFormat)
FEATURES_ALL = "all"
# Fixed seeds for breaking ties in ranks of discrete observables and for the bootstrap, so
# reports are reproducible.
TIE_BREAK_SEED = 0
BOOTSTRAP_SEED = 1
# Bootstrap resamples per distance: enough for a standard deviation to ~10 % (1/sqrt(2(K-1))).
DEFAULT_RESAMPLES = 50
# Written into every report folder: only a folder holding it is ever replaced by a new report.
REPORT_MARKER = ".unfold-report"
# A folder from before the marker counts as a report if it holds only what a report writes.
_REPORT_SUFFIXES = frozenset({".html", ".json", ".png", ".pdf", ".root"})
MATCHED_LABEL = "truth-matched"
VERDICT_MARKS = {"better": "+", "worse": "-", "compatible": "=", None: ""}


@dataclass(frozen=True)
class ReportResult:
    """What a report run produced.

    Attributes:
        out: the report folder.
        headline: the summary table as fixed-width text (printed by the CLI).
        n_plots: figures drawn.
    """

    out: Path
    headline: str
    n_plots: int


@dataclass(frozen=True)
class _ObservableResult:
    """Everything computed for one observable across the unfoldings (indexed like the labels).

    ``noise``: the noise floor per metric; ``reference``/``matched``: the detector level's
    distances (None without one); ``distances``: each unfolding's, with its ``verdicts`` against
    the reference; ``peaks``: masses only, truth, detector, truth-matched, then each unfolding [GeV].
    """

    truth: Observable
    unfoldings: tuple[Observable, ...]
    edges: np.ndarray
    noise: Mapping[Metric, float]
    reference: Mapping[Metric, DistanceSummary] | None
    matched: Mapping[Metric, DistanceSummary] | None
    distances: tuple[Mapping[Metric, DistanceSummary], ...]
    verdicts: tuple[Mapping[Metric, Verdict | None], ...]
    calibrations: tuple[CalibrationResult | None, ...]
    peaks: tuple[float | None, ...] | None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("/", "__"))


def _labels(files: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        stems = [f.stem for f in files]
        return (
            stems
            if len(set(stems)) == len(stems)
            else [f"{i + 1}:{s}" for i, s in enumerate(stems)]
        )
    if len(labels) != len(files):
        raise ReportError(f"--labels: {len(labels)} labels given for {len(files)} files")
    if len(set(labels)) != len(labels) or not all(label.strip() for label in labels):
        raise ReportError(f"--labels: labels must be distinct and non-empty, got {list(labels)}")
    return list(labels)


def _check_same_events(samples: Sequence[SamplesFile]) -> None:
    """Every file must hold the same events: equal E and identical truth arrays."""
    first = samples[0]
    for other in samples[1:]:
        if other.n_events != first.n_events:
            raise ReportError(
                f"{other.path}: has {other.n_events} events but {first.path} has "
                f"{first.n_events}: compared files must hold the same events"
            )
        for level in ("partons", "particles"):
            if (getattr(first, level) is None) != (getattr(other, level) is None):
                raise ReportError(
                    f"{other.path}: {level} level present in one file but not in {first.path}"
                )
        if first.partons is not None and other.partons is not None:
            for parton, features in first.partons.truth.items():
                for feature, values in features.items():
                    theirs = other.partons.truth.get(parton, {}).get(feature)
                    if theirs is None or not np.array_equal(values, theirs, equal_nan=True):
                        raise ReportError(
                            f"{other.path}: PARTONS/{parton}/{feature}: truth differs from "
                            f"{first.path}: compared files must hold the same events"
                        )
        if first.particles is not None and other.particles is not None:
            for name, collection in first.particles.truth.items():
                theirs = other.particles.truth.get(name)
                same = theirs is not None and all(
                    f in theirs.features and np.array_equal(v, theirs.features[f], equal_nan=True)
                    for f, v in collection.features.items()
                )
                if not same:
                    raise ReportError(
                        f"{other.path}: PARTICLES/{name}: truth differs from {first.path}: "
                        "compared files must hold the same events"
                    )


def _select(available: Sequence[Observable], features: Sequence[str] | None) -> list[str]:
    names = [o.name for o in available]
    if features is None:
        return [o.name for o in available if o.key]
    if list(features) == [FEATURES_ALL]:
        return names
    unknown = [f for f in features if f not in names]
    if unknown:
        raise ReportError(
            f"--features: unknown feature(s) {', '.join(unknown)}; available: "
            f"{FEATURES_ALL}, {', '.join(names)}"
        )
    return list(dict.fromkeys(features))


def _migration_names(
    samples: SamplesFile, selected: Sequence[str], features: Sequence[str] | None
) -> set[str]:
    """Observables that get migration matrices: all selected ones, except that the default
    selection skips the raw parton features (their composites show the same migrations)."""
    if features is not None or samples.partons is None:
        return set(selected)
    return {
        n
        for n in selected
        if not (n.startswith("parton/") and n.split("/")[1] in samples.partons.truth)
    }


def _row_weights(event_weights: np.ndarray, rows: int, name: str) -> np.ndarray:
    """(rows,) weight of each value of an observable: rows are the E events, or E blocks of M
    object slots (every jet of an event carries the event's weight)."""
    n_events = event_weights.shape[0]
    if rows % n_events:
        raise ReportError(f"{name}: {rows} values do not split into {n_events} events")
    return event_weights[np.arange(rows) // (rows // n_events)]


def _analyse(
    observables: Sequence[Mapping[str, Observable]], names: Sequence[str], bins: int, resamples: int, n_events: int,
    file_weights: np.ndarray | None = None,
    calibrated: bool = True,
) -> list[_ObservableResult]:
    """Distances with noise floors and bootstrap errors, calibration and mass peaks.

    ``file_weights`` (E,), the samples' event weights, weight every distance, noise floor, bin
    range and calibration (a weight of 2 counts an event twice; see :func:`_row_weights`). Without truth
    (``calibrated`` False) there is no calibration: the detector level is no posterior target.

    The bootstrap resamples events: one set of event weights resamples the truth, the references
    and every draw together (a paired bootstrap); a per-object observable (every jet) carries
    each event's weight to all of its objects.
    """
    rng = np.random.default_rng(TIE_BREAK_SEED)
    bootstrap = np.random.default_rng(BOOTSTRAP_SEED)
    scale = np.ones(n_events) if file_weights is None else np.asarray(file_weights, np.float64)
    results = []
    for name in names:
        per_file = tuple(o[name] for o in observables)
        truth = per_file[0]
        edges = histogram_edges(truth.truth, bins, discrete=truth.discrete,
                                weights=None if file_weights is None else _row_weights(scale, truth.truth.size, name))
        event_weights = bootstrap_weights(n_events, resamples, bootstrap) * scale[None]

        def point(rows: int, name=name) -> np.ndarray | None:
            return None if file_weights is None else _row_weights(scale, rows, name)

        def weights(rows: int, name=name, event_weights=event_weights) -> np.ndarray:
            """Each row's event weight: rows are the events, or E blocks of M object slots."""
            if rows % n_events:
                raise ReportError(f"{name}: {rows} values do not split into {n_events} events")
            return event_weights[:, np.arange(rows) // (rows // n_events)]

        truth_weights = weights(truth.truth.size)

        def against_truth(values: np.ndarray | None, truth=truth, edges=edges, truth_weights=truth_weights, weights=weights):
            if values is None or not np.isfinite(values).any():
                return None
            return summarise(truth.truth, values, edges, truth_weights, weights(values.shape[0]),
                             point(truth.truth.size), point(values.shape[0]))

        reference, matched = against_truth(truth.reference), against_truth(truth.matched)
        distances = tuple(
            summarise(truth.truth, o.draws, edges, truth_weights, weights(o.draws.shape[0]),
                      point(truth.truth.size), point(o.draws.shape[0])) for o in per_file
        )
        independent = bootstrap_weights(n_events, resamples, bootstrap) * scale[None]
        noise = noise_floor(truth.truth, edges, truth_weights, weights(truth.truth.size, event_weights=independent))
        verdicts = tuple(
            {m: None if reference is None else verdict(d[m], reference[m], noise[m]) for m in METRICS}
            for d in distances
        )
        calibrations = tuple(
            calibrate(truth.truth, o.draws, rng, point(n_events)) if truth.per_event and calibrated else None
            for o in per_file
        )
        peaks = _mass_peaks(truth, per_file, file_weights) if _is_mass(truth) else None
        results.append(
            _ObservableResult(truth, per_file, edges, noise, reference, matched, distances, verdicts, calibrations, peaks)
        )
    return results


def _plot_jobs(
    results: Sequence[_ObservableResult],
    labels: Sequence[str],
    bins: int,
    migrations: set[str],
    *,
    method: str | None,
    com_tev: float | None,
    truth_label: str = "Truth",
    weights: np.ndarray | None = None,
) -> list[PlotJob]:
    """Distribution and calibration plots per observable, migration matrices for those named in
    ``migrations``, correlations for the pairs present; ``method`` is the parton reference's
    reconstruction (the samples file's ``reference`` attribute). Every histogram is filled with
    the (E,) event ``weights`` (None: ones), a jet carrying its event's weight."""
    jobs = []
    by_name = {r.truth.name: r for r in results}

    def rows(values: np.ndarray, name: str) -> np.ndarray | None:
        return None if weights is None else _row_weights(weights, values.shape[0], name)

    for result in results:
        obs = result.truth
        series = [
            Series(label, o.draws, rows(o.draws, obs.name)) for label, o in zip(labels, result.unfoldings, strict=True)
        ]
        references = [
            Reference(_reference_label(kind, values, method), values, rows(values, obs.name))
            for kind, values in (("detector", obs.reference), (MATCHED_LABEL, obs.matched))
            if values is not None
        ]
        jobs.append(
            PlotJob(
                f"dist_{_slug(obs.name)}",
                lambda paths, obs=obs, result=result, series=series, references=references: plot_distribution(
                    paths,
                    label=obs.label,
                    unit=obs.unit,
                    edges=result.edges,
                    truth=obs.truth,
                    references=references,
                    unfoldings=series,
                    com_tev=com_tev,
                    truth_label=truth_label,
                    truth_weights=rows(obs.truth, obs.name),
                ),
            )
        )
        calibrated = [
            (lab, c) for lab, c in zip(labels, result.calibrations, strict=True) if c is not None
        ]
        if calibrated:
            jobs.append(
                PlotJob(
                    f"calib_{_slug(obs.name)}",
                    lambda paths, obs=obs, calibrated=calibrated: plot_calibration(
                        paths, label=obs.label, results=calibrated
                    ),
                )
            )
        if obs.per_event and obs.name in migrations:
            panels = [("Detector", obs.reference)] if obs.reference is not None else []
            panels += [
                (f"{lab} draw 1", o.draws[:, 0])
                for lab, o in zip(labels, result.unfoldings, strict=True)
            ]
            coarse = histogram_edges(obs.truth, max(bins // 4, 4), discrete=obs.discrete, weights=rows(obs.truth, obs.name))
            jobs.append(
                PlotJob(
                    f"migration_{_slug(obs.name)}",
                    lambda paths, obs=obs, panels=panels, coarse=coarse: plot_migration(
                        paths,
                        label=obs.label,
                        unit=obs.unit,
                        edges=coarse,
                        truth=obs.truth,
                        panels=panels,
                        weights=weights,
                    ),
                )
            )
    for x_name, y_name in correlation_pairs(set(by_name)):
        x, y = by_name[x_name], by_name[y_name]
        panels = [(truth_label, x.truth.truth, y.truth.truth)] + [
            (lab, xo.draws.ravel(), yo.draws.ravel())
            for lab, xo, yo in zip(labels, x.unfoldings, y.unfoldings, strict=True)
        ]
        # Draws ravel event by event, so row r of a panel is event r // n_draws (r // (M n) per object).
        panel_weights = [rows(values, x_name) for _, values, _ in panels]
        jobs.append(
            PlotJob(
                f"corr_{_slug(x_name)}__vs__{_slug(y_name)}",
                lambda paths, x=x, y=y, panels=panels, panel_weights=panel_weights: plot_correlation(
                    paths,
                    x_label=axis_label(x.truth.label, x.truth.unit),
                    y_label=axis_label(y.truth.label, y.truth.unit),
                    x_edges=histogram_edges(
                        x.truth.truth, max(bins // 2, 4), discrete=x.truth.discrete, weights=panel_weights[0]
                    ),
                    y_edges=histogram_edges(
                        y.truth.truth, max(bins // 2, 4), discrete=y.truth.discrete, weights=panel_weights[0]
                    ),
                    panels=panels,
                    weights=panel_weights,
                ),
            )
        )
    return jobs


def _reference_label(kind: str, values: np.ndarray, method: str | None) -> str:
    """Legend and table name of a detector-level line, with the share of events it covers."""
    share = f"{np.isfinite(values).mean():.0%} of entries"
    if kind == MATCHED_LABEL:
        return f"Detector, truth-matched jets ({share})"
    if method is None:
        return "Detector"
    how = "recon model" if method.startswith("recon") else "chi-square"
    return f"Detector, {how} reco. ({share})"


def _format_summary(summary: DistanceSummary) -> str:
    return f"{summary.value:.3g} ± {summary.error:.2g}"


def _format_draws(summary: DistanceSummary) -> str:
    return f"{_format_summary(summary)} [{summary.minimum:.3g}, {summary.maximum:.3g}]"


def _with_unit(name: str, unit: str) -> str:
    return f"{name} [{unit}]" if unit else name


def _metric_headers() -> list[str]:
    """Metric column names with their unit: W1 and energy carry the observable's unit."""
    return [f"{METRIC_LABELS[m]} [obs. unit]" if m in DIMENSIONFUL else METRIC_LABELS[m] for m in METRICS]


def _rows(result: _ObservableResult, labels: Sequence[str], method: str | None) -> list[tuple[str, list[str], list[str]]]:
    """(source, cells, css classes) of one observable: noise floor, references, unfoldings."""
    obs = result.truth
    rows = [(
        f"noise floor (truth vs truth, {np.isfinite(obs.truth).sum()} entries)",
        [f"{result.noise[m]:.3g}" for m in METRICS],
        ["ref"] * len(METRICS),
    )]
    for kind, values, summary in (("detector", obs.reference, result.reference), (MATCHED_LABEL, obs.matched, result.matched)):
        if summary is not None:
            rows.append((_reference_label(kind, values, method), [_format_summary(summary[m]) for m in METRICS],
                         ["ref"] * len(METRICS)))
    for label, distances, verdicts, unfolding in zip(labels, result.distances, result.verdicts, result.unfoldings, strict=True):
        rows.append((
            f"{label} (mean of {unfolding.draws.shape[1]} draws)",
            [f"{_format_draws(distances[m])} {VERDICT_MARKS[verdicts[m]]}".rstrip() for m in METRICS],
            [verdicts[m] or "" for m in METRICS],
        ))
    return rows


def _headline(results: Sequence[_ObservableResult], labels: Sequence[str], method: str | None) -> str:
    """Fixed-width table: per observable, the noise floor, the detector rows and one row per unfolding."""
    header = ["observable [unit]", "source", *_metric_headers()]
    rows = []
    for result in results:
        for i, (source, cells, _) in enumerate(_rows(result, labels, method)):
            rows.append([_with_unit(result.truth.name, result.truth.unit) if i == 0 else "", source, *cells])
    legend = (
        "distance ± bootstrap sd; unfoldings: mean ± sd [min, max] over draws; + closer to truth than the "
        "detector reference beyond the noise, - farther, = compatible"
    )
    table = legend + "\n" + _fixed_width(header, rows)
    peaks = [
        [result.truth.name, *(_format_peak(value) for value in result.peaks)] for result in results if result.peaks
    ]
    if not peaks:
        return table
    return table + "\n\nmass peaks\n" + _fixed_width(_peak_header(labels), peaks)


def _peak_header(labels: Sequence[str]) -> list[str]:
    return ["observable", *(f"{source} [GeV]" for source in ("truth", "detector", MATCHED_LABEL, *labels))]


def _fixed_width(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _is_mass(observable: Observable) -> bool:
    return observable.per_event and observable.unit == "GeV" and observable.name.endswith("/mass")


def _mass_peaks(
    truth: Observable, unfoldings: Sequence[Observable], weights: np.ndarray | None = None
) -> tuple[float | None, ...]:
    """Most probable value (evaluation.metrics.peak_position) of the truth, the detector
    reference, the truth-matched reference (None without one) and each unfolding, with the (E,)
    event weights (None: ones) carried to every row and draw."""

    def peak(values: np.ndarray | None) -> float | None:
        if values is None or np.isfinite(values).sum() < 2:
            return None
        rows = None if weights is None else _row_weights(weights, values.shape[0], truth.name)
        return peak_position(values, weights=None if rows is None else np.repeat(rows, values.size // values.shape[0]))

    return (peak(truth.truth), peak(truth.reference), peak(truth.matched), *(peak(o.draws) for o in unfoldings))


def _format_peak(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _summary_json(summary: Mapping[Metric, DistanceSummary] | None, draws: bool = False) -> dict | None:
    if summary is None:
        return None
    return {
        m: {
            "value": _finite_or_none(s.value),
            "error": _finite_or_none(s.error),
            **({"min": _finite_or_none(s.minimum), "max": _finite_or_none(s.maximum)} if draws else {}),
        }
        for m, s in summary.items()
    }


def _metrics_json(
    samples: Sequence[SamplesFile],
    labels: Sequence[str],
    results: Sequence[_ObservableResult],
    bins: int,
    resamples: int,
) -> dict:
    observables = {}
    for result in results:
        obs = result.truth
        observables[obs.name] = {
            "label": obs.label,
            "unit": obs.unit,
            "per_event": obs.per_event,
            "entries": {
                "truth": int(np.isfinite(obs.truth).sum()),
                **({"reference": int(np.isfinite(obs.reference).sum())} if obs.reference is not None else {}),
                **({"matched": int(np.isfinite(obs.matched).sum())} if obs.matched is not None else {}),
            },
            "noise_floor": {m: _finite_or_none(v) for m, v in result.noise.items()},
            "reference": _summary_json(result.reference),
            "matched": _summary_json(result.matched),
            **({"peaks": dict(zip(["truth", "detector", MATCHED_LABEL, *labels], result.peaks, strict=True))}
               if result.peaks else {}),
            "distances": {
                label: _summary_json(d, draws=True) for label, d in zip(labels, result.distances, strict=True)
            },
            "verdicts": {label: dict(v) for label, v in zip(labels, result.verdicts, strict=True)},
            "calibration": {
                label: {
                    "rank_counts": c.rank_counts.tolist(),
                    "flatness_p_value": _finite_or_none(c.flatness_p_value),
                    "coverage": [
                        {"nominal": cov.nominal, "expected": cov.expected, "observed": cov.observed}
                        for cov in c.coverages
                    ],
                }
                for label, c in zip(labels, result.calibrations, strict=True)
                if c is not None
            },
        }
    return {
        "mode": "samples",
        "compared_with": samples[0].compared_with,
        "bins": bins,
        "bootstrap_resamples": resamples,
        "kl_pseudocount": KL_PSEUDOCOUNT,
        "metrics": {m: METRIC_LABELS[m] for m in METRICS},
        "files": [
            {
                "path": str(s.path),
                "label": label,
                "n_events": s.n_events,
                "n_draws": s.n_draws,
                "attrs": dict(s.attrs),
            }
            for s, label in zip(samples, labels, strict=True)
        ],
        "observables": observables,
    }


def _reference_note(samples: SamplesFile) -> str:
    """What the parton-level detector reference is, from the samples file's attributes."""
    method = samples.attrs.get("reference")
    if samples.compared_with != "truth":
        return (
            f"<p><b>No truth in {escape(samples.path.name)}</b> (measured events): every distance compares the "
            "unfoldings with the detector level (the reference reconstructed "
            f"{escape('by ' + method if method else 'from the detector objects')}), shown where the truth would be; "
            "there is no calibration and no verdict against a reference.</p>"
        )
    if method is None:
        return (
            "<p>Parton-level detector reference: not recorded in this samples file (written before the "
            "reconstructed reference); it may be the truth-matched jets only.</p>"
        )
    unassigned = json.loads(samples.attrs.get("reference_unassigned", "{}"))
    missing = ", ".join(f"{p} {n}" for p, n in unassigned.items() if n) or "none"
    matched = json.loads(samples.attrs.get("matched_fraction", "{}"))
    shares = ", ".join(f"{p} {f:.0%}" for p, f in matched.items())
    return (
        f"<p>Parton-level detector reference (from {escape(samples.path.name)}, the first file): {escape(method)}, "
        "reconstructing every event without truth: "
        f"{escape(samples.attrs.get('reference_events', '?'))} of {samples.n_events} events with every parton "
        f"assigned (unassigned partons: {escape(missing)}); the neutrino is the MET with p<sub>z</sub> from "
        "the W-mass constraint. Verdicts compare with this reference. The truth-matched jets are shown as a "
        f"second line; they exist only for a subset of events ({escape(shares)}), a different population.</p>"
    )


def _html_page(
    samples: Sequence[SamplesFile],
    labels: Sequence[str],
    results: Sequence[_ObservableResult],
    images: Mapping[str, tuple[str, str | None]],
    resamples: int,
    cross: CrossSectionReport | None = None,
    acceptance: AcceptanceReport | None = None,
) -> str:
    body = []
    method = samples[0].attrs.get("reference")
    for s, label in zip(samples, labels, strict=True):
        meta = {"file": s.path, "events": s.n_events, "draws per event": s.n_draws, **s.attrs}
        body.append(f"<h3>{escape(label)}</h3>" + html.value_table(meta))
    header = ["observable [unit]", "source", *_metric_headers()]
    rows = []
    for result in results:
        anchor = _slug(result.truth.name)
        name = escape(_with_unit(result.truth.name, result.truth.unit))
        for i, (source, cells, classes) in enumerate(_rows(result, labels, method)):
            first = (f'<a href="#{anchor}">{name}</a>', "name") if i == 0 else ("", "name")
            rows.append([first, (escape(source), "name"), *((escape(c), k) for c, k in zip(cells, classes, strict=True))])
    bins = results[0].edges.size - 1 if results else 0
    body.append(
        html.section(
            "Distances to truth",
            [
                _reference_note(samples[0]),
                *([acceptance.selected_note()] if acceptance is not None else []),
                "<p>Each distance is given ± the standard deviation of its bootstrap "
                f"({resamples} resamples of the events; an unfolding's bootstrap averages its first draws), "
                "and each unfolding as the mean over its draws with [min, max]. The noise floor is the "
                "distance between two independent bootstrap samples of the truth of its own size: what "
                "statistics alone give. Each draw has one entry per event, as the truth, so draws and truth "
                "are compared at equal size; the truth-matched line has fewer entries and a larger noise. "
                "Green (+): the unfolding is closer to truth than the detector "
                "reference by more than both the noise floor and twice the bootstrap sd of the "
                "difference; red (-): farther by as much; uncoloured (=): compatible. W1 and energy "
                "distances are in the observable's unit. KL and triangular discrimination (x 10<sup>3</sup>) "
                f"use {bins}-bin histograms over the truth's central 99.8 %, overflow in the edge bins; KL "
                f"adds {KL_PSEUDOCOUNT} events to every bin of both histograms (Krichevsky-Trofimov "
                "smoothing), so a bin empty in one sample counts.</p>",
                html.table(header, rows),
            ],
        )
    )
    peak_rows = [
        [(escape(r.truth.name), "name"), *((_format_peak(v), "") for v in r.peaks)] for r in results if r.peaks
    ]
    if peak_rows:
        body.append(
            html.section(
                "Mass peaks",
                [
                    "<p>Most probable value: the maximum of a kernel density estimate with a "
                    "robust bandwidth, so a resonance peak is located by its core, not its tails.</p>",
                    html.table(_peak_header(labels), peak_rows),
                ],
            )
        )
    calibration_rows = []
    for result in results:
        for label, c in zip(labels, result.calibrations, strict=True):
            if c is None:
                continue
            cells = [(escape(result.truth.name), "name"), (escape(label), "")]
            cells.append((f"{c.flatness_p_value:.3g}", ""))
            cells += [(f"{cov.observed:.3f} (exp. {cov.expected:.3f})", "") for cov in c.coverages]
            calibration_rows.append(cells)
    if calibration_rows:
        body.append(
            html.section(
                "Calibration",
                [
                    "<p>Rank-histogram flatness (chi-square p-value) and coverage of central "
                    "intervals between order statistics of the draws; the expected value is what a "
                    "calibrated posterior gives with this number of draws.</p>",
                    html.table(
                        ["observable", "unfolding", "flatness p", "68 % coverage", "95 % coverage"],
                        calibration_rows,
                    ),
                ],
            )
        )
    if acceptance is not None:
        body.append(acceptance.html(images, _slug))
    if cross is not None:
        body.append(cross.html(images, _slug))
    for result in results:
        obs = result.truth
        figures = [
            html.figure(images[stem][0], caption, images[stem][1])
            for stem, caption in (
                (f"dist_{_slug(obs.name)}", "Distribution and ratio to truth"),
                (f"calib_{_slug(obs.name)}", "Rank histogram and coverage"),
                (f"migration_{_slug(obs.name)}", "Migration matrices"),
            )
            if stem in images
        ]
        body.append(
            html.section(
                obs.name, ['<div class="figures">' + "".join(figures) + "</div>"], _slug(obs.name)
            )
        )
    correlations = [
        html.figure(png, stem.removeprefix("corr_").replace("__vs__", " vs "), link)
        for stem, (png, link) in images.items()
        if stem.startswith("corr_")
    ]
    if correlations:
        body.append(
            html.section(
                "Correlations", ['<div class="figures">' + "".join(correlations) + "</div>"]
            )
        )
    return html.page(f"Unfolding report: {', '.join(labels)}", body)


def _draw(
    jobs: Sequence[PlotJob],
    folder: Path,
    image_format: ImageFormat,
    progress: Callable[[Sequence[PlotJob]], Iterable[PlotJob]],
) -> dict[str, tuple[str, str | None]]:
    """Draw every job; returns stem -> (PNG for the page, PDF link or None)."""
    images = {}
    for job in progress(jobs):
        paths = [folder / f"{job.stem}.png"]
        if image_format == "pdf":
            paths.append(folder / f"{job.stem}.pdf")
        job.draw(paths)
        images[job.stem] = (paths[0].name, paths[1].name if len(paths) > 1 else None)
    return images


def _is_report(folder: Path) -> bool:
    """A folder written by :func:`write_report` (its marker, or only a report's files)."""
    if (folder / REPORT_MARKER).is_file():
        return True
    entries = list(folder.iterdir())
    names = {e.name for e in entries}
    return {"index.html", "metrics.json"} <= names and all(
        e.is_file() and e.suffix in _REPORT_SUFFIXES for e in entries
    )


def _temporary_names(out: Path) -> tuple[Path, Path]:
    """The new report's name while it is drawn, and the old report's while it is swapped out."""
    return (out.with_name(f".{out.name}.partial-{os.getpid()}"),
            out.with_name(f".{out.name}.previous-{os.getpid()}"))


def check_report_folder(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse a report folder whose replacement would lose data: a file, the working folder or
    one above it, a folder holding an input, a folder that is not a previous report, an
    unwritable place, or a name whose temporary form is too long. Raises ReportError."""
    where = out.resolve()
    limit = os.pathconf(Path.cwd(), "PC_NAME_MAX")
    longest = max(len(os.fsencode(part)) for part in (*where.parts, *(p.name for p in _temporary_names(where))))
    if longest > limit:
        raise ReportError(f"--out {out}: name too long ({longest} bytes with the temporary suffix; at most {limit})")
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out}: a file; expected a report folder (new, or a previous report)")
    if where == Path.cwd().resolve() or where in Path.cwd().resolve().parents:
        raise ReportError(f"--out {out}: the working folder or one above it; expected a new folder, e.g. reports/NAME")
    for path in inputs:
        if where in path.resolve().parents:
            raise ReportError(f"--out {out}: holds the input {path}; expected a folder apart from the inputs")
    if out.is_dir() and any(out.iterdir()) and not _is_report(out):
        raise ReportError(f"--out {out}: a folder that is not a previous report (no {REPORT_MARKER}); "
                          "only a previous report is replaced, choose a new folder")
    parent = where.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError(f"--out {out}: {parent} is not a writable folder")


def _publish(temporary: Path, out: Path) -> None:
    """Replace ``out`` by the finished temporary folder; the old report is removed last, and
    put back if the new one cannot take its name."""
    previous = _temporary_names(out)[1]
    if out.exists():
        out.rename(previous)
    try:
        temporary.rename(out)
    except OSError:
        if previous.exists():
            previous.rename(out)
        raise
    if previous.exists():
        shutil.rmtree(previous)


@contextmanager
def report_folder(out: Path, writer: str) -> Iterator[Path]:
    """A temporary folder, marked as a report written by ``writer``, to draw a report in; it takes
    the place of ``out`` only when the block ends without error, and is removed otherwise."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_names(out)[0]
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    try:
        (temporary / REPORT_MARKER).write_text(f"written by {writer}; replaced by the next report\n")
        yield temporary
        _publish(temporary, out)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


def _collision_energy(samples: SamplesFile) -> float | None:
    """sqrt(s) in TeV from the samples file's ``sqrt_s_gev`` attribute, None where it has none."""
    text = samples.attrs.get("sqrt_s_gev")
    try:
        return None if text is None else float(text) / 1000.0
    except ValueError:
        raise ReportError(f"{samples.path}: attribute 'sqrt_s_gev': expected a number, got {text!r}") from None


def _is_predictions_file(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as file:
            return "PREDICTIONS" in file
    except OSError:
        return False


def write_report(
    files: Sequence[str | Path],
    out: str | Path,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 64,
    features: Sequence[str] | None = None,
    image_format: ImageFormat = "png",
    resamples: int = DEFAULT_RESAMPLES,
    progress: Callable[[Sequence[PlotJob]], Iterable[PlotJob]] = lambda jobs: jobs,
    luminosity: float | None = None,
) -> ReportResult:
    """Write the report of one or more samples files (or of one recon predictions file).

    Args:
        files: samples files of the same events, or a single recon predictions file.
        out: the report folder; replaced when the new report is complete.
        labels: one name per file (default: the file stems).
        bins: histogram bins (also those of the KL and triangular distances).
        features: observable names, ["all"], or None for the key observables.
        image_format: "png", or "pdf" (PDFs plus PNGs for the page).
        resamples: bootstrap resamples per distance (at least 2).
        progress: wraps the list of plot jobs (e.g. a tqdm progress bar).
        luminosity: integrated luminosity of the samples' events [fb^-1] for the cross sections
            (default: the samples file's ``luminosity_fb_inv``; none: cross sections off, one note).

    Raises:
        ReportError: bad input or option; nothing is left in ``out``'s parent.
    """
    paths = [Path(f) for f in files]
    out = Path(out)
    if not paths:
        raise ReportError("no input files given")
    if image_format not in FORMATS:
        raise ReportError(
            f"--format: unknown format {image_format!r}; choose from {', '.join(FORMATS)}"
        )
    if bins < 2:
        raise ReportError(f"--bins: expected at least 2 bins, got {bins}")
    if resamples < 2:
        raise ReportError(f"--bootstrap: expected at least 2 resamples, got {resamples}")
    for path in paths:
        if not path.is_file():
            raise ReportError(f"{path}: no such file")
    check_report_folder(out, paths)
    cross = None
    if _is_predictions_file(paths[0]):
        if luminosity is not None:
            raise ReportError(f"--luminosity: {paths[0]} is a recon predictions file; cross sections need a samples file")
        if len(paths) > 1:
            raise ReportError(
                f"{paths[0]}: a recon predictions file is reported on its own, got {len(paths)} files"
            )
        build = build_recon_report(paths[0], bins=bins)
        jobs, headline = build.jobs, build.headline
        render_page, metrics = build.render_page, build.metrics
    else:
        names = _labels(paths, labels)
        samples = [read_samples_file(p) for p in paths]
        _check_same_events(samples)
        observables = [{o.name: o for o in compute_observables(s)} for s in samples]
        for path, found in zip(paths[1:], observables[1:], strict=True):
            if set(found) != set(observables[0]):
                missing = sorted(set(observables[0]) ^ set(found))
                raise ReportError(
                    f"{path}: observables differ from {paths[0]}: {', '.join(missing)}"
                )
        selected = _select(list(observables[0].values()), features)
        if not selected:
            raise ReportError(f"{paths[0]}: no observables to report")
        results = _analyse(observables, selected, bins, resamples, samples[0].n_events, samples[0].weights,
                           calibrated=samples[0].compared_with == "truth")
        method = samples[0].attrs.get("reference")
        jobs = _plot_jobs(
            results, names, bins, _migration_names(samples[0], selected, features), method=method,
            com_tev=_collision_energy(samples[0]),
            truth_label="Truth" if samples[0].compared_with == "truth" else "Detector level (no truth)",
            weights=samples[0].weights,
        )
        cross = cross_section_report([(r.truth, r.unfoldings, r.edges) for r in results], names, samples[0],
                                     luminosity, com_tev=_collision_energy(samples[0]))
        # With ACCEPTANCE/ (unfold acceptance apply): the corrected level against the truth of its full space.
        acceptance = acceptance_report(samples, names, [(r.truth, r.unfoldings) for r in results], bins, resamples,
                                       com_tev=_collision_energy(samples[0]))
        headline = _headline(results, names, method)
        if acceptance is not None:
            cross = acceptance.cross_sections(cross)
            jobs += acceptance.jobs(_slug)
            headline += "\n\n" + acceptance.headline()
        jobs += cross.jobs(_slug)
        headline += "\n\n" + cross.headline()
        metrics = _metrics_json(samples, names, results, bins, resamples)
        if acceptance is not None:
            metrics["acceptance"] = acceptance.metrics()

        def render_page(images: Mapping[str, tuple[str, str | None]]) -> str:
            return _html_page(samples, names, results, images, resamples, cross, acceptance)

    with report_folder(out, "unfold report") as temporary:
        images = _draw(jobs, temporary, image_format, progress)
        (temporary / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if cross is not None:
            cross.write(temporary)
        (temporary / "index.html").write_text(render_page(images))
    return ReportResult(out=out, headline=headline, n_plots=len(jobs))
