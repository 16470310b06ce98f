"""Pythia 8 event generation and the truth read from its event record.

Parton level is taken at the top decay (the last top copy, its W and b daughters, the last W
copy's daughters); particle level is every stable visible final-state particle except the
prompt lepton, plus the prompt lepton and neutrino(s), plus the b and c hadrons used to label
jet flavour.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pythia8mc

from unfold.errors import UnfoldError
from unfold.generation.processes import BASE_SETTINGS, Process

__all__ = ["TruthEvent", "generate_truth", "pythia_settings"]

LEPTONS = (11, 13, 15)
NEUTRINOS = (12, 14, 16)


@dataclass(frozen=True)
class TruthEvent:
    """One generated event's truth; four-vectors are (px, py, pz, E) in GeV.

    Attributes:
        partons: parton name -> (px, py, pz, E, pdg id) at the top decay.
        record: t and W of each side as stored in the event record (last copies).
        visible: (P, 4) stable visible final-state particles, prompt lepton excluded.
        b_hadrons, c_hadrons: (B, 4) hadrons containing a b (c) quark, for flavour labels.
        lepton: (5,) the prompt charged lepton after radiation with its pdg id, or None.
        neutrinos: (k, 4) the prompt neutrino(s) from the W decay(s).
        missing_pt: (2,) truth missing transverse momentum: the sum over all final neutrinos.
    """

    partons: dict[str, np.ndarray]
    record: dict[str, np.ndarray]
    visible: np.ndarray
    b_hadrons: np.ndarray
    c_hadrons: np.ndarray
    lepton: np.ndarray | None
    neutrinos: np.ndarray
    missing_pt: np.ndarray


def pythia_settings(process: Process, *, shard: int, mpi: bool, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every Pythia setting of one shard, in the order they are applied (user settings last)."""
    return (*BASE_SETTINGS, *process.decay_settings(shard), f"PartonLevel:MPI = {'on' if mpi else 'off'}", *extra)


def generate_truth(settings: tuple[str, ...], seed: int, process: Process) -> Iterator[TruthEvent]:
    """Endless stream of events from a Pythia instance initialised with ``settings`` and ``seed``."""
    pythia = pythia8mc.Pythia("", False)
    for line in (*settings, "Random:setSeed = on", f"Random:seed = {seed}"):
        if not pythia.readString(line):
            raise UnfoldError(f"Pythia setting not understood: {line!r}")
    if not pythia.init():
        raise UnfoldError(f"Pythia failed to initialise with settings {list(settings)}")
    failures = 0
    while True:
        if not pythia.next():
            failures += 1
            if failures > 100:
                raise UnfoldError("Pythia failed to generate 100 events in a row; check the --pythia settings")
            continue
        failures = 0
        yield _read_event(pythia.event, process)


def _four(p) -> np.ndarray:
    return np.array([p.px(), p.py(), p.pz(), p.e()])


def _with_id(p) -> np.ndarray:
    return np.array([p.px(), p.py(), p.pz(), p.e(), float(p.id())])


def _is_flavoured(abs_id: int, quark: int) -> bool:
    """Whether a hadron's PDG code contains the quark (meson digit n_q2 or baryon digit n_q1)."""
    return (abs_id // 100) % 10 == quark or (abs_id // 1000) % 10 == quark


def _read_event(event, process: Process) -> TruthEvent:
    tops: set[int] = set()
    visible, b_hadrons, c_hadrons, all_neutrinos = [], [], [], []
    final_indices = []
    for i in range(event.size()):
        p = event[i]
        abs_id = p.idAbs()
        if abs_id == 6:
            tops.add(p.iBotCopyId())
        elif p.isHadron() and p.pT() > 1.0:
            if _is_flavoured(abs_id, 5):
                b_hadrons.append(_four(p))
            elif _is_flavoured(abs_id, 4):
                c_hadrons.append(_four(p))
        if p.isFinal():
            final_indices.append(i)
    if len(tops) != 2:
        raise UnfoldError(f"event record holds {len(tops)} top quarks, expected 2")

    partons: dict[str, np.ndarray] = {}
    record: dict[str, np.ndarray] = {}
    prompt_lepton, prompt_neutrinos = -1, []
    sides = {}
    for i_top in sorted(tops):
        top = event[i_top]
        daughters = [event[d] for d in top.daughterList()]
        w = next((d for d in daughters if d.idAbs() == 24), None)
        b = next((d for d in daughters if d.isQuark()), None)
        if w is None or b is None:
            raise UnfoldError("a top quark did not decay to W + quark")
        w_last = event[w.iBotCopyId()]
        products = [event[d] for d in w_last.daughterList()]
        leptonic = any(d.idAbs() in LEPTONS for d in products)
        side = ("leptonic" if leptonic else "hadronic") if process.leptons else ("top" if top.id() > 0 else "antitop")
        sides[side] = (top, w_last, b, products)
        if leptonic:
            lepton = next(d for d in products if d.idAbs() in LEPTONS)
            neutrino = next(d for d in products if d.idAbs() in NEUTRINOS)
            prompt_lepton = lepton.iBotCopyId()
            prompt_neutrinos.append(neutrino.iBotCopyId())
    for slot in process.partons:
        top, w_last, b, products = sides[slot.top]
        if slot.role == "b":
            partons[slot.name] = _with_id(b)
        elif slot.role in ("q1", "q2"):
            quarks = sorted((d for d in products if d.isQuark()), key=lambda d: -d.pT())
            partons[slot.name] = _with_id(quarks[0 if slot.role == "q1" else 1])
        else:
            ids = LEPTONS if slot.role == "lepton" else NEUTRINOS
            partons[slot.name] = _with_id(next(d for d in products if d.idAbs() in ids))
    for name, side, kind in process.record_objects:
        top, w_last, _, _ = sides[side]
        record[name] = _four(top if kind == "t" else w_last)

    for i in final_indices:
        p = event[i]
        if p.idAbs() in NEUTRINOS:
            all_neutrinos.append(_four(p))
        elif i != prompt_lepton and p.isVisible():
            visible.append(_four(p))
    missing = np.sum(all_neutrinos, axis=0)[:2] if all_neutrinos else np.zeros(2)
    lepton = _with_id(event[prompt_lepton]) if prompt_lepton >= 0 else None
    neutrinos = np.array([_four(event[i]) for i in prompt_neutrinos]).reshape(-1, 4)
    return TruthEvent(
        partons=partons,
        record=record,
        visible=np.array(visible).reshape(-1, 4),
        b_hadrons=np.array(b_hadrons).reshape(-1, 4),
        c_hadrons=np.array(c_hadrons).reshape(-1, 4),
        lepton=lepton,
        neutrinos=neutrinos,
        missing_pt=missing,
    )
