"""A family of parton-level priors around the generated simulation: the top mass and a top-pT slope.

A generated sample is a mixture of Pythia runs, each with its top mass M_j; its prior over the
tops is proportional to sum_j pi_j prod_t rho(m_t; M_j) / sigma(M_j), pi_j the share of the events
each run generated (before the selection, so that the selected events' mixture is exact) and
sigma(M_j) its cross section (a lighter top is produced more often; :data:`CROSS_SECTION_SLOPE`). A member theta = (M, s)
of the family has prior prod_t rho(m_t; M) sqrt(1 + s pT_t / 500 GeV) up to a constant, so the
weight that turns the simulation into it is the ratio of the two. rho is Pythia's relativistic
Breit-Wigner in s = m^2, normalised, with the width at each mass from the leading-order top width
scaled to Pythia's own value at 173 GeV. The pT factor is the geometric mean over the two tops of
the linear top-pT reweighting (1 + s pT / 500 GeV) (the convention of CMS's top-pT reweighting,
arXiv 1511.04716, with the linear form of issue 14's test); s = 0 is the simulation's spectrum.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from unfold.errors import UnfoldError
from unfold.generation.processes import get_process

__all__ = [
    "CROSS_SECTION_SLOPE",
    "PYTHIA_TOP_MASS",
    "GeneratedPrior",
    "PriorParameters",
    "prior_weights",
    "relative_cross_section",
    "top_line_shape",
    "top_names",
    "top_width",
]

# Pythia 8.317's top: m0 = 173.0 GeV (ParticleData), width recomputed at initialisation to 1.3568 GeV.
PYTHIA_TOP_MASS = 173.0
PYTHIA_TOP_WIDTH = 1.3568
W_MASS = 80.385  # Pythia 8.317's 24:m0, GeV
PT_SCALE = 500.0  # GeV, the scale of the linear top-pT reweighting (1 + s pT / 500 GeV)
# d ln(sigma) / d m_t of Pythia 8.317's LO gg, qqbar -> ttbar (e/mu + jets) at 13 TeV, 1/GeV: fitted to its
# sigmaGen at m_t = 170, 171.5, 173, 175.5 and 176 GeV (160.8, 155.6, 148.5, 139.4, 138.8 pb; this project's
# `unfold generate` runs of 2026-12-01). Runs at different masses are mixed in proportion to 1 / sigma(M_j).
CROSS_SECTION_SLOPE = 0.025
PT_FACTOR_FLOOR = 0.01  # the pT factor never goes below this (a negative slope at very high pT)


def relative_cross_section(pole: float) -> float:
    """sigma(M) / sigma(173 GeV) of Pythia's ttbar production: exp(-k (M - 173 GeV))."""
    return float(np.exp(-CROSS_SECTION_SLOPE * (pole - PYTHIA_TOP_MASS)))


def top_width(mass: float | np.ndarray) -> float | np.ndarray:
    """Top width at a pole mass: the leading-order t -> b W width, Gamma ~ M^3 (1 - x)^2 (1 + 2x)
    with x = m_W^2 / M^2, scaled to Pythia's 1.3568 GeV at 173 GeV (this gives 1.4263 GeV at
    175.5 GeV, where Pythia computes 1.4270)."""
    def leading_order(m):
        x = (W_MASS / m) ** 2
        return m**3 * (1 - x) ** 2 * (1 + 2 * x)

    return PYTHIA_TOP_WIDTH * leading_order(np.asarray(mass, np.float64)) / leading_order(PYTHIA_TOP_MASS)


def top_line_shape(m: np.ndarray, pole: float) -> np.ndarray:
    """Relativistic Breit-Wigner density in the mass m [1/GeV], normalised over m >= 0:
    2 m (M Gamma / pi) / ((m^2 - M^2)^2 + M^2 Gamma^2) / (1/2 + arctan(M / Gamma) / pi)."""
    width = top_width(pole)
    s = np.asarray(m, np.float64) ** 2
    norm = 0.5 + np.arctan(pole / width) / np.pi
    return 2 * np.sqrt(s) * (pole * width / np.pi) / ((s - pole**2) ** 2 + (pole * width) ** 2) / norm


@dataclass(frozen=True)
class PriorParameters:
    """theta: the top pole mass [GeV] (None: the simulation's own line shapes) and the slope s of the
    top-pT factor (0: the simulation's spectrum)."""

    top_mass: float | None = None
    top_pt_slope: float = 0.0


