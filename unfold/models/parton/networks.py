"""The conditional residual MLP and the sinusoidal time embedding shared by the VLD networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ConditionalMLP", "SinusoidalTimeEmbedding", "zero_linear"]


def zero_linear(inputs: int, outputs: int) -> nn.Linear:
    """A linear layer that starts at zero (a modulation that starts as none)."""
    layer = nn.Linear(inputs, outputs)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


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

    def forward(self, h: Tensor, film: Tensor | None = None) -> Tensor:
        """h + block(h); with ``film`` (E, 2 W), the normalised stream is scaled by 1 + scale and shifted first."""
        if film is None:
            return h + self.layers(h)
        scale, shift = film.chunk(2, dim=-1)
        return h + self.layers[1:](self.layers[0](h) * (1.0 + scale) + shift)


class ConditionalMLP(nn.Module):
    """Residual MLP on the concatenation of an input and a condition, (E, I) + (E, C) -> (E, O).

    Args:
        inputs: Input width I.
        condition_width: Condition width C (0 for none).
        outputs: Output width O.
        width: Width of the residual stream.
        depth: Number of residual blocks (two linear layers each).
        zero_output: Start the output layer at zero (the denoiser then starts predicting zero noise).
        modulation_width: Width M of a second condition that scales and shifts every block's normalised stream
            (FiLM, Perez et al. arXiv 1709.07871; per block as DiT's adaptive LayerNorm, arXiv 2212.09748), 0 for
            none. Its layer starts at zero, so the network starts as the one conditioned at its input only.
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
        modulation_width: int = 0,
    ) -> None:
        super().__init__()
        self.input = nn.Linear(inputs + condition_width, width)
        self.blocks = nn.Sequential(*(_ResidualBlock(width) for _ in range(depth)))
        self.modulator = zero_linear(modulation_width, 2 * width * depth) if modulation_width and depth else None
        self.output = nn.Sequential(
            nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, outputs)
        )
        if zero_output:
            nn.init.zeros_(self.output[-1].weight)
            nn.init.zeros_(self.output[-1].bias)

    def modulation(self, condition: Tensor) -> Tensor | None:
        """Every block's scale and shift (E, 2 W depth) from the (E, M) modulating condition; None without one.
        Computed apart from :meth:`forward` so that rows sharing a condition (noisy states, draws) share it."""
        return None if self.modulator is None else self.modulator(condition)

    def forward(self, x: Tensor, condition: Tensor, modulation: Tensor | None = None) -> Tensor:
        """(E, I) input and (E, C) condition (and the (E, 2 W depth) :meth:`modulation`) -> (E, O)."""
        h = self.input(torch.cat([x, condition], dim=-1))
        films = [None] * len(self.blocks) if modulation is None else modulation.chunk(len(self.blocks), dim=-1)
        for block, film in zip(self.blocks, films, strict=True):
            h = block(h, film)
        return self.output(h)
