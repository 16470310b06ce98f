"""Turn the network's tuple probabilities into one assignment per event, no object used twice."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from recon.assignment_network import AssignmentOutput

__all__ = ["DecodedAssignments", "assignment_entropy", "decode_assignments"]


class DecodedAssignments(NamedTuple):
    """The chosen assignment of each event with its quality scores.

    Attributes:
        indices: per resonance (E, K_r) long object indices in daughter order; -1 where no
            allowed tuple was left for the resonance.
        assignment_probability: (E, m) P_a of the chosen tuple given the resonance is present
            (0 where none was chosen).
        detection_probability: (E, m) P_d, the probability that the resonance is reconstructable.
        marginal_probability: (E, m) P_a * P_d.
        entropy: (E, m) entropy in nats of each resonance's tuple distribution (SAJA arXiv
            2012.03542 uses such entropies to flag uncertain assignments).
    """

    indices: tuple[Tensor, ...]
    assignment_probability: Tensor
    detection_probability: Tensor
    marginal_probability: Tensor
    entropy: Tensor


# Log-probabilities below this count as e^-80 ~ 2e-35: their share of an entropy is below 1e-30 nats, and the
# exponential stays off the special-value path (exp of -inf or of an underflowing value is 8-20x slower on CPU).
_NEGLIGIBLE_LOG_PROBABILITY = -80.0


def assignment_entropy(log_probs: Tensor) -> Tensor:
    """Entropy -sum p ln p over all K-tuples of (E, N, ..., N) log-probabilities; (E,), zero (to 1e-30) without allowed tuples."""
    finite = log_probs.reshape(log_probs.shape[0], -1).clamp_min(_NEGLIGIBLE_LOG_PROBABILITY)
    return -(finite.exp() * finite).sum(dim=1)


def _touches_used(used: Tensor, order: int) -> Tensor:
    """(E, N, ..., N) bool with K axes: the tuple contains an object flagged in ``used`` (E, N)."""
    events, count = used.shape
    touched = torch.zeros((events,) + (1,) * order, dtype=torch.bool, device=used.device)
    for axis in range(order):
        shape = [events] + [1] * order
        shape[axis + 1] = count
        touched = touched | used.view(shape)
    return touched


@torch.no_grad()
def decode_assignments(output: AssignmentOutput) -> DecodedAssignments:
    """Greedy decoding without object reuse, vectorised over events (SPANet arXiv 2106.03898).

    In each of m rounds every resonance not yet placed finds its most probable tuple among
    those avoiding the objects already used; the resonance whose best tuple is most probable
    takes it and its objects are marked used. A resonance left with no allowed tuple gets -1.

    Args:
        output: the network's predictions; only log-probabilities, detection logits and the
            object mask are read.
    """
    log_probs = [lp.detach() for lp in output.log_probs]
    mask = output.object_mask
    events, count = mask.shape
    resonances = len(log_probs)
    rows = torch.arange(events, device=mask.device)
    used = torch.zeros_like(mask)
    placed = torch.zeros(events, resonances, dtype=torch.bool, device=mask.device)
    chosen = [
        torch.full((events, lp.dim() - 1), -1, dtype=torch.long, device=mask.device)
        for lp in log_probs
    ]
    chosen_log_prob = torch.full((events, resonances), float("-inf"), device=mask.device)
    for step in range(resonances):
        best_values, best_flat = [], []
        for lp in log_probs:
            remaining = (
                lp
                if step == 0
                else lp.masked_fill(_touches_used(used, lp.dim() - 1), float("-inf"))
            )
            value, flat = remaining.reshape(events, -1).max(dim=1)
            best_values.append(value)
            best_flat.append(flat)
        values = torch.stack(best_values, dim=1)
        # Placed resonances rank below every unplaced one, even one with no tuple left (-inf).
        ranking = values.nan_to_num(neginf=torch.finfo(values.dtype).min).masked_fill(
            placed, float("-inf")
        )
        winner = ranking.argmax(dim=1)
        for r, lp in enumerate(log_probs):
            order = lp.dim() - 1
            takes = (winner == r) & torch.isfinite(values[:, r])
            strides = count ** torch.arange(order - 1, -1, -1, device=mask.device)
            tuple_indices = (best_flat[r][:, None] // strides) % count
            chosen[r] = torch.where(takes[:, None], tuple_indices, chosen[r])
            chosen_log_prob[:, r] = torch.where(takes, values[:, r], chosen_log_prob[:, r])
            used[rows[takes][:, None], tuple_indices[takes]] = True
        placed[rows, winner] = True
    assignment_probability = chosen_log_prob.exp()
    detection_probability = torch.sigmoid(output.detection_logits.detach().float())
    return DecodedAssignments(
        indices=tuple(chosen),
        assignment_probability=assignment_probability,
        detection_probability=detection_probability,
        marginal_probability=assignment_probability * detection_probability,
        entropy=torch.stack([assignment_entropy(lp) for lp in log_probs], dim=1),
    )
