"""The assignment network's loss: symmetric cross-entropy with a minimum over the event permutation group."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.assignment_network import AssignmentOutput
from recon.errors import ReconError
from recon.event_topology import EventTopology

__all__ = [
    "AssignmentLoss",
    "AssignmentTargets",
    "RegressionDistribution",
    "assignment_loss",
    "pattern_balance_weights",
    "regression_nll",
    "resonance_presence",
]

RegressionDistribution = Literal["gaussian", "laplacian"]


class AssignmentTargets(NamedTuple):
    """Training targets in SPANet's layout (``TARGETS/``, ``REGRESSIONS/``, ``CLASSIFICATIONS/``).

    Attributes:
        indices: per resonance (topology order), (E, K_r) long indices into the concatenated
            objects, daughters in event-file order; -1 where a daughter is not matched.
        regressions: (E, R) float, NaN where missing; None to skip the regression term.
        classifications: (E, C) long class labels, -1 where missing; None to skip.
        resonance_masks: per resonance (E,) bool; a resonance counts as present only where this
            is True and all its daughters are matched. None: matching alone decides.
        resonance_weights: per resonance (E,) float (``TARGETS/<particle>/WEIGHT``) scaling its
            assignment term; None for ones.
        event_weights: (E,) float scaling every term of an event (``--weights``; negative
            weights allowed); None for ones.
    """

    indices: tuple[Tensor, ...]
    regressions: Tensor | None = None
    classifications: Tensor | None = None
    resonance_masks: tuple[Tensor, ...] | None = None
    resonance_weights: tuple[Tensor, ...] | None = None
    event_weights: Tensor | None = None


@dataclass(frozen=True)
class AssignmentLoss:
    """The loss terms of one batch (scalars); ``total`` is the weighted sum that is minimised.

    Attributes:
        total: assignment + weighted detection, regression and classification terms.
        assignment: cross-entropy of present resonances, per event with at least one.
        detection: binary cross-entropy of resonance presence, per event and resonance.
        regression: negative log-likelihood per non-missing regression value (0 without any).
        classification: cross-entropy per labelled event, summed over classification targets.
    """

    total: Tensor
    assignment: Tensor
    detection: Tensor
    regression: Tensor
    classification: Tensor


def resonance_presence(indices: Sequence[Tensor], masks: Sequence[Tensor] | None = None) -> Tensor:
    """(E, m) bool: every daughter matched (and the optional per-resonance mask set)."""
    present = torch.stack([(t >= 0).all(dim=1) for t in indices], dim=1)
    if masks is not None:
        present = present & torch.stack(list(masks), dim=1).bool()
    return present


def _pattern_codes(present: Tensor) -> Tensor:
    """Integer code sum_i present_i 2^i of each event's pattern of present resonances; (E,)."""
    powers = 2 ** torch.arange(present.shape[1], device=present.device)
    return (present.long() * powers).sum(dim=1)


def pattern_balance_weights(
    present: Tensor, event_group: Sequence[Sequence[int]], weights: Tensor | None = None
) -> Tensor:
    """Class-balancing weights per pattern of present resonances, as SPANet balances particles.

    Patterns related by the event group G_E form one class. Each class c seen in ``present``
    gets weight E / (number of classes seen * count_c), so every class contributes equally
    and the mean weight over these events is one; unseen patterns get weight one. With event
    weights, E and count_c are sums of weights (an event of weight 2 counts twice); should
    signed (NLO) weights leave a seen class with a non-positive sum, the sums of |w| are used
    instead, since a negative class weight would reward the wrong assignment.

    Args:
        present: (E, m) bool presence of the training events' resonances.
        event_group: G_E as permutations of ``range(m)``.
        weights: (E,) event weights; None for ones.

    Returns:
        (2**m,) float weights indexed by the pattern code sum_i present_i 2^i.
    """
    events, count = present.shape
    patterns = torch.tensor(
        [[(code >> i) & 1 for i in range(count)] for code in range(2**count)], dtype=torch.bool
    )
    orbit_codes = torch.stack([_pattern_codes(patterns[:, list(p)]) for p in event_group])
    canonical = orbit_codes.min(dim=0).values
    event_classes = canonical[_pattern_codes(present.cpu())]
    seen_classes = torch.bincount(event_classes, minlength=2**count) > 0
    weights = torch.ones(events, dtype=torch.float64) if weights is None else weights.detach().cpu().double()
    counts = torch.bincount(event_classes, weights=weights, minlength=2**count)
    if (counts[seen_classes] <= 0).any():
        weights = weights.abs()
        counts = torch.bincount(event_classes, weights=weights, minlength=2**count)
    seen = int(seen_classes.sum())
    class_weights = torch.where(
        seen_classes & (counts > 0), weights.sum() / (seen * counts.clamp_min(1e-300)), torch.ones_like(counts)
    )
    return class_weights[canonical].float().to(present.device)


