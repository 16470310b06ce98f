"""``unfold predict recon``: per-event assignments, their probabilities and whether each is correct
into HDF5.

``PREDICTIONS/<resonance>/correct`` is recon's one definition of a correctly assigned resonance
(:func:`recon.efficiency.event_correctness`: the daughters equal the truth up to the resonance's
symmetry group, the event's symmetry group resolved per event), so the report reads it instead of
deciding again.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from recon.efficiency import efficiency_table, event_correctness
from unfold.data.hdf5_io import atomic_output, write_arrays
from unfold.data.hdf5_schema import read_spanet
from unfold.data.recon_data import jet_multiplicity
from unfold.tasks.assignment_model import AssignmentModel
from unfold.tasks.evaluate_recon import chi_square_assignments, default_jet_bins

__all__ = ["predict_recon"]



def predict_recon(checkpoint: Path, data_path: Path, out: Path, *, train_path: Path | None = None) -> Path:
    """Write per-event assignments, their probabilities and correctness beside the inputs' targets."""
    model = AssignmentModel.load(checkpoint)
    topology = model.topology
    data = read_spanet(data_path, topology)
    result = model.predict(data, progress=True)
    arrays = {}
    for name, resonance in zip(topology.resonance_names, topology.resonances):
        for k, daughter in enumerate(resonance.daughters):
            arrays[f"PREDICTIONS/{name}/{daughter}"] = result[name]["indices"][:, k]
            arrays[f"TARGETS/{name}/{daughter}"] = data.targets[name][:, k]
        for key in ("assignment_probability", "detection_probability", "marginal_probability", "entropy"):
            arrays[f"PREDICTIONS/{name}/{key}"] = result[name][key]
    source = topology.sequential[0]
    for i, feature in enumerate(source.features):
        arrays[f"INPUTS/{source.name}/{feature}"] = data.sequential[source.name][..., i]
    arrays[f"INPUTS/{source.name}/MASK"] = data.masks[source.name]
    predicted = {name: r["indices"] for name, r in result.items()}
    outcome = event_correctness(predicted, data.targets, topology)
    for i, name in enumerate(topology.resonance_names):
        arrays[f"PREDICTIONS/{name}/correct"] = outcome.correct[:, i]
    n_jets = jet_multiplicity(data, topology)
    bins = default_jet_bins(topology)
    efficiency = {"model": efficiency_table(predicted, data.targets, topology, n_jets, bins)}
    if train_path is not None:
        chi2 = chi_square_assignments(train_path, data, topology)
        efficiency["baseline"] = efficiency_table(chi2, data.targets, topology, n_jets, bins)
    with h5py.File(data_path) as source_file:
        source_attrs = dict(source_file.attrs)
    attrs = {
        "checkpoint": str(checkpoint), "inputs": str(data_path), "efficiency": json.dumps(efficiency),
        "event_file_yaml": model.module.hparams.event_file_yaml,
        **{k: v for k, v in source_attrs.items() if k in ("process", "seed", "detector_card")},
    }
    with atomic_output(out) as partial, h5py.File(partial, "w") as file:
        write_arrays(file, arrays, attrs)
    return out