@dataclass(frozen=True)
class GeneratedPrior:
    """The top masses a simulation was generated with, each run's share of the generated events and
    its relative cross section (None: :func:`relative_cross_section`; ones for runs whose tops were
    drawn from the line shape alone, as in a toy)."""

    masses: tuple[float, ...]
    shares: tuple[float, ...]
    cross_sections: tuple[float, ...] | None = None

    @classmethod
    def of_files(cls, paths: Sequence[str | Path]) -> GeneratedPrior:
        """The mixture of the files' Pythia runs: the top mass from their ``pythia_settings``
        attribute ('6:m0 = ...', else Pythia's 173 GeV), the share from their selected events over
        their selection efficiency."""
        by_mass: dict[float, float] = {}
        for path in paths:
            for mass, generated in _generated_top_masses(Path(path)):
                by_mass[mass] = by_mass.get(mass, 0.0) + generated
        total = sum(by_mass.values())
        return cls(tuple(by_mass), tuple(n / total for n in by_mass.values()))

    def density(self, top_masses: Sequence[np.ndarray]) -> np.ndarray:
        """sum_j pi_j prod_t rho(m_t; M_j) / sigma(M_j), up to a constant: run j generated its tops with
        density prod_t rho(m_t; M_j) g(m) / sigma(M_j), where g (the production cross section's
        dependence on the tops' masses) is common to every run and cancels in every weight."""
        sigmas = self.cross_sections or tuple(relative_cross_section(pole) for pole in self.masses)
        return sum(share * np.prod([top_line_shape(m, pole) for m in top_masses], axis=0) / sigma
                   for pole, share, sigma in zip(self.masses, self.shares, sigmas, strict=True))


def _generated_top_masses(path: Path) -> list[tuple[float, float]]:
    """(top mass, events generated before the selection) of each Pythia run in a file written by
    ``unfold generate`` (one) or ``unfold merge`` (its ``top_mass_prior`` attribute)."""
    with h5py.File(path, "r") as file:
        settings = file.attrs.get("pythia_settings")
        efficiency = file.attrs.get("selection_efficiency")
        mixture = file.attrs.get("top_mass_prior")
        tops = [group for group in file.get("PARTONS", {}).values() if isinstance(group, h5py.Group) and "mass" in group]
        events = len(tops[0]["mass"]) if tops else 0
    if settings is None or efficiency is None or not events:
        raise UnfoldError(f"{path}: no pythia_settings or selection_efficiency attribute, or no PARTONS; expected a "
                          "file written by `unfold generate`, whose top masses and generated events make the prior")
    generated = events / float(efficiency)
    if mixture is not None:
        mixture = json.loads(mixture)
        return [(float(m), generated * share) for m, share in zip(mixture["masses"], mixture["shares"], strict=True)]
    mass = PYTHIA_TOP_MASS
    for setting in ast.literal_eval(str(settings)):
        key, _, value = setting.partition("=")
        if key.strip() == "6:m0":
            mass = float(value)
    return [(mass, generated)]


def top_names(process: str) -> tuple[str, ...]:
    """The process's two top composites (t_had, t_lep or t1, t2)."""
    return tuple(name for name, _, kind in get_process(process).record_objects if kind == "t")


def prior_weights(tops: Mapping[str, Mapping[str, np.ndarray]], parameters: PriorParameters,
                  generated: GeneratedPrior, generated_density: np.ndarray | None = None) -> np.ndarray:
    """p_theta / p_generated at each event (or draw): tops -> {"mass", "pt"} arrays of one shape.

    ``generated_density``: ``generated.density`` of these tops, for callers that weigh the same events
    under many thetas (a fit). Events whose tops are off every line shape (NaN, or a density that
    underflows) get weight 0.
    """
    masses = [np.asarray(top["mass"], np.float64) for top in tops.values()]
    ratio = np.ones(np.shape(masses[0]))
    if parameters.top_mass is not None:
        target = np.prod([top_line_shape(m, parameters.top_mass) for m in masses], axis=0)
        denominator = generated.density(masses) if generated_density is None else generated_density
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = target / denominator
    if parameters.top_pt_slope:
        factors = [np.maximum(1 + parameters.top_pt_slope * np.asarray(top["pt"], np.float64) / PT_SCALE,
                              PT_FACTOR_FLOOR) for top in tops.values()]
        ratio = ratio * np.sqrt(np.prod(factors, axis=0))
    return np.where(np.isfinite(ratio), ratio, 0.0)
