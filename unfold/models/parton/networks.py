"""The conditional residual MLP and the sinusoidal time embedding shared by the VLD networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ConditionalMLP", "SinusoidalTimeEmbedding"]


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sinusoidal features of the diffusion timestep, as in DDPM (arXiv 2006.11239).

    Args:
        width: Output width (even).
        max_period: Longest wavelength, in timesteps.
    """

    def __init__(self, *, width: int, max_period: float = 10_000.0) -> None:
        super().__init__()
        half = width // 2
        frequencies = torch.exp(-math.log(max_period) * torch.arange(half) / half)
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        """(E,) timesteps -> (E, width) features."""
        angles = t.to(self.frequencies)[:, None] * self.frequencies
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.LayerNorm(width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + self.layers(h)


class ConditionalMLP(nn.Module):
    """Residual MLP on the concatenation of an input and a condition, (E, I) + (E, C) -> (E, O).

    Args:
        inputs: Input width I.
        condition_width: Condition width C (0 for none).
        outputs: Output width O.
        width: Width of the residual stream.
        depth: Number of residual blocks (two linear layers each).
        zero_output: Start the output layer at zero (the denoiser then starts predicting zero noise).
    """

    def __init__(
        self,
        *,
        inputs: int,
        condition_width: int,
        outputs: int,
        width: int,
        depth: int,
        zero_output: bool = False,
    ) -> None:
        super().__init__()
        self.input = nn.Linear(inputs + condition_width, width)
        self.blocks = nn.Sequential(*(_ResidualBlock(width) for _ in range(depth)))
        self.output = nn.Sequential(
            nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, outputs)
        )
        if zero_output:
            nn.init.zeros_(self.output[-1].weight)
            nn.init.zeros_(self.output[-1].bias)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        """(E, I) input and (E, C) condition -> (E, O)."""
        return self.output(self.blocks(self.input(torch.cat([x, condition], dim=-1))))
