"""``unfold evaluate recon``: SPANet's efficiency tables, model beside the chi-square baseline."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recon.chi_square import ChiSquareBaseline, check_inputs
from recon.efficiency import efficiency_table, format_efficiency_tables
from recon.errors import ReconError
from recon.event_topology import EventTopology
from unfold.data.hdf5_io import open_h5
from unfold.data.hdf5_schema import SPANET_WEIGHTS, SpanetData, has_group, read_spanet
from unfold.data.recon_data import detector_events, jet_multiplicity
from unfold.generation.inspection import generator_masses
from unfold.tasks.assignment_model import AssignmentModel, run_list

__all__ = ["chi_square_assignments", "default_jet_bins", "evaluate_recon", "fit_chi_square", "training_table"]


def default_jet_bins(topology: EventTopology) -> tuple[str, ...]:
    """SPANet's bins: ==6/==7/>=8 with six quark daughters, ==4/==5/>=6 with four."""
    quarks = sum(r.order for r in topology.resonances) - sum("l" in r.daughters for r in topology.resonances)
    return (f"=={quarks}", f"=={quarks + 1}", f">={quarks + 2}")


# Leading jets the chi-square may try; the literature uses 6 or 7 (SPANet arXiv 2106.03898 Sec. 5),
# 8 catches the events whose sixth daughter is the eighth jet at 1.1 s per 1k all-hadronic events.
LEADING_JET_CHOICES = (6, 7, 8)


def fit_chi_square(train_path: Path, topology: EventTopology) -> ChiSquareBaseline:
    """The tuned chi-square baseline: resolutions fitted on matched events of (the first 20k events of)
    ``train_path``, centres on the generator's top and W masses in that file (or, for a file without the
    generator's record, ``PARTONS``: SPANet's files, real data, on the medians of the matched detector-level
    masses), and the number of leading jets it tries (:data:`LEADING_JET_CHOICES`) the one with the best event
    efficiency on the first 5k of those training events."""
    train = read_spanet(train_path, topology, limit=20_000, require_targets=True)
    events = detector_events(train, topology)
    if has_group(train_path, "PARTONS"):
        fitted = ChiSquareBaseline.fit(
            events, train.targets, topology, centres="generator", generator_masses=generator_masses(train_path),
        )
    else:
        fitted = ChiSquareBaseline.fit(events, train.targets, topology, centres="fitted")
    tuning = slice(0, 5_000)
    events, targets = events.subset(tuning), {name: t[tuning] for name, t in train.targets.items()}
    n_jets = events.n_jets

    def event_efficiency(candidate: ChiSquareBaseline) -> float:
        table = efficiency_table(candidate.assign(events, topology), targets, topology, n_jets, ())
        return table["all"]["event"] or 0.0

    candidates = [dataclasses.replace(fitted, n_leading_jets=n) for n in LEADING_JET_CHOICES]
    return max(candidates, key=event_efficiency)


def chi_square_assignments(train_path: Path, data: SpanetData, topology: EventTopology) -> dict[str, np.ndarray]:
    """The chi-square baseline's (:func:`fit_chi_square`) assignments of ``data``."""
    return fit_chi_square(train_path, topology).assign(detector_events(data, topology), topology)


def evaluate_recon(
    checkpoint: Path | Sequence[Path], data_path: Path, train_path: Path | None, *, bins: tuple[str, ...] | None = None,
    limit: int | None = None, weights: str | None = None,
) -> tuple[dict, str]:
    """Efficiency tables of the model (of one run, or the ensemble of several) and of the chi-square baseline
    (fitted on ``train_path``), weighted by the events' weights (``weights`` dataset, else SPANet's WEIGHTS/weight)."""
    runs = run_list(checkpoint)
    model = AssignmentModel.load(*runs)
    topology = model.topology
    data = read_spanet(data_path, topology, limit=limit, weights=weights, require_targets=True)
    bins = bins or default_jet_bins(topology)
    predicted = {name: r["indices"] for name, r in model.predict(data, progress=True).items()}
    n_jets = jet_multiplicity(data, topology)
    tables = {"model": efficiency_table(predicted, data.targets, topology, n_jets, bins, data.event_weights)}
    note = f"\nmodel: the ensemble of {len(runs)} runs (their mean tuple probabilities)" if len(runs) > 1 else ""
    if train_path is not None:
        try:
            check_inputs(topology)
        except ReconError as unsupported:  # e.g. ttH, or inputs without four-momenta
            note += f"\nnote: chi-square baseline skipped: {unsupported}"
        else:
            chi2 = chi_square_assignments(train_path, data, topology)
            tables["chi-square"] = efficiency_table(chi2, data.targets, topology, n_jets, bins, data.event_weights)
    return tables, format_efficiency_tables(tables) + note


def training_table(run: Path, test_path: Path, train_path: Path | None, weights: str | None) -> str:
    """The efficiency tables printed at the end of ``unfold train recon``, weighted like the training:
    by the ``weights`` dataset of the test file when it has one, else by SPANet's WEIGHTS/weight
    when the test file has that, else unweighted; the text says which."""
    with open_h5(test_path) as file:
        found = weights is not None and weights in file
        default = SPANET_WEIGHTS in file
    note = ""
    if weights is not None and not found:
        note = f"\nnote: {test_path} has no {weights!r}; " + (
            f"weighted by {SPANET_WEIGHTS}" if default else "unweighted")
        weights = None
    used = weights or (SPANET_WEIGHTS if default else None)
    _, text = evaluate_recon(run, test_path, train_path, weights=weights)
    return text + (f"\nweights: {used}" if used else "") + note
