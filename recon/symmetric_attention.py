"""Symmetric tensor attention: a probability for every K-tuple of distinct detector objects."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recon.errors import ReconError
from recon.event_topology import generate_group

__all__ = ["SymmetricTensorAttention", "allowed_tuples", "masked_log_softmax"]

_WEIGHT_AXES = "abcdefgh"
_OBJECT_AXES = "ijklmnop"


def allowed_tuples(mask: Tensor, order: int) -> Tensor:
    """Which K-tuples of objects an assignment may use: all real, no object twice.

    Args:
        mask: (E, N) bool, True for real objects.
        order: K.

    Returns:
        (E, N, ..., N) bool with K object axes.
    """
    events, count = mask.shape
    allowed = torch.ones((events,) + (1,) * order, dtype=torch.bool, device=mask.device)
    for axis in range(order):
        shape = [events] + [1] * order
        shape[axis + 1] = count
        allowed = allowed & mask.view(shape)
    index = torch.arange(count, device=mask.device)
    for first in range(order):
        for second in range(first + 1, order):
            shape_a, shape_b = [1] * order, [1] * order
            shape_a[first], shape_b[second] = count, count
            allowed = allowed & (index.view(shape_a) != index.view(shape_b))
    return allowed


def masked_log_softmax(logits: Tensor, allowed: Tensor) -> Tensor:
    """Log-softmax over all allowed K-tuples jointly (the trailing K axes flattened), in at least float32.

    Forbidden tuples get -inf. An event with no allowed tuple gets -inf everywhere and no NaN,
    in value or gradient.

    Args:
        logits: (E, N, ..., N) scores.
        allowed: same shape, bool.
    """
    events = logits.shape[0]
    flat = logits.reshape(events, -1).to(torch.promote_types(logits.dtype, torch.float32))
    flat_allowed = allowed.reshape(events, -1)
    filled = flat.masked_fill(~flat_allowed, torch.finfo(flat.dtype).min)
    log_probs = torch.log_softmax(filled, dim=1).masked_fill(~flat_allowed, float("-inf"))
    return log_probs.view(logits.shape)


class SymmetricTensorAttention(nn.Module):
    r"""Order-K tensor attention whose weight is symmetric under the daughter group G_P (SPANet arXiv 2106.03898).

    The branch-encoded objects are projected to width D_a, :math:`x = W X`. A learnable
    :math:`\Theta \in \mathbb{R}^{D_a \times \dots \times D_a}` (K axes) is averaged over the
    group, :math:`S = \frac{1}{|G_P|}\sum_{\sigma \in G_P} \sigma(\Theta)` (axes permuted), and

    .. math:: O_{j_1 \dots j_K} = \sum_{i_1 \dots i_K} x_{j_1 i_1} \cdots x_{j_K i_K} S_{i_1 \dots i_K},

    so O is exactly symmetric under the same permutations of its object axes. Tuples that
    repeat an object or touch padding are forbidden, and a log-softmax runs over all allowed
    tuples together. Theta has D_a**K entries: 32 gives 32 k for K = 3 and 1 M for K = 4.

    Args:
        width: D, the width of the incoming object embeddings.
        order: K, the number of daughters.
        group: G_P as index permutations of ``range(K)``, closed under composition.
        attention_width: D_a, the width Theta acts on.
    """

    def __init__(
        self, *, width: int, order: int, group: Sequence[Sequence[int]], attention_width: int = 32
    ) -> None:
        super().__init__()
        if not 1 <= order <= len(_WEIGHT_AXES):
            raise ReconError(f"order {order}: expected 1 to {len(_WEIGHT_AXES)} daughters")
        permutations = tuple(tuple(int(i) for i in p) for p in group) or (tuple(range(order)),)
        for p in permutations:
            if sorted(p) != list(range(order)):
                raise ReconError(f"group element {p} is not a permutation of range({order})")
        if set(generate_group(list(permutations), order)) != set(permutations):
            raise ReconError(f"group {permutations} is not closed under composition")
        self.order = order
        self.group = permutations
        self.project = nn.Linear(width, attention_width)
        self.theta = nn.Parameter(
            torch.randn((attention_width,) * order) / math.sqrt(attention_width**order)
        )
        weight_axes, object_axes = _WEIGHT_AXES[:order], _OBJECT_AXES[:order]
        operands = ",".join(f"z{o}{w}" for o, w in zip(object_axes, weight_axes, strict=True))
        self._equation = f"{weight_axes},{operands}->z{object_axes}"

    def symmetric_weight(self) -> Tensor:
        """S, Theta averaged over the group's axis permutations; (D_a,) * K."""
        return torch.stack([self.theta.permute(p) for p in self.group]).mean(0)

    def forward(self, objects: Tensor, mask: Tensor, bias: Tensor | None = None) -> Tensor:
        """Log-probabilities of every K-tuple.

        Args:
            objects: (E, N, D) branch-encoded objects.
            mask: (E, N) bool, True for real objects.
            bias: optional (E, N, ..., N) logits added before the softmax, symmetric under the
                same group (e.g. :class:`recon.mass_prior.TupleMassPrior`).

        Returns:
            (E, N, ..., N) with K object axes; -inf on forbidden tuples; over the allowed
            tuples of an event the probabilities sum to one.
        """
        logits = self.tuple_scores(self.symmetric_weight(), self.project(objects))
        if bias is not None:
            logits = logits + bias
        return masked_log_softmax(logits, allowed_tuples(mask, self.order))

    def tuple_scores(self, weight: Tensor, projected: Tensor) -> Tensor:
        """O (E, N, ..., N) of the docstring's sum for the weight S and the projected objects x (E, N, D_a).

        Up to three daughters the sum runs as three batched matrix products over contiguous layouts: the
        first weight axis with x_i, then the last with x_k, then the middle one with x_j. That is the order
        in which no (E, N, D_a, D_a) intermediate is permuted, twice as fast on CPU as ``torch.einsum``'s
        order for K = 3 (``benchmarks/bench_recon_model.py``). Higher orders take the einsum.
        """
        events, objects, width = projected.shape
        if self.order > 3:
            return torch.einsum(self._equation, weight, *([projected] * self.order))
        scores = projected.reshape(-1, width) @ weight.reshape(width, -1)  # (E N, D_a^(K-1)): i contracted
        if self.order == 1:
            return scores.view(events, objects)
        scores = scores.view(events, -1, width) @ projected.transpose(1, 2)  # the last axis: (E, N D_a^(K-2), N)
        if self.order == 2:
            return scores
        return projected.unsqueeze(1) @ scores.view(events, objects, width, objects)  # j: (E, N, N, N)
