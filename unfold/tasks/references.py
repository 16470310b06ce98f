"""Detector-level counterparts of the unfolded truth, written beside the samples as the reference.

The parton-level reference is what a physicist would measure without unfolding: every event is
reconstructed without truth (a jet-parton assignment by the trained recon model or by the
chi-square baseline, the lepton as selected, the neutrino from the MET with the W-mass
constraint). A second, truth-matched reference (jets matched to the partons, NaN where unmatched)
is kept for comparison; it covers only the matched events, a different population.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import vector

from recon.chi_square import DetectorEvents
from recon.event_topology import EventTopology
from unfold.data.hdf5_schema import SpanetData
from unfold.data.recon_data import detector_events
from unfold.generation.processes import get_process

__all__ = ["assigned_partons", "particle_reference", "parton_reference"]

Reference = dict[str, dict[str, np.ndarray]]


def parton_reference(
    data: SpanetData, topology: EventTopology, process: str, assignments: Mapping[str, np.ndarray]
) -> Reference:
    """Detector-level counterparts of the partons from a jet-parton assignment.

    Args:
        data: the detector-level events.
        topology: their event topology (the assignments index its concatenated sequential objects).
        process: the process name (which partons exist and whose daughters they are).
        assignments: resonance -> (E, K) slot of each daughter, -1 where none was assigned
            (a reconstruction, or the truth matching ``data.targets``).

    Returns:
        parton -> pt, eta, phi, mass (E,): the assigned object, NaN where the slot is unassigned
        or not a real object; for the neutrino the MET with p_z from the W-mass constraint.
    """
    events = detector_events(data, topology)
    reference = {}
    for slot in get_process(process).partons:
        if slot.resonance is None:
            reference[slot.name] = _neutrino(events)
            continue
        daughter = topology.resonance(slot.resonance).daughters.index(slot.daughter)
        index = np.asarray(assignments[slot.resonance])[:, daughter]
        rows = np.arange(len(index))
        safe = np.clip(index, 0, None)
        real = (index >= 0) & (events.is_jet | events.is_lepton)[rows, safe]
        reference[slot.name] = {
            feature: np.where(real, getattr(events, feature)[rows, safe], np.nan)
            for feature in ("pt", "eta", "phi", "mass")
        }
    return reference


def assigned_partons(data: SpanetData, topology: EventTopology, assignments: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A reconstruction's assignments with every lepton daughter set to the selected (leading)
    lepton: the lepton needs no assignment, whatever a network predicted for it."""
    lepton = detector_events(data, topology).leading_lepton()
    out = {}
    for resonance in topology.resonances:
        indices = np.array(assignments[resonance.name], dtype=np.int64, copy=True)
        for k, daughter in enumerate(resonance.daughters):
            if daughter == "l":
                indices[:, k] = lepton
        out[resonance.name] = indices
    return out


def _neutrino(events: DetectorEvents) -> dict[str, np.ndarray]:
    """The neutrino as measured: p_T from the MET, p_z from the W-mass constraint with the lepton."""
    energy, px, py, pz = np.moveaxis(events.neutrino(), -1, 0)
    momentum = vector.array({"px": px, "py": py, "pz": pz, "E": energy})
    return {"pt": momentum.pt, "eta": momentum.eta, "phi": momentum.phi, "mass": np.zeros_like(px)}


def particle_reference(data: SpanetData, topology: EventTopology, slots: dict[str, int]) -> Reference:
    """Detector-level counterparts of the particle-level collections: reconstructed jets (with
    their b-tags) and lepton, hardest first, padded to the truth's ``slots``, and the MET."""
    events = detector_events(data, topology)
    kinematics = {"pt": events.pt, "eta": events.eta, "phi": events.phi, "mass": events.mass}
    reference = {}
    for name, selected, extra in (
        ("jets", events.is_jet, {"btag": events.btag.astype(np.int64)}),
        ("lepton", events.is_lepton, {}),
    ):
        if name not in slots:
            continue
        order = np.argsort(np.where(selected, -events.pt, np.inf), axis=1, kind="stable")[:, : slots[name]]
        mask = np.take_along_axis(selected, order, axis=1)
        collection = {f: np.where(mask, np.take_along_axis(v, order, axis=1), 0.0) for f, v in {**kinematics, **extra}.items()}
        pad = slots[name] - mask.shape[1]
        reference[name] = {f: np.pad(v, ((0, 0), (0, max(pad, 0)))) for f, v in {**collection, "MASK": mask}.items()}
    reference["met"] = {"met": events.met, "phi": events.met_phi}
    return reference
