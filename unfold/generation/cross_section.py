"""The generator's cross section of the generated final state, and the sample's luminosity.

Pythia estimates the cross section of the hard process as it runs (``Info::sigmaGen`` and
``Info::sigmaErr``, in mb). Two things shape what it includes here:

* W decay channels switched off with ``onMode`` reduce it: "if some final states are excluded
  then the cross section is reduced accordingly. Such restrictions are built up recursively in
  cases of sequential decay chains" (Pythia 8 manual, Resonance Decays), so t -> W b with
  W -> q q' / e nu / mu nu only is already in ``sigmaGen``.
* The ResonanceDecayFilterHook (semi-leptonic: exactly one W -> l nu) does not reduce it: a
  vetoed decay sequence is chosen anew with the production unchanged, and "the cross section
  remains unaffected by this veto, for better or worse" (Pythia 8 manual, User Hooks,
  ``doVetoResonanceDecays``). The filter's acceptance is measured from its own call counter
  (every decay sequence it judged) against the events Pythia selected (one accepted sequence
  each) and multiplied in.

A sample of N generated (tried) events then has the equivalent integrated luminosity
L = N / sigma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from unfold.errors import UnfoldError

__all__ = ["FB_PER_MB", "CrossSection", "CrossSectionMeter", "combine"]

FB_PER_MB = 1e12  # 1 mb = 10^-27 cm^2, 1 fb = 10^-39 cm^2


@dataclass(frozen=True)
class CrossSection:
    """A cross section estimate of the generated final state.

    Attributes:
        sigma_fb: cross section [fb], decay filter included.
        error_fb: its statistical error [fb] (Pythia's sigmaErr and the filter's binomial-like
            counting error, in quadrature).
        tried: generated events it stands for (the weight when estimates are combined).
        filter_acceptance: the ResonanceDecayFilter's share of accepted decay sequences (1 without it).
    """

    sigma_fb: float
    error_fb: float
    tried: int
    filter_acceptance: float = 1.0

    @property
    def luminosity_fb_inv(self) -> float:
        """Equivalent integrated luminosity L = N_tried / sigma [fb^-1]."""
        return self.tried / self.sigma_fb

    def attributes(self) -> dict[str, float | int]:
        """The file attributes ``unfold generate`` writes (luminosity of all generated events)."""
        return {
            "cross_section_fb": self.sigma_fb,
            "cross_section_error_fb": self.error_fb,
            "cross_section_filter_acceptance": self.filter_acceptance,
            "luminosity_fb_inv": self.luminosity_fb_inv,
        }


def combine(parts: Sequence[CrossSection]) -> CrossSection:
    """Independent estimates (one per worker or shard) combined with weights N_tried,i / N_tried:
    each is a mean over its own events, so the combination is the mean over all of them;
    errors add as sum (N_i err_i)^2 / N^2."""
    if not parts:
        raise UnfoldError("cross section: no estimates to combine")
    tried = sum(p.tried for p in parts)
    if tried <= 0:
        raise UnfoldError(f"cross section: combined estimates hold {tried} tried events, expected > 0")
    sigma = sum(p.tried * p.sigma_fb for p in parts) / tried
    error = math.sqrt(sum((p.tried * p.error_fb) ** 2 for p in parts)) / tried
    acceptance = sum(p.tried * p.filter_acceptance for p in parts) / tried
    return CrossSection(sigma, error, tried, acceptance)


class CrossSectionMeter:
    """Reads a running Pythia instance's cross section (pass one to ``generate_truth``)."""

    def __init__(self) -> None:
        self._pythia = None
        self._decay_filter = None

    def follow(self, pythia, decay_filter) -> None:
        """Watch ``pythia`` and its ResonanceDecayFilterHook ``decay_filter``."""
        self._pythia, self._decay_filter = pythia, decay_filter

    def cross_section(self, tried: int) -> CrossSection:
        """The cross section so far, standing for ``tried`` generated events."""
        if self._pythia is None:
            raise UnfoldError("cross section: the meter follows no Pythia instance (pass it to generate_truth)")
        info = self._pythia.infoPython()
        sigma, error = info.sigmaGen() * FB_PER_MB, info.sigmaErr() * FB_PER_MB
        if sigma <= 0:
            raise UnfoldError(f"cross section: Pythia reports sigmaGen = {sigma} fb after {tried} events, expected > 0")
        judged, selected = self._decay_filter.returnCounter(), info.nSelected()
        acceptance = 1.0
        relative = error / sigma
        if judged > 0:  # the filter is on: each selected event ends one geometric run of its calls
            acceptance = selected / judged
            relative = math.hypot(relative, math.sqrt((1.0 - acceptance) / selected))
        return CrossSection(sigma * acceptance, sigma * acceptance * relative, tried, acceptance)
