"""Particle level: anti-kT jets from the visible final state and their hadron-based flavour."""

from __future__ import annotations

import contextlib
import functools
import os

import fastjet
import numpy as np

from unfold.generation.kinematics import delta_r, to_cylindrical

__all__ = ["BOTTOM", "CHARM", "LIGHT", "cluster_jets", "flavour_labels"]

BOTTOM, CHARM, LIGHT = 5, 4, 0


@functools.cache
def _print_fastjet_banner_quietly() -> None:
    """FastJet prints its banner on the first clustering of a process: send it to /dev/null."""
    with open(os.devnull, "w") as devnull, contextlib.ExitStack() as stack:
        saved = os.dup(1)
        stack.callback(os.close, saved)
        stack.callback(os.dup2, saved, 1)
        os.dup2(devnull.fileno(), 1)
        fastjet.ClusterSequence([fastjet.PseudoJet(1.0, 0.0, 0.0, 1.0)], fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4))


def cluster_jets(visible: np.ndarray, *, radius: float, pt_min: float, eta_max: float) -> np.ndarray:
    """Anti-kT jets (FastJet) of the (P, 4) visible particles -> (J, 4) four-vectors, hardest first."""
    _print_fastjet_banner_quietly()
    definition = fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    particles = [fastjet.PseudoJet(*row) for row in visible.tolist()]
    sequence = fastjet.ClusterSequence(particles, definition)
    jets = np.array([(j.px(), j.py(), j.pz(), j.E()) for j in fastjet.sorted_by_pt(sequence.inclusive_jets(pt_min))])
    jets = jets.reshape(-1, 4)
    return jets[np.abs(to_cylindrical(jets)[:, 1]) < eta_max]


def flavour_labels(
    jets: np.ndarray, b_hadrons: np.ndarray, c_hadrons: np.ndarray, *, radius: float, hadron_pt_min: float
) -> np.ndarray:
    """Per jet: 5 if a b hadron above ``hadron_pt_min`` lies within ``radius``, else 4 for a c
    hadron, else 0 (the heaviest flavour wins)."""
    labels = np.full(len(jets), LIGHT, dtype=np.int64)
    if len(jets) == 0:
        return labels
    jet_cyl = to_cylindrical(jets)
    for hadrons, flavour in ((c_hadrons, CHARM), (b_hadrons, BOTTOM)):
        hadron_cyl = to_cylindrical(hadrons)
        hadron_cyl = hadron_cyl[hadron_cyl[:, 0] > hadron_pt_min]
        if len(hadron_cyl) == 0:
            continue
        dr = delta_r(jet_cyl[:, None, 1], jet_cyl[:, None, 2], hadron_cyl[None, :, 1], hadron_cyl[None, :, 2])
        labels[(dr < radius).any(axis=1)] = flavour
    return labels
