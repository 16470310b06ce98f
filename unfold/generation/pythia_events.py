"""Pythia 8 event generation and the truth read from its event record.

Parton level is the top decay as the generator made it: the top's last copy (the one that
decays), its W and b daughters (the first copies, before the b radiates), and the W's decay
products. Those products are taken from the W's last copy, which has recoiled against the b's
final-state shower, and boosted from its rest frame into the first W copy's frame: the same
decay angles in the W rest frame, but daughters that sum to the stored W, and b + W to the
stored top, to float precision. The W stored is the first copy for the same reason. (The last
copies' daughters alone miss m(t) by more than 1 GeV in a third of events.)

Particle level is every stable visible final-state particle (c tau > 10 mm), the prompt
lepton dressed with the photons around it, the prompt neutrino(s), anti-kT jets of the visible
particles other than the dressed lepton, and the b and c hadrons used to label jet flavour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pythia8mc

from unfold.errors import UnfoldError
from unfold.generation.cross_section import CrossSectionMeter
from unfold.generation.particle_level import JetClustering, dress
from unfold.generation.processes import BASE_SETTINGS, Process

__all__ = ["TruthEvent", "generate_truth", "pythia_settings"]

LEPTONS = (11, 13, 15)
NEUTRINOS = (12, 14, 16)
_HADRON_PT_MIN = 1.0  # b/c hadrons below this pT never label a jet


@dataclass(frozen=True)
class TruthEvent:
    """One generated event's truth; four-vectors are (px, py, pz, E) in GeV.

    Attributes:
        partons: parton name -> (px, py, pz, E, pdg id) at the top decay.
        record: t (last copy) and W (first copy) of each side; the partons sum to them.
        visible: (P, 4) stable visible final-state particles, the dressed lepton excluded.
        visible_ids: (P,) their PDG ids; visible_charged: (P,) whether they are charged.
        jets: (J, 4) anti-kT jets of ``visible`` above the clustering threshold, hardest first.
        jet_of: (P,) index into ``jets`` of the jet each visible particle belongs to, -1 if none.
        b_hadrons, c_hadrons: (B, 4) hadrons containing a b (c) quark, for flavour labels.
        lepton: (5,) the prompt charged lepton dressed with photons within Delta R < 0.1, with
            its pdg id, or None.
        neutrinos: (k, 4) the prompt neutrino(s) from the W decay(s).
        missing_pt: (2,) truth missing transverse momentum: the sum over all final neutrinos.
        selectable: whether the event may pass the detector selection; False only for events that
            ``generate_truth(..., keep_vetoed=True)`` read in full although they cannot.
    """

    partons: dict[str, np.ndarray]
    record: dict[str, np.ndarray]
    visible: np.ndarray
    visible_ids: np.ndarray
    visible_charged: np.ndarray
    jets: np.ndarray
    jet_of: np.ndarray
    b_hadrons: np.ndarray
    c_hadrons: np.ndarray
    lepton: np.ndarray | None
    neutrinos: np.ndarray
    missing_pt: np.ndarray
    selectable: bool = True


def pythia_settings(process: Process, *, mpi: bool, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every Pythia setting of a run, in the order they are applied (user settings last)."""
    return (*BASE_SETTINGS, *process.decay_settings(), f"PartonLevel:MPI = {'on' if mpi else 'off'}", *extra)


