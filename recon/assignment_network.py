"""The jet-parton assignment network: shared encoder, one branch and attention head per resonance, event heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from encoders import EncoderInputs, EventEncoder
from recon.branch_encoder import BranchEncoder
from recon.errors import ReconError
from recon.event_topology import EventTopology
from recon.heads import ClassificationHead, DetectionHead, RegressionHead
from recon.mass_prior import TupleMassPrior
from recon.symmetric_attention import SymmetricTensorAttention

__all__ = ["AssignmentNetwork", "AssignmentOutput"]


class AssignmentOutput(NamedTuple):
    """Everything the assignment network predicts for a batch; the same types for every topology.

    Attributes:
        log_probs: per resonance r (topology order), (E, N, ..., N) with K_r object axes: the
            log-probability of each K_r-tuple of objects being the resonance's daughters in
            daughter order, given the resonance is present; -inf on tuples that repeat an
            object or touch padding.
        detection_logits: (E, m) logit that each resonance is reconstructable.
        regression_mean: (E, R) in the targets' units; R = 0 when the topology has none.
        regression_log_scale: (E, R) log of the predicted Gaussian sigma or Laplace b.
        classification_logits: per classification target, (E, C_c); empty when none.
        object_mask: (E, N) bool, the real objects (the concatenated sequential masks).
    """

    log_probs: tuple[Tensor, ...]
    detection_logits: Tensor
    regression_mean: Tensor
    regression_log_scale: Tensor
    classification_logits: tuple[Tensor, ...]
    object_mask: Tensor


class AssignmentNetwork(nn.Module):
    """SPANet-style jet-parton assignment for an event topology (arXiv 2106.03898, 2309.01886).

    The shared :class:`encoders.EventEncoder` embeds the event; per resonance a
    :class:`BranchEncoder` re-encodes the objects and a :class:`SymmetricTensorAttention` of
    order K (its daughter count) scores every K-tuple, symmetric under the resonance's daughter
    group. A detection head per resonance, and regression and classification heads on the
    event vector, complete the outputs. Permuting the objects permutes every output's object
    axes the same way and leaves the event-level outputs unchanged.

    Args:
        topology: the parsed event file (sources, resonances, groups, event targets).
        width: D, the encoder and branch width.
        depth: encoder transformer blocks.
        heads: attention heads (must divide D).
        dropout: dropout inside all transformer blocks.
        pair_bias: Lorentz-invariant pairwise attention bias in the encoder (needs four-momenta).
        feedforward_multiplier: the encoder's feed-forward hidden width in units of D.
        branch_depth: transformer blocks in each resonance branch.
        attention_width: D_a, the width of each symmetric attention weight (D_a**K entries).
        mass_prior: add to each resonance of two or more daughters a learned chi-square of its tuple's
            masses (:class:`recon.mass_prior.TupleMassPrior`; needs four-momenta; start it with
            :meth:`fit_mass_priors`).
        classification_classes: number of classes of each classification target in topology
            order; every target is binary when omitted.
    """

    def __init__(
        self,
        *,
        topology: EventTopology,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
        pair_bias: bool = False,
        feedforward_multiplier: int = 2,
        branch_depth: int = 1,
        attention_width: int = 32,
        mass_prior: bool = False,
        classification_classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        classes = (
            tuple(classification_classes)
            if classification_classes is not None
            else (2,) * len(topology.classifications)
        )
        if len(classes) != len(topology.classifications):
            raise ReconError(
                f"{topology.path}: {len(classes)} class counts for classification targets "
                f"{list(topology.classifications)}; expected one each"
            )
        self.topology = topology
        self.encoder = EventEncoder(
            sources=topology.sources,
            width=width,
            depth=depth,
            heads=heads,
            dropout=dropout,
            pair_bias=pair_bias,
            feedforward_multiplier=feedforward_multiplier,
        )
        self.branches = nn.ModuleList(
            BranchEncoder(width=width, depth=branch_depth, heads=heads, dropout=dropout)
            for _ in topology.resonances
        )
        self.attentions = nn.ModuleList(
            SymmetricTensorAttention(
                width=width, order=r.order, group=r.group, attention_width=attention_width
            )
            for r in topology.resonances
        )
        self.mass_priors = (
            nn.ModuleList(
                TupleMassPrior(order=r.order, group=r.group) if r.order >= 2 else nn.Identity()
                for r in topology.resonances
            )
            if mass_prior
            else None
        )
        self.detections = nn.ModuleList(DetectionHead(width=width) for _ in topology.resonances)
        self.regression = (
            RegressionHead(width=width, outputs=len(topology.regressions))
            if topology.regressions
            else None
        )
        self.classifications = nn.ModuleList(
            ClassificationHead(width=width, classes=c) for c in classes
        )

    @torch.no_grad()
    def fit_normalization(
        self, inputs: EncoderInputs, regressions: Tensor | None = None, weights: Tensor | None = None
    ) -> None:
        """Fit the input normalisation and, when given, the regression targets' (E, R) location and
        scale, weighted by the (E,) event weights when given."""
        self.encoder.fit_normalization(inputs, weights)
        if regressions is not None and self.regression is not None:
            self.regression.fit(regressions, weights)

    @torch.no_grad()
    def fit_mass_priors(self, four_momenta: Tensor, indices: Sequence[Tensor]) -> None:
        """Start each mass prior at the masses of the truth-matched daughters: (E, N, 4) four-momenta
        [GeV] and, per resonance in topology order, (E, K_r) object indices (-1 unmatched)."""
        if self.mass_priors is None:
            return
        for prior, daughters in zip(self.mass_priors, indices, strict=True):
            if isinstance(prior, TupleMassPrior):
                prior.fit(four_momenta, daughters)

    def forward(self, inputs: EncoderInputs) -> AssignmentOutput:
        """Predict assignments and event-level quantities; see :class:`encoders.EncoderInputs` for shapes."""
        encoded = self.encoder(inputs)
        priors = self._mass_priors(inputs.four_momenta)
        log_probs, detection_logits = [], []
        for branch, attention, detection, prior in zip(
            self.branches, self.attentions, self.detections, priors, strict=True
        ):
            branched = branch(encoded)
            log_probs.append(attention(branched.objects, encoded.object_mask, prior))
            detection_logits.append(detection(encoded.event, branched.summary))
        if self.regression is not None:
            mean, log_scale = self.regression(encoded.event)
        else:
            mean = log_scale = encoded.event.new_zeros(encoded.event.shape[0], 0)
        return AssignmentOutput(
            log_probs=tuple(log_probs),
            detection_logits=torch.stack(detection_logits, dim=1),
            regression_mean=mean,
            regression_log_scale=log_scale,
            classification_logits=tuple(head(encoded.event) for head in self.classifications),
            object_mask=encoded.object_mask,
        )

    def _mass_priors(self, four_momenta: Tensor | None) -> list[Tensor | None]:
        """Per resonance, the mass prior's (E, N, ..., N) logits, or None where there is none."""
        if self.mass_priors is None:
            return [None] * len(self.attentions)
        if four_momenta is None:
            raise ReconError(f"{self.topology.path}: the mass prior needs four-momenta; these inputs give none")
        return [
            prior(four_momenta) if isinstance(prior, TupleMassPrior) else None for prior in self.mass_priors
        ]
