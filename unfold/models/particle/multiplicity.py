"""The particle multiplicity predictor p(M | detector event) and its calibration measures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import scipy.stats
import torch
from torch import Tensor, nn

from unfold.errors import UnfoldError
from unfold.models.particle.layers import mlp

__all__ = [
    "MULTIPLICITY_DISTRIBUTIONS",
    "MultiplicityCalibration",
    "MultiplicityDistribution",
    "MultiplicityPredictor",
    "empirical_log_probs",
    "multiplicity_calibration",
]

MultiplicityDistribution = Literal["categorical", "negative-binomial"]
MULTIPLICITY_DISTRIBUTIONS: tuple[str, ...] = get_args(MultiplicityDistribution)


class MultiplicityPredictor(nn.Module):
    """Distribution of the number M of particle-level objects given the detector event vector.

    Both heads give a distribution on the support 0..M_max:

    * ``"categorical"``: free logits over the M_max + 1 values.
    * ``"negative-binomial"``: mean mu and dispersion r from the event vector,
      p(M) proportional to Gamma(M + r) / (Gamma(r) M!) (r / (r + mu))^r (mu / (r + mu))^M,
      truncated to 0..M_max and renormalised. The published code (arXiv 2404.14332) fits a
      Gamma or Negative Binomial; the truncation keeps every draw within the M_max slots.

    Args:
        condition_width: width D of the encoder's event vector.
        max_particles: largest multiplicity M_max.
        distribution: ``"categorical"`` or ``"negative-binomial"``.
        width: width of the MLP.
        depth: hidden layers of the MLP.
    """

    support: Tensor

    def __init__(
        self,
        *,
        condition_width: int,
        max_particles: int = 16,
        distribution: MultiplicityDistribution = "categorical",
        width: int = 128,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if distribution not in MULTIPLICITY_DISTRIBUTIONS:
            raise UnfoldError(
                f"unknown multiplicity distribution {distribution!r}; "
                f"choose one of {', '.join(MULTIPLICITY_DISTRIBUTIONS)}"
            )
        if max_particles < 1:
            raise UnfoldError(f"max_particles must be at least 1, got {max_particles}")
        self.max_particles = max_particles
        self.distribution = distribution
        outputs = max_particles + 1 if distribution == "categorical" else 2
        self.network = mlp(condition_width, width, outputs, depth)
        self.register_buffer("support", torch.arange(max_particles + 1), persistent=False)

    def log_probs(self, event: Tensor) -> Tensor:
        """(E, M_max + 1) normalised log p(M = k | event) for k = 0..M_max, from event (E, D)."""
        output = self.network(event)
        if self.distribution == "categorical":
            return torch.log_softmax(output, dim=-1)
        mean = nn.functional.softplus(output[..., :1]) + 1e-4
        dispersion = nn.functional.softplus(output[..., 1:]) + 1e-4
        k = self.support.to(event.dtype)
        log_total = torch.log(mean + dispersion)
        unnormalised = (
            torch.lgamma(k + dispersion)
            - torch.lgamma(dispersion)
            - torch.lgamma(k + 1)
            + dispersion * (torch.log(dispersion) - log_total)
            + k * (torch.log(mean) - log_total)
        )
        return torch.log_softmax(unnormalised, dim=-1)

    def log_prob(self, event: Tensor, multiplicity: Tensor) -> Tensor:
        """(E,) log p(M | event) of the observed multiplicities (E,) long in 0..M_max."""
        self._check_range(multiplicity)
        return self.log_probs(event).gather(-1, multiplicity.long().unsqueeze(-1)).squeeze(-1)

    def sample(self, event: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(E, n) long multiplicities drawn from p(M | event) for event (E, D)."""
        if n < 1:
            raise UnfoldError(f"number of draws n must be positive, got {n}")
        probs = self.log_probs(event).exp()
        return torch.multinomial(probs, n, replacement=True, generator=generator)

    def _check_range(self, multiplicity: Tensor) -> None:
        if multiplicity.numel() and (
            int(multiplicity.min()) < 0 or int(multiplicity.max()) > self.max_particles
        ):
            raise UnfoldError(
                f"multiplicity must lie in 0..{self.max_particles}, got "
                f"{int(multiplicity.min())}..{int(multiplicity.max())}"
            )


