"""Several assignment networks trained apart, predicting as one: the mixture of their distributions.

Networks trained from different seeds on a small sample make different mistakes; averaging
their predictions lowers the variance that limits each of them, the classic ensemble of
independently trained networks (Lakshminarayanan et al., arXiv 1612.01474). Each resonance's
tuple distribution is the members' mean probability, so a tuple one member rules out keeps the
others' weight, and the greedy decoding reads the mixture as it reads one network's output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from encoders import EncoderInputs
from recon.assignment_network import AssignmentNetwork, AssignmentOutput
from recon.errors import ReconError

__all__ = ["AssignmentEnsemble", "mix_outputs"]

# Variance of the regression head's distribution in units of its squared scale (sigma^2, b^2).
_VARIANCE_PER_SQUARED_SCALE = {"gaussian": 1.0, "laplacian": 2.0}


def _mean(values: Sequence[Tensor]) -> Tensor:
    return torch.stack(list(values)).mean(0)


def mix_outputs(outputs: Sequence[AssignmentOutput], regression_distribution: str = "gaussian") -> AssignmentOutput:
    """The mixture of M networks' predictions for the same events.

    Tuple log-probabilities: :math:`\\log \\frac{1}{M} \\sum_i p_i` (``-inf`` only where every member
    has it). Detection and classification: the members' mean probability, as logits. Regression: the
    mixture's mean, and the scale of the ``regression_distribution`` (``gaussian`` sigma, ``laplacian``
    b, whose variance is 2 b^2) with the mixture's variance: the mean variance plus the variance of the
    means (the law of total variance).
    """
    if not outputs:
        raise ReconError("an ensemble needs at least one member's output")
    if regression_distribution not in _VARIANCE_PER_SQUARED_SCALE:
        raise ReconError(f"unknown regression distribution {regression_distribution!r}; expected one of "
                         f"{list(_VARIANCE_PER_SQUARED_SCALE)}")
    members = len(outputs)
    log_probs = tuple(
        torch.logsumexp(torch.stack(tuples), 0) - math.log(members) for tuples in zip(*(o.log_probs for o in outputs), strict=True)
    )
    detection = _mean([o.detection_logits.sigmoid() for o in outputs]).logit(eps=1e-7)
    classification = tuple(
        _mean([logits.softmax(-1) for logits in member]).clamp_min(1e-12).log()
        for member in zip(*(o.classification_logits for o in outputs), strict=True)
    )
    factor = _VARIANCE_PER_SQUARED_SCALE[regression_distribution]
    means = torch.stack([o.regression_mean for o in outputs])
    squared_scale = (2 * torch.stack([o.regression_log_scale for o in outputs])).exp().mean(0)
    squared_scale = squared_scale + means.var(0, unbiased=False) / factor  # the mixture's, in the family's units
    return AssignmentOutput(
        log_probs=log_probs,
        detection_logits=detection,
        regression_mean=means.mean(0),
        regression_log_scale=0.5 * squared_scale.log(),
        classification_logits=classification,
        object_mask=outputs[0].object_mask,
    )


class AssignmentEnsemble(nn.Module):
    """M assignment networks of one event topology whose forward is :func:`mix_outputs` of theirs.

    Raises:
        ReconError: If there are no networks or their topologies differ (resonances or inputs).
    """

    def __init__(self, networks: Sequence[AssignmentNetwork], regression_distribution: str = "gaussian") -> None:
        super().__init__()
        if not networks:
            raise ReconError("an ensemble needs at least one assignment network")
        first = networks[0].topology
        for index, network in enumerate(networks[1:], start=2):
            if network.topology.resonances != first.resonances or network.topology.sources != first.sources:
                raise ReconError(
                    f"ensemble member {index} predicts {list(network.topology.resonance_names)} from other inputs "
                    f"than member 1 ({list(first.resonance_names)}); every member needs the same event file"
                )
        self.networks = nn.ModuleList(networks)
        self.topology = first
        self.regression_distribution = regression_distribution

    def forward(self, inputs: EncoderInputs) -> AssignmentOutput:
        return mix_outputs([network(inputs) for network in self.networks], self.regression_distribution)
