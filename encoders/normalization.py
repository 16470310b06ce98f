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


def fit_standardisation(values: Tensor) -> Standardisation:
    r"""Mean and population standard deviation of each feature of (R, F) rows, in float64.

    Non-finite entries (NaN for a missing target) are skipped feature by feature; a feature with
    no finite entry gets (0, 1). One rule for constant features everywhere: a spread
    :math:`\sigma \le 10^{-6} (|\mu| + 1)` gives scale 1, so the feature is only centred.

    Raises:
        EncoderError: If ``values`` is not two-dimensional.
    """
    values = torch.as_tensor(values).double()
    if values.dim() != 2:
        raise EncoderError(f"standardisation: values have shape {tuple(values.shape)}; expected (R, F)")
    finite = torch.isfinite(values)
    count = finite.sum(0).clamp_min(1)
    mean = torch.where(finite, values, 0.0).sum(0) / count
    spread = ((torch.where(finite, values - mean, 0.0) ** 2).sum(0) / count).sqrt()
    constant = spread <= CONSTANT_FEATURE_TOLERANCE * (mean.abs() + 1.0)
    return Standardisation(mean, torch.where(constant, torch.ones_like(spread), spread))


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
    def fit(self, x: Tensor, mask: Tensor | None = None) -> None:
        """Set mean and std from data, counting only unmasked objects.

        Args:
            x: raw features (..., F), e.g. (E, N, F) objects or (E, F) event vectors.
            mask: (...) bool, True for real objects; all rows count when omitted.
        """
        if x.shape[-1] != self.features:
            raise EncoderError(
                f"fit: features have {x.shape[-1]} columns; expected {self.features}"
            )
        rows = x.reshape(-1, self.features)
        if mask is not None:
            if mask.shape != x.shape[:-1]:
                raise EncoderError(
                    f"fit: mask has shape {tuple(mask.shape)}; expected {tuple(x.shape[:-1])}"
                )
            rows = rows[mask.reshape(-1)]
        if rows.shape[0] == 0:
            raise EncoderError("fit: no unmasked objects to take statistics from")
        if not torch.isfinite(rows).all():
            raise EncoderError("fit: features contain NaN or inf in unmasked objects")
        mean, std = fit_standardisation(self._log_transform(rows.double()))
        self.mean.copy_(torch.where(self.standardised, mean, torch.zeros_like(mean)))
        self.std.copy_(torch.where(self.standardised, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        """Normalised features, same shape (..., F) as the raw ``x``."""
        return (self._log_transform(x) - self.mean) / self.std
