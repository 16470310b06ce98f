"""Exports of differential cross sections that other tools read: JSON, and ROOT (``uproot``).

``cross_sections.json``::

    {"luminosity_fb_inv": L, "phase_space": "...", "units": {...},
     "observables": {"<observable>": {"label", "unit", "sigma_unit", "edges",
                                      "sources": {"<source>": {"values", "stat_data", "stat_draws",
                                                               "n_draws", "total"}}}}}

``cross_sections.root``: per observable a folder ``<level>/<object>/<quantity>`` with a TH1D per
source, written from ``hist`` histograms with Weight storage: ``truth`` and ``<source>`` carry
dsigma/dx with the data's variance (stat_data^2), ``<source>_draws`` the same values with the
draws' variance (stat_draws^2), so a ROOT user gets both errors with ``GetBinError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import hist
import numpy as np
import uproot

from evaluation.cross_sections import PHASE_SPACE, DifferentialCrossSection
from evaluation.errors import ReportError

__all__ = ["DRAWS_SUFFIX", "read_json", "read_root", "to_hist", "write_json", "write_root"]

DRAWS_SUFFIX = "_draws"
UNITS = {
    "values": "dsigma/dx in fb per unit of the observable (sigma_unit)",
    "stat_data": "sd from the sample's size (compound Poisson), same unit as values",
    "stat_draws": "sd of the per-draw histograms (one draw's scatter; the mean's is sd / sqrt(n_draws)), same unit",
    "total": "[sigma, data sd, draws sd] in fb over the bin range",
    "luminosity_fb_inv": "fb^-1",
}


def _luminosity(sections: Sequence[DifferentialCrossSection]) -> float:
    values = {s.luminosity_fb_inv for s in sections}
    if len(values) != 1:
        raise ReportError(f"cross section export: expected one luminosity for all histograms, got {sorted(values)}")
    return values.pop()


def write_json(path: Path, sections: Sequence[DifferentialCrossSection], phase_space: str = PHASE_SPACE) -> None:
    """Write ``sections`` (one luminosity) to ``path`` as described in the module docstring."""
    observables: dict[str, dict] = {}
    for s in sections:
        entry = observables.setdefault(s.observable, {
            "label": s.label, "unit": s.unit, "sigma_unit": s.sigma_unit, "edges": s.edges.tolist(), "sources": {},
        })
        if not np.array_equal(entry["edges"], s.edges):
            raise ReportError(f"cross section export: {s.observable}: {s.source} has other bin edges than the first source")
        entry["sources"][s.source] = {
            "values": s.values.tolist(), "stat_data": s.stat_data.tolist(), "stat_draws": s.stat_draws.tolist(),
            "n_draws": s.n_draws, "total": list(s.total),
        }
    document = {"luminosity_fb_inv": _luminosity(sections), "phase_space": phase_space, "units": UNITS,
                "observables": observables}
    path.write_text(json.dumps(document, indent=1) + "\n")


def read_json(path: Path) -> list[DifferentialCrossSection]:
    """The sections of a file written by :func:`write_json`, in the order written."""
    document = json.loads(path.read_text())
    return [
        DifferentialCrossSection(
            observable=name, label=entry["label"], unit=entry["unit"], source=source,
            edges=np.array(entry["edges"]), values=np.array(values["values"]),
            stat_data=np.array(values["stat_data"]), stat_draws=np.array(values["stat_draws"]),
            n_draws=values["n_draws"], luminosity_fb_inv=document["luminosity_fb_inv"], total=tuple(values["total"]),
        )
        for name, entry in document["observables"].items()
        for source, values in entry["sources"].items()
    ]


def _key(name: str) -> str:
    """A ROOT object name: letters, digits, '_', '.', '-' and '/' (folders) only."""
    return re.sub(r"[^A-Za-z0-9_./-]+", "_", name)


def to_hist(section: DifferentialCrossSection, *, draws: bool = False) -> hist.Hist:
    """A Weight-storage histogram of dsigma/dx; variance stat_data^2, or stat_draws^2 with ``draws``."""
    axis = hist.axis.Variable(section.edges, name="x", label=f"{section.label} [{section.unit}]" if section.unit else section.label)
    h = hist.Hist(axis, storage=hist.storage.Weight(), name=section.source,
                  label=f"dsigma/dx [{section.sigma_unit}], L = {section.luminosity_fb_inv:.6g} fb^-1")
    view = h.view()
    view.value = section.values
    view.variance = (section.stat_draws if draws else section.stat_data) ** 2
    return h


def write_root(path: Path, sections: Sequence[DifferentialCrossSection]) -> None:
    """Write every section as TH1D ``<observable>/<source>`` (and ``<source>_draws`` for unfoldings)."""
    _luminosity(sections)
    with uproot.recreate(path) as file:
        for s in sections:
            folder = _key(s.observable)
            file[f"{folder}/{_key(s.source)}"] = to_hist(s)
            if s.n_draws > 1:
                file[f"{folder}/{_key(s.source)}{DRAWS_SUFFIX}"] = to_hist(s, draws=True)


def read_root(path: Path) -> dict[str, hist.Hist]:
    """Every histogram of a file written by :func:`write_root`, by its path (``folder/name``)."""
    with uproot.open(path) as file:
        return {key.split(";")[0]: file[key].to_hist() for key, kind in file.classnames(recursive=True).items()
                if kind.startswith("TH1")}
