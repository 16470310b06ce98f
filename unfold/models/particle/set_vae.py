"""A per-object variational autoencoder: one latent per particle-level object, masked."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unfold.errors import UnfoldError
from unfold.models.particle.layers import mlp

__all__ = ["DecodedObjects", "LatentPosterior", "ObjectVAE"]


@dataclass(frozen=True)
class LatentPosterior:
    """Diagonal Gaussian q(z | object); zero mean and log-variance at padded slots.

    Attributes:
        mean: (..., M, L) posterior means.
        log_var: (..., M, L) posterior log-variances.
    """

    mean: Tensor
    log_var: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """(..., M, L) reparameterised draw z = mean + exp(log_var / 2) * eps."""
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + (0.5 * self.log_var).exp() * noise

    def kl(self) -> Tensor:
        """(..., M) KL(q(z | object) || N(0, 1)) summed over the latent dimensions."""
        return 0.5 * (self.mean**2 + self.log_var.exp() - 1.0 - self.log_var).sum(dim=-1)


@dataclass(frozen=True)
class DecodedObjects:
    """Decoder outputs per slot, zero at padded slots.

    Attributes:
        features: (..., M, F) reconstructed standardised continuous features.
        type_logits: (..., M, T) unnormalised log-probabilities of the object types (T may be 0).
    """

    features: Tensor
    type_logits: Tensor


class ObjectVAE(nn.Module):
    """Per-object VAE of Shmakov et al. (arXiv 2404.14332): MLP encoder and decoder per slot.

    The encoder sees the continuous features and the one-hot type, so the discrete type is
    carried by the continuous latent and diffused with it; the decoder returns the features and
    type logits (argmax at generation). Objects never see each other here, and padded slots are
    zeroed on the way in and out.

    Args:
        num_features: continuous features per object F.
        num_types: number of discrete types T; 0 for untyped objects (the event slot).
        latent_width: latent width L per object.
        width: MLP width.
        depth: hidden layers of the encoder and of the decoder.
    """

    def __init__(
        self,
        *,
        num_features: int,
        num_types: int,
        latent_width: int = 12,
        width: int = 128,
        depth: int = 3,
    ) -> None:
        super().__init__()
        if num_features < 1 or num_types < 0 or latent_width < 1:
            raise UnfoldError(
                "ObjectVAE needs num_features >= 1, num_types >= 0 and latent_width >= 1, got "
                f"{num_features}, {num_types}, {latent_width}"
            )
        self.num_features = num_features
        self.num_types = num_types
        self.latent_width = latent_width
        self.encoder = mlp(num_features + num_types, width, 2 * latent_width, depth)
        self.decoder = mlp(latent_width, width, num_features + num_types, depth)

    def encode(self, features: Tensor, types: Tensor, mask: Tensor) -> LatentPosterior:
        """q(z | object) for features (..., M, F), long types (..., M) and bool mask (..., M)."""
        keep = mask.unsqueeze(-1).to(features.dtype)
        inputs = features
        if self.num_types:
            one_hot = nn.functional.one_hot(
                types.long().clamp(0, self.num_types - 1), self.num_types
            )
            inputs = torch.cat([features, one_hot.to(features.dtype)], dim=-1)
        mean, log_var = self.encoder(inputs * keep).chunk(2, dim=-1)
        return LatentPosterior(mean * keep, log_var * keep)

    def decode(self, latents: Tensor, mask: Tensor) -> DecodedObjects:
        """Features (..., M, F) and type logits (..., M, T) from latents (..., M, L)."""
        keep = mask.unsqueeze(-1).to(latents.dtype)
        output = self.decoder(latents * keep) * keep
        return DecodedObjects(output[..., : self.num_features], output[..., self.num_features :])
