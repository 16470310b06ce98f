"""Per-event probabilities for efficiency and fake corrections ("Analysis-ready generative
unfolding", arXiv 2509.02708).

A generative unfolding trained on detector-selected events returns, per selected event, truth
draws. Two classifiers turn that into the full distribution of the phase space a measurement
reports: the efficiency :math:`\\epsilon(x) = p(\\text{selected} \\mid x)` on truth ``x`` (parton level:
every generated event; particle level: the fiducial events), and the fiducial probability
:math:`p_\\text{fid}(y) = p(x \\in \\text{fiducial} \\mid y)` on the detector event ``y``. Each
unfolded draw then carries the weight :math:`p_\\text{fid}(y) / \\epsilon(x)`: fakes removed,
missed events restored (the classifier-based variant of that paper, its GenFoldC).
"""

from __future__ import annotations

import torch
from torch import nn

from unfold.errors import UnfoldError

__all__ = ["ProbabilityClassifier"]


class ProbabilityClassifier(nn.Module):
    """MLP estimate of a per-event probability p(label = 1 | features), trained by binary cross-entropy.

    The features are standardised by buffers (set once from the training sample by
    :meth:`set_standardisation`) and the network's logit is recalibrated as a z + b (Platt
    scaling, fitted on held-out events by :meth:`set_calibration`; arXiv 1706.04599 shows that
    networks trained to low loss come out over-confident), so a saved state dict alone rebuilds it.

    Args:
        features: F, the length of the feature vector.
        hidden: D, the width of the hidden layers.
        layers: hidden layers.
    """

    def __init__(self, features: int, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        if features < 1 or hidden < 1 or layers < 1:
            raise UnfoldError(f"acceptance classifier: features, hidden and layers must be >= 1, got {features}, {hidden}, {layers}")
        blocks: list[nn.Module] = []
        width = features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.network = nn.Sequential(*blocks, nn.Linear(width, 1))
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.register_buffer("platt", torch.tensor([1.0, 0.0]))

    def set_standardisation(self, features: torch.Tensor) -> None:
        """Mean and standard deviation of the (E, F) training features (constant columns keep scale 1)."""
        self.mean.copy_(features.mean(dim=0))
        std = features.std(dim=0)
        self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def set_calibration(self, slope: float, shift: float) -> None:
        """Platt scaling of the logit: z -> ``slope`` z + ``shift``."""
        self.platt.copy_(torch.tensor([slope, shift]))

    def raw_logit(self, features: torch.Tensor) -> torch.Tensor:
        """(..., F) features -> (...) the network's logit before the Platt scaling."""
        return self.network((features - self.mean) / self.scale).squeeze(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., F) features -> (...) calibrated logits of p(label = 1)."""
        return self.platt[0] * self.raw_logit(features) + self.platt[1]

    @torch.no_grad()
    def probability(self, features: torch.Tensor) -> torch.Tensor:
        """(..., F) features -> (...) probabilities in (0, 1)."""
        return torch.sigmoid(self(features))
