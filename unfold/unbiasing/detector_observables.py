"""Top-mass sensitive detector-level observables that pick no jets by a mass hypothesis.

A reconstruction that scores jet assignments by their distance to a top mass (the chi-square)
pulls the reconstructed masses toward that mass, and so hides a different top mass in the data.
These observables choose their jets by transverse momentum, b-tag and the W mass only:
- M3, the mass of the three-jet combination with the largest vector-sum pT (CMS, the ttbar cross
  section at 7 TeV, Phys. Lett. B 695 (2011) 424, arXiv 1010.5994);
- m_lb^min, the smallest mass of the charged lepton with a b-tagged jet (CMS, the top mass from
  m_lb^min, Eur. Phys. J. C 79 (2019) 368, arXiv 1812.10534), whose end point is sqrt(m_t^2 - m_W^2).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from recon.chi_square import W_MASS, DetectorEvents, four_vector_mass, semileptonic_candidates

__all__ = ["M3_JETS", "equal_mass_tops", "m3", "min_lepton_b_mass"]

M3_JETS = 6  # the leading jets M3 chooses among
# Resolutions of the equal-mass score [GeV]: central half widths of the truth-matched m(q q') (12.7) and of
# m(b q q') - m(b l nu) (sqrt(21.6^2 + 30.7^2)) on the default data (ChiSquareBaseline.fit).
SIGMA_W = 12.7
SIGMA_TOP_DIFFERENCE = 37.5
_EVENTS_PER_STEP = 8192  # about 90 MB of candidates per step


def m3(events: DetectorEvents) -> np.ndarray:
    """(E,) M3 among the leading :data:`M3_JETS` jets; NaN with fewer than three jets."""
    key = np.where(events.is_jet, events.pt, -np.inf)
    order = np.argsort(-key, axis=1)[:, :M3_JETS]
    p4 = np.take_along_axis(events.four_momenta(), order[..., None], axis=1)
    real = np.take_along_axis(events.is_jet, order, axis=1)
    triplets = np.array(list(combinations(range(order.shape[1]), 3)))
    sums = p4[:, triplets].sum(axis=2)  # (E, T, 4)
    present = real[:, triplets].all(axis=2)
    best = np.argmax(np.where(present, np.hypot(sums[..., 1], sums[..., 2]), -np.inf), axis=1)
    mass = four_vector_mass(sums[np.arange(len(best)), best])
    return np.where(present.any(axis=1), mass, np.nan)


def min_lepton_b_mass(events: DetectorEvents) -> np.ndarray:
    """(E,) m_lb^min over the b-tagged jets with the leading lepton; NaN without either."""
    lepton = events.lepton_momentum()[:, None, :]
    masses = four_vector_mass(events.four_momenta() + lepton)
    tagged = events.is_jet & events.btag & (events.leading_lepton() >= 0)[:, None]
    return np.where(tagged.any(axis=1), np.min(np.where(tagged, masses, np.inf), axis=1), np.nan)


def equal_mass_tops(events: DetectorEvents) -> dict[str, np.ndarray]:
    """Name -> (E,) the hadronic ("t_had") and leptonic ("t_lep") top masses of the assignment of the
    six leading jets (with :class:`recon.chi_square.ChiSquareBaseline`'s b-tag rule) that minimises
    ((m_qq' - m_W) / sigma_W)^2 + ((m_bqq' - m_blnu) / sigma_diff)^2; NaN without four jets and a lepton."""
    tops = {"t_had": np.full(events.n_events, np.nan), "t_lep": np.full(events.n_events, np.nan)}
    for start in range(0, events.n_events, _EVENTS_PER_STEP):
        rows = slice(start, start + _EVENTS_PER_STEP)
        candidates = semileptonic_candidates(events.subset(rows))
        score = (((candidates.W_had - W_MASS) / SIGMA_W) ** 2
                 + ((candidates.t_had - candidates.t_lep) / SIGMA_TOP_DIFFERENCE) ** 2)
        score = np.where(candidates.allowed, score, np.inf)
        best = np.argmin(score, axis=1)[:, None]
        found = np.isfinite(np.take_along_axis(score, best, axis=1)[:, 0])
        for name in tops:
            tops[name][rows] = np.where(found, np.take_along_axis(getattr(candidates, name), best, axis=1)[:, 0], np.nan)
    return tops
