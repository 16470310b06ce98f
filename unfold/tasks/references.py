"""Detector-level counterparts of the unfolded truth, written beside the samples as the reference."""

from __future__ import annotations

import numpy as np

from recon.event_topology import EventTopology
from unfold.data.hdf5_schema import SpanetData
from unfold.data.recon_data import detector_events
from unfold.generation.processes import get_process

__all__ = ["particle_reference", "parton_reference"]



def parton_reference(data: SpanetData, topology: EventTopology, process: str) -> dict[str, dict[str, np.ndarray]]:
    """Detector-level counterparts of the partons: the truth-matched jet or lepton of each
    parton (NaN where unmatched), and for the neutrino the MET with pz from the W-mass constraint."""
    events = detector_events(data, topology)
    cylindrical = {"pt": events.pt, "eta": events.eta, "phi": events.phi, "mass": events.mass}
    reference = {}
    for slot in get_process(process).partons:
        if slot.resonance is None:
            _, px, py, pz = np.moveaxis(events.neutrino(), -1, 0)
            pt = np.hypot(px, py)
            reference[slot.name] = {"pt": pt, "eta": np.arcsinh(pz / np.maximum(pt, 1e-9)), "phi": np.arctan2(py, px),
                                    "mass": np.zeros_like(pt)}
            continue
        resonance = topology.resonance(slot.resonance)
        index = data.targets[slot.resonance][:, resonance.daughters.index(slot.daughter)]
        rows = np.arange(len(index))
        reference[slot.name] = {
            f: np.where(index >= 0, values[rows, np.clip(index, 0, None)], np.nan) for f, values in cylindrical.items()
        }
    return reference


def particle_reference(data: SpanetData, topology: EventTopology, slots: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
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
