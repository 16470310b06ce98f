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

The top mass is fitted on morphed templates (:class:`_MassMorphing`): each bin's share is a quadratic
in the mass, regressed over every simulated event. Reweighting the simulation to a 1.4 GeV wide line
shape at each trial mass instead leaves a few thousand events to each template, whose number jumps
with the distance to the nearest generated mass; the chi-square then prefers the noisy templates in
the gaps between generated masses (with a simulation at 170, 173 and 176 GeV its value jumped by tens
at each generated mass, and the bootstrap errors on 4-8k events were 0.6-2.8 GeV; morphed, with five
masses, 0.6-0.8 GeV on 8k events).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy.optimize import minimize

from evaluation.metrics import effective_events
from unfold.errors import UnfoldError
from unfold.unbiasing.top_prior import GeneratedPrior, PriorParameters, prior_weights

__all__ = ["FREE_PARAMETERS", "DetectorSample", "PriorFit", "default_parameters", "fit_prior"]

FREE_PARAMETERS = ("top_mass", "top_pt_slope")
BINS = 20  # equal-population bins of the simulation per observable, plus one for "not reconstructed"
SLOPE_RANGE = (-0.5, 3.0)  # the pT factor 1 + s pT / 500 GeV stays positive up to 1 TeV for s >= -0.5
MASS_MARGIN = 4.0  # GeV beyond the simulation's lightest and heaviest top
GRID_STEPS = {"top_mass": 0.5, "top_pt_slope": 0.25}
BOOTSTRAP_SEED = 7

# name -> (shares, variances of the shares) of the bins of one observable: a template.
Templates = dict[str, tuple[np.ndarray, np.ndarray]]


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


def _weighted_templates(simulation_bins: Mapping[str, np.ndarray], weights: np.ndarray,
                        n_bins: Mapping[str, int]) -> Templates:
    """The reweighted simulation's share of every bin, and the share's statistical variance."""
    total = max(float(np.sum(weights)), np.finfo(float).tiny)
    return {name: (np.bincount(bins, weights, minlength=n_bins[name]) / total,
                   np.bincount(bins, weights**2, minlength=n_bins[name]) / total**2)
            for name, bins in simulation_bins.items()}


