"""Event-level heads: resonance detection, regression with an uncertainty, classification."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from encoders.normalization import fit_standardisation
from recon.errors import ReconError

__all__ = ["ClassificationHead", "DetectionHead", "RegressionHead", "RegressionPrediction"]

def _mlp(inputs: int, width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, outputs))


class DetectionHead(nn.Module):
    """Logit that a resonance is reconstructable (all its daughters among the objects), SPANet arXiv 2309.01886.

    Args:
        width: D; the head reads the event vector and the resonance branch's summary.
    """

    def __init__(self, *, width: int) -> None:
        super().__init__()
        self.mlp = _mlp(2 * width, width, 1)

    def forward(self, event: Tensor, branch_summary: Tensor) -> Tensor:
        """(E,) detection logits from the event vector (E, D) and branch summary (E, D)."""
        return self.mlp(torch.cat([event, branch_summary], dim=-1)).squeeze(-1)


class RegressionPrediction(NamedTuple):
    """Mean and log-scale of each regression target, in the targets' own units.

    Attributes:
        mean: (E, R).
        log_scale: (E, R), log of the Gaussian sigma or Laplace b.
    """

    mean: Tensor
    log_scale: Tensor


class RegressionHead(nn.Module):
    r"""Predict R event-level quantities (e.g. neutrino pz) with a per-event uncertainty.

    The MLP works in standardised units; buffers ``location`` and ``scale`` (fitted on training
    targets by :meth:`fit`, carried by checkpoints) map back: mean = location + scale * mu and
    log_scale = ln(scale) + s.

    Args:
        width: D, the event vector's width.
        outputs: R, at least 1.
    """

    location: Tensor
    scale: Tensor

    def __init__(self, *, width: int, outputs: int) -> None:
        super().__init__()
        if outputs < 1:
            raise ReconError(f"a regression head needs at least one target, got {outputs}")
        self.mlp = _mlp(width, width, 2 * outputs)
        self.register_buffer("location", torch.zeros(outputs))
        self.register_buffer("scale", torch.ones(outputs))

    @torch.no_grad()
    def fit(self, targets: Tensor, weights: Tensor | None = None) -> None:
        """Set location and scale from training targets (E, R), weighted by the (E,) event weights
        when given; NaN entries (missing) are skipped."""
        if targets.dim() != 2 or targets.shape[1] != self.location.shape[0]:
            raise ReconError(
                f"regression targets {tuple(targets.shape)}; expected (E, {self.location.shape[0]})"
            )
        location, scale = fit_standardisation(targets, weights)
        self.location.copy_(location)
        self.scale.copy_(scale)

    def forward(self, event: Tensor) -> RegressionPrediction:
        """Mean and log-scale (E, R) from the event vector (E, D)."""
        mu, log_sigma = self.mlp(event).chunk(2, dim=-1)
        return RegressionPrediction(
            mean=self.location + self.scale * mu, log_scale=log_sigma + torch.log(self.scale)
        )


class ClassificationHead(nn.Module):
    """Class logits of one event-level classification target (e.g. signal vs background).

    Args:
        width: D.
        classes: C, at least 2.
    """

    def __init__(self, *, width: int, classes: int) -> None:
        super().__init__()
        if classes < 2:
            raise ReconError(f"a classification head needs at least 2 classes, got {classes}")
        self.mlp = _mlp(width, width, classes)

    def forward(self, event: Tensor) -> Tensor:
        """(E, C) logits from the event vector (E, D)."""
        return self.mlp(event)
