"""Scaled dot-product attention for short sets, written out in batched matrix products."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["set_attention"]


def set_attention(
    query: Tensor, keys: Sequence[Tensor], values: Sequence[Tensor], mask: Tensor, dropout: float = 0.0
) -> Tensor:
    r"""Attention of ``query`` over the concatenated key blocks:
    :math:`\mathrm{softmax}(q k^\top / \sqrt{d} + \mathrm{mask})\, v`.

    The same result as ``F.scaled_dot_product_attention`` on the concatenated keys and values, but for the
    sets of a collider event (tens of tokens) 2-4x faster on CPU: torch's fused kernel tiles for long
    sequences, and at these lengths its overhead outweighs the products (``benchmarks/bench_attention.py``).
    The key blocks are never concatenated, so a block that is fixed between calls (the detector's keys and
    values of the set denoiser) is not copied at every call; only the (Q, K) scores are. The softmax runs in
    float32 also under bfloat16 autocast, as the fused kernel's does, and is written out too (:func:`_softmax`).

    Args:
        query: (B, H, Q, d) queries.
        keys: blocks (B, H, K_i, d) of keys.
        values: blocks (B, H, K_i, d_v) of values, one per key block.
        mask: bool, True where a key may be attended to, or an additive float bias (-inf on ignored keys);
            broadcastable to (B, H, Q, sum K_i). Every query needs at least one key it may attend to.
        dropout: dropout probability on the attention weights (pass 0 in evaluation).

    Returns:
        (B, H, Q, d_v) attended values.
    """
    scale = query.shape[-1] ** -0.5
    scores = torch.cat([query @ key.transpose(-1, -2) for key in keys], dim=-1) * scale
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.to(scores.dtype)
    weights = _softmax(scores.float()).to(values[0].dtype)
    if dropout:
        weights = F.dropout(weights, p=dropout)
    blocks = weights.split([key.shape[-2] for key in keys], dim=-1)
    attended = blocks[0] @ values[0]
    for block, value in zip(blocks[1:], values[1:], strict=True):
        attended = attended + block @ value
    return attended


def _softmax(scores: Tensor) -> Tensor:
    """Softmax over the last axis in three elementwise passes: for rows of tens of keys, 4x faster on CPU than
    ``torch.softmax``, whose kernel is made for long rows. A row of only -inf gives NaN, as ``torch.softmax``."""
    exponentials = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    return exponentials / exponentials.sum(dim=-1, keepdim=True)