def regression_nll(
    mean: Tensor, log_scale: Tensor, target: Tensor, distribution: RegressionDistribution
) -> Tensor:
    r"""Elementwise negative log-likelihood of ``target``, zero where it is NaN (missing).

    Gaussian: :math:`\frac{1}{2}((x - \mu)/\sigma)^2 + \ln\sigma + \frac{1}{2}\ln 2\pi`;
    Laplacian: :math:`|x - \mu|/b + \ln b + \ln 2`, with ``log_scale`` = ln sigma or ln b.

    Args:
        mean, log_scale, target: (E, R).
        distribution: ``"gaussian"`` or ``"laplacian"``.
    """
    if distribution not in get_args(RegressionDistribution):
        raise ReconError(
            f"regression distribution {distribution!r}; expected one of {get_args(RegressionDistribution)}"
        )
    valid = ~torch.isnan(target)
    residual = (torch.where(valid, target, mean) - mean) * torch.exp(-log_scale)
    if distribution == "gaussian":
        nll = 0.5 * residual**2 + log_scale + 0.5 * math.log(2 * math.pi)
    else:
        nll = residual.abs() + log_scale + math.log(2.0)
    return torch.where(valid, nll, 0.0)


def assignment_loss(
    output: AssignmentOutput,
    targets: AssignmentTargets,
    *,
    topology: EventTopology,
    regression_distribution: RegressionDistribution = "gaussian",
    pattern_weights: Tensor | None = None,
    detection_weight: float = 1.0,
    regression_weight: float = 1.0,
    classification_weight: float = 1.0,
) -> AssignmentLoss:
    r"""SPANet's symmetric loss (arXiv 2106.03898, 2309.01886).

    Per resonance i and target resonance j, :math:`L_{ij}` is the cross-entropy of
    :math:`P_i` against a target distribution uniform over the daughter-group orbit
    :math:`\{t_j \circ g : g \in G_{P_i}\}` of j's true indices. An event's loss is

    .. math:: \min_{\sigma \in G_E} \sum_i M_{\sigma(i)} w_{\sigma(i)} L_{i\sigma(i)}
              + \lambda_d \sum_i \mathrm{BCE}(d_i, M_{\sigma(i)}),

    with :math:`M_j` the presence of resonance j and :math:`w_j` its weight; the assignment
    and detection terms are reported at that event's minimising sigma. ``pattern_weights``
    (from :func:`pattern_balance_weights`) scale each event's assignment term by its pattern
    of present resonances. Events with no real object are left out of every term; the
    assignment term averages over events with at least one present resonance.

    Args:
        output: the network's predictions for E events.
        targets: the matching targets.
        topology: the event topology the network was built for.
        regression_distribution: likelihood of the regression targets.
        pattern_weights: (2**m,) class-balancing weights, or None.
        detection_weight, regression_weight, classification_weight: lambda of each term.
    """
    if regression_distribution not in get_args(RegressionDistribution):
        raise ReconError(
            f"regression distribution {regression_distribution!r}; expected one of {get_args(RegressionDistribution)}"
        )
    _check_targets(output, targets, topology)
    patterns = 2 ** len(topology.resonances)
    if pattern_weights is not None and tuple(pattern_weights.shape) != (patterns,):
        raise ReconError(
            f"pattern_weights: shape {tuple(pattern_weights.shape)}; expected ({patterns},)"
        )
    mask = output.object_mask
    events, count = mask.shape
    resonances = topology.resonances
    present = resonance_presence(targets.indices, targets.resonance_masks)
    has_objects = mask.any(dim=1)
    event_weights = has_objects.float()
    if targets.event_weights is not None:
        event_weights = event_weights * targets.event_weights.float()
    balance = (
        torch.ones(events, device=mask.device)
        if pattern_weights is None
        else pattern_weights[_pattern_codes(present)]
    )
    weights = [torch.ones(events, device=mask.device)] * len(resonances)
    if targets.resonance_weights is not None:
        weights = [w.float() for w in targets.resonance_weights]

    cross_entropy: dict[tuple[int, int], Tensor] = {}
    assignment_candidates, detection_candidates = [], []
    for sigma in topology.event_group:
        assignment = torch.zeros(events, device=mask.device)
        detection = torch.zeros(events, device=mask.device)
        for i, j in enumerate(sigma):
            if (i, j) not in cross_entropy:
                cross_entropy[(i, j)] = _orbit_cross_entropy(
                    output.log_probs[i],
                    targets.indices[j],
                    present[:, j],
                    resonances[i].group,
                    count,
                )
            assignment = assignment + torch.where(
                present[:, j], weights[j] * cross_entropy[(i, j)], 0.0
            )
            detection = detection + F.binary_cross_entropy_with_logits(
                output.detection_logits[:, i], present[:, j].float(), reduction="none"
            )
        assignment_candidates.append(balance * assignment)
        detection_candidates.append(detection)
    assignment_by_sigma = torch.stack(assignment_candidates)
    detection_by_sigma = torch.stack(detection_candidates)
    best = (assignment_by_sigma + detection_weight * detection_by_sigma).argmin(dim=0, keepdim=True)
    assignment_events = assignment_by_sigma.gather(0, best)[0]
    detection_events = detection_by_sigma.gather(0, best)[0]

    assignment_term = _weighted_mean(assignment_events, event_weights * present.any(dim=1))
    detection_term = _weighted_mean(detection_events, event_weights) / len(resonances)
    regression_term = _regression_term(output, targets, event_weights, regression_distribution)
    classification_term = _classification_term(output, targets, event_weights)
    total = (
        assignment_term
        + detection_weight * detection_term
        + regression_weight * regression_term
        + classification_weight * classification_term
    )
    return AssignmentLoss(
        total, assignment_term, detection_term, regression_term, classification_term
    )


