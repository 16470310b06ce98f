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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Literal, get_args

import h5py
import numpy as np

from evaluation import html
from evaluation.calibration import CalibrationResult, calibrate
from evaluation.errors import ReportError
from evaluation.metrics import (
    METRIC_LABELS,
    METRICS,
    DistanceSummary,
    histogram_edges,
    peak_position,
    summarise_draws,
)
from evaluation.observables import Observable, compute_observables, correlation_pairs
from evaluation.plots import (
    PlotJob,
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
    "ImageFormat",
    "ReportResult",
    "write_report",
]

ImageFormat = Literal["png", "pdf"]
FORMATS: tuple[ImageFormat, ...] = get_args(ImageFormat)
FEATURES_ALL = "all"
# Fixed seed for breaking ties in ranks of discrete observables, so reports are reproducible.
TIE_BREAK_SEED = 0


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
    """Everything computed for one observable across the unfoldings (indexed like the labels)."""

    truth: Observable
    unfoldings: tuple[Observable, ...]
    edges: np.ndarray
    distances: tuple[Mapping[str, DistanceSummary], ...]
    calibrations: tuple[CalibrationResult | None, ...]
    peaks: tuple[float | None, ...] | None  # masses: truth, detector, then each unfolding (GeV)


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


def _analyse(
    observables: Sequence[Mapping[str, Observable]], names: Sequence[str], bins: int
) -> list[_ObservableResult]:
    rng = np.random.default_rng(TIE_BREAK_SEED)
    results = []
    for name in names:
        per_file = tuple(o[name] for o in observables)
        truth = per_file[0]
        edges = histogram_edges(truth.truth, bins, discrete=truth.discrete)
        distances = tuple(
            summarise_draws(truth.truth, o.draws, truth.reference, edges) for o in per_file
        )
        calibrations = tuple(
            calibrate(truth.truth, o.draws, rng) if truth.per_event else None for o in per_file
        )
        peaks = _mass_peaks(truth, per_file) if _is_mass(truth) else None
        results.append(_ObservableResult(truth, per_file, edges, distances, calibrations, peaks))
    return results


