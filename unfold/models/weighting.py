"""Event-weighted means of per-event loss terms, shared by the parton and particle unfoldings.

Every unfolding loss is an average over events (or over the objects of the events); with event
weights w_i (``--weights``; negative from NLO generators) the average becomes
sum_i w_i l_i / sum_i |w_i|, which for non-negative weights is the weighted mean, so a weight of
two counts an event twice, and keeps its scale when signed weights nearly cancel in a batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["weighted_mean"]


def weighted_mean(values: Tensor, weights: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
    """sum(w m v) / sum(|w| m) over the event axis (and object axis when ``values`` and ``mask`` are (E, M)).

    Args:
        values: (E,) or (E, M) per-event or per-object loss values.
        weights: (E,) event weights; None for ones.
        mask: (E, M) or (E,) bool, the entries that count; None for all.
    """
    factor = torch.ones_like(values) if mask is None else mask.to(values.dtype).expand_as(values)
    if weights is not None:
        weights = weights.to(values.dtype).reshape(-1, *([1] * (values.ndim - 1)))
        numerator = (values * factor * weights).sum()
        return numerator / (factor * weights.abs()).sum().clamp_min(torch.finfo(values.dtype).tiny)
    return (values * factor).sum() / factor.sum().clamp_min(1.0)
