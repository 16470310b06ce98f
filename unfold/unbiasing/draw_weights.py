"""The tops of a parton level (truth, detector reconstruction or unfolding draws) and the per-draw
weights that change a trained unfolding's prior.

An unfolding samples p_train(x | d), proportional to p(d | x) p_train(x). Changing the prior to
p_theta gives p_theta(x | d) proportional to p_train(x | d) p_theta(x) / p_train(x): each event's
draws reweighted by the prior ratio and normalised within the event (Bayes' theorem, no
retraining; self-normalised importance sampling). Where the trained prior is narrower than the
shift (a top mass line shape), few draws carry the weight and the within-event normalisation pulls
the answer back toward the trained prior: the draws' Kish effective number
(:func:`evaluation.metrics.effective_events`) says how many carry it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from evaluation.kinematics import invariant_mass
from evaluation.observables import composite_momentum
from unfold.generation.processes import get_process
from unfold.unbiasing.top_prior import GeneratedPrior, PriorParameters, prior_weights, top_names

__all__ = ["draw_weights", "top_kinematics"]


def top_kinematics(level: Mapping[str, Mapping[str, np.ndarray]], process: str) -> dict[str, dict[str, np.ndarray]]:
    """top -> {"mass", "pt"} of the sum of its decay partons at one level (any array shape; NaN where a
    parton is missing, as in a detector reconstruction without an assigned jet)."""
    composites = get_process(process).composites
    out = {}
    for top in top_names(process):
        momentum = composite_momentum(level, composites[top])
        if momentum is None:
            raise KeyError(f"the partons {', '.join(composites[top])} of {top}")
        out[top] = {"mass": invariant_mass(momentum), "pt": np.asarray(momentum.pt)}
    return out


def draw_weights(tops: Mapping[str, Mapping[str, np.ndarray]], parameters: PriorParameters,
                 trained: GeneratedPrior) -> np.ndarray:
    """(E, n) weights of the draws under the prior ``parameters`` instead of the ``trained`` one, from
    the draws' tops (top -> {"mass", "pt"} (E, n)); each event's sum to n. An event none of whose
    draws the new prior allows keeps equal weights."""
    weights = prior_weights(tops, parameters, trained)
    total = weights.sum(axis=1, keepdims=True)
    n = weights.shape[1]
    return np.where(total > 0, weights * n / np.where(total > 0, total, 1.0), 1.0)
