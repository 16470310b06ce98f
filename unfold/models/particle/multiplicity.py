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
    "JetLeptonMultiplicity",
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

    def log_probs(self, event: Tensor, most: Tensor | None = None) -> Tensor:
        """(E, M_max + 1) normalised log p(M = k | event) for k = 0..M_max, from event (E, D); with
        ``most`` (E,) long, truncated to k <= most and renormalised."""
        output = self.network(event)
        if self.distribution == "categorical":
            return _truncated(torch.log_softmax(output, dim=-1), most, self.support)
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
        return _truncated(torch.log_softmax(unnormalised, dim=-1), most, self.support)

    def log_prob(self, event: Tensor, multiplicity: Tensor, most: Tensor | None = None) -> Tensor:
        """(E,) log p(M | event) of the observed multiplicities (E,) long in 0..M_max (``most`` as in
        :meth:`log_probs`)."""
        self._check_range(multiplicity)
        return self.log_probs(event, most).gather(-1, multiplicity.long().unsqueeze(-1)).squeeze(-1)

    def sample(
        self, event: Tensor, n: int, generator: torch.Generator | None = None, most: Tensor | None = None
    ) -> Tensor:
        """(E, n) long multiplicities drawn from p(M | event) for event (E, D) (``most`` as in
        :meth:`log_probs`)."""
        if n < 1:
            raise UnfoldError(f"number of draws n must be positive, got {n}")
        probs = self.log_probs(event, most).exp()
        return torch.multinomial(probs, n, replacement=True, generator=generator)

    def _check_range(self, multiplicity: Tensor) -> None:
        if multiplicity.numel() and (
            int(multiplicity.min()) < 0 or int(multiplicity.max()) > self.max_particles
        ):
            raise UnfoldError(
                f"multiplicity must lie in 0..{self.max_particles}, got "
                f"{int(multiplicity.min())}..{int(multiplicity.max())}"
            )


class JetLeptonMultiplicity(nn.Module):
    """The numbers of leptons and jets given the detector event, drawn in turn:
    p(N_lep, N_jet | event) = p(N_lep | event) p(N_jet | N_lep, event).

    A semi-leptonic event has one prompt lepton almost always, and the set denoiser cannot be
    trusted to give exactly that many: with one total multiplicity and every object's type decoded on
    its own, 17 % of the unfolded draws held no lepton or two. Drawing the lepton count first and
    telling the denoiser which slots are leptons makes every draw hold the drawn count. The lepton
    count is categorical; the jet count has the ``distribution`` of :class:`MultiplicityPredictor`,
    reads the lepton count one-hot beside the event vector and is truncated to N_jet <= M_max - N_lep.

    Args:
        condition_width, max_particles, distribution, width, depth: as :class:`MultiplicityPredictor`;
            ``max_particles`` bounds jets and leptons together.
    """

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
        self.max_particles = max_particles
        self.leptons = MultiplicityPredictor(
            condition_width=condition_width, max_particles=max_particles, width=width, depth=depth
        )
        self.jets = MultiplicityPredictor(
            condition_width=condition_width + max_particles + 1,
            max_particles=max_particles,
            distribution=distribution,
            width=width,
            depth=depth,
        )

    def log_prob(self, event: Tensor, jets: Tensor, leptons: Tensor) -> Tensor:
        """(E,) log p(N_lep, N_jet | event) of the observed counts (E,) for event (E, D)."""
        self.leptons._check_range(leptons)
        if leptons.numel() and int((jets + leptons).max()) > self.max_particles:
            raise UnfoldError(
                f"jets + leptons must be at most {self.max_particles}, got {int((jets + leptons).max())}"
            )
        most = self.max_particles - leptons.long()
        return self.leptons.log_prob(event, leptons) + self.jets.log_prob(
            self._with_leptons(event, leptons), jets, most
        )

    def sample(
        self, event: Tensor, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(jets, leptons): (E, n) long counts drawn from p(N_lep, N_jet | event) for event (E, D)."""
        leptons = self.leptons.sample(event, n, generator).flatten()
        repeated = event.repeat_interleave(n, dim=0)
        jets = self.jets.sample(
            self._with_leptons(repeated, leptons), 1, generator, most=self.max_particles - leptons
        )
        return jets.view(-1, n), leptons.view(-1, n)

    def _with_leptons(self, event: Tensor, leptons: Tensor) -> Tensor:
        one_hot = nn.functional.one_hot(leptons.long(), self.max_particles + 1).to(event.dtype)
        return torch.cat([event, one_hot], dim=-1)


def _truncated(log_probs: Tensor, most: Tensor | None, support: Tensor) -> Tensor:
    """``log_probs`` (E, K) restricted to the support values <= ``most`` (E,) and renormalised."""
    if most is None:
        return log_probs
    allowed = support <= most.unsqueeze(-1)
    return torch.log_softmax(log_probs.masked_fill(~allowed, float("-inf")), dim=-1)


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
