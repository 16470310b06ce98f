"""The physics processes ``unfold generate`` simulates: Pythia settings, partons and selection.

Both are top-quark pair production at 13 TeV (hard processes gg -> ttbar and qqbar -> ttbar)
with ISR/FSR, hadronisation and, by default, multi-parton interactions. They differ in how the
two W bosons decay:

* ``ttbar-semileptonic``: one W -> e nu or mu nu, the other W -> q q' (taus are not generated).
  Both W bosons may decay to quarks, electrons or muons with Pythia's own branching ratios;
  Pythia's ResonanceDecayFilterHook vetoes the event right after the resonance decays, before
  any shower, unless exactly one W gave a charged lepton and a neutrino and the other two quarks. The
  W charge of the lepton is thus chosen event by event, l+ and l- in equal shares.
* ``ttbar-allhadronic``: both W -> q q'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from unfold.errors import UnfoldError

__all__ = ["PROCESSES", "FiducialRegion", "Process", "ProcessName", "get_process"]

ProcessName = Literal["ttbar-semileptonic", "ttbar-allhadronic"]

# Pythia 8 settings common to every process; beam energy of LHC Run 2.
BASE_SETTINGS = (
    "Beams:eCM = 13000.",
    "Top:gg2ttbar = on",
    "Top:qqbar2ttbar = on",
    "Print:quiet = on",
    "Next:numberCount = 0",
    # Stable particles are those with c tau > 10 mm, the LHC definition of the particle level
    # (e.g. ATLAS and CMS fiducial measurements, Rivet's default); K0S and Lambda stay undecayed.
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10.",
)
HADRONIC_W = "1 2 3 4 5"
LEPTONIC_W = "11 13"


Side = Literal["hadronic", "leptonic", "top", "antitop"]


@dataclass(frozen=True)
class PartonSlot:
    """One parton-level object: which top it comes from and which decay product it is.

    ``role`` is one of ``b`` (the top's b quark), ``q1``/``q2`` (the W's quarks, q1 the harder),
    ``lepton`` and ``neutrino`` (the W's leptons).
    """

    name: str
    top: Side
    role: Literal["b", "q1", "q2", "lepton", "neutrino"]
    resonance: str | None  # the event-file resonance this parton is a daughter of, if jet-matched
    daughter: str | None


@dataclass(frozen=True)
class FiducialRegion:
    """The particle-level phase space a measurement unfolds to (``PARTICLES/fiducial``).

    Exactly ``leptons`` dressed prompt leptons with pT > ``lepton_pt_min`` and |eta| <
    ``lepton_eta_max``, and at least ``jets`` particle-level anti-kT R=0.4 jets (those within
    Delta R < 0.4 of the lepton removed) with pT > ``jet_pt_min`` and |eta| < ``jet_eta_max``,
    at least ``b_jets`` of them b-labelled by a b hadron (GeV).
    """

    leptons: int
    lepton_pt_min: float
    lepton_eta_max: float
    jets: int
    jet_pt_min: float
    jet_eta_max: float
    b_jets: int


@dataclass(frozen=True)
class Process:
    """A process: event file, Pythia decay settings, parton slots, detector selection and the
    particle-level fiducial region."""

    name: ProcessName
    event_file: str
    partons: tuple[PartonSlot, ...]
    composites: dict[str, tuple[str, ...]]
    record_objects: tuple[tuple[str, Side, Literal["t", "W"]], ...]
    min_jets: int
    leptons: int
    fiducial: FiducialRegion

    def decay_settings(self) -> tuple[str, ...]:
        """W decay settings: hadronic only, or (semi-leptonic) any allowed decay of either W with a
        veto of every final state other than one l nu and one q q' (ResonanceDecayFilterHook)."""
        if self.leptons == 0:
            return ("24:onMode = off", f"24:onIfAny = {HADRONIC_W}")
        return (
            "24:onMode = off",
            f"24:onIfAny = {HADRONIC_W} {LEPTONIC_W}",
            "ResonanceDecayFilter:filter = on",
            "ResonanceDecayFilter:exclusive = on",
            "ResonanceDecayFilter:mothers = 24",
            # e and mu count as 11, every neutrino as 12, every quark as 1.
            "ResonanceDecayFilter:eMuAsEquivalent = on",
            "ResonanceDecayFilter:allNuAsEquivalent = on",
            "ResonanceDecayFilter:udscbAsEquivalent = on",
            "ResonanceDecayFilter:daughters = 11,12,1,1",
        )


PROCESSES: dict[str, Process] = {
    "ttbar-semileptonic": Process(
        name="ttbar-semileptonic",
        event_file="ttbar_semileptonic.yaml",
        partons=(
            PartonSlot("b_had", "hadronic", "b", "ht", "b"),
            PartonSlot("q1", "hadronic", "q1", "ht", "q1"),
            PartonSlot("q2", "hadronic", "q2", "ht", "q2"),
            PartonSlot("b_lep", "leptonic", "b", "lt", "b"),
            PartonSlot("lepton", "leptonic", "lepton", "lt", "l"),
            PartonSlot("neutrino", "leptonic", "neutrino", None, None),
        ),
        composites={
            "W_had": ("q1", "q2"),
            "t_had": ("b_had", "q1", "q2"),
            "W_lep": ("lepton", "neutrino"),
            "t_lep": ("b_lep", "lepton", "neutrino"),
            "ttbar": ("b_had", "q1", "q2", "b_lep", "lepton", "neutrino"),
        },
        record_objects=(
            ("t_had", "hadronic", "t"),
            ("W_had", "hadronic", "W"),
            ("t_lep", "leptonic", "t"),
            ("W_lep", "leptonic", "W"),
        ),
        min_jets=4,
        leptons=1,
        # The resolved lepton+jets particle level of ATLAS, Eur. Phys. J. C 79 (2019) 1028
        # (arXiv 1908.07305): one e or mu above 27 GeV, >= 4 jets above 25 GeV, >= 2 of them b jets.
        fiducial=FiducialRegion(leptons=1, lepton_pt_min=27.0, lepton_eta_max=2.5, jets=4, jet_pt_min=25.0,
                                jet_eta_max=2.5, b_jets=2),
    ),
    "ttbar-allhadronic": Process(
        name="ttbar-allhadronic",
        event_file="ttbar_allhadronic.yaml",
        partons=(
            PartonSlot("t1_b", "top", "b", "t1", "b"),
            PartonSlot("t1_q1", "top", "q1", "t1", "q1"),
            PartonSlot("t1_q2", "top", "q2", "t1", "q2"),
            PartonSlot("t2_b", "antitop", "b", "t2", "b"),
            PartonSlot("t2_q1", "antitop", "q1", "t2", "q1"),
            PartonSlot("t2_q2", "antitop", "q2", "t2", "q2"),
        ),
        composites={
            "W1": ("t1_q1", "t1_q2"),
            "t1": ("t1_b", "t1_q1", "t1_q2"),
            "W2": ("t2_q1", "t2_q2"),
            "t2": ("t2_b", "t2_q1", "t2_q2"),
            "ttbar": ("t1_b", "t1_q1", "t1_q2", "t2_b", "t2_q1", "t2_q2"),
        },
        record_objects=(("t1", "top", "t"), ("W1", "top", "W"), ("t2", "antitop", "t"), ("W2", "antitop", "W")),
        min_jets=6,
        leptons=0,
        # The resolved all-hadronic particle level of ATLAS, JHEP 01 (2021) 033 (arXiv 2006.09274):
        # >= 6 jets above 55 GeV with |eta| < 2.5, >= 2 of them b jets (no prompt lepton exists here).
        fiducial=FiducialRegion(leptons=0, lepton_pt_min=0.0, lepton_eta_max=0.0, jets=6, jet_pt_min=55.0,
                                jet_eta_max=2.5, b_jets=2),
    ),
}


def get_process(name: str) -> Process:
    """The process called ``name``, or an error listing the choices."""
    if name not in PROCESSES:
        raise UnfoldError(f"unknown process {name!r}; expected one of {list(get_args(ProcessName))}")
    return PROCESSES[name]
