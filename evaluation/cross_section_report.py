"""The cross-section part of ``unfold report``: figures, tables and the exported files.

Given the luminosity (``--luminosity``, or the samples file's ``luminosity_fb_inv``), every
reported observable gets dsigma/dx of the truth and of each unfolding in the report's bins
(figure ``xsec_<observable>``), a table of the cross section within the bin range, and the
exports ``cross_sections.json`` and ``cross_sections.root``. Without a luminosity the part is
one note line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from evaluation import html
from evaluation.cross_sections import (
    PHASE_SPACE,
    TRUTH,
    DifferentialCrossSection,
    observable_cross_sections,
    plot_cross_sections,
    resolve_luminosity,
)
from evaluation.exports import write_json, write_root
from evaluation.observables import Observable
from evaluation.plots import PlotJob
from evaluation.samples_file import SamplesFile

__all__ = ["JSON_NAME", "ROOT_NAME", "CrossSectionReport", "cross_section_report"]

JSON_NAME = "cross_sections.json"
ROOT_NAME = "cross_sections.root"
DETECTOR_SOURCE = "detector level"


@dataclass(frozen=True)
class CrossSectionReport:
    """Cross sections per observable (truth first, then the unfoldings), or none and why.

    Attributes:
        observables: per observable, its sections; empty when cross sections are off.
        note: where the luminosity came from, or why cross sections are off.
        com_tev: collision energy for the figures' label [TeV], or None.
    """

    observables: tuple[tuple[DifferentialCrossSection, ...], ...]
    note: str
    com_tev: float | None = None

    def jobs(self, slug: Callable[[str], str]) -> list[PlotJob]:
        """One figure per observable, named ``xsec_<slug(observable)>``."""
        return [
            PlotJob(f"xsec_{slug(sections[0].observable)}",
                    lambda paths, sections=sections: plot_cross_sections(paths, sections, self.com_tev))
            for sections in self.observables
        ]

    def _rows(self) -> list[list[str]]:
        rows = []
        for sections in self.observables:
            truth = sections[0].total[0]
            for i, s in enumerate(sections):
                sigma, data, draws = s.total
                rows.append([
                    f"{s.observable} [{s.sigma_unit}]" if i == 0 else "", s.source, f"{sigma:.4g}", f"{data:.2g}",
                    f"{draws:.2g}" if s.n_draws > 1 else "", f"{sigma / truth:.3f}" if truth > 0 and i else "",
                ])
        return rows

    HEADER = ("observable [dsigma/dx unit]", "source", "sigma in bin range [fb]", "± data", "± draws (sd)", "/ first row")

    def headline(self) -> str:
        """The note, and the table of cross sections within each observable's bin range."""
        if not self.observables:
            return self.note
        rows = [list(self.HEADER), *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.HEADER))]
        table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
        return f"cross sections: {self.note}; phase space: {PHASE_SPACE}\n{table}\n(also in {JSON_NAME}, {ROOT_NAME})"

    def html(self, images: Mapping[str, tuple[str, str | None]], slug: Callable[[str], str]) -> str:
        """The report page's section."""
        if not self.observables:
            return html.section("Cross sections", [f"<p>{escape(self.note)}.</p>"], "cross-sections")
        rows = [[(escape(c), "name" if i < 2 else "") for i, c in enumerate(row)] for row in self._rows()]
        figures = [
            html.figure(images[stem][0], sections[0].observable, images[stem][1])
            for sections in self.observables
            if (stem := f"xsec_{slug(sections[0].observable)}") in images
        ]
        text = (
            f"<p>Differential cross sections d&sigma;/dx: {escape(self.note)}. Phase space: {escape(PHASE_SPACE)}. "
            "Each unfolding is the mean over its draws of the per-draw histograms; errors: <b>data</b>, the "
            "sample's size (compound Poisson: the square root of the sum over events of their squared "
            "weighted bin content), and <b>draws</b>, the sd of the per-draw histograms (the scatter of one "
            "draw's unfolded histogram; the mean's is sd / &radic;n). The table gives the integral over each "
            "observable's bin range. Every histogram with its errors: "
            f'<a href="{JSON_NAME}">{JSON_NAME}</a>, <a href="{ROOT_NAME}">{ROOT_NAME}</a> (TH1D per source, '
            "Weight storage: errors from the data; &lt;source&gt;_draws: errors from the draws).</p>"
        )
        return html.section(
            "Cross sections",
            [text, html.table(list(self.HEADER), rows), '<div class="figures">' + "".join(figures) + "</div>"],
            "cross-sections",
        )

    def write(self, folder: Path) -> None:
        """``cross_sections.json`` and ``cross_sections.root`` in ``folder`` (nothing when off)."""
        sections = [s for group in self.observables for s in group]
        if sections:
            write_json(folder / JSON_NAME, sections)
            write_root(folder / ROOT_NAME, sections)


def cross_section_report(
    observables: Sequence[tuple[Observable, Sequence[Observable], np.ndarray]],
    labels: Sequence[str],
    samples: SamplesFile,
    luminosity: float | None,
    *,
    com_tev: float | None = None,
    draw_weights: np.ndarray | None = None,
) -> CrossSectionReport:
    """Cross sections of (truth, unfoldings, bin edges) per observable, weighted by the samples'
    event weights (and ``draw_weights`` (E, n), e.g. 1 / efficiency, for the draws)."""
    used, note = resolve_luminosity(luminosity, samples.attrs, samples.path)
    if used is None:
        return CrossSectionReport((), note, com_tev)
    truth_source = TRUTH if samples.compared_with == "truth" else DETECTOR_SOURCE
    return CrossSectionReport(
        tuple(
            tuple(observable_cross_sections(truth, unfoldings, labels, edges, used, n_events=samples.n_events,
                                            event_weights=samples.weights, draw_weights=draw_weights,
                                            truth_source=truth_source))
            for truth, unfoldings, edges in observables
        ),
        note,
        com_tev,
    )
