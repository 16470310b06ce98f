"""Small building blocks shared by the particle-level networks."""

from __future__ import annotations

from torch import Tensor, nn

from unfold.models.parton.networks import SinusoidalTimeEmbedding

__all__ = ["TimestepEmbedding", "mlp"]


def mlp(inputs: int, width: int, outputs: int, depth: int) -> nn.Sequential:
    """``depth`` hidden Linear + GELU layers of width ``width``, then a Linear output."""
    layers: list[nn.Module] = []
    previous = inputs
    for _ in range(depth):
        layers += [nn.Linear(previous, width), nn.GELU()]
        previous = width
    return nn.Sequential(*layers, nn.Linear(previous, outputs))


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of the diffusion timestep (DDPM, arXiv 2006.11239) and a two-layer MLP.

    Args:
        width: output width (even).
    """

    def __init__(self, *, width: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            SinusoidalTimeEmbedding(width=width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)
        )

    def forward(self, timesteps: Tensor) -> Tensor:
        """(B, width) embedding of integer timesteps (B,)."""
        return self.network(timesteps)
