"""Per-parton summaries of the detector objects: one learned query per parton attends over them."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from unfold.errors import UnfoldError

__all__ = ["PartonQueries"]


class PartonQueries(nn.Module):
    """Multi-head attention pooling of the encoder's object embeddings, one learned query per parton.

    The event vector is one D-wide summary of a whole event; a parton's measured momentum (a
    lepton's to a per cent) has to share it with everything else. Here each parton gets its own
    summary, a softmax-weighted sum over the real objects, so the query of the b quark of the
    hadronic top can learn to read the b-tagged jet the assignment head would pick, and the
    lepton's query the lepton. It is computed once per event, so it costs nothing per draw, and
    it is invariant under permutations of the objects (padding never contributes).

    Args:
        queries: Number of queries P (one per parton).
        width: Width D of the object embeddings and of each summary.
        heads: Attention heads (D must divide by it).
    """

    def __init__(self, *, queries: int, width: int, heads: int = 4) -> None:
        super().__init__()
        if queries < 1 or width < 1 or heads < 1 or width % heads:
            raise UnfoldError(
                f"parton queries need queries >= 1 and a width divisible by the heads, got "
                f"queries={queries}, width={width}, heads={heads}"
            )
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(queries, width) / math.sqrt(width))
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.output = nn.Linear(width, width)

    @property
    def width(self) -> int:
        """Width P D of the flattened summaries."""
        return self.queries.numel()

    def forward(self, objects: Tensor, mask: Tensor) -> Tensor:
        """(E, N, D) object embeddings and (E, N) real-object mask -> (E, P D) summaries.

        An event without objects gets the summaries of an empty sum (the output bias).
        """
        events, count, width = objects.shape
        split = (events, count, self.heads, width // self.heads)
        keys, values = self.key(objects).view(split), self.value(objects).view(split)
        queries = self.queries.view(-1, self.heads, width // self.heads)
        logits = torch.einsum("phd,enhd->ephn", queries, keys) / math.sqrt(split[-1])
        logits = logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=-1) * mask[:, None, None, :]
        pooled = torch.einsum("ephn,enhd->ephd", weights, values).reshape(events, -1, width)
        return self.output(pooled).flatten(1)
