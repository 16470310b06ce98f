"""``unfold predict recon``: everything a trained assignment network says about every event, into HDF5.

The output holds, per resonance, the assigned objects and their probabilities
(``PREDICTIONS/<resonance>/...``), the regression heads' values and uncertainties, the
classification probabilities, optionally the event embedding, every input source, each event's
weight (``WEIGHTS/weight``) and its row in the input file (``EVENT_INDEX``). The input file needs
only the inputs the model reads; where it holds ``TARGETS`` they are copied beside the
predictions with ``PREDICTIONS/<resonance>/correct``, recon's one definition of a correctly
assigned resonance (:func:`recon.efficiency.event_correctness`), and the efficiency tables. The
file is streamed in chunks, so memory does not grow with its length.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from recon.efficiency import efficiency_table, event_correctness
from unfold.data.hdf5_io import append_arrays, atomic_output, event_chunks, open_h5
from unfold.data.hdf5_schema import count_events, read_spanet
from unfold.data.recon_data import detector_events, jet_multiplicity
from unfold.errors import UnfoldError
from unfold.tasks.assignment_model import PROBABILITIES, AssignmentModel, run_list
from unfold.tasks.evaluate_recon import default_jet_bins, fit_chi_square

__all__ = ["NO_TARGETS", "predict_recon"]

NO_TARGETS = "no TARGETS in the input file: assignments are predicted, efficiency tables are skipped"
# Attributes of generated event files worth carrying over (absent from other files).
SOURCE_ATTRS = ("process", "seed", "detector_card")


def predict_recon(
    checkpoint: Path | Sequence[Path],
    data_path: Path,
    out: Path,
    *,
    train_path: Path | None = None,
    weights: str | None = None,
    embeddings: bool = False,
    limit: int | None = None,
    chunk_size: int = 16_384,
) -> Path:
    """Write the predictions of every event of ``data_path`` (the first ``limit``) to ``out``, atomically.

    ``checkpoint`` is one recon run, or several predicting as their ensemble (:meth:`AssignmentModel.load`).
    Returns ``out``; the root attribute ``note`` says when the file had no targets.
    """
    runs = run_list(checkpoint)
    model = AssignmentModel.load(*runs)
    topology = model.topology
    total = count_events(data_path, topology)
    total = total if limit is None else min(limit, total)
    if total < 1:
        raise UnfoldError(f"{data_path}: no events to predict (--limit {limit})")
    chunks = event_chunks(total, chunk_size)
    baseline = fit_chi_square(train_path, topology) if train_path is not None else None
    kept: dict[str, list[np.ndarray]] = {"n_jets": [], "weights": []}
    has_targets = True
    with atomic_output(out) as partial, h5py.File(partial, "w") as file:
        for events in chunks:
            data = read_spanet(data_path, topology, start=events.start, limit=events.stop - events.start, weights=weights)
            has_targets = data.has_targets
            result = model.predict_all(data, embeddings=embeddings, progress=total > chunk_size)
            arrays = _prediction_arrays(data, topology, result)
            if has_targets:
                predicted = {name: result[name]["indices"] for name in topology.resonance_names}
                outcome = event_correctness(predicted, data.targets, topology)
                for i, name in enumerate(topology.resonance_names):
                    arrays[f"PREDICTIONS/{name}/correct"] = outcome.correct[:, i]
                for name, indices in predicted.items():
                    kept.setdefault(f"model/{name}", []).append(indices)
                    kept.setdefault(f"truth/{name}", []).append(data.targets[name])
                if baseline is not None:
                    for name, indices in baseline.assign(detector_events(data, topology), topology).items():
                        kept.setdefault(f"baseline/{name}", []).append(indices)
                kept["n_jets"].append(jet_multiplicity(data, topology))
                kept["weights"].append(data.event_weights)
            append_arrays(file, arrays)
        with open_h5(data_path) as source_file:
            source_attrs = {k: source_file.attrs[k] for k in SOURCE_ATTRS if k in source_file.attrs}
        attrs = {"checkpoint": ", ".join(map(str, runs)), "inputs": str(data_path), "event_file_yaml": model.module.hparams.event_file_yaml,
                 "weights": data.weights_key or "none (all 1)", **source_attrs}
        if has_targets:
            attrs["efficiency"] = json.dumps(_efficiency(kept, topology, baseline is not None))
        else:
            attrs["note"] = NO_TARGETS
        for key, value in attrs.items():
            file.attrs[key] = value
    return out


def _prediction_arrays(data, topology, result) -> dict[str, np.ndarray]:
    """One chunk's output datasets by path."""
    arrays: dict[str, np.ndarray] = {"EVENT_INDEX": data.event_index, "WEIGHTS/weight": data.event_weights}
    for name, resonance in zip(topology.resonance_names, topology.resonances, strict=True):
        for k, daughter in enumerate(resonance.daughters):
            arrays[f"PREDICTIONS/{name}/{daughter}"] = result[name]["indices"][:, k]
            if data.has_targets:
                arrays[f"TARGETS/{name}/{daughter}"] = data.targets[name][:, k]
        for key in PROBABILITIES:
            arrays[f"PREDICTIONS/{name}/{key}"] = result[name][key]
    for name, values in result["REGRESSIONS"].items():
        arrays[f"PREDICTIONS/REGRESSIONS/{name}"] = values["value"]
        arrays[f"PREDICTIONS/REGRESSIONS/{name}_uncertainty"] = values["uncertainty"]
    for name, probabilities in result["CLASSIFICATIONS"].items():
        arrays[f"PREDICTIONS/CLASSIFICATIONS/{name}"] = probabilities
    if "EMBEDDING" in result:
        arrays["PREDICTIONS/EMBEDDING"] = result["EMBEDDING"]
    for source in topology.sequential:
        for i, feature in enumerate(source.features):
            arrays[f"INPUTS/{source.name}/{feature}"] = data.sequential[source.name][..., i]
        arrays[f"INPUTS/{source.name}/MASK"] = data.masks[source.name]
    for source in topology.globals:
        for i, feature in enumerate(source.features):
            arrays[f"INPUTS/{source.name}/{feature}"] = data.globals[source.name][:, i]
    return arrays


def _efficiency(kept: dict[str, list[np.ndarray]], topology, with_baseline: bool) -> dict:
    """The weighted efficiency tables of the model (and the chi-square baseline) over every chunk."""
    joined = {key: np.concatenate(parts) for key, parts in kept.items()}
    names = topology.resonance_names
    truth = {name: joined[f"truth/{name}"] for name in names}
    bins = default_jet_bins(topology)
    tables = {}
    for label in ("model", "baseline") if with_baseline else ("model",):
        predicted = {name: joined[f"{label}/{name}"] for name in names}
        tables[label] = efficiency_table(predicted, truth, topology, joined["n_jets"], bins, joined["weights"])
    return tables