def empirical_log_probs(multiplicity: Tensor, max_particles: int) -> Tensor:
    """(M_max + 1,) log frequencies of the multiplicities (E,): the training-set marginal.

    Counts get a pseudo-count of 0.5 so that values unseen in training keep a finite NLL.
    """
    counts = torch.bincount(multiplicity.long(), minlength=max_particles + 1).double() + 0.5
    return (counts / counts.sum()).log().float()


@dataclass(frozen=True)
class MultiplicityCalibration:
    """Scores of a predicted multiplicity distribution against observed multiplicities.

    Attributes:
        nll: mean negative log-likelihood [nats]; lower is better.
        ranked_probability_score: mean sum_k (F(k) - 1[M <= k])^2, a proper score for ordered
            outcomes; lower is better.
        pit_ks: Kolmogorov-Smirnov distance of the randomised probability integral transform
            u = F(M - 1) + v p(M), v ~ U(0, 1), from U(0, 1); zero for a calibrated predictor.
        frequency_error: max over k of |mean predicted p(k) - observed frequency of k|.
    """

    nll: float
    ranked_probability_score: float
    pit_ks: float
    frequency_error: float


def multiplicity_calibration(
    log_probs: Tensor, multiplicity: Tensor, generator: torch.Generator | None = None
) -> MultiplicityCalibration:
    """Calibration and sharpness of predicted multiplicity distributions.

    Args:
        log_probs: (E, M_max + 1) or (M_max + 1,) predicted log p(M = k); a 1-D input is one
            distribution for every event (e.g. :func:`empirical_log_probs`).
        multiplicity: (E,) long observed multiplicities.
        generator: source of the PIT randomisation.
    """
    multiplicity = multiplicity.long()
    if log_probs.dim() == 1:
        log_probs = log_probs.expand(len(multiplicity), -1)
    if log_probs.shape[0] != len(multiplicity):
        raise UnfoldError(
            f"log_probs has {log_probs.shape[0]} events, multiplicity has {len(multiplicity)}"
        )
    if (
        len(multiplicity) == 0
        or int(multiplicity.min()) < 0
        or (int(multiplicity.max()) >= log_probs.shape[-1])
    ):
        raise UnfoldError(
            f"multiplicity must be a non-empty tensor in 0..{log_probs.shape[-1] - 1}"
        )
    log_probs = log_probs.detach().double()
    probs = log_probs.exp()
    cdf = probs.cumsum(dim=-1)
    observed = multiplicity.unsqueeze(-1)
    nll = -log_probs.gather(-1, observed).mean()
    steps = (torch.arange(probs.shape[-1], device=probs.device) >= observed).double()
    rps = ((cdf - steps) ** 2).sum(dim=-1).mean()
    below = (cdf - probs).gather(-1, observed).squeeze(-1)
    at = probs.gather(-1, observed).squeeze(-1)
    uniform = torch.rand(len(multiplicity), generator=generator, dtype=torch.float64)
    pit = below + uniform.to(probs.device) * at
    pit_ks = scipy.stats.kstest(pit.cpu().numpy(), "uniform").statistic
    counts = torch.bincount(multiplicity, minlength=probs.shape[-1]).double()
    frequency_error = (probs.mean(dim=0) - counts / len(multiplicity)).abs().max()
    return MultiplicityCalibration(
        nll=float(nll),
        ranked_probability_score=float(rps),
        pit_ks=float(pit_ks),
        frequency_error=float(frequency_error),
    )
