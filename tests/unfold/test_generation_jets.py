"""Particle-level jets come from Pythia's SlowJet, which runs FastJet's own core (fjcore) on the
event record in C++; they must be the jets the FastJet package finds on the same particles."""

from __future__ import annotations

import fastjet
import numpy as np
import pytest
import pythia8mc

from unfold.generation.particle_level import JetClustering

RADIUS, PT_MIN = 0.4, 20.0


@pytest.fixture(scope="module")
def pythia() -> pythia8mc.Pythia:
    """ttbar at 13 TeV with hadronisation (MPI off for speed)."""
    generator = pythia8mc.Pythia("", False)
    for setting in ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "Beams:eCM = 13000", "PartonLevel:MPI = off",
                    "Random:setSeed = on", "Random:seed = 5", "Next:numberCount = 0"):
        generator.readString(setting)
    generator.init()
    return generator


def test_slowjet_jets_equal_the_fastjet_packages(pythia):
    clustering = JetClustering(RADIUS, PT_MIN)
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, RADIUS)
    compared = 0
    for _ in range(5):
        if not pythia.next():
            continue
        jets, constituents = clustering.cluster(pythia.event)
        visible = [p for p in pythia.event if p.isFinal() and p.isVisible()]
        sequence = fastjet.ClusterSequence([fastjet.PseudoJet(p.px(), p.py(), p.pz(), p.e()) for p in visible], definition)
        reference = np.array([(j.px(), j.py(), j.pz(), j.e()) for j in fastjet.sorted_by_pt(sequence.inclusive_jets(PT_MIN))])
        assert jets.shape == reference.reshape(-1, 4).shape
        np.testing.assert_allclose(jets, reference.reshape(-1, 4), rtol=1e-9, atol=1e-9)
        assert sum(len(c) for c in constituents) <= len(visible)
        compared += len(jets)
    assert compared > 10
