"""Per-feature input normalisation as a SPANet event file declares it, with fitted statistics as buffers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import torch
from torch import Tensor, nn

from encoders.errors import EncoderError
from encoders.sources import Normalization

__all__ = ["FeatureNormalizer"]

# A feature whose spread is below this (e.g. a flag constant in the fit sample) is only centred.
_MIN_STD = 1e-6


class FeatureNormalizer(nn.Module):
    r"""Normalise raw detector features feature by feature.

    ``log_normalize``: :math:`x \to (\ln(1 + x) - \mu) / \sigma`; ``normalize``:
    :math:`x \to (x - \mu) / \sigma`; ``none``: identity. Inputs of ``log_normalize`` features
    are clamped at 0 first (they are magnitudes such as pT and mass; rounding can leave them
    slightly negative). :math:`\mu, \sigma` are buffers filled by :meth:`fit`, so a checkpoint
    carries the statistics of the data it was trained on (SPANet arXiv 2106.03898).

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
        values = self._log_transform(rows.double())
        mean = values.mean(0)
        std = values.std(0, correction=0)
        std = torch.where(std < _MIN_STD, torch.ones_like(std), std)
        self.mean.copy_(torch.where(self.standardised, mean, torch.zeros_like(mean)))
        self.std.copy_(torch.where(self.standardised, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        """Normalised features, same shape (..., F) as the raw ``x``."""
        return (self._log_transform(x) - self.mean) / self.std