def _plot_jobs(
    results: Sequence[_ObservableResult], labels: Sequence[str], bins: int, migrations: set[str]
) -> list[PlotJob]:
    """Distribution and calibration plots per observable, migration matrices for those named in
    ``migrations``, correlations for the pairs present."""
    jobs = []
    by_name = {r.truth.name: r for r in results}
    for result in results:
        obs = result.truth
        series = [
            Series(label, o.draws) for label, o in zip(labels, result.unfoldings, strict=True)
        ]
        jobs.append(
            PlotJob(
                f"dist_{_slug(obs.name)}",
                lambda paths, obs=obs, result=result, series=series: plot_distribution(
                    paths,
                    label=obs.label,
                    unit=obs.unit,
                    edges=result.edges,
                    truth=obs.truth,
                    reference=obs.reference,
                    unfoldings=series,
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
            coarse = histogram_edges(obs.truth, max(bins // 4, 4), discrete=obs.discrete)
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
                    ),
                )
            )
    for x_name, y_name in correlation_pairs(set(by_name)):
        x, y = by_name[x_name], by_name[y_name]
        panels = [("Truth", x.truth.truth, y.truth.truth)] + [
            (lab, xo.draws.ravel(), yo.draws.ravel())
            for lab, xo, yo in zip(labels, x.unfoldings, y.unfoldings, strict=True)
        ]
        jobs.append(
            PlotJob(
                f"corr_{_slug(x_name)}__vs__{_slug(y_name)}",
                lambda paths, x=x, y=y, panels=panels: plot_correlation(
                    paths,
                    x_label=axis_label(x.truth.label, x.truth.unit),
                    y_label=axis_label(y.truth.label, y.truth.unit),
                    x_edges=histogram_edges(
                        x.truth.truth, max(bins // 2, 4), discrete=x.truth.discrete
                    ),
                    y_edges=histogram_edges(
                        y.truth.truth, max(bins // 2, 4), discrete=y.truth.discrete
                    ),
                    panels=panels,
                ),
            )
        )
    return jobs


def _format_summary(summary: DistanceSummary) -> str:
    return f"{summary.mean:.3g} [{summary.minimum:.3g}, {summary.maximum:.3g}]"


def _headline(results: Sequence[_ObservableResult], labels: Sequence[str]) -> str:
    """Fixed-width table: per observable, the detector row and one row per unfolding."""
    header = ["observable", "source", *(METRIC_LABELS[m] for m in METRICS)]
    rows = []
    for result in results:
        name = result.truth.name
        reference = result.distances[0]
        rows.append([name, "detector", *(f"{reference[m].reference:.3g}" for m in METRICS)])
        for label, distances in zip(labels, result.distances, strict=True):
            rows.append(["", label, *(_format_summary(distances[m]) for m in METRICS)])
    peaks = [
        [result.truth.name, *(_format_peak(value) for value in result.peaks)] for result in results if result.peaks
    ]
    table = _fixed_width(header, rows)
    if not peaks:
        return table
    return table + "\n\nmass peaks (GeV)\n" + _fixed_width(["observable", "truth", "detector", *labels], peaks)


def _fixed_width(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _is_mass(observable: Observable) -> bool:
    return observable.per_event and observable.unit == "GeV" and observable.name.endswith("/mass")


def _mass_peaks(truth: Observable, unfoldings: Sequence[Observable]) -> tuple[float | None, ...]:
    """Most probable value of the truth, the detector reference (None without one) and each unfolding."""
    reference = truth.reference if truth.reference is not None else np.array([])
    detector = peak_position(reference) if np.isfinite(reference).sum() >= 2 else None
    return (peak_position(truth.truth), detector, *(peak_position(o.draws) for o in unfoldings))


def _format_peak(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _metrics_json(
    samples: Sequence[SamplesFile],
    labels: Sequence[str],
    results: Sequence[_ObservableResult],
    bins: int,
) -> dict:
    observables = {}
    for result in results:
        obs = result.truth
        observables[obs.name] = {
            "label": obs.label,
            "unit": obs.unit,
            "per_event": obs.per_event,
            "reference": {m: _finite_or_none(result.distances[0][m].reference) for m in METRICS},
            **({"peaks": dict(zip(["truth", "detector", *labels], result.peaks, strict=True))} if result.peaks else {}),
            "distances": {
                label: {
                    m: {
                        "mean": _finite_or_none(d[m].mean),
                        "min": _finite_or_none(d[m].minimum),
                        "max": _finite_or_none(d[m].maximum),
                    }
                    for m in METRICS
                }
                for label, d in zip(labels, result.distances, strict=True)
            },
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
        "bins": bins,
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


def _summary_cell(summary: DistanceSummary) -> tuple[str, str]:
    verdict = summary.beats_reference
    css = "" if verdict is None else ("better" if verdict else "worse")
    return escape(_format_summary(summary)), css


def _html_page(
    samples: Sequence[SamplesFile],
    labels: Sequence[str],
    results: Sequence[_ObservableResult],
    images: Mapping[str, tuple[str, str | None]],
) -> str:
    body = []
    for s, label in zip(samples, labels, strict=True):
        meta = {"file": s.path, "events": s.n_events, "draws per event": s.n_draws, **s.attrs}
        body.append(f"<h3>{escape(label)}</h3>" + html.value_table(meta))
    header = ["observable"] + [
        f"{METRIC_LABELS[m]}: {source}" for m in METRICS for source in ["detector", *labels]
    ]
    rows = []
    for result in results:
        anchor = _slug(result.truth.name)
        row = [(f'<a href="#{anchor}">{escape(result.truth.name)}</a>', "name")]
        for m in METRICS:
            row.append((f"{result.distances[0][m].reference:.3g}", "ref"))
            row += [_summary_cell(d[m]) for d in result.distances]
        rows.append(row)
    body.append(
        html.section(
            "Distances to truth",
            [
                "<p>Each unfolding: mean [min, max] over its draws. Green: the mean beats the "
                "detector-level distance to truth; red: it does not. KL and triangular "
                f"discrimination (x 10<sup>3</sup>) use {results[0].edges.size - 1 if results else 0}"
                "-bin histograms over the truth's central 99.8 %, overflow in the edge bins.</p>",
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
                    "<p>Most probable value (GeV): the maximum of a kernel density estimate with a "
                    "robust bandwidth, so a resonance peak is located by its core, not its tails.</p>",
                    html.table(["observable", "truth", "detector", *labels], peak_rows),
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


def _publish(temporary: Path, out: Path) -> None:
    """Replace ``out`` by the finished temporary folder (the old report is removed last)."""
    previous = out.with_name(f".{out.name}.previous-{os.getpid()}")
    if out.exists():
        out.rename(previous)
    temporary.rename(out)
    if previous.exists():
        shutil.rmtree(previous)


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
    progress: Callable[[Sequence[PlotJob]], Iterable[PlotJob]] = lambda jobs: jobs,
) -> ReportResult:
    """Write the report of one or more samples files (or of one recon predictions file).

    Args:
        files: samples files of the same events, or a single recon predictions file.
        out: the report folder; replaced when the new report is complete.
        labels: one name per file (default: the file stems).
        bins: histogram bins (also those of the KL and triangular distances).
        features: observable names, ["all"], or None for the key observables.
        image_format: "png", or "pdf" (PDFs plus PNGs for the page).
        progress: wraps the list of plot jobs (e.g. a tqdm progress bar).

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
    for path in paths:
        if not path.is_file():
            raise ReportError(f"{path}: no such file")
    if _is_predictions_file(paths[0]):
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
        results = _analyse(observables, selected, bins)
        jobs = _plot_jobs(results, names, bins, _migration_names(samples[0], selected, features))
        headline = _headline(results, names)
        metrics = _metrics_json(samples, names, results, bins)

        def render_page(images: Mapping[str, tuple[str, str | None]]) -> str:
            return _html_page(samples, names, results, images)

    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    try:
        images = _draw(jobs, temporary, image_format, progress)
        (temporary / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (temporary / "index.html").write_text(render_page(images))
        _publish(temporary, out)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
    return ReportResult(out=out, headline=headline, n_plots=len(jobs))
