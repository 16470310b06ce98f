"""One event through the whole chain: truth -> particle level -> detector -> SPANet record.

The record is a flat mapping from HDF5 dataset path to this event's value, in the schema of
:mod:`unfold.data.hdf5_schema`: detector inputs and assignment targets in SPANet's layout
(lepton in slot 0 of ``Momenta`` for semi-leptonic events, jets after it, hardest first),
parton truth under ``PARTONS/`` and particle-level truth under ``PARTICLES/``.
"""

from __future__ import annotations

import numpy as np

from unfold.generation.detector import (
    isolated,
    missing_transverse_momentum,
    reconstruct_jets,
    reconstruct_lepton,
    soft_term,
)
from unfold.generation.detector_card import DetectorCard
from unfold.generation.kinematics import delta_r, to_cylindrical
from unfold.generation.particle_level import BOTTOM, flavour_labels, in_fiducial, not_overlapping
from unfold.generation.processes import Process
from unfold.generation.pythia_events import TruthEvent

__all__ = ["PARTICLE_JET_ETA_MAX", "PARTICLE_JET_PT_MIN", "match_partons", "momenta_slots", "simulate_event", "truth_record"]

# Particle-level jet definition of the ATLAS/CMS top fiducial regions.
PARTICLE_JET_PT_MIN = 20.0
PARTICLE_JET_ETA_MAX = 2.5
KINEMATICS = ("pt", "eta", "phi", "mass")


def momenta_slots(process: Process, card: DetectorCard) -> int:
    """Number of slots of the sequential source: the lepton(s), then up to ``max_jets`` jets."""
    return process.leptons + card.jets.max_jets


def match_partons(partons: np.ndarray, jets: np.ndarray, delta_r_max: float) -> np.ndarray:
    """Unique nearest-Delta-R matching of partons to jets.

    Pairs are taken in increasing Delta R; a pair is accepted when neither the parton nor the
    jet is taken yet and Delta R < ``delta_r_max``.

    Args:
        partons: (P, 2) eta, phi. jets: (J, 2) eta, phi.

    Returns:
        (P,) jet index per parton, -1 where unmatched.
    """
    matched = np.full(len(partons), -1, dtype=np.int64)
    if len(partons) == 0 or len(jets) == 0:
        return matched
    dr = delta_r(partons[:, None, 0], partons[:, None, 1], jets[None, :, 0], jets[None, :, 1])
    used_jets: set[int] = set()
    for flat in np.argsort(dr, axis=None, kind="stable"):
        p, j = divmod(int(flat), len(jets))
        if dr[p, j] >= delta_r_max:
            break
        if matched[p] < 0 and j not in used_jets:
            matched[p] = j
            used_jets.add(j)
    return matched


def simulate_event(
    truth: TruthEvent, process: Process, card: DetectorCard, rng: np.random.Generator, *, max_particle_jets: int
) -> dict[str, np.ndarray | float] | None:
    """The event's record, or None when it fails the detector-level selection: exactly
    ``process.leptons`` isolated leptons and at least ``process.min_jets`` jets in acceptance
    once the jets within Delta R < 0.4 of the lepton are removed."""
    lepton = reconstruct_lepton(truth.lepton, card, rng)
    if lepton is not None and not isolated(truth.lepton, truth.visible, card):
        lepton = None
    if (lepton is not None) != bool(process.leptons):
        return None
    flavour = flavour_labels(
        truth.jets, truth.b_hadrons, truth.c_hadrons, radius=card.btag.label_radius, hadron_pt_min=card.btag.label_hadron_pt_min
    )
    reco, tagged, source = reconstruct_jets(truth.jets, flavour, card, rng)
    separated = not_overlapping(reco, lepton)
    reco, tagged, source = reco[separated], tagged[separated], source[separated]
    accepted = np.flatnonzero((reco[:, 0] > card.jets.pt_min) & (np.abs(reco[:, 1]) < card.jets.eta_max))
    accepted = accepted[: card.jets.max_jets]
    if len(accepted) < process.min_jets:
        return None

    # Particles of the jets entering the MET jet term are measured as jets, the rest one by one.
    met_jets = source[reco[:, 0] > card.met.jet_pt_min]
    unclustered = ~np.isin(truth.jet_of, met_jets)
    soft = soft_term(truth.visible[unclustered], truth.visible_charged[unclustered], truth.visible_ids[unclustered], card, rng)
    record: dict[str, np.ndarray | float] = {}
    _detector_inputs(record, reco[accepted], tagged[accepted], lepton, process, card)
    met = missing_transverse_momentum(reco, lepton, soft, card)
    record.update({"INPUTS/Met/met": met[0], "INPUTS/Met/phi": met[1]})
    record.update({"INPUTS/Met/sin_phi": np.sin(met[1]), "INPUTS/Met/cos_phi": np.cos(met[1])})
    _targets(record, truth, reco[accepted], lepton, process, card)
    _parton_truth(record, truth, process)
    _particle_truth(record, truth, flavour, process, max_particle_jets)
    return record


def truth_record(truth: TruthEvent, process: Process, card: DetectorCard, *, max_particle_jets: int) -> dict[str, np.ndarray | float]:
    """Parton and particle truth alone (``PARTONS/...``, ``PARTICLES/...`` with ``PARTICLES/fiducial``),
    in the same layout as a selected event's: the record of an event the detector misses."""
    flavour = flavour_labels(
        truth.jets, truth.b_hadrons, truth.c_hadrons, radius=card.btag.label_radius, hadron_pt_min=card.btag.label_hadron_pt_min
    )
    record: dict[str, np.ndarray | float] = {}
    _parton_truth(record, truth, process)
    _particle_truth(record, truth, flavour, process, max_particle_jets)
    return record