def generate_truth(
    settings: tuple[str, ...],
    seed: int,
    process: Process,
    *,
    jet_radius: float,
    jet_pt_min: float,
    selection_possible: Callable[[np.ndarray | None, np.ndarray], bool] = lambda lepton, jets: True,
    keep_vetoed: bool = False,
    cross_section: CrossSectionMeter | None = None,
) -> Iterator[TruthEvent | None]:
    """Endless stream of events from a Pythia instance initialised with ``settings`` and ``seed``,
    with anti-kT jets of radius ``jet_radius`` above ``jet_pt_min``. An event whose dressed
    prompt lepton (px, py, pz, E, id, or None) and particle-level jets (J, 4) fail
    ``selection_possible`` is yielded as None, the rest of its record unread; with
    ``keep_vetoed`` it is read in full and yielded with ``selectable`` False (for the truth of
    the events the detector misses). A ``cross_section`` meter follows the Pythia instance."""
    pythia = pythia8mc.Pythia("", False)
    # Registers the ResonanceDecayFilter settings; the filter acts only when switched on.
    decay_filter = pythia8mc.ResonanceDecayFilterHook(pythia.settings)
    pythia.setUserHooksPtr(decay_filter)
    for line in (*settings, "Random:setSeed = on", f"Random:seed = {seed}"):
        if not pythia.readString(line):
            raise UnfoldError(f"Pythia setting not understood: {line!r}")
    if not pythia.init():
        raise UnfoldError(f"Pythia failed to initialise with settings {list(settings)}")
    if cross_section is not None:
        cross_section.follow(pythia, decay_filter)
    reader = _Reader(pythia.particleData, process, JetClustering(jet_radius, jet_pt_min), selection_possible, keep_vetoed)
    failures = 0
    while True:
        if not pythia.next():
            failures += 1
            if failures > 100:
                raise UnfoldError("Pythia failed to generate 100 events in a row; check the --pythia settings")
            continue
        failures = 0
        yield reader.read(pythia.event)


def _moved(p, source, target):
    """Pythia Vec4 ``p`` boosted from the rest frame of ``source`` into that of ``target``
    (Pythia's RotBstMatrix: a boost to ``source``'s rest frame, then one along ``target``)."""
    boost = pythia8mc.RotBstMatrix()
    boost.bstback(source)
    boost.bst(target)
    moved = pythia8mc.Vec4(p)
    moved.rotbst(boost)
    return moved


def _four(p) -> np.ndarray:
    """(px, py, pz, E) of a Pythia particle or Vec4."""
    return np.array([p.px(), p.py(), p.pz(), p.e()])


def _with_id(four: np.ndarray, pdg_id: int) -> np.ndarray:
    return np.append(four, float(pdg_id))


def _columns(particles: list) -> np.ndarray:
    """(N, 4) four-momenta of Pythia particles."""
    n = len(particles)
    return np.stack(
        [np.fromiter(map(getter, particles), np.float64, n) for getter in (pythia8mc.Particle.px, pythia8mc.Particle.py, pythia8mc.Particle.pz, pythia8mc.Particle.e)],
        axis=-1,
    ).reshape(-1, 4)


