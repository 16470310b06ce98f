"""Report of a recon predictions file: efficiency tables and reconstructed resonance masses.

Reads ``PREDICTIONS/<resonance>/<daughter>`` (E,) predicted jet indices,
``TARGETS/<resonance>/<daughter>`` (E,) truth indices (-1 unmatched),
``PREDICTIONS/<resonance>/correct`` (E,) whether the assignment is correct,
``INPUTS/Momenta/{pt, eta, sin_phi, cos_phi, mass, MASK}`` (E, N) and the root attributes
``efficiency`` (JSON tables computed by recon) and ``event_file_yaml``.

Whether an assignment is correct is decided once, by recon when it writes the file (daughters
equal to the truth up to the resonance's symmetry group, the event's symmetry group resolved per
event, as in SPANet's evaluation), and read here. Only resonances whose truth is fully matched
enter the correct / wrong mass histograms, each event with its ``WEIGHTS/weight`` (1 without).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path

import h5py
import numpy as np

from evaluation import html
from evaluation.errors import ReportError
from evaluation.kinematics import from_pt_eta_phi_m, invariant_mass
from evaluation.metrics import histogram_edges
from evaluation.observables import latex_name
from evaluation.plots import PlotJob, plot_recon_masses

__all__ = ["ReconReport", "build_recon_report"]

PREDICTION_SCORES = frozenset(
    {"assignment_probability", "detection_probability", "marginal_probability", "entropy", "correct"}
)
MOMENTA = ("pt", "eta", "sin_phi", "cos_phi", "mass", "MASK")
# Groups of PREDICTIONS that hold event-level heads, not resonances.
EVENT_HEADS = frozenset({"REGRESSIONS", "CLASSIFICATIONS"})


@dataclass(frozen=True)
class ReconReport:
    """The recon report's content, ready to be written.

    Attributes:
        jobs: the mass plots.
        headline: efficiency tables as text.
        metrics: what goes to metrics.json.
        render_page: builds index.html from stem -> (PNG, PDF link or None).
    """

    jobs: list[PlotJob]
    headline: str
    metrics: dict
    render_page: Callable[[Mapping[str, tuple[str, str | None]]], str]


def _read(file: h5py.File, path: Path, key: str) -> np.ndarray:
    node = file.get(key)
    if not isinstance(node, h5py.Dataset):
        raise ReportError(f"{path}: {key}: expected a dataset, found none")
    return node[()]


def _resonance_masses(momenta: Mapping[str, np.ndarray], indices: np.ndarray) -> np.ndarray:
    """Invariant mass of the jets at ``indices`` (E, K); NaN where one is missing or padding."""
    n_objects = momenta["pt"].shape[1]
    valid = ((indices >= 0) & (indices < n_objects)).all(axis=1)
    safe = np.where(indices >= 0, np.minimum(indices, n_objects - 1), 0)
    mask = np.take_along_axis(momenta["MASK"], safe, axis=1).all(axis=1)

    def gather(feature: str) -> np.ndarray:
        return np.take_along_axis(momenta[feature], safe, axis=1)

    phi = np.arctan2(gather("sin_phi"), gather("cos_phi"))
    vectors = from_pt_eta_phi_m(gather("pt"), gather("eta"), phi, gather("mass"))
    return np.where(valid & mask, invariant_mass(vectors.sum(axis=1)), np.nan)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def _grid(table: Mapping) -> list[tuple[str, Mapping]] | None:
    """Rows of an efficiency table, or None if it is not one.

    Recon writes ``{"event": f, "fraction": f, "<resonance>": f, "by_jets": {"==4": {...}}}``:
    the scalars form the "inclusive" row and each mapping of rows adds its rows.
    """
    scalars = {k: v for k, v in table.items() if _is_scalar(v)}
    rows: list[tuple[str, Mapping]] = [("inclusive", scalars)] if scalars else []
    for key, value in table.items():
        if _is_scalar(value):
            continue
        if not isinstance(value, Mapping):
            return None
        if not value:
            continue
        if all(_is_scalar(v) for v in value.values()):
            rows.append((str(key), value))
        elif all(
            isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values())
            for v in value.values()
        ):
            rows += [(str(name), row) for name, row in value.items()]
        else:
            return None
    return rows or None


def _columns(rows: list[tuple[str, Mapping]]) -> list[str]:
    return list(dict.fromkeys(c for _, row in rows for c in row))


def _text_tables(tables: Mapping, prefix: str = "") -> list[str]:
    """Efficiency tables as fixed-width text, one grid per category."""
    lines = []
    for key, value in tables.items():
        title = f"{prefix}{key}"
        rows = _grid(value) if isinstance(value, Mapping) else None
        if rows is not None:
            columns = _columns(rows)
            cells = [[name, *(_fmt(row.get(c)) for c in columns)] for name, row in rows]
            header = [title, *columns]
            widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
            lines += [
                "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                for r in [header, *cells]
            ]
            lines.append("")
        elif isinstance(value, Mapping):
            lines += _text_tables(value, f"{title} / ")
        else:
            lines.append(f"{title}: {_fmt(value)}")
    return lines


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def _html_tables(tables: Mapping, level: int = 3) -> list[str]:
    """Efficiency tables as HTML: headings for the nesting, a grid per category."""
    parts = []
    for key, value in tables.items():
        parts.append(f"<h{level}>{escape(str(key))}</h{level}>")
        rows = _grid(value) if isinstance(value, Mapping) else None
        if rows is not None:
            columns = _columns(rows)
            cells = [
                [(escape(name), "name"), *((escape(_fmt(row.get(c))), "") for c in columns)]
                for name, row in rows
            ]
            parts.append(html.table(["", *columns], cells))
        elif isinstance(value, Mapping):
            parts += _html_tables(value, min(level + 1, 6))
        else:
            parts.append(f"<p>{escape(_fmt(value))}</p>")
    return parts


def build_recon_report(path: Path, *, bins: int) -> ReconReport:
    """Read a predictions file and plan its report (tables, correct vs wrong masses)."""
    with h5py.File(path, "r") as file:
        resonances = [
            n for n in file["PREDICTIONS"]
            if isinstance(file["PREDICTIONS"][n], h5py.Group) and n not in EVENT_HEADS
        ]
        if not resonances:
            raise ReportError(f"{path}: PREDICTIONS: holds no resonance groups")
        daughters = {
            r: tuple(d for d in file["PREDICTIONS"][r] if d not in PREDICTION_SCORES)
            for r in resonances
        }
        predictions = {
            r: np.stack(
                [_read(file, path, f"PREDICTIONS/{r}/{d}") for d in daughters[r]], axis=1
            ).astype(np.int64)
            for r in resonances
        }
        has_targets = "TARGETS" in file
        targets = {
            r: np.stack(
                [_read(file, path, f"TARGETS/{r}/{d}") for d in daughters[r]], axis=1
            ).astype(np.int64)
            for r in resonances if has_targets
        }
        missing = [r for r in resonances if has_targets and "correct" not in file["PREDICTIONS"][r]]
        if missing:
            raise ReportError(
                f"{path}: PREDICTIONS/{missing[0]}/correct: not found; expected a file written by "
                "the current `unfold predict recon` (run it again)"
            )
        correct = {r: _read(file, path, f"PREDICTIONS/{r}/correct").astype(bool) for r in targets}
        momenta = {f: _read(file, path, f"INPUTS/Momenta/{f}") for f in MOMENTA}
        weights = _read(file, path, "WEIGHTS/weight").astype(np.float64) if "WEIGHTS/weight" in file else None
        try:
            efficiency = json.loads(file.attrs.get("efficiency", "{}"))
        except (json.JSONDecodeError, TypeError) as error:
            raise ReportError(f"{path}: attribute 'efficiency': not valid JSON ({error})") from None
        event_file = str(file.attrs.get("event_file_yaml", ""))
    n_events = momenta["pt"].shape[0]
    if weights is None:
        weights = np.ones(n_events)
    for name, array in [*predictions.items(), *targets.items(), *correct.items(), ("WEIGHTS/weight", weights)]:
        if array.shape[0] != n_events:
            raise ReportError(
                f"{path}: {name}: {array.shape[0]} events, INPUTS/Momenta has {n_events}"
            )
    momenta["MASK"] = momenta["MASK"].astype(bool)
    jobs, counts = [], {}
    for name in targets:  # measured events (no TARGETS) have no correct / wrong split
        complete = (targets[name] >= 0).all(axis=1)
        q_columns = [i for i, d in enumerate(daughters[name]) if d.startswith("q")]
        systems = [("all", list(range(len(daughters[name]))))]
        if len(q_columns) > 1 and len(q_columns) < len(daughters[name]):
            systems.append(("q", q_columns))
        for system, columns in systems:
            masses = _resonance_masses(momenta, predictions[name][:, columns])
            right = complete & correct[name] & np.isfinite(masses)
            wrong = complete & ~correct[name] & np.isfinite(masses)
            good, bad = masses[right], masses[wrong]
            parts = [daughters[name][c] for c in columns]
            label = f"$m({latex_name(name)}: {', '.join(latex_name(p) for p in parts)})$"
            counts[f"{name}/{system}"] = {"correct": int(good.size), "wrong": int(bad.size)}
            edges = histogram_edges(np.concatenate([good, bad]), bins,
                                    weights=np.concatenate([weights[right], weights[wrong]]))
            jobs.append(
                PlotJob(
                    f"mass_{name}_{system}",
                    lambda paths, label=label, edges=edges, good=good, bad=bad, w=(weights[right], weights[wrong]):
                    plot_recon_masses(paths, label=label, edges=edges, correct=good, wrong=bad,
                                      correct_weights=w[0], wrong_weights=w[1]),
                )
            )
    headline = (
        "\n".join(_text_tables(efficiency)) if efficiency
        else f"{path}: no efficiency tables" + ("" if has_targets else " (no TARGETS: measured events)")
    )
    metrics = {
        "mode": "recon",
        "file": str(path),
        "n_events": n_events,
        "efficiency": efficiency,
        "mass_counts": counts,
    }

    def render_page(images: Mapping[str, tuple[str, str | None]]) -> str:
        figures = [
            html.figure(png, stem.removeprefix("mass_"), link)
            for stem, (png, link) in images.items()
        ]
        body = [
            html.value_table({"file": path, "events": n_events}),
            html.section(
                "Efficiencies", _html_tables(efficiency) or ["<p>No efficiency tables.</p>"]
            ),
            html.section(
                "Reconstructed masses, correct vs wrong assignments",
                ['<div class="figures">' + "".join(figures) + "</div>"],
            ),
            html.section("Event file", [f"<pre>{escape(event_file)}</pre>"]),
        ]
        return html.page(f"Reconstruction report: {path.name}", body)

    return ReconReport(jobs, headline, metrics, render_page)
