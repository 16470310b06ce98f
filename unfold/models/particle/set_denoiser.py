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
    permutation-equivariant in the particles (and invariant in the detector objects). With
    ``anchor_width`` > 0 each detector token also carries a projection of the detector object's own
    kinematics in the particle feature space (the anchors), so a particle-level object that the
    detector measured well can be read off its detector object rather than rebuilt from the
    encoder's embedding. Padded
    particles and objects are masked as attention keys, and padded particle outputs are zeroed,
    so padding never reaches a real token. Only the generated tokens' outputs are read.

    Args:
        latent_width: per-particle latent width L (also the event slot's).
        condition_width: width D of the encoder's object embeddings and event vector.
        width: transformer width.
        depth: transformer layers.
        heads: attention heads (must divide ``width``).
        dropout: dropout inside the transformer.
        anchor_width: features per detector anchor (0: no anchors).
    """

    def __init__(
        self,
        *,
        latent_width: int,
        condition_width: int,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
        anchor_width: int = 0,
    ) -> None:
        super().__init__()
        if width % heads:
            raise UnfoldError(
                f"width ({width}) must be divisible by heads ({heads})"
            )
        self.particle_in = nn.Linear(latent_width, width)
        self.event_slot_in = nn.Linear(latent_width, width)
        self.object_in = nn.Linear(condition_width, width)
        self.anchor_in = nn.Linear(anchor_width, width) if anchor_width else None
        self.event_condition = nn.Linear(condition_width, width)
        self.time_embedding = TimestepEmbedding(width=width)
        self.role_embedding = nn.Parameter(torch.randn(3, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=heads,
            dim_feedforward=2 * width,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=depth, enable_nested_tensor=False
        )
        self.output_norm = nn.LayerNorm(width)
        self.particle_out = nn.Linear(width, latent_width)
        self.event_slot_out = nn.Linear(width, latent_width)

    def forward(
        self,
        particles: Tensor,
        particle_mask: Tensor,
        event_slot: Tensor,
        timesteps: Tensor,
        objects: Tensor,
        object_mask: Tensor,
        event: Tensor,
        anchors: Tensor | None = None,
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
            anchors: (B, N, anchor_width) detector kinematics in the particle feature space, zero at
                padding; required with ``anchor_width`` > 0, refused without.
        """
        object_tokens, event_condition = self.condition_tokens(objects, event, anchors)
        return self.predict(
            particles, particle_mask, event_slot, self.time_embedding(timesteps) + event_condition,
            object_tokens, object_mask,
        )

    def condition_tokens(
        self, objects: Tensor, event: Tensor, anchors: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The detector tokens (..., N, width) and the projected event vector (..., width): they depend
        on the detector event only, so sampling computes them once per event, not per draw and step."""
        tokens = self.object_in(objects) + self.role_embedding[2]
        if self.anchor_in is None:
            if anchors is not None:
                raise UnfoldError(f"this set denoiser has no detector anchors, got anchors of shape {tuple(anchors.shape)}")
        else:
            expected = (*objects.shape[:-1], self.anchor_in.in_features)
            if anchors is None or tuple(anchors.shape) != expected:
                found = None if anchors is None else tuple(anchors.shape)
                raise UnfoldError(f"detector anchors: expected shape {expected}, got {found}")
            tokens = tokens + self.anchor_in(anchors)
        return tokens, self.event_condition(event)

    def predict(
        self,
        particles: Tensor,
        particle_mask: Tensor,
        event_slot: Tensor,
        condition: Tensor,
        object_tokens: Tensor,
        object_mask: Tensor,
    ) -> SetNoisePrediction:
        """:meth:`forward` from the embedded condition: ``condition`` (B, width) is the time embedding plus
        the projected event vector, ``object_tokens`` (B, N, width) and ``object_mask`` (B, N) the
        detector tokens of :meth:`condition_tokens`; the other arguments as in :meth:`forward`."""
        num_particles = particles.shape[1]
        slot_token = self.event_slot_in(event_slot) + condition + self.role_embedding[0]
        particle_tokens = self.particle_in(particles) + (
            condition + self.role_embedding[1]
        ).unsqueeze(1)
        tokens = torch.cat([slot_token.unsqueeze(1), particle_tokens, object_tokens], dim=1)
        always = particle_mask.new_ones(particle_mask.shape[0], 1)  # the event slot, also when M = 0
        ignore = ~torch.cat([always, particle_mask, object_mask], dim=1).bool()
        hidden = self.output_norm(self.transformer(tokens, src_key_padding_mask=ignore))
        keep = particle_mask.unsqueeze(-1).to(hidden.dtype)
        return SetNoisePrediction(
            particles=self.particle_out(hidden[:, 1 : 1 + num_particles]) * keep,
            event_slot=self.event_slot_out(hidden[:, 0]),
        )
