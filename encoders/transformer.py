"""A pre-norm transformer block on padded sets, with scaled dot-product attention."""

from __future__ import annotations

from torch import Tensor, nn

from encoders.attention import set_attention
from encoders.errors import EncoderError

__all__ = ["TransformerBlock"]


class TransformerBlock(nn.Module):
    r"""Pre-norm self-attention block: :math:`x + \mathrm{MHA}(\mathrm{LN}(x))`, then :math:`x + \mathrm{FFN}(\mathrm{LN}(x))`.

    No positional information enters, so the block is equivariant under permutations of the
    tokens. Padding enters only through ``attention_mask``.

    Args:
        width: D, token width.
        heads: H, attention heads; must divide D.
        dropout: dropout on attention weights and after each residual branch.
        feedforward_multiplier: hidden width of the feed-forward network, in units of D.
    """

    def __init__(
        self, *, width: int, heads: int, dropout: float = 0.0, feedforward_multiplier: int = 2
    ) -> None:
        super().__init__()
        if width % heads != 0:
            raise EncoderError(f"width {width} must be a multiple of heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.feedforward = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, feedforward_multiplier * width),
            nn.GELU(),
            nn.Linear(feedforward_multiplier * width, width),
            nn.Dropout(dropout),
        )
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, attention_mask: Tensor) -> Tensor:
        """Update tokens x (E, L, D).

        Args:
            x: tokens (E, L, D).
            attention_mask: either bool (E, 1, 1, L), True where a key may be attended to, or
                an additive float bias (E, H, L, L) with -inf on keys that must be ignored.
                Every query needs at least one key it may attend to.
        """
        batch, length, width = x.shape
        qkv = self.qkv(self.attention_norm(x)).view(
            batch, length, 3, self.heads, width // self.heads
        )
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        attended = set_attention(
            query, (key,), (value,), attention_mask, dropout=self.dropout if self.training else 0.0
        )
        x = x + self.residual_dropout(
            self.out(attended.transpose(1, 2).reshape(batch, length, width))
        )
        return x + self.feedforward(x)
