"""Small building blocks shared by the particle-level networks."""

from __future__ import annotations

from torch import Tensor, nn

from unfold.models.parton.networks import SinusoidalTimeEmbedding

__all__ = ["TimestepEmbedding", "mlp"]


def mlp(inputs: int, hidden: int, outputs: int, num_layers: int) -> nn.Sequential:
    """``num_layers`` hidden Linear + GELU layers of width ``hidden``, then a Linear output."""
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, outputs))


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of the diffusion timestep (DDPM, arXiv 2006.11239) and a two-layer MLP.

    Args:
        dim: output width (even).
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            SinusoidalTimeEmbedding(width=dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)
        )

    def forward(self, timesteps: Tensor) -> Tensor:
        """(B, dim) embedding of integer timesteps (B,)."""
        return self.network(timesteps)