class _MassMorphing:
    """Templates as smooth functions of the top mass: every bin's share of the simulation regressed on
    a quadratic in the event's mean true top mass, by weighted least squares over all simulated events.

    With the design X = (1, m, m^2) common to every bin, the share of bin b at the pole M is
    x(M)^T (X^T W X)^-1 X^T W 1_b (the shares sum to one at every M), with the sandwich variance
    p_b (1 - p_b) x^T (X^T W X)^-1 (X^T W^2 X) (X^T W X)^-1 x. A sample generated at the pole M has
    mean true masses spread symmetrically about M (each top's Breit-Wigner), so the regression at M
    is its template up to a second-order term nearly constant in M. This is the binned form of the
    template method's mass-dependent template parameters (ATLAS, Eur. Phys. J. C 75 (2015) 330).
    """

    def __init__(self, simulation_bins: Mapping[str, np.ndarray], n_bins: Mapping[str, int],
                 tops: Mapping[str, Mapping[str, np.ndarray]], bounds: tuple[float, float]) -> None:
        self.centre = 0.5 * (bounds[0] + bounds[1])
        mean_mass = np.mean([np.asarray(top["mass"], np.float64) for top in tops.values()], axis=0)
        self.design = self._row(np.clip(np.nan_to_num(mean_mass, nan=self.centre), *bounds))
        self.simulation_bins, self.n_bins = simulation_bins, n_bins

    def _row(self, mass: np.ndarray | float) -> np.ndarray:
        """(..., 3) the design (1, m, m^2) with m from the centre of the mass range."""
        x = np.asarray(mass, np.float64) - self.centre
        return np.stack([np.ones_like(x), x, x**2], axis=-1)

    def regress(self, weights: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per observable the (bins, 3) coefficients, and the coefficients' (3, 3) covariance factor."""
        weighted = self.design * weights[:, None]
        inverse = np.linalg.inv(self.design.T @ weighted)
        covariance = inverse @ (weighted.T @ weighted) @ inverse
        coefficients = {name: np.stack([np.bincount(bins, weighted[:, k], minlength=self.n_bins[name])
                                        for k in range(3)], axis=1) @ inverse
                        for name, bins in self.simulation_bins.items()}
        return coefficients, covariance

    def templates(self, regression: tuple[dict[str, np.ndarray], np.ndarray], top_mass: float) -> Templates:
        """Every observable's template at the pole ``top_mass`` from a :meth:`regress` result."""
        coefficients, covariance = regression
        row = self._row(top_mass)
        spread = float(row @ covariance @ row)
        out = {}
        for name, beta in coefficients.items():
            shares = np.clip(beta @ row, np.finfo(float).tiny, None)
            shares /= shares.sum()
            out[name] = (shares, shares * (1 - shares) * spread)
        return out


def _chi2(data_bins: Mapping[str, np.ndarray], data_weights: np.ndarray, templates: Templates) -> float:
    """Shape chi-square of the data against the templates, over every observable's bins, with the
    statistical variance of both."""
    total = 0.0
    n_data = float(np.sum(data_weights))
    data_scale = np.sum(data_weights**2) / n_data
    for name, bins in data_bins.items():
        shares, share_variances = templates[name]
        data = np.bincount(bins, data_weights, minlength=shares.size)
        expected = n_data * shares
        variance = expected * data_scale + n_data**2 * share_variances
        used = variance > 0
        total += float(np.sum((data[used] - expected[used]) ** 2 / variance[used]))
    return total


def default_parameters(generated: GeneratedPrior) -> tuple[str, ...]:
    """What is fitted unless asked otherwise: the top-pT slope, and the top mass where the simulation
    was generated at several (a broad prior; one mass cannot morph its templates)."""
    return FREE_PARAMETERS if len(generated.masses) > 1 else ("top_pt_slope",)


def fit_prior(data: DetectorSample, simulation: DetectorSample, *, free: Sequence[str] | None = None,
              resamples: int = 30) -> PriorFit:
    """Fit the free prior parameters (:data:`FREE_PARAMETERS`) to ``data`` with the reweighted ``simulation``.

    Args:
        data: the events to unfold, with their reconstructed observables and weights.
        simulation: simulation with the same observables, its truth tops and generated prior.
        free: the parameters to fit (default :func:`default_parameters`); the others stay at the
            simulation's: slope 0, and the top mass at its mean generated mass (a simulation of one mass
            keeps its line shape exactly; a broad one is narrowed to that mass, since the data have one).
            The top mass needs a simulation generated at several masses.
        resamples: bootstrap refits for the errors (0: no errors).
    """
    if simulation.tops is None or simulation.generated is None:
        raise UnfoldError("simulation: no truth tops or generated prior; the templates need both")
    generated = simulation.generated
    free = tuple(default_parameters(generated) if free is None else free)
    unknown = set(free) - set(FREE_PARAMETERS)
    if not free or unknown:
        raise UnfoldError(f"prior parameters {','.join(free)}: expected one or both of {', '.join(FREE_PARAMETERS)}")
    masses = generated.masses
    if "top_mass" in free and len(masses) < 2:
        raise UnfoldError(f"simulation: generated at one top mass ({masses[0]} GeV); fitting the top mass needs several "
                          "(`unfold generate --pythia '6:m0 = M'` at masses about a width apart, then `unfold merge`)")
    missing = set(simulation.observables) - set(data.observables)
    if missing:
        raise UnfoldError(f"data: no reconstructed {', '.join(sorted(missing))}; the simulation's templates need them")
    binned = _Binned(simulation.observables)
    n_bins = {name: len(edges) + 2 for name, edges in binned.edges.items()}
    data_bins, simulation_bins = binned.indices(data.observables), binned.indices(simulation.observables)
    bounds = {"top_mass": (min(masses) - MASS_MARGIN, max(masses) + MASS_MARGIN), "top_pt_slope": SLOPE_RANGE}
    start = PriorParameters(top_mass=float(np.dot(masses, generated.shares)))
    morphing = (_MassMorphing(simulation_bins, n_bins, simulation.tops, bounds["top_mass"])
                if "top_mass" in free else None)

    axes = [np.arange(bounds[name][0], bounds[name][1] + 1e-9, GRID_STEPS[name]) for name in free]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(free))

    def parameters_of(x) -> PriorParameters:
        return replace(start, **{name: float(value) for name, value in zip(free, x, strict=True)})

    generated_density = generated.density([top["mass"] for top in simulation.tops.values()])

    def fit(data_weights, simulation_weights):
        @lru_cache(maxsize=None)
        def regression(slope: float):  # the morphing's coefficients at one slope (each grid slope once)
            return morphing.regress(simulation_weights * prior_weights(
                simulation.tops, PriorParameters(top_pt_slope=slope), generated))

        def objective(x):
            parameters = parameters_of(x)
            if morphing is not None:
                templates = morphing.templates(regression(parameters.top_pt_slope), parameters.top_mass)
            else:
                weights = simulation_weights * prior_weights(simulation.tops, parameters, generated, generated_density)
                templates = _weighted_templates(simulation_bins, weights, n_bins)
            return _chi2(data_bins, data_weights, templates)

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
        free=free,
        chi2=chi2,
        ndf=sum(n_bins.values()) - len(n_bins) - len(free),
        effective_simulation=float(effective_events(weights)),
        bootstrap=refits,
    )