def _orbit_cross_entropy(
    log_probs: Tensor, indices: Tensor, present: Tensor, group: Sequence[Sequence[int]], count: int
) -> Tensor:
    """(E,) cross-entropy of (E, N, ..., N) log-probs against the uniform distribution on the orbit of ``indices``."""
    order = indices.shape[1]
    safe = torch.where(present[:, None], indices, 0)
    strides = count ** torch.arange(order - 1, -1, -1, device=indices.device)
    flat_targets = torch.stack([(safe[:, list(g)] * strides).sum(dim=1) for g in group], dim=1)
    picked = log_probs.reshape(log_probs.shape[0], -1).gather(1, flat_targets)
    return torch.where(present, -picked.mean(dim=1), 0.0)


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """sum(w v) / sum(|w|); zero (with gradient zero) when every weight is zero.

    Normalising by sum |w| keeps the scale of the loss when a batch's signed weights (NLO
    generators) nearly cancel; for non-negative weights it is the weighted mean.
    """
    return (weights * values).sum() / weights.abs().sum().clamp_min(torch.finfo(values.dtype).tiny)


def _regression_term(
    output: AssignmentOutput,
    targets: AssignmentTargets,
    event_weights: Tensor,
    distribution: RegressionDistribution,
) -> Tensor:
    if targets.regressions is None or output.regression_mean.shape[1] == 0:
        return output.regression_mean.sum() * 0.0
    nll = regression_nll(
        output.regression_mean,
        output.regression_log_scale,
        targets.regressions.float(),
        distribution,
    )
    valid = ~torch.isnan(targets.regressions)
    return _weighted_mean(nll, event_weights[:, None] * valid)


