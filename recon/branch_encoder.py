"""The per-resonance branch encoder: objects re-encoded for one resonance, with a summary vector."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from encoders import EncoderOutput, TransformerBlock

__all__ = ["BranchEncoder", "BranchOutput"]


class BranchOutput(NamedTuple):
    """One resonance's view of the event.

    Attributes:
        objects: (E, N, D) objects encoded for this resonance (zero on padding).
        summary: (E, D) the branch's event-token output, a resonance-specific event summary.
    """

    objects: Tensor
    summary: Tensor


class BranchEncoder(nn.Module):
    """A small transformer over [event vector, objects] for one resonance (SPANet arXiv 2106.03898).

    SPANet gives every resonance its own small encoder so that each attention head sees the
    objects in a representation suited to that particle. The shared event vector is the first
    token, so the branch is conditioned on the whole event; padded objects are never keys.

    Args:
        width: D.
        depth: number of transformer blocks.
        heads: attention heads.
        dropout: dropout inside the blocks.
    """

    def __init__(self, *, width: int, depth: int = 1, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(width=width, heads=heads, dropout=dropout) for _ in range(depth)
        )
        self.output_norm = nn.LayerNorm(width)

    def forward(self, encoded: EncoderOutput) -> BranchOutput:
        """Re-encode the shared encoder's output for this resonance."""
        mask = encoded.object_mask
        tokens = torch.cat([encoded.event[:, None, :], encoded.objects], dim=1)
        keys = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)[:, None, None, :]
        for block in self.blocks:
            tokens = block(tokens, keys)
        tokens = self.output_norm(tokens)
        return BranchOutput(objects=tokens[:, 1:] * mask[..., None], summary=tokens[:, 0])