class _Reader:
    """Reads a :class:`TruthEvent` from Pythia's event record (PDG properties cached per id)."""

    def __init__(self, particle_data, process: Process, clustering: JetClustering, selection_possible,
                 keep_vetoed: bool = False) -> None:
        self._data = particle_data
        self._process = process
        self._clustering = clustering
        self._selection_possible = selection_possible
        self._keep_vetoed = keep_vetoed
        self._kinds: dict[int, tuple[bool, bool, int]] = {}

    def _kind(self, pdg_id: int) -> tuple[bool, bool, int]:
        """(visible, charged, heavy flavour 5/4/0 of a hadron) of a PDG id."""
        if pdg_id not in self._kinds:
            abs_id = abs(pdg_id)
            flavour = 0
            if self._data.isHadron(abs_id):
                flavour = next((q for q in (5, 4) if (abs_id // 100) % 10 == q or (abs_id // 1000) % 10 == q), 0)
            visible = abs_id not in NEUTRINOS
            self._kinds[pdg_id] = (visible, self._data.charge(pdg_id) != 0, flavour)
        return self._kinds[pdg_id]

    def read(self, event) -> TruthEvent | None:
        """The event's truth, or None when it cannot pass the selection (decided from the lepton and
        the jets, before the bulk of the record is read) unless vetoed events are kept."""
        particles = event.particles()
        n = len(particles)
        ids = np.fromiter(map(pythia8mc.Particle.id, particles), np.int64, n)
        final = np.fromiter(map(pythia8mc.Particle.isFinal, particles), bool, n)
        partons, record, prompt_lepton, prompt_neutrinos = self._top_decays(event, ids)

        lepton, dressed_lepton = None, []
        if prompt_lepton >= 0:
            photons = np.flatnonzero(final & (ids == 22))
            dressed, used = dress(_four(event[prompt_lepton]), _columns([particles[i] for i in photons]), ids[photons])
            lepton = _with_id(dressed, ids[prompt_lepton])
            dressed_lepton = [prompt_lepton, *photons[used].tolist()]
        for i in dressed_lepton:  # hidden from the jet clustering, then restored
            event[i].statusNeg()
        jets, constituents = self._clustering.cluster(event)
        for i in dressed_lepton:
            event[i].statusPos()
        selectable = bool(self._selection_possible(lepton, jets))
        if not selectable and not self._keep_vetoed:
            return None

        unique, inverse = np.unique(ids, return_inverse=True)
        kinds = np.array([self._kind(int(i)) for i in unique]).reshape(-1, 3)[inverse]
        visible_index = np.setdiff1d(np.flatnonzero(final & (kinds[:, 0] == 1)), dressed_lepton)
        visible = _columns([particles[i] for i in visible_index])
        heavy = np.flatnonzero(kinds[:, 2] > 0)
        heavy_four = _columns([particles[i] for i in heavy])
        hard = np.hypot(heavy_four[:, 0], heavy_four[:, 1]) > _HADRON_PT_MIN
        b_hadrons = heavy_four[hard & (kinds[heavy, 2] == 5)]
        c_hadrons = heavy_four[hard & (kinds[heavy, 2] == 4)]
        invisible = np.flatnonzero(final & (kinds[:, 0] == 0))
        neutrinos_four = _columns([particles[i] for i in invisible])
        jet_of = np.full(n, -1, dtype=np.int64)
        for j, members in enumerate(constituents):
            jet_of[members] = j

        return TruthEvent(
            partons=partons,
            record=record,
            visible=visible,
            visible_ids=ids[visible_index],
            visible_charged=kinds[visible_index, 1].astype(bool),
            jets=jets,
            jet_of=jet_of[visible_index],
            b_hadrons=b_hadrons,
            c_hadrons=c_hadrons,
            lepton=lepton,
            neutrinos=np.array([_four(event[i]) for i in prompt_neutrinos]).reshape(-1, 4),
            missing_pt=neutrinos_four[:, :2].sum(axis=0),
            selectable=selectable,
        )

    def _top_decays(self, event, ids: np.ndarray):
        """Partons and record objects of both top decays, the prompt lepton's and neutrinos' indices."""
        tops = sorted({event[int(i)].iBotCopyId() for i in np.flatnonzero(np.abs(ids) == 6)})
        if len(tops) != 2:
            raise UnfoldError(f"event record holds {len(tops)} top quarks, expected 2")
        process = self._process
        sides, prompt_lepton, prompt_neutrinos = {}, -1, []
        for i_top in tops:
            top = event[i_top]
            daughters = [event[d] for d in top.daughterList()]
            w = next((d for d in daughters if d.idAbs() == 24), None)
            b = next((d for d in daughters if d.isQuark()), None)
            if w is None or b is None:
                raise UnfoldError("a top quark did not decay to W + quark")
            w_last = event[w.iBotCopyId()]
            products = [event[d] for d in w_last.daughterList()]
            fours = np.array([_four(_moved(d.p(), w_last.p(), w.p())) for d in products])
            leptonic = any(d.idAbs() in LEPTONS for d in products)
            side = ("leptonic" if leptonic else "hadronic") if process.leptons else ("top" if top.id() > 0 else "antitop")
            sides[side] = (top, w, b, products, fours)
            if leptonic:
                prompt_lepton = next(d for d in products if d.idAbs() in LEPTONS).iBotCopyId()
                prompt_neutrinos.append(next(d for d in products if d.idAbs() in NEUTRINOS).iBotCopyId())
        partons: dict[str, np.ndarray] = {}
        for slot in process.partons:
            top, w, b, products, fours = sides[slot.top]
            if slot.role == "b":
                partons[slot.name] = _with_id(_four(b), b.id())
                continue
            if slot.role in ("q1", "q2"):
                quarks = sorted((k for k, d in enumerate(products) if d.isQuark()), key=lambda k: -np.hypot(*fours[k, :2]))
                k = quarks[0 if slot.role == "q1" else 1]
            else:
                wanted = LEPTONS if slot.role == "lepton" else NEUTRINOS
                k = next(k for k, d in enumerate(products) if d.idAbs() in wanted)
            partons[slot.name] = _with_id(fours[k], products[k].id())
        record = {name: _four(sides[side][0] if kind == "t" else sides[side][1]) for name, side, kind in process.record_objects}
        return partons, record, prompt_lepton, prompt_neutrinos
