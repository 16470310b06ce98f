"""Fit the prior's parameters to the data at detector level: the template method on reweighted simulation.

The simulation, reweighted to a member theta of the prior family (:mod:`.top_prior`), predicts the
detector-level distribution the data would have if theta were the truth; theta is fitted by a
binned chi-square between the data and that prediction, summed over a few reconstructed
observables (the tops' masses and transverse momenta, reconstructed without truth), with the
statistical variance of both. This is the template method of the top-mass measurements (e.g. CMS,
Eur. Phys. J. C 83 (2023) 963), with the templates made by reweighting a broad-prior simulation
(several top masses, "How to Unfold Top Decays", arXiv 2501.12363) instead of one sample per mass.
The observables share their events, so the chi-square's curvature underestimates the errors: the
errors are the spread of refits on Poisson bootstrap resamples of the data and the simulation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize

from evaluation.metrics import effective_events
from unfold.errors import UnfoldError
from unfold.unbiasing.top_prior import GeneratedPrior, PriorParameters, prior_weights

__all__ = ["DEFAULT_PARAMETERS", "FREE_PARAMETERS", "DetectorSample", "PriorFit", "fit_prior"]

FREE_PARAMETERS = ("top_mass", "top_pt_slope")
# What is fitted unless asked otherwise: the top-pT slope. The top mass is not constrained by these
# observables at the sizes measured (8k events, 56k simulated at five masses: bootstrap error 2-2.5
# GeV, and applying such a fit moved a nominal sample's unfolded mass by 2 GeV), so it is opt-in.
DEFAULT_PARAMETERS = ("top_pt_slope",)
BINS = 20  # equal-population bins of the simulation per observable, plus one for "not reconstructed"
SLOPE_RANGE = (-0.5, 3.0)  # the pT factor 1 + s pT / 500 GeV stays positive up to 1 TeV for s >= -0.5
MASS_MARGIN = 4.0  # GeV beyond the simulation's lightest and heaviest top
GRID_STEPS = {"top_mass": 0.5, "top_pt_slope": 0.25}
BOOTSTRAP_SEED = 7


@dataclass(frozen=True)
class DetectorSample:
    """Reconstructed observables of a set of events and their weights; the simulation's also
    carries its truth tops and the prior it was generated with.

    Attributes:
        observables: name -> (E,) values, NaN where the event has no reconstruction of it.
        weights: (E,) event weights (ones for unweighted data).
        tops: simulation only, top -> {"mass", "pt"} (E,) at parton level.
        generated: simulation only, the prior it was generated with.
    """

    observables: Mapping[str, np.ndarray]
    weights: np.ndarray
    tops: Mapping[str, Mapping[str, np.ndarray]] | None = None
    generated: GeneratedPrior | None = None


@dataclass(frozen=True)
class PriorFit:
    """The fitted prior: parameters, bootstrap errors (0 for fixed ones), chi-square, the
    simulation's Kish effective size at the fit, and every bootstrap refit."""

    parameters: PriorParameters
    errors: dict[str, float]
    free: tuple[str, ...]
    chi2: float
    ndf: int
    effective_simulation: float
    bootstrap: tuple[PriorParameters, ...]

    def summary(self) -> str:
        parts = [f"{name} {getattr(self.parameters, name):.3f} +- {self.errors[name]:.3f}" for name in self.free]
        return f"{', '.join(parts)} (chi2 {self.chi2:.1f} / {self.ndf}, simulation n_eff {self.effective_simulation:.0f})"


