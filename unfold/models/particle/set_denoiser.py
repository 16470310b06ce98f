"""The set denoiser: a transformer over noisy particle latents and detector-object embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unfold.errors import UnfoldError
from unfold.models.particle.layers import TimestepEmbedding

__all__ = ["SetDenoiser", "SetNoisePrediction"]


@dataclass(frozen=True)
class SetNoisePrediction:
    """Predicted noise epsilon of the generated tokens.

    Attributes:
        particles: (B, M, L) per-particle noise, exactly zero at padded slots.
        event_slot: (B, L) noise of the event slot (the latent of the event features).
    """

    particles: Tensor
    event_slot: Tensor


class SetDenoiser(nn.Module):
    """Epsilon prediction for a variable-length set of particle latents (arXiv 2404.14332).

    One pre-norm transformer runs over the token sequence
    [event slot || M noisy particle tokens || N detector object tokens]. The generated tokens
    (event slot and particles) receive the diffusion-time embedding and the projected detector
    event vector; the detector tokens are the projected encoder object embeddings. Each of the
    three roles has a learned embedding; there is no positional code, so the output is
    permutation-equivariant in the particles (and invariant in the detector objects). Padded
    particles and objects are masked as attention keys, and padded particle outputs are zeroed,
    so padding never reaches a real token. Only the generated tokens' outputs are read.

    Args:
        latent_dim: per-particle latent width L (also the event slot's).
        condition_dim: width D of the encoder's object embeddings and event vector.
        hidden_dim: transformer width.
        num_layers: transformer layers.
        num_heads: attention heads (must divide ``hidden_dim``).
        dropout: dropout inside the transformer.
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        condition_dim: int,
        hidden_dim: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise UnfoldError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})"
            )
        self.particle_in = nn.Linear(latent_dim, hidden_dim)
        self.event_slot_in = nn.Linear(latent_dim, hidden_dim)
        self.object_in = nn.Linear(condition_dim, hidden_dim)
        self.event_condition = nn.Linear(condition_dim, hidden_dim)
        self.time_embedding = TimestepEmbedding(dim=hidden_dim)
        self.role_embedding = nn.Parameter(torch.randn(3, hidden_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden_dim,
            nhead=num_heads,
            dim_feedforward=2 * hidden_dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=num_layers, enable_nested_tensor=False
        )
        self.output_norm = nn.LayerNorm(hidden_dim)
        self.particle_out = nn.Linear(hidden_dim, latent_dim)
        self.event_slot_out = nn.Linear(hidden_dim, latent_dim)

    def forward(
        self,
        particles: Tensor,
        particle_mask: Tensor,
        event_slot: Tensor,
        timesteps: Tensor,
        objects: Tensor,
        object_mask: Tensor,
        event: Tensor,
    ) -> SetNoisePrediction:
        """Predict the noise of the noisy generated tokens.

        Args:
            particles: (B, M, L) noisy particle latents.
            particle_mask: (B, M) bool, True for the M sampled particles.
            event_slot: (B, L) noisy latent of the event features.
            timesteps: (B,) long diffusion timesteps.
            objects: (B, N, D) detector object embeddings from the shared encoder.
            object_mask: (B, N) bool, True for real detector objects.
            event: (B, D) detector event vector from the shared encoder.
        """
        num_particles = particles.shape[1]
        condition = self.time_embedding(timesteps) + self.event_condition(event)
        slot_token = self.event_slot_in(event_slot) + condition + self.role_embedding[0]
        particle_tokens = self.particle_in(particles) + (
            condition + self.role_embedding[1]
        ).unsqueeze(1)
        object_tokens = self.object_in(objects) + self.role_embedding[2]
        tokens = torch.cat([slot_token.unsqueeze(1), particle_tokens, object_tokens], dim=1)
        always = torch.ones_like(particle_mask[:, :1])
        ignore = ~torch.cat([always, particle_mask, object_mask], dim=1).bool()
        hidden = self.output_norm(self.transformer(tokens, src_key_padding_mask=ignore))
        keep = particle_mask.unsqueeze(-1).to(hidden.dtype)
        return SetNoisePrediction(
            particles=self.particle_out(hidden[:, 1 : 1 + num_particles]) * keep,
            event_slot=self.event_slot_out(hidden[:, 0]),
        )