def _classification_term(
    output: AssignmentOutput, targets: AssignmentTargets, event_weights: Tensor
) -> Tensor:
    term = output.regression_mean.sum() * 0.0
    if targets.classifications is None:
        return term
    for column, logits in enumerate(output.classification_logits):
        labels = targets.classifications[:, column]
        valid = labels >= 0
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        losses = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
        term = term + _weighted_mean(torch.where(valid, losses, 0.0), event_weights * valid)
    return term


def _check_targets(
    output: AssignmentOutput, targets: AssignmentTargets, topology: EventTopology
) -> None:
    """Raise ReconError where targets do not fit the topology or point at padding or repeat an object."""
    mask = output.object_mask
    events, count = mask.shape
    if len(targets.indices) != len(topology.resonances):
        raise ReconError(
            f"{topology.path}: {len(targets.indices)} target tensors; expected one per resonance {list(topology.resonance_names)}"
        )
    for resonance, indices in zip(topology.resonances, targets.indices, strict=True):
        key = f"TARGETS/{resonance.name}"
        if tuple(indices.shape) != (events, resonance.order):
            raise ReconError(
                f"{key}: shape {tuple(indices.shape)}; expected ({events}, {resonance.order})"
            )
        present = (indices >= 0).all(dim=1)
        chosen = indices[present]
        if chosen.numel() == 0:
            continue
        if (chosen >= count).any():
            raise ReconError(f"{key}: index {int(chosen.max())} beyond the {count} objects")
        if not mask[present].gather(1, chosen).all():
            raise ReconError(f"{key}: a matched daughter points at a padded (masked) object")
        if resonance.order > 1 and (chosen.sort(dim=1).values.diff(dim=1) == 0).any():
            raise ReconError(f"{key}: a resonance's daughters are matched to the same object twice")
    for name, per_resonance in (
        ("resonance_masks", targets.resonance_masks),
        ("resonance_weights", targets.resonance_weights),
    ):
        if per_resonance is not None and (
            len(per_resonance) != len(topology.resonances)
            or any(t.shape != (events,) for t in per_resonance)
        ):
            raise ReconError(
                f"{name}: expected {len(topology.resonances)} tensors of shape ({events},)"
            )
    if targets.event_weights is not None and targets.event_weights.shape != (events,):
        raise ReconError(
            f"event_weights: shape {tuple(targets.event_weights.shape)}; expected ({events},)"
        )
    regressions = output.regression_mean.shape[1]
    if targets.regressions is not None and tuple(targets.regressions.shape) != (
        events,
        regressions,
    ):
        raise ReconError(
            f"REGRESSIONS/EVENT: shape {tuple(targets.regressions.shape)}; expected ({events}, {regressions})"
        )
    if targets.classifications is not None:
        columns = len(output.classification_logits)
        if tuple(targets.classifications.shape) != (events, columns):
            raise ReconError(
                f"CLASSIFICATIONS/EVENT: shape {tuple(targets.classifications.shape)}; expected ({events}, {columns})"
            )
        for column, logits in enumerate(output.classification_logits):
            if (targets.classifications[:, column] >= logits.shape[1]).any():
                raise ReconError(
                    f"CLASSIFICATIONS/EVENT/{topology.classifications[column]}: a label >= {logits.shape[1]} classes"
                )