class _Binned:
    """Bin indices of every event in every observable, on the simulation's equal-population bins."""

    def __init__(self, simulation: Mapping[str, np.ndarray]) -> None:
        self.edges = {}
        for name, values in simulation.items():
            finite = np.asarray(values, np.float64)[np.isfinite(values)]
            if finite.size < 2 * BINS:
                raise UnfoldError(f"simulation: {finite.size} reconstructed values of {name}; expected at least "
                                  f"{2 * BINS} to make its template")
            self.edges[name] = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))

    def indices(self, observables: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """name -> (E,) bin of each event; the last bin holds the events without a value."""
        out = {}
        for name, edges in self.edges.items():
            values = np.asarray(observables[name], np.float64)
            out[name] = np.where(np.isfinite(values), np.searchsorted(edges, values), len(edges) + 1)
        return out


def _chi2(data_bins, data_weights, simulation_bins, simulation_weights, n_bins) -> float:
    """Shape chi-square of the data against the simulation, over every observable's bins."""
    total = 0.0
    data_scale = np.sum(data_weights**2) / np.sum(data_weights)
    for name, bins in data_bins.items():
        size = n_bins[name]
        data = np.bincount(bins, data_weights, minlength=size)
        template = np.bincount(simulation_bins[name], simulation_weights, minlength=size)
        template_var = np.bincount(simulation_bins[name], simulation_weights**2, minlength=size)
        scale = data.sum() / max(template.sum(), np.finfo(float).tiny)
        expected = template * scale
        variance = expected * data_scale + template_var * scale**2
        used = variance > 0
        total += float(np.sum((data[used] - expected[used]) ** 2 / variance[used]))
    return total


def fit_prior(data: DetectorSample, simulation: DetectorSample, *, free: Sequence[str] = DEFAULT_PARAMETERS,
              resamples: int = 30) -> PriorFit:
    """Fit the free prior parameters (:data:`FREE_PARAMETERS`) to ``data`` with the reweighted ``simulation``.

    Args:
        data: the events to unfold, with their reconstructed observables and weights.
        simulation: simulation with the same observables, its truth tops and generated prior.
        free: the parameters to fit; the others stay at the simulation's: slope 0, and the top mass
            at its mean generated mass (a simulation of one mass keeps its line shape exactly; a
            broad one is narrowed to that mass, since the data have one).
        resamples: bootstrap refits for the errors (0: no errors).
    """
    if simulation.tops is None or simulation.generated is None:
        raise UnfoldError("simulation: no truth tops or generated prior; the templates need both")
    unknown = set(free) - set(FREE_PARAMETERS)
    if not free or unknown:
        raise UnfoldError(f"prior parameters {','.join(free)}: expected one or both of {', '.join(FREE_PARAMETERS)}")
    missing = set(simulation.observables) - set(data.observables)
    if missing:
        raise UnfoldError(f"data: no reconstructed {', '.join(sorted(missing))}; the simulation's templates need them")
    binned = _Binned(simulation.observables)
    n_bins = {name: len(edges) + 2 for name, edges in binned.edges.items()}
    data_bins, simulation_bins = binned.indices(data.observables), binned.indices(simulation.observables)
    generated = simulation.generated
    masses = generated.masses
    bounds = {"top_mass": (min(masses) - MASS_MARGIN, max(masses) + MASS_MARGIN), "top_pt_slope": SLOPE_RANGE}
    start = PriorParameters(top_mass=float(np.dot(masses, generated.shares)))

    axes = [np.arange(bounds[name][0], bounds[name][1] + 1e-9, GRID_STEPS[name]) for name in free]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(free))

    def parameters_of(x) -> PriorParameters:
        return replace(start, **{name: float(value) for name, value in zip(free, x, strict=True)})

    generated_density = generated.density([top["mass"] for top in simulation.tops.values()])

    def fit(data_weights, simulation_weights):
        def objective(x):
            weights = simulation_weights * prior_weights(simulation.tops, parameters_of(x), generated, generated_density)
            return _chi2(data_bins, data_weights, simulation_bins, weights, n_bins)

        initial = grid[int(np.argmin([objective(x) for x in grid]))]
        # The first simplex spans half a grid step in each parameter (scipy's default is 0.025 % of a zero
        # start), inward from a bound.
        steps = [GRID_STEPS[name] / 2 * (-1 if x + GRID_STEPS[name] / 2 > bounds[name][1] else 1)
                 for name, x in zip(free, initial, strict=True)]
        simplex = np.vstack([initial, initial + np.diag(steps)])
        result = minimize(objective, initial, method="Nelder-Mead", bounds=[bounds[name] for name in free],
                          options={"xatol": 1e-3, "fatol": 1e-3, "initial_simplex": simplex})
        return result.x, float(result.fun)

    best, chi2 = fit(data.weights, simulation.weights)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    # Each refit searches the grid again: the chi-square of a finite simulation has local minima, and a
    # refit started at the central fit stays in its valley (errors several times too small).
    refits = tuple(parameters_of(fit(data.weights * rng.poisson(1.0, len(data.weights)),
                                     simulation.weights * rng.poisson(1.0, len(simulation.weights)))[0])
                   for _ in range(resamples))
    errors = {name: float(np.std([getattr(p, name) for p in refits], ddof=1)) if len(refits) > 1 and name in free
              else 0.0 for name in FREE_PARAMETERS}
    weights = simulation.weights * prior_weights(simulation.tops, parameters_of(best), generated, generated_density)
    return PriorFit(
        parameters=parameters_of(best),
        errors=errors,
        free=tuple(free),
        chi2=chi2,
        ndf=sum(n_bins.values()) - len(n_bins) - len(free),
        effective_simulation=float(effective_events(weights)),
        bootstrap=refits,
    )
