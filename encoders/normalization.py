"""Per-feature standardisation: the one rule every model of the project fits its statistics with,
and the input normalisation a SPANet event file declares, with fitted statistics as buffers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, get_args

import torch
from torch import Tensor, nn

from encoders.errors import EncoderError
from encoders.sources import Normalization

__all__ = ["CONSTANT_FEATURE_TOLERANCE", "FeatureNormalizer", "Standardisation", "fit_standardisation"]

# A feature whose spread is at most this fraction of its size, |mean| + 1 (a flag constant in the
# fit sample, the neutrino's zero mass), is only centred: dividing by its spread would blow
# rounding up to O(1) values.
CONSTANT_FEATURE_TOLERANCE = 1e-6


class Standardisation(NamedTuple):
    """Per-feature location and scale, (F,) float64 each: standardised x = (x - mean) / scale."""

    mean: Tensor
    scale: Tensor


def fit_standardisation(values: Tensor, weights: Tensor | None = None) -> Standardisation:
    r"""Mean and population standard deviation of each feature of (R, F) rows, in float64.

    Non-finite entries (NaN for a missing target) are skipped feature by feature; a feature with
    no finite entry gets (0, 1). One rule for constant features everywhere: a spread
    :math:`\sigma \le 10^{-6} (|\mu| + 1)` gives scale 1, so the feature is only centred.

    With (R,) row weights w (event weights, negative ones from NLO generators allowed) the mean
    and variance are the weighted ones, sum w x / sum w and sum w (x - mu)^2 / sum w, so a row of
    weight 2 counts as two copies. Where signed weights make the total weight or the variance of
    a feature non-positive (the weighted moments are then meaningless), that feature falls back
    to the moments weighted by |w|, which equal the weighted ones for non-negative weights.

    Raises:
        EncoderError: If ``values`` is not two-dimensional or ``weights`` is not (R,).
    """
    values = torch.as_tensor(values).double()
    if values.dim() != 2:
        raise EncoderError(f"standardisation: values have shape {tuple(values.shape)}; expected (R, F)")
    finite = torch.isfinite(values)
    if weights is None:
        mean, variance = _moments(values, finite.double())
    else:
        weights = torch.as_tensor(weights).double()
        if weights.shape != values.shape[:1]:
            raise EncoderError(f"standardisation: weights have shape {tuple(weights.shape)}; expected ({values.shape[0]},)")
        signed = torch.where(finite, weights[:, None], 0.0)
        mean, variance = _moments(values, signed)
        absolute_mean, absolute_variance = _moments(values, signed.abs())
        usable = (signed.sum(0) > 0) & (variance >= 0)
        mean = torch.where(usable, mean, absolute_mean)
        variance = torch.where(usable, variance, absolute_variance)
    spread = variance.clamp_min(0.0).sqrt()
    constant = spread <= CONSTANT_FEATURE_TOLERANCE * (mean.abs() + 1.0)
    return Standardisation(mean, torch.where(constant, torch.ones_like(spread), spread))


def _moments(values: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """(F,) weighted mean and variance of (R, F) ``values`` with (R, F) ``weights`` (zero where
    a value is missing); (0, 1) for a feature of zero total weight."""
    total = weights.sum(0)
    present = total != 0
    safe = torch.where(present, total, 1.0)
    mean = torch.where(weights != 0, values, 0.0).mul(weights).sum(0) / safe
    variance = (torch.where(weights != 0, values - mean, 0.0) ** 2).mul(weights).sum(0) / safe
    return torch.where(present, mean, 0.0), torch.where(present, variance, 1.0)


class FeatureNormalizer(nn.Module):
    r"""Normalise raw detector features feature by feature.

    ``log_normalize``: :math:`x \to (\ln(1 + x) - \mu) / \sigma`; ``normalize``:
    :math:`x \to (x - \mu) / \sigma`; ``none``: identity. Inputs of ``log_normalize`` features
    are clamped at 0 first (they are magnitudes such as pT and mass; rounding can leave them
    slightly negative). :math:`\mu, \sigma` are buffers filled by :meth:`fit` (with
    :func:`fit_standardisation`), so a checkpoint carries the statistics of the data it was
    trained on (SPANet arXiv 2106.03898).

    Args:
        normalizations: one option per feature, F in all, in the order of the feature axis.
    """

    mean: Tensor
    std: Tensor
    log_features: Tensor
    standardised: Tensor

    def __init__(self, *, normalizations: Sequence[Normalization]) -> None:
        super().__init__()
        choices = get_args(Normalization)
        for position, option in enumerate(normalizations):
            if option not in choices:
                raise EncoderError(
                    f"feature {position}: normalisation {option!r}; expected one of {choices}"
                )
        self.normalizations = tuple(normalizations)
        count = len(self.normalizations)
        self.register_buffer("mean", torch.zeros(count))
        self.register_buffer("std", torch.ones(count))
        self.register_buffer(
            "log_features",
            torch.tensor([n == "log_normalize" for n in self.normalizations]),
            persistent=False,
        )
        self.register_buffer(
            "standardised",
            torch.tensor([n != "none" for n in self.normalizations]),
            persistent=False,
        )

    @property
    def features(self) -> int:
        """F, the number of features."""
        return len(self.normalizations)

    def _log_transform(self, x: Tensor) -> Tensor:
        return torch.where(self.log_features, torch.log1p(x.clamp_min(0.0)), x)

    @torch.no_grad()
    def fit(self, x: Tensor, mask: Tensor | None = None, weights: Tensor | None = None) -> None:
        """Set mean and std from data, counting only unmasked objects.

        Args:
            x: raw features (..., F), e.g. (E, N, F) objects or (E, F) event vectors.
            mask: (...) bool, True for real objects; all rows count when omitted.
            weights: (E,) event weights, carried to every object of the event
                (:func:`fit_standardisation`); None for ones.
        """
        if x.shape[-1] != self.features:
            raise EncoderError(
                f"fit: features have {x.shape[-1]} columns; expected {self.features}"
            )
        rows = x.reshape(-1, self.features)
        if weights is not None:
            weights = torch.as_tensor(weights, device=x.device).double()
            if weights.shape != x.shape[:1]:
                raise EncoderError(f"fit: weights have shape {tuple(weights.shape)}; expected ({x.shape[0]},)")
            weights = weights.reshape(-1, *([1] * (x.dim() - 2))).expand(x.shape[:-1]).reshape(-1)
        if mask is not None:
            if mask.shape != x.shape[:-1]:
                raise EncoderError(
                    f"fit: mask has shape {tuple(mask.shape)}; expected {tuple(x.shape[:-1])}"
                )
            rows = rows[mask.reshape(-1)]
            weights = None if weights is None else weights[mask.reshape(-1)]
        if rows.shape[0] == 0:
            raise EncoderError("fit: no unmasked objects to take statistics from")
        if not torch.isfinite(rows).all():
            raise EncoderError("fit: features contain NaN or inf in unmasked objects")
        mean, std = fit_standardisation(self._log_transform(rows.double()), weights)
        self.mean.copy_(torch.where(self.standardised, mean, torch.zeros_like(mean)))
        self.std.copy_(torch.where(self.standardised, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        """Normalised features, same shape (..., F) as the raw ``x``."""
        return (self._log_transform(x) - self.mean) / self.std
