"""The set denoiser: a transformer over noisy particle latents and detector-object embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from encoders.attention import set_attention
from unfold.errors import UnfoldError
from unfold.models.particle.layers import TimestepEmbedding

__all__ = ["DetectorMemory", "SetDenoiser", "SetNoisePrediction"]


@dataclass(frozen=True)
class SetNoisePrediction:
    """Predicted noise epsilon of the generated tokens.

    Attributes:
        particles: (B, M, L) per-particle noise, exactly zero at padded slots.
        event_slot: (B, L) noise of the event slot (the latent of the event features).
    """

    particles: Tensor
    event_slot: Tensor


@dataclass(frozen=True)
class DetectorMemory:
    """What the generated tokens read of one batch of detector events; it depends on the detector
    event only, so sampling builds it once per event, not per draw and step.

    Attributes:
        mask: (B, N) bool, True for real detector objects.
        tokens: two-way attention: (B, N, width) the detector tokens, which run through the
            transformer beside the generated ones; None with one-way attention.
        keys, values: one-way attention: per layer, (B, heads, N, width / heads) the projected states
            of the detector tokens, which attend only to each other; empty with two-way attention.
    """

    mask: Tensor
    tokens: Tensor | None = None
    keys: tuple[Tensor, ...] = ()
    values: tuple[Tensor, ...] = ()

    def select(self, rows: Tensor, objects: int) -> DetectorMemory:
        """The memory of events ``rows`` (repeats allowed), cut to the first ``objects`` detector objects."""
        return DetectorMemory(
            self.mask[rows, :objects],
            None if self.tokens is None else self.tokens[rows, :objects],
            tuple(k[rows, :, :objects] for k in self.keys),
            tuple(v[rows, :, :objects] for v in self.values),
        )


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
    encoder's embedding. With ``num_slot_classes`` > 0 each particle token also carries a learned
    embedding of its slot's code, drawn beforehand with the multiplicity (the slot's class, lepton,
    b jet or light jet, and with ranked slots its pT rank within the class), so the denoiser generates
    a lepton where one was drawn. With ``paired_width`` > 0 each particle token also carries a
    projection of its slot's detector counterpart (:mod:`unfold.models.particle.pairing`): the paired
    object's anchor features and a flag that it exists.

    Attention is one-way by default: the generated tokens read every token, the detector tokens
    only each other (a decoder's cross-attention, in the encoder's weights). The detector's keys and
    values at every layer then depend on the detector event alone (:class:`DetectorMemory`), so
    sampling computes them once per event instead of once per draw and step, and each step runs the
    1 + M generated tokens only. ``detector_reads_particles`` restores the two-way attention of the
    first design. Padded particles and objects are masked as attention keys, and padded particle
    outputs are zeroed, so padding never reaches a real token. Only the generated tokens' outputs
    are read.

    Args:
        latent_width: per-particle latent width L (also the event slot's).
        condition_width: width D of the encoder's object embeddings and event vector.
        width: transformer width.
        depth: transformer layers.
        heads: attention heads (must divide ``width``).
        dropout: dropout inside the transformer.
        anchor_width: features per detector anchor (0: no anchors).
        detector_reads_particles: two-way attention (the detector tokens also read the generated ones).
        num_slot_classes: slot codes (classes, or classes and ranks) the particle tokens are told (0: none).
        paired_width: features of each particle token's detector counterpart (anchor features + 1 flag; 0: none).
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
        detector_reads_particles: bool = False,
        num_slot_classes: int = 0,
        paired_width: int = 0,
    ) -> None:
        super().__init__()
        self.detector_reads_particles = detector_reads_particles
        self.heads = heads
        if width % heads:
            raise UnfoldError(
                f"width ({width}) must be divisible by heads ({heads})"
            )
        self.particle_in = nn.Linear(latent_width, width)
        self.event_slot_in = nn.Linear(latent_width, width)
        self.object_in = nn.Linear(condition_width, width)
        self.anchor_in = nn.Linear(anchor_width, width) if anchor_width else None
        # Small like the role embeddings: a unit-scale class vector would swamp the particle's own input at the start.
        self.slot_class_embedding = nn.Parameter(torch.randn(num_slot_classes, width) * 0.02) if num_slot_classes else None
        self.paired_in = nn.Linear(paired_width, width) if paired_width else None
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
        particle_classes: Tensor | None = None,
        paired: Tensor | None = None,
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
            particle_classes: (B, M) long slot codes in 0..num_slot_classes - 1; required with
                ``num_slot_classes`` > 0, refused without.
            paired: (B, M, paired_width) each slot's detector counterpart (its anchor, zero without one, and a
                1/0 flag that it has one); required with ``paired_width`` > 0, refused without.
        """
        memory, event_condition = self.detector_memory(objects, object_mask, event, anchors)
        return self.predict(
            particles, particle_mask, event_slot, self.time_embedding(timesteps) + event_condition, memory,
            particle_classes, paired,
        )

    def detector_memory(
        self, objects: Tensor, object_mask: Tensor, event: Tensor, anchors: Tensor | None = None
    ) -> tuple[DetectorMemory, Tensor]:
        """The :class:`DetectorMemory` of the detector objects and the projected event vector (B, width):
        they depend on the detector event only, so sampling computes them once per event."""
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
        object_mask = object_mask.bool()
        if self.detector_reads_particles:
            return DetectorMemory(object_mask, tokens), self.event_condition(event)
        # One-way attention: the detector tokens attend to each other only; an event without objects
        # lets its first (padded) slot attend to itself, which keeps it finite and is never read.
        attend = object_mask.clone()
        attend[:, 0] |= ~object_mask.any(dim=1)
        keys, values, hidden = [], [], tokens
        for index, layer in enumerate(self.transformer.layers):
            query, key, value = self._heads(layer, layer.norm1(hidden))
            keys.append(key)
            values.append(value)
            if index + 1 < len(self.transformer.layers):  # the last layer's detector update is never read
                hidden = self._residual_block(layer, hidden, query, (key,), (value,), attend)
        return DetectorMemory(object_mask, None, tuple(keys), tuple(values)), self.event_condition(event)

    def predict(
        self,
        particles: Tensor,
        particle_mask: Tensor,
        event_slot: Tensor,
        condition: Tensor,
        memory: DetectorMemory,
        particle_classes: Tensor | None = None,
        paired: Tensor | None = None,
    ) -> SetNoisePrediction:
        """:meth:`forward` from the embedded condition: ``condition`` (B, width) is the time embedding plus
        the projected event vector and ``memory`` the detector's (:meth:`detector_memory`); the other
        arguments as in :meth:`forward`."""
        num_particles = particles.shape[1]
        slot_token = self.event_slot_in(event_slot) + condition + self.role_embedding[0]
        particle_tokens = self.particle_in(particles) + (
            condition + self.role_embedding[1]
        ).unsqueeze(1)
        if (self.slot_class_embedding is None) != (particle_classes is None):
            raise UnfoldError(
                "particle_classes must be given exactly when the set denoiser has slot classes "
                f"(num_slot_classes {0 if self.slot_class_embedding is None else len(self.slot_class_embedding)})"
            )
        if particle_classes is not None:
            particle_tokens = particle_tokens + self.slot_class_embedding[particle_classes]
        if self.paired_in is None:
            if paired is not None:
                raise UnfoldError("this set denoiser pairs no detector objects with its slots, "
                                  f"got paired of shape {tuple(paired.shape)}")
        else:
            expected = (*particles.shape[:2], self.paired_in.in_features)
            if paired is None or tuple(paired.shape) != expected:
                found = None if paired is None else tuple(paired.shape)
                raise UnfoldError(f"paired detector objects: expected shape {expected}, got {found}")
            particle_tokens = particle_tokens + self.paired_in(paired)
        generated = torch.cat([slot_token.unsqueeze(1), particle_tokens], dim=1)
        always = particle_mask.new_ones(particle_mask.shape[0], 1)  # the event slot, also when M = 0
        generated_mask = torch.cat([always, particle_mask], dim=1).bool()
        if self.detector_reads_particles:
            tokens = torch.cat([generated, memory.tokens], dim=1)
            ignore = ~torch.cat([generated_mask, memory.mask], dim=1)
            hidden = self.transformer(tokens, src_key_padding_mask=ignore)[:, : generated.shape[1]]
        else:
            hidden = generated
            attend = torch.cat([generated_mask, memory.mask], dim=1)
            for layer, detector_keys, detector_values in zip(
                self.transformer.layers, memory.keys, memory.values, strict=True
            ):
                query, key, value = self._heads(layer, layer.norm1(hidden))
                hidden = self._residual_block(
                    layer, hidden, query, (key, detector_keys), (value, detector_values), attend
                )
        hidden = self.output_norm(hidden)
        keep = particle_mask.unsqueeze(-1).to(hidden.dtype)
        return SetNoisePrediction(
            particles=self.particle_out(hidden[:, 1 : 1 + num_particles]) * keep,
            event_slot=self.event_slot_out(hidden[:, 0]),
        )

    def _heads(self, layer: nn.TransformerEncoderLayer, normed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Query, key and value (B, heads, T, width / heads) of one layer's attention for normed tokens (B, T, width)."""
        projected = nn.functional.linear(normed, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias)
        return tuple(part.unflatten(-1, (self.heads, -1)).transpose(1, 2) for part in projected.chunk(3, dim=-1))

    def _residual_block(
        self,
        layer: nn.TransformerEncoderLayer,
        hidden: Tensor,
        query: Tensor,
        keys: tuple[Tensor, ...],
        values: tuple[Tensor, ...],
        attend: Tensor,
    ) -> Tensor:
        """One pre-norm layer (the weights of ``nn.TransformerEncoderLayer``) for queries of ``hidden``
        (B, T, width) over the key and value blocks (:func:`~encoders.attention.set_attention`); ``attend``
        (B, K) marks the keys, all blocks together, that take part."""
        dropout = layer.self_attn.dropout if self.training else 0.0
        attended = set_attention(query, keys, values, attend[:, None, None, :], dropout=dropout)
        hidden = hidden + layer.dropout1(layer.self_attn.out_proj(attended.transpose(1, 2).flatten(-2)))
        feedforward = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(hidden)))))
        return hidden + layer.dropout2(feedforward)
