"""Mass chi-square baseline for jet-parton assignment in ttbar events (pure numpy).

The classical permutation method that SPANet is measured against (arXiv 2106.03898): over
every assignment of the leading jets to the top-quark daughters, minimise

.. math::

    \\chi^2 = \\sum_{\\text{hadronic tops}} \\frac{(m_{bqq} - m_t)^2}{\\sigma_t^2}
              + \\frac{(m_{qq} - m_W)^2}{\\sigma_W^2}
              \\; [+ \\frac{(m_{b\\ell\\nu} - m_t)^2}{\\sigma_{t,\\ell}^2}]

where the bracket is the leptonic top of semi-leptonic events, its neutrino's pz solved from the
W mass constraint. All permutations are scored at once per chunk of events: the jets' Minkowski
products are computed once per event and every candidate mass is a sum of gathered products.

Inputs are :class:`DetectorEvents`, built from plain arrays or, with :meth:`DetectorEvents.from_inputs`,
from the raw inputs of any event file whose features give four-momenta; outputs are indices into the
concatenated objects, the slots SPANet's targets index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from itertools import combinations, permutations
from typing import Literal, get_args

import numpy as np
import vector
from numpy.typing import ArrayLike

from encoders.sources import InputSource, Kinematics, declared_azimuth, declared_kinematics
from recon.errors import ReconError
from recon.event_topology import EventTopology

__all__ = [
    "TOP_MASS",
    "W_MASS",
    "Centres",
    "Channel",
    "ChiSquareBaseline",
    "DetectorEvents",
    "SemileptonicCandidates",
    "central_half_width",
    "channel_of",
    "check_inputs",
    "four_vector_mass",
    "neutrino_pz_solutions",
    "semileptonic_candidates",
]

# PDG 2024 (Review of Particle Physics, Phys. Rev. D 110, 030001): top-quark mass from direct
# measurements and the W-boson world average, in GeV.
TOP_MASS = 172.57
W_MASS = 80.3692
# Probability of a Gaussian within one standard deviation, erf(1/sqrt(2)).
_ONE_SIGMA_COVERAGE = 0.682689492
# Events x jet tuples scored per vectorised step: about 32 MB per float64 array.
_CHUNK_ELEMENTS = 2**22

Channel = Literal["semileptonic", "allhadronic"]
Centres = Literal["pdg", "fitted", "generator"]

# The top decays this baseline knows, by daughter name in its own daughter order: a ttbar event
# file may list them in any order (SPANet's all-hadronic example writes q1, q2, b).
_HADRONIC_TOP = ("b", "q1", "q2")
_LEPTONIC_TOP = ("b", "l")
# Names under which an event file declares the b-tag: a 0/1 flag, or a tag probability cut at 1/2.
_BTAG_FEATURES = ("btag", "b_tag", "btagged")


@dataclass(frozen=True)
class DetectorEvents:
    """Reconstructed objects of E events in N slots (jets and charged leptons) and the MET.

    Attributes:
        pt, eta, phi, mass: (E, N) kinematics of every slot [GeV, -, rad, GeV].
        btag: (E, N) bool, the jet is b-tagged.
        is_jet: (E, N) bool, a real (unpadded) jet.
        is_lepton: (E, N) bool, a real electron or muon.
        met, met_phi: (E,) missing transverse momentum [GeV] and its azimuth [rad].
    """

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    mass: np.ndarray
    btag: np.ndarray
    is_jet: np.ndarray
    is_lepton: np.ndarray
    met: np.ndarray
    met_phi: np.ndarray

    def __post_init__(self) -> None:
        shape = np.shape(self.pt)
        if len(shape) != 2:
            raise ReconError(f"DetectorEvents: pt must be (E, N), got shape {shape}")
        for name in ("pt", "eta", "phi", "mass", "btag", "is_jet", "is_lepton"):
            if np.shape(getattr(self, name)) != shape:
                raise ReconError(
                    f"DetectorEvents: {name} has shape {np.shape(getattr(self, name))}; expected {shape} like pt"
                )
        for name in ("met", "met_phi"):
            if np.shape(getattr(self, name)) != shape[:1]:
                raise ReconError(
                    f"DetectorEvents: {name} has shape {np.shape(getattr(self, name))}; expected ({shape[0]},)"
                )
        for name in ("btag", "is_jet", "is_lepton"):
            if np.asarray(getattr(self, name)).dtype != np.bool_:
                raise ReconError(
                    f"DetectorEvents: {name} must be a bool array, got {np.asarray(getattr(self, name)).dtype}"
                )
        if np.any(self.is_jet & self.is_lepton):
            raise ReconError("DetectorEvents: a slot is flagged both jet and lepton")
        real = self.is_jet | self.is_lepton
        for name in ("pt", "eta", "phi", "mass"):
            if not np.all(np.isfinite(getattr(self, name)[real])):
                raise ReconError(f"DetectorEvents: {name} has NaN or inf in real objects")
        if not (np.all(np.isfinite(self.met)) and np.all(np.isfinite(self.met_phi))):
            raise ReconError("DetectorEvents: met or met_phi has NaN or inf")

    @classmethod
    def from_arrays(
        cls,
        *,
        pt: ArrayLike,
        eta: ArrayLike,
        phi: ArrayLike,
        mass: ArrayLike,
        btag: ArrayLike,
        is_jet: ArrayLike,
        is_lepton: ArrayLike,
        met: ArrayLike,
        met_phi: ArrayLike,
    ) -> DetectorEvents:
        """Convert any array-likes (float64 kinematics, bool flags) and validate them."""
        return cls(
            pt=np.asarray(pt, dtype=np.float64),
            eta=np.asarray(eta, dtype=np.float64),
            phi=np.asarray(phi, dtype=np.float64),
            mass=np.asarray(mass, dtype=np.float64),
            btag=np.asarray(btag, dtype=bool),
            is_jet=np.asarray(is_jet, dtype=bool),
            is_lepton=np.asarray(is_lepton, dtype=bool),
            met=np.asarray(met, dtype=np.float64),
            met_phi=np.asarray(met_phi, dtype=np.float64),
        )

    @classmethod
    def from_inputs(
        cls,
        sequential: Mapping[str, ArrayLike],
        masks: Mapping[str, ArrayLike],
        global_inputs: Mapping[str, ArrayLike],
        topology: EventTopology,
        origin: str = "<memory>",
    ) -> DetectorEvents:
        """Read raw detector inputs through the features their event file declares.

        The slots are the objects of every sequential source concatenated in event-file order (the
        indices SPANet's targets hold). Kinematics come from :func:`encoders.sources.declared_kinematics`
        (pt, eta, phi or sin_phi/cos_phi, mass); a source that declares none gives empty slots.
        Leptons are the real objects flagged by ``etag`` or ``utag`` (SPANet's example files) or held
        in a source that a lepton daughter ``l`` points into; jets are the other real objects, b-tagged
        by a feature named as in ``_BTAG_FEATURES`` (none declared: no tags). The MET is the first
        global source declaring ``met`` (or ``pt``) and an azimuth, zero where none does.

        Args:
            sequential: source -> (E, N_s, F_s) raw features in the event file's feature order.
            masks: source -> (E, N_s), true for real objects.
            global_inputs: source -> (E, F_g) raw features.
            topology: the event file that declares them.
            origin: the file they came from, for error messages.
        """
        if not any(_declares_kinematics(source) for source in topology.sequential):
            raise ReconError(f"{origin}: {_NO_KINEMATICS}")
        lepton_sources = {
            source
            for resonance in topology.resonances
            for daughter, source in zip(resonance.daughters, resonance.sources, strict=False)
            if daughter == "l" and source is not None
        }
        parts = [
            _source_slots(source, np.asarray(sequential[source.name], dtype=np.float64),
                          np.asarray(masks[source.name], dtype=bool), source.name in lepton_sources)
            for source in topology.sequential
        ]
        kinematics, btag, is_jet, is_lepton = zip(*parts, strict=True)
        n_events = is_jet[0].shape[0]
        met, met_phi = np.zeros(n_events), np.zeros(n_events)
        for source in topology.globals:
            values = np.asarray(global_inputs[source.name], dtype=np.float64)
            phi = declared_azimuth(source, values)
            magnitude = next((f for f in ("met", "pt") if f in source.features), None)
            if phi is not None and magnitude is not None:
                met, met_phi = values[:, source.features.index(magnitude)], phi
                break
        return cls.from_arrays(
            **{name: np.concatenate([getattr(k, name) for k in kinematics], axis=1) for name in Kinematics._fields},
            btag=np.concatenate(btag, axis=1),
            is_jet=np.concatenate(is_jet, axis=1),
            is_lepton=np.concatenate(is_lepton, axis=1),
            met=met,
            met_phi=met_phi,
        )

    def subset(self, rows: slice | np.ndarray) -> DetectorEvents:
        """The events ``rows`` (a slice, indices or an (E,) bool mask)."""
        return DetectorEvents(*(getattr(self, f.name)[rows] for f in fields(self)))

    @property
    def n_events(self) -> int:
        return int(self.pt.shape[0])

    @property
    def n_jets(self) -> np.ndarray:
        """(E,) number of real jets per event (the jet-multiplicity of the efficiency tables)."""
        return self.is_jet.sum(axis=1)

    def four_momenta(self) -> np.ndarray:
        """(E, N, 4) four-momenta (E, px, py, pz) [GeV] of every slot (padding included)."""
        return _four_momenta(self.pt, self.eta, self.phi, self.mass)

    def leading_lepton(self) -> np.ndarray:
        """(E,) slot of the highest-pt lepton, -1 where the event has none."""
        key = np.where(self.is_lepton, self.pt, -np.inf)
        slot = np.argmax(key, axis=1)
        return np.where(self.is_lepton.any(axis=1), slot, -1)

    def neutrino(self, w_mass: float = W_MASS) -> np.ndarray:
        """(E, 4) neutrino four-momentum: pt from the MET, pz from the W mass with the leading lepton.

        Of the two solutions the one with smaller \\|pz\\| is taken (the real part when there is
        no real solution); events without a lepton get pz = 0.
        """
        lepton = self.lepton_momentum()
        missing = vector.array({"rho": self.met, "phi": self.met_phi})
        solutions = neutrino_pz_solutions(lepton, missing.x, missing.y, w_mass)
        smaller = np.argmin(np.abs(solutions), axis=1)
        pz = solutions[np.arange(len(smaller)), smaller]
        neutrino = vector.array({"px": missing.x, "py": missing.y, "pz": pz, "mass": np.zeros_like(pz)})
        return np.stack([neutrino.E, neutrino.px, neutrino.py, neutrino.pz], axis=-1)

    def lepton_momentum(self) -> np.ndarray:
        """(E, 4) the leading lepton's four-momentum, zero where there is none."""
        slot = self.leading_lepton()
        p4 = self.four_momenta()[np.arange(len(slot)), np.maximum(slot, 0)]
        return np.where((slot >= 0)[:, None], p4, 0.0)


def neutrino_pz_solutions(
    lepton: np.ndarray, met_x: np.ndarray, met_y: np.ndarray, w_mass: float = W_MASS
) -> np.ndarray:
    """Both neutrino pz solving :math:`(p_\\ell + p_\\nu)^2 = m_W^2` for a massless neutrino.

    With :math:`k = (m_W^2 - m_\\ell^2)/2 + \\vec p_{T\\ell} \\cdot \\vec p_{T\\nu}` and
    :math:`A = E_\\ell^2 - p_{z\\ell}^2`:

    .. math:: p_{z\\nu} = \\frac{k\\, p_{z\\ell} \\pm E_\\ell \\sqrt{k^2 - A\\, p_{T\\nu}^2}}{A}

    A negative discriminant (the transverse W mass exceeds m_W) gives the real part twice.

    Args:
        lepton: (E, 4) lepton four-momentum (E, px, py, pz) [GeV]; a zero row gives pz = 0.
        met_x, met_y: (E,) neutrino transverse momentum [GeV].
        w_mass: the W mass constraint [GeV].

    Returns:
        (E, 2) the minus and plus solutions [GeV].
    """
    energy, px, py, pz = np.moveaxis(np.asarray(lepton, dtype=np.float64), -1, 0)
    m2_lepton = np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0)
    k = 0.5 * (w_mass**2 - m2_lepton) + px * met_x + py * met_y
    a = energy**2 - pz**2
    safe_a = np.where(a > 0, a, 1.0)
    root = energy * np.sqrt(np.maximum(k**2 - a * (met_x**2 + met_y**2), 0.0))
    solutions = np.stack([(k * pz - root) / safe_a, (k * pz + root) / safe_a], axis=-1)
    return np.where((a > 0)[:, None], solutions, 0.0)


def central_half_width(values: ArrayLike, coverage: float = _ONE_SIGMA_COVERAGE) -> float:
    """Half the width of the central interval holding ``coverage`` of the values.

    A robust resolution: equals sigma for a Gaussian and ignores the combinatorial tails of
    mis-measured masses.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ReconError(f"central_half_width: need at least 2 values, got {values.size}")
    low, high = np.quantile(values, [0.5 - coverage / 2, 0.5 + coverage / 2])
    return float(high - low) / 2


@dataclass(frozen=True)
class _Layout:
    """Where the baseline's tops sit in a topology.

    Attributes:
        channel: semi-leptonic or all-hadronic.
        hadronic: per hadronic top, (resonance name, the column of b, q1, q2 in its daughter order).
        leptonic: (resonance name, the column of b, l), or None for all-hadronic.
    """

    channel: Channel
    hadronic: tuple[tuple[str, tuple[int, ...]], ...]
    leptonic: tuple[str, tuple[int, ...]] | None


def _layout(topology: EventTopology) -> _Layout:
    """The tops of a ttbar topology, whatever its resonance names and daughter order."""
    found: dict[tuple[str, ...], list[tuple[str, tuple[int, ...]]]] = {_HADRONIC_TOP: [], _LEPTONIC_TOP: []}
    for resonance in topology.resonances:
        for decay, tops in found.items():
            if sorted(resonance.daughters) == sorted(decay):
                tops.append((resonance.name, tuple(resonance.daughters.index(d) for d in decay)))
    hadronic, leptonic = found[_HADRONIC_TOP], found[_LEPTONIC_TOP]
    if len(topology.resonances) == 2 and len(hadronic) == 2:
        return _Layout("allhadronic", tuple(hadronic), None)
    if len(topology.resonances) == 2 and len(hadronic) == 1 and len(leptonic) == 1:
        return _Layout("semileptonic", tuple(hadronic), leptonic[0])
    raise ReconError(
        f"{topology.path}: the chi-square baseline supports only ttbar: two resonances with daughters "
        f"{set(_HADRONIC_TOP)} (all-hadronic) or one of them and one with {set(_LEPTONIC_TOP)} (semi-leptonic); "
        f"this topology has {({r.name: r.daughters for r in topology.resonances})}"
    )


def channel_of(topology: EventTopology) -> Channel:
    """Which ttbar channel an event topology is; the chi-square supports only these two."""
    return _layout(topology).channel


_NO_KINEMATICS = (
    "no sequential input declares pt, eta and phi (or sin_phi and cos_phi): the chi-square baseline needs four-momenta"
)


def check_inputs(topology: EventTopology) -> Channel:
    """The channel of ``topology`` if its declared inputs can feed the baseline: a ttbar topology
    (:func:`channel_of`), four-momenta from a sequential source and, for semi-leptonic events, a
    global MET source (``met`` or ``pt``, and an azimuth) for the neutrino.

    Raises:
        ReconError: naming what is missing.
    """
    channel = channel_of(topology)
    if not any(_declares_kinematics(source) for source in topology.sequential):
        raise ReconError(f"{topology.path}: {_NO_KINEMATICS}")
    met = [
        s for s in topology.globals
        if {"met", "pt"} & set(s.features) and declared_azimuth(s, np.zeros((0, len(s.features)))) is not None
    ]
    if channel == "semileptonic" and not met:
        raise ReconError(
            f"{topology.path}: no global input declares the MET (met or pt, and phi or sin_phi/cos_phi): "
            "the semi-leptonic chi-square needs it for the neutrino"
        )
    return channel


def _declares_kinematics(source: InputSource) -> bool:
    return declared_kinematics(source, np.zeros((0, len(source.features)))) is not None


def _source_slots(
    source: InputSource, values: np.ndarray, real: np.ndarray, leptons: bool
) -> tuple[Kinematics, np.ndarray, np.ndarray, np.ndarray]:
    """Kinematics, b-tags, jet and lepton flags (E, N_s) of one sequential source's objects
    (see :meth:`DetectorEvents.from_inputs`)."""
    kinematics = declared_kinematics(source, values)
    if kinematics is None:
        empty = np.zeros(real.shape)
        return Kinematics(empty, empty, empty, empty), *(np.zeros(real.shape, dtype=bool),) * 3

    def flag(names: tuple[str, ...], threshold: float) -> np.ndarray:
        found = [values[..., source.features.index(n)] > threshold for n in names if n in source.features]
        return np.logical_or.reduce(found) if found else np.zeros(real.shape, dtype=bool)

    lepton = real & (flag(("etag", "utag"), 0.0) | leptons)
    jet = real & ~lepton
    return kinematics, jet & flag(_BTAG_FEATURES, 0.5), jet, lepton


@dataclass(frozen=True)
class ChiSquareBaseline:
    """Mass chi-square jet-parton assignment for semi-leptonic and all-hadronic ttbar.

    The published baseline of SPANet (arXiv 2106.03898): try every assignment of the
    ``n_leading_jets`` highest-pt jets to the top daughters, keep the smallest chi-square.

    With ``use_btag`` the b slots hold as many b-tagged jets as the leading jets offer, up to
    two: with at least two b-tags only b-tagged jets fill the b slots (extra b-tags may fill q
    slots), with one b-tag it fills one b slot, with none the b slots are free.

    Attributes:
        sigma_t, sigma_W: hadronic top and W mass resolutions [GeV].
        sigma_t_lep: leptonic top mass resolution [GeV]; needed for semi-leptonic events only.
        m_t, m_W: chi-square centres [GeV].
        n_leading_jets: how many leading jets are tried (6 or 7 in the literature; at least 4
            for semi-leptonic and 6 for all-hadronic).
        use_btag: restrict the b slots to b-tagged jets as above.
    """

    sigma_t: float
    sigma_W: float
    sigma_t_lep: float | None = None
    m_t: float = TOP_MASS
    m_W: float = W_MASS
    n_leading_jets: int = 6
    use_btag: bool = True

    def __post_init__(self) -> None:
        for name in ("sigma_t", "sigma_W", "sigma_t_lep", "m_t", "m_W"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ReconError(
                    f"ChiSquareBaseline: {name} must be a positive finite number, got {value}"
                )
        if not 4 <= self.n_leading_jets <= 10:
            raise ReconError(
                f"ChiSquareBaseline: n_leading_jets must be in 4..10, got {self.n_leading_jets}"
            )

    @classmethod
    def fit(
        cls,
        events: DetectorEvents,
        targets: Mapping[str, np.ndarray],
        topology: EventTopology,
        *,
        centres: Centres = "pdg",
        generator_masses: tuple[float, float] | None = None,
        n_leading_jets: int = 6,
        use_btag: bool = True,
    ) -> ChiSquareBaseline:
        """Fit the resolutions on the truth-matched resonances of training events.

        Each sigma is :func:`central_half_width` of the detector-level masses of the matched
        daughters (b q q' and q q' of every hadronic top; b, lepton and neutrino of the leptonic
        top, the neutrino from :meth:`DetectorEvents.neutrino`).

        Args:
            events: E training events.
            targets: the truth assignment, resonance name -> (E, K) slot indices, -1 unmatched.
            topology: a semi-leptonic or all-hadronic ttbar topology.
            centres: ``"pdg"`` centres the chi-square on :data:`TOP_MASS` and :data:`W_MASS`;
                ``"fitted"`` on the medians of the matched masses (the detector's mass scale);
                ``"generator"`` on ``generator_masses``.
            generator_masses: (m_t, m_W) the events were generated with [GeV], e.g. the medians
                of the parton-level top and W masses of the training file; needed for
                ``centres="generator"``.
            n_leading_jets, use_btag: passed to the baseline.
        """
        if centres not in get_args(Centres):
            raise ReconError(
                f"ChiSquareBaseline.fit: centres={centres!r}; expected one of {get_args(Centres)}"
            )
        if centres == "generator" and generator_masses is None:
            raise ReconError("ChiSquareBaseline.fit: centres='generator' needs generator_masses=(m_t, m_W)")
        layout = _layout(topology)
        _check_targets(targets, topology, events)
        p4 = events.four_momenta()
        hadronic = tuple(name for name, _ in layout.hadronic)
        top_masses, w_masses = [], []
        for name, columns in layout.hadronic:
            ordered = np.asarray(targets[name])[:, columns]  # (b, q1, q2)
            rows = np.flatnonzero((ordered >= 0).all(axis=1))
            matched = ordered[rows]
            top_masses.append(_mass_of(p4[rows], matched))
            w_masses.append(_mass_of(p4[rows], matched[:, 1:]))
        top_mass, w_mass = np.concatenate(top_masses), np.concatenate(w_masses)
        _require_matches(top_mass, hadronic, topology)
        centre_masses = {
            "pdg": (TOP_MASS, W_MASS),
            "fitted": (float(np.median(top_mass)), float(np.median(w_mass))),
            "generator": generator_masses,
        }
        m_t, m_w = centre_masses[centres]
        fitted = {
            "sigma_t": central_half_width(top_mass),
            "sigma_W": central_half_width(w_mass),
            "m_t": float(m_t),
            "m_W": float(m_w),
        }
        if layout.leptonic is not None:
            name, columns = layout.leptonic
            ordered = np.asarray(targets[name])[:, columns]  # (b, l)
            rows = np.flatnonzero((ordered >= 0).all(axis=1) & (events.leading_lepton() >= 0))
            b_jet = p4[rows, ordered[rows, 0]]
            leptonic_w = events.lepton_momentum()[rows] + events.neutrino()[rows]
            leptonic_top = four_vector_mass(b_jet + leptonic_w)
            _require_matches(leptonic_top, (name,), topology)
            fitted["sigma_t_lep"] = central_half_width(leptonic_top)
        return cls(**fitted, n_leading_jets=n_leading_jets, use_btag=use_btag)

    def assign(self, events: DetectorEvents, topology: EventTopology) -> dict[str, np.ndarray]:
        """The minimum chi-square assignment of every event.

        Events with too few jets (or, semi-leptonic, no lepton) get -1 everywhere.

        Args:
            events: E events.
            topology: a semi-leptonic or all-hadronic ttbar topology.

        Returns:
            resonance name -> (E, K) int64 slot indices in the topology's daughter order; for
            the leptonic top the ``l`` daughter is the leading lepton's slot.
        """
        layout = _layout(topology)
        channel = layout.channel
        if channel == "semileptonic" and self.sigma_t_lep is None:
            raise ReconError("ChiSquareBaseline: sigma_t_lep is needed for semi-leptonic events")
        if channel == "allhadronic" and self.n_leading_jets < 6:
            raise ReconError(
                f"ChiSquareBaseline: all-hadronic needs n_leading_jets >= 6, got {self.n_leading_jets}"
            )
        tuples = _jet_tuples(channel, self.n_leading_jets)
        slots = np.full((events.n_events, tuples.shape[1]), -1, dtype=np.int64)
        chunk_size = max(1, _CHUNK_ELEMENTS // len(tuples))
        for start in range(0, events.n_events, chunk_size):
            chunk = slice(start, start + chunk_size)
            slots[chunk] = self._best_slots(events.subset(chunk), channel, tuples)
        if layout.leptonic is None:
            tops = dict(zip(layout.hadronic, (slots[:, 0:3], slots[:, 3:6]), strict=True))
        else:
            lepton = np.where(slots[:, 0] >= 0, events.leading_lepton(), -1)
            tops = {layout.leptonic: np.stack([slots[:, 0], lepton], axis=1), layout.hadronic[0]: slots[:, 1:4]}
        assigned = {}
        for (name, columns), ordered in tops.items():
            assigned[name] = np.empty_like(ordered)
            assigned[name][:, columns] = ordered  # back to the topology's daughter order
        return assigned

    def _best_slots(
        self, events: DetectorEvents, channel: Channel, tuples: np.ndarray
    ) -> np.ndarray:
        """(e, 6 or 4) slots of each event's minimum chi-square jet tuple (T, 6 or 4), -1 if none."""
        order, p4, gram, allowed = _leading_jet_products(events, channel, tuples, self.n_leading_jets, self.use_btag)
        if channel == "allhadronic":
            chi2 = self._hadronic_top_chi2(*_hadronic_masses(gram, *tuples[:, 0:3].T))
            chi2 += self._hadronic_top_chi2(*_hadronic_masses(gram, *tuples[:, 3:6].T))
        else:
            m_w, m_top, m_leptonic_top = _semileptonic_masses(events, p4, gram, tuples)
            chi2 = ((m_leptonic_top - self.m_t) / self.sigma_t_lep) ** 2
            chi2 += self._hadronic_top_chi2(m_w, m_top)
        chi2 = np.where(allowed, chi2, np.inf)
        best = np.argmin(chi2, axis=1)
        found = np.isfinite(np.take_along_axis(chi2, best[:, None], axis=1)[:, 0])
        slots = np.take_along_axis(order, tuples[best], axis=1)
        return np.where(found[:, None], slots, -1)

    def _hadronic_top_chi2(self, m_w: np.ndarray, m_top: np.ndarray) -> np.ndarray:
        """(e, T) top and W chi-square terms of hadronic tops of these masses."""
        return ((m_top - self.m_t) / self.sigma_t) ** 2 + ((m_w - self.m_W) / self.sigma_W) ** 2


@dataclass(frozen=True)
class SemileptonicCandidates:
    """Every assignment (b_lep, b_had, q1, q2) of e events' leading jets, T per event, and its masses.

    Attributes:
        slots: (e, T, 4) the jets' slots in the events.
        allowed: (e, T) four real jets, a lepton, and the b-tag rule of :class:`ChiSquareBaseline`.
        W_had, t_had, t_lep: (e, T) m(q1 q2), m(b_had q1 q2) and m(b_lep l nu) [GeV], the neutrino's
            pz from the W mass (:meth:`DetectorEvents.neutrino`).
    """

    slots: np.ndarray
    allowed: np.ndarray
    W_had: np.ndarray
    t_had: np.ndarray
    t_lep: np.ndarray


def semileptonic_candidates(
    events: DetectorEvents, n_leading_jets: int = 6, use_btag: bool = True
) -> SemileptonicCandidates:
    """Every jet assignment of semi-leptonic ttbar among the ``n_leading_jets`` leading jets and its
    masses, for scores other than the chi-square's (memory: about 60 bytes per event and tuple)."""
    tuples = _jet_tuples("semileptonic", n_leading_jets)
    order, p4, gram, allowed = _leading_jet_products(events, "semileptonic", tuples, n_leading_jets, use_btag)
    return SemileptonicCandidates(order[:, tuples], allowed, *_semileptonic_masses(events, p4, gram, tuples))


def _leading_jet_products(
    events: DetectorEvents, channel: Channel, tuples: np.ndarray, n: int, use_btag: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(e, n) slots of the n leading jets, (e, n, 4) their four-momenta, (e, n, n) their Minkowski products, and
    (e, T) whether each tuple is allowed: real jets, a lepton (semi-leptonic), and with ``use_btag``
    as many b-tagged jets in the b slots (the first two of each tuple's b's) as the leading jets
    offer, up to two."""
    order, valid = _leading_jets(events.pt, events.is_jet, n)
    p4 = np.take_along_axis(events.four_momenta(), order[:, :, None], axis=1)
    gram = _minkowski(p4[:, :, None, :], p4[:, None, :, :])
    allowed = valid[:, tuples].all(axis=-1)
    b_slots = tuples[:, [0, 3]] if channel == "allhadronic" else tuples[:, [0, 1]]
    if channel == "semileptonic":
        allowed &= (events.leading_lepton() >= 0)[:, None]
    if use_btag:
        tagged = np.take_along_axis(events.btag, order, axis=1) & valid
        wanted = np.minimum(tagged.sum(axis=1), 2)
        allowed &= tagged[:, b_slots].sum(axis=-1) == wanted[:, None]
    return order, p4, gram, allowed


def _hadronic_masses(
    gram: np.ndarray, b: np.ndarray, q1: np.ndarray, q2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(e, T) W and top masses of the (b, q1, q2) tuples, from the (e, n, n) products."""
    m2_w = gram[:, q1, q1] + gram[:, q2, q2] + 2 * gram[:, q1, q2]
    m2_top = m2_w + gram[:, b, b] + 2 * (gram[:, b, q1] + gram[:, b, q2])
    return np.sqrt(np.maximum(m2_w, 0.0)), np.sqrt(np.maximum(m2_top, 0.0))


def _semileptonic_masses(
    events: DetectorEvents, p4: np.ndarray, gram: np.ndarray, tuples: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(e, T) m(q1 q2), m(b_had q1 q2) and m(b_lep l nu) of the (b_lep, b_had, q1, q2) tuples, from the
    leading jets' (e, n, 4) four-momenta and (e, n, n) products."""
    leptonic_w = (events.lepton_momentum() + events.neutrino())[:, None, :]
    m2_leptonic_top = (
        gram.diagonal(axis1=1, axis2=2) + _minkowski(leptonic_w, leptonic_w) + 2 * _minkowski(p4, leptonic_w)
    )
    m_leptonic_top = np.sqrt(np.maximum(m2_leptonic_top, 0.0))[:, tuples[:, 0]]
    return (*_hadronic_masses(gram, *tuples[:, 1:4].T), m_leptonic_top)


@cache
def _jet_tuples(channel: Channel, n: int) -> np.ndarray:
    """Every distinct assignment of n leading jets to the daughters, read-only.

    All-hadronic: (T, 6) (b1, q1, q2, b2, q3, q4), one per class of q1<->q2, q3<->q4 and
    t1<->t2, T = n!/((n-6)! 8). Semi-leptonic: (T, 4) (b_lep, b_had, q1, q2), one per class of
    q1<->q2, T = n!/((n-4)! 2).
    """
    tuples: list[tuple[int, ...]]
    if channel == "allhadronic":
        tuples = [
            (b1, *w1, b2, *w2)
            for b1, b2 in combinations(range(n), 2)
            for rest in [[j for j in range(n) if j not in (b1, b2)]]
            for w1 in combinations(rest, 2)
            for w2 in combinations([j for j in rest if j not in w1], 2)
        ]
    else:
        tuples = [
            (b_lep, b_had, *w)
            for b_lep, b_had in permutations(range(n), 2)
            for w in combinations([j for j in range(n) if j not in (b_lep, b_had)], 2)
        ]
    array = np.array(tuples, dtype=np.int64)
    array.flags.writeable = False
    return array


def _leading_jets(pt: np.ndarray, is_jet: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(e, n) slots of the n highest-pt jets and whether each is a real jet (fewer jets: padded)."""
    key = np.where(is_jet, pt, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :n]
    if order.shape[1] < n:
        order = np.pad(order, ((0, 0), (0, n - order.shape[1])))
        valid = np.take_along_axis(is_jet, order, axis=1)
        valid[:, is_jet.shape[1] :] = False
    else:
        valid = np.take_along_axis(is_jet, order, axis=1)
    return order, valid


def _four_momenta(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """(..., 4) (E, px, py, pz) from pt, eta, phi, m: energy first, as in :mod:`encoders.kinematics`.

    E = sqrt(|p|^2 + m^2) also for a negative (smeared) mass, hence |m| (``vector`` would read a
    negative mass as space-like).
    """
    p4 = vector.array({"pt": pt, "eta": eta, "phi": phi, "mass": np.abs(mass)})
    return np.stack([p4.E, p4.px, p4.py, p4.pz], axis=-1)


def _minkowski(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minkowski product of (..., 4) four-vectors, metric (+, -, -, -)."""
    return (
        a[..., 0] * b[..., 0]
        - a[..., 1] * b[..., 1]
        - a[..., 2] * b[..., 2]
        - a[..., 3] * b[..., 3]
    )


def four_vector_mass(p4: np.ndarray) -> np.ndarray:
    """Invariant mass of (..., 4) four-vectors (E, px, py, pz), zero where m^2 < 0 by rounding."""
    return np.sqrt(np.maximum(_minkowski(p4, p4), 0.0))


def _mass_of(p4: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """(e,) invariant mass of the objects ``slots`` (e, K) taken from ``p4`` (e, N, 4)."""
    return four_vector_mass(np.take_along_axis(p4, slots[:, :, None], axis=1).sum(axis=1))


def _check_targets(
    targets: Mapping[str, np.ndarray], topology: EventTopology, events: DetectorEvents
) -> None:
    for resonance in topology.resonances:
        if resonance.name not in targets:
            raise ReconError(f"{topology.path}: targets lack resonance {resonance.name!r}")
        shape = np.shape(targets[resonance.name])
        expected = (events.n_events, resonance.order)
        if shape != expected:
            raise ReconError(
                f"targets[{resonance.name!r}] has shape {shape}; expected {expected} (events, daughters)"
            )
        if np.any(np.asarray(targets[resonance.name]) >= events.pt.shape[1]):
            raise ReconError(
                f"targets[{resonance.name!r}] points past the {events.pt.shape[1]} object slots"
            )


def _require_matches(masses: np.ndarray, names: tuple[str, ...], topology: EventTopology) -> None:
    if masses.size < 2:
        raise ReconError(
            f"{topology.path}: ChiSquareBaseline.fit found {masses.size} fully matched {'/'.join(names)}; need at least 2"
        )