def _detector_inputs(record, jets, tagged, lepton, process, card) -> None:
    slots = momenta_slots(process, card)
    features = {name: np.zeros(slots, dtype=np.float32) for name in (*KINEMATICS, "btag", "qtag", "etag", "utag")}
    mask = np.zeros(slots, dtype=bool)
    offset = process.leptons
    if lepton is not None:
        for i, name in enumerate(KINEMATICS):
            features[name][0] = lepton[i]
        features["etag"][0] = abs(lepton[4]) == 11
        features["utag"][0] = abs(lepton[4]) == 13
        mask[0] = True
    n = len(jets)
    for i, name in enumerate(KINEMATICS):
        features[name][offset : offset + n] = jets[:, i]
    features["btag"][offset : offset + n] = tagged
    features["qtag"][offset : offset + n] = 1.0
    mask[offset : offset + n] = True
    features["sin_phi"] = np.where(mask, np.sin(features["phi"]), 0.0).astype(np.float32)
    features["cos_phi"] = np.where(mask, np.cos(features["phi"]), 0.0).astype(np.float32)
    record.update({f"INPUTS/Momenta/{k}": v for k, v in features.items()})
    record["INPUTS/Momenta/MASK"] = mask


def _targets(record, truth, jets, lepton, process, card) -> None:
    offset = process.leptons
    quarks = [slot for slot in process.partons if slot.role in ("b", "q1", "q2")]
    parton_cyl = np.array([to_cylindrical(truth.partons[s.name][:4]) for s in quarks])
    matched = match_partons(parton_cyl[:, 1:3], jets[:, 1:3], card.matching.delta_r_max)
    for slot, jet in zip(quarks, matched):
        record[f"TARGETS/{slot.resonance}/{slot.daughter}"] = np.int64(jet + offset if jet >= 0 else -1)
    for slot in process.partons:
        if slot.role == "lepton":
            record[f"TARGETS/{slot.resonance}/{slot.daughter}"] = np.int64(0 if lepton is not None else -1)
    if process.leptons:
        nu = to_cylindrical(truth.partons["neutrino"][:4])
        px, py, pz = truth.partons["neutrino"][:3]
        record.update(
            {
                "REGRESSIONS/EVENT/neutrino_px": px,
                "REGRESSIONS/EVENT/neutrino_py": py,
                "REGRESSIONS/EVENT/neutrino_pz": pz,
                "REGRESSIONS/EVENT/neutrino_eta": nu[1],
            }
        )
    tops = [name for name, _, kind in process.record_objects if kind == "t"]
    ttbar = sum(truth.record[name] for name in tops)
    record["REGRESSIONS/EVENT/log_invariant_mass"] = np.log(to_cylindrical(ttbar)[3])


def _parton_truth(record, truth, process) -> None:
    names = [*truth.partons, *truth.record]
    fours = np.array([*(four[:4] for four in truth.partons.values()), *truth.record.values()])
    for name, cyl in zip(names, to_cylindrical(fours), strict=True):
        for feature, value in zip(KINEMATICS, cyl, strict=True):
            record[f"PARTONS/{name}/{feature}"] = value
    for name, four in truth.partons.items():
        record[f"PARTONS/{name}/pdgid"] = np.int64(four[4])


def _particle_truth(record, truth, flavour, process, max_particle_jets) -> None:
    """Particle-level jets (without those within Delta R < 0.4 of the dressed lepton), the dressed
    lepton, the prompt neutrino, the truth MET and whether the event is in the process's fiducial region."""
    cyl = to_cylindrical(truth.jets)
    lepton = to_cylindrical(truth.lepton[:4]) if truth.lepton is not None else None
    record["PARTICLES/fiducial"] = np.bool_(in_fiducial(process.fiducial, lepton, cyl, flavour))
    inside = (cyl[:, 0] > PARTICLE_JET_PT_MIN) & (np.abs(cyl[:, 1]) < PARTICLE_JET_ETA_MAX)
    keep = np.flatnonzero(inside & not_overlapping(cyl, lepton))
    keep = keep[:max_particle_jets]
    _collection(record, "jets", cyl[keep], max_particle_jets, {"btag": flavour[keep] == BOTTOM, "flavour": flavour[keep]})
    if process.leptons:
        lepton = truth.lepton[None, :]
        _collection(record, "lepton", to_cylindrical(lepton[:, :4]), 1, {"pdgid": lepton[:, 4]})
        _collection(record, "neutrinos", to_cylindrical(truth.neutrinos), 1, {})
    px, py = truth.missing_pt
    record["PARTICLES/met/met"] = np.hypot(px, py)
    record["PARTICLES/met/phi"] = np.arctan2(py, px)


def _collection(record, name: str, cyl: np.ndarray, slots: int, extra: dict[str, np.ndarray]) -> None:
    n = min(len(cyl), slots)
    mask = np.zeros(slots, dtype=bool)
    mask[:n] = True
    record[f"PARTICLES/{name}/MASK"] = mask
    for i, feature in enumerate(KINEMATICS):
        values = np.zeros(slots, dtype=np.float32)
        values[:n] = cyl[:n, i]
        record[f"PARTICLES/{name}/{feature}"] = values
    for feature, data in extra.items():
        values = np.zeros(slots, dtype=np.float32 if data.dtype.kind == "f" else np.int64)
        values[:n] = data[:n]
        record[f"PARTICLES/{name}/{feature}"] = values
