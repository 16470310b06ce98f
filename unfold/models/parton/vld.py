"""Latent variational diffusion (VLD) for parton-level unfolding, and its non-latent baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from unfold.errors import UnfoldError
from unfold.models.diffusion.sampler import (
    DEFAULT_OBJECTIVE,
    DEFAULT_SAMPLER,
    Objective,
    Precision,
    PredictionType,
    SamplerName,
    add_noise,
    denoise,
    draw_timesteps,
    make_training_scheduler,
    training_target,
)
from unfold.models.parton.networks import ConditionalMLP, SinusoidalTimeEmbedding, zero_linear
from unfold.models.parton.representation import PartonRepresentation
from unfold.models.weighting import weighted_mean

__all__ = ["VLDLoss", "VariationalLatentDiffusion"]


@dataclass(frozen=True)
class VLDLoss:
    """The weighted loss terms (scalars) and their sum ``total``; unused terms are zero.
    ``diffusion`` is the denoiser's regression loss of either objective (noise or velocity)."""

    reconstruction: Tensor
    kl: Tensor
    diffusion: Tensor
    consistency: Tensor
    total: Tensor


class VariationalLatentDiffusion(nn.Module):
    """Conditional VAE with a conditional diffusion model in its latent space (arXiv 2305.10399).

    The encoder q(z | x, c) is a diagonal Gaussian, the decoder p(x | z, c) returns the mean of
    x, and a denoiser eps(z_t, t, c) learns p(z | c) with the ``diffusers`` DDPM noise schedule.
    Everything is trained end to end on

    .. math::  L = \\lVert x - \\mathrm{dec}(z, c) \\rVert^2
               + \\beta\\, \\mathrm{KL}(q(z | x, c) \\Vert N(0, 1))
               + \\lVert \\epsilon - \\epsilon_\\theta(z_t, t, c) \\rVert^2
               + \\lambda\\, C(\\mathrm{dec}(z, c)),

    with z a reparameterised posterior sample. The decoder, the KL and the consistency term see
    z with gradients; the diffusion takes z as its clean state with the gradient stopped, so the
    diffusion loss trains the denoiser (and, through it, the condition) but cannot shrink the
    latent to make its own task trivial (with the gradient kept, a one-variable closure test
    collapsed the latent scale within a few hundred steps). The published model prevents that
    instead by tying the posterior to the first step of a learned continuous-time schedule;
    here the prior KL to N(0, 1) with a small beta keeps the latent at the noise's scale.
    C is the physics-consistency term of ``representation``. The diffusion term is written for
    epsilon prediction; by default the denoiser predicts v = sqrt(abar_t) eps - sqrt(1 - abar_t) z
    instead (``prediction_type``, arXiv 2202.00512), on ``noise_draws`` noisy states of each z.

    With ``objective="flow-matching"`` the same denoiser learns the velocity of conditional flow
    matching instead (arXiv 2210.02747): its term is ||(noise - z) - v_theta(z_t, t, c)||^2 with
    z_t = (1 - t) z + t noise, and sampling integrates the ODE from t = 1 to 0
    (:mod:`unfold.models.diffusion.sampler`); nothing else changes.

    With ``latent=False`` there is no VAE: the same denoiser diffuses the standardised x
    directly (the conditional diffusion, the default); only the diffusion term is used.

    Gradients reach the condition through every network, so an upstream event encoder trains
    through this loss.

    Args:
        features: Width F of the standardised parton tensor.
        condition_width: Width C of the condition (e.g. the event vector, D).
        latent: Diffuse in the VAE latent (True) or in x itself (False, the default: it measured better,
            README).
        latent_width: Latent width (64 in the public VLD code).
        width: Width of every MLP.
        depth: Residual blocks per MLP.
        time_embedding_width: Width of the sinusoidal timestep features.
        num_train_timesteps: Number T of DDPM steps.
        beta_schedule: ``diffusers`` beta schedule (diffusion only).
        prediction_type: What the diffusion denoiser predicts: ``"v_prediction"`` (v = sqrt(abar) noise -
            sqrt(1 - abar) x, the default: README), ``"epsilon"`` (the noise) or ``"sample"``; diffusion only.
        objective: ``"diffusion"`` (DDPM) or ``"flow-matching"`` (velocity of
            the linear path; sampled with diffusers' FlowMatchEulerDiscreteScheduler).
        kl_weight: beta, the KL weight.
        consistency_weight: lambda, the consistency weight (used when ``representation`` is given).
        noise_draws: Diffusion terms per event and training step, each at its own time and noise: the
            denoiser's loss is averaged over them, so one pass of the condition (the encoder) trains it
            on as many noisy states (8 by default: README).
        block_conditioning: The condition also scales and shifts every residual block of the denoiser (FiLM,
            :class:`ConditionalMLP`'s ``modulation_width``), not only its input; ``"with-time"`` (the default:
            README): so does the noise level (the sum of a linear map of each, as DiT's adaptive LayerNorm, arXiv
            2212.09748); False: the input only (the default before 2026-12-07).
        representation: The parton representation (its statistics are saved with the model);
            required for the consistency term and for decoding to physical units.
    """

    def __init__(
        self,
        *,
        features: int,
        condition_width: int,
        latent: bool = False,
        latent_width: int = 64,
        width: int = 256,
        depth: int = 3,
        time_embedding_width: int = 64,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: PredictionType = "v_prediction",
        objective: Objective = DEFAULT_OBJECTIVE,
        kl_weight: float = 1e-3,
        consistency_weight: float = 0.1,
        noise_draws: int = 8,
        block_conditioning: bool | Literal["with-time"] = "with-time",
        representation: PartonRepresentation | None = None,
    ) -> None:
        super().__init__()
        if representation is not None and representation.features != features:
            raise UnfoldError(
                f"features={features} but the parton representation has {representation.features}"
            )
        if (
            min(features, condition_width, latent_width, width, time_embedding_width) < 1
            or depth < 0
            or noise_draws < 1
        ):
            raise UnfoldError(
                "features, condition_width, the network widths and noise_draws must be positive, depth non-negative"
            )
        if block_conditioning not in (False, True, "with-time"):
            raise UnfoldError(f"block_conditioning must be false, true or 'with-time', got {block_conditioning!r}")
        self.features = features
        self.condition_width = condition_width
        self.latent = latent
        self.kl_weight = kl_weight
        self.consistency_weight = consistency_weight
        self.noise_draws = noise_draws
        self.representation = representation
        self.objective = objective
        self.scheduler = make_training_scheduler(
            num_train_timesteps, beta_schedule, prediction_type=prediction_type, objective=objective
        )
        self.diffused_width = latent_width if latent else features
        mlp = {"width": width, "depth": depth}
        if latent:
            self.encoder = ConditionalMLP(
                inputs=features, condition_width=condition_width, outputs=2 * latent_width, **mlp
            )
            self.decoder = ConditionalMLP(
                inputs=latent_width, condition_width=condition_width, outputs=features, **mlp
            )
        self.time_embedding = SinusoidalTimeEmbedding(width=time_embedding_width)
        self.time_modulator = (
            zero_linear(time_embedding_width, 2 * width * depth) if block_conditioning == "with-time" and depth else None
        )
        self.denoiser = ConditionalMLP(
            inputs=self.diffused_width,
            condition_width=condition_width + time_embedding_width,
            outputs=self.diffused_width,
            zero_output=True,
            modulation_width=condition_width if block_conditioning else 0,
            **mlp,
        )

    def encode(self, x: Tensor, condition: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance, each (E, latent_width), of (E, F) partons given (E, C)."""
        mean, log_variance = self.encoder(x, condition).chunk(2, dim=-1)
        return mean, log_variance

    def decode(self, z: Tensor, condition: Tensor) -> Tensor:
        """Standardised partons (E, F) from latents (E, latent_width) given (E, C)."""
        return self.decoder(z, condition)

    def predict_noise(
        self, state: Tensor, t: Tensor, condition: Tensor, modulation: Tensor | None = None
    ) -> Tensor:
        """The denoiser's prediction (E, W) (v, noise or clean state as ``prediction_type`` says, or the velocity
        for flow matching) of noisy states (E, W) at times (E,) (integer timesteps, or t T for flow matching)
        given (E, C); ``modulation``: the denoiser's :meth:`ConditionalMLP.modulation` of the condition, if
        already computed."""
        if modulation is None:
            modulation = self.denoiser.modulation(condition)
        time = self.time_embedding(t)
        if self.time_modulator is not None:
            modulation = modulation + self.time_modulator(time)
        return self.denoiser(state, torch.cat([condition, time], dim=-1), modulation)

    def forward(
        self,
        x: Tensor,
        condition: Tensor,
        *,
        generator: torch.Generator | None = None,
        weights: Tensor | None = None,
    ) -> VLDLoss:
        """The training loss of standardised partons (E, F) given conditions (E, C).

        Args:
            x: Standardised partons (E, F).
            condition: Conditions (E, C).
            generator: Source of the posterior sample, the timesteps and the diffusion noise.
            weights: (E,) event weights of every term (:func:`unfold.models.weighting.weighted_mean`); None for ones.
        """
        self._check_condition(condition)
        if x.ndim != 2 or x.shape != (condition.shape[0], self.features):
            raise UnfoldError(
                f"partons must have shape (E, {self.features}) with E = {condition.shape[0]} "
                f"events of the condition, got {tuple(x.shape)}"
            )
        zero = x.new_zeros(())
        reconstruction, kl, consistency = zero, zero, zero
        if self.latent:
            mean, log_variance = self.encode(x, condition)
            z = mean + torch.exp(0.5 * log_variance) * self._randn(mean, generator)
            decoded = self.decode(z, condition)
            reconstruction = weighted_mean((decoded - x).pow(2).mean(-1), weights)
            kl = weighted_mean(0.5 * (mean.pow(2) + log_variance.exp() - 1.0 - log_variance).sum(-1), weights)
            if self.representation is not None:
                consistency = weighted_mean(self.representation.consistency(decoded).mean(-1), weights)
            clean = z.detach()
        else:
            clean = x
        diffusion = self._diffusion_loss(clean, condition, generator, weights)
        kl = self.kl_weight * kl
        consistency = self.consistency_weight * consistency
        total = reconstruction + kl + diffusion + consistency
        return VLDLoss(
            reconstruction=reconstruction,
            kl=kl,
            diffusion=diffusion,
            consistency=consistency,
            total=total,
        )

    def _diffusion_loss(
        self, clean: Tensor, condition: Tensor, generator: torch.Generator | None, weights: Tensor | None
    ) -> Tensor:
        """The denoiser's regression loss on ``noise_draws`` noisy states of every clean state (E, W)."""
        draws = self.noise_draws
        modulation = _repeated(self.denoiser.modulation(condition), draws)
        clean, condition = clean.repeat_interleave(draws, dim=0), condition.repeat_interleave(draws, dim=0)
        weights = None if weights is None else weights.repeat_interleave(draws)
        t = draw_timesteps(self.scheduler, clean.shape[0], generator=generator, device=clean.device)
        noise = self._randn(clean, generator)
        noisy = add_noise(self.scheduler, clean, noise, t)
        target = training_target(self.scheduler, clean, noise, t)
        return weighted_mean((self.predict_noise(noisy, t, condition, modulation) - target).pow(2).mean(-1), weights)

    @torch.no_grad()
    def sample(
        self,
        condition: Tensor,
        n: int,
        *,
        sampler: SamplerName | None = DEFAULT_SAMPLER,
        steps: int = 25,
        generator: torch.Generator | None = None,
        precision: Precision = "float32",
        progress: bool = False,
    ) -> Tensor:
        """Draw n unfoldings per event: standardised partons (E, n, F).

        Args:
            condition: Conditions (E, C).
            n: Draws per event.
            sampler: ``"ddpm"``, ``"ddim"``, ``"dpm-solver"`` or ``"ddpm-large"`` (diffusion), ``"euler"`` (flow
                matching), None for the objective's default.
            steps: Denoising steps (fewer is faster, coarser).
            generator: Seeded generator on the condition's device for reproducible draws.
            precision: Arithmetic of the denoiser (:data:`~unfold.models.diffusion.sampler.Precision`);
                the VAE's decoder runs in float32.
            progress: Show a progress bar over the steps.

        Returns:
            Standardised partons (E, n, F); ``representation.decode`` turns them physical.

        Raises:
            UnfoldError: If n is not positive, the condition has the wrong shape, or the
                sampler or number of steps is invalid.
        """
        if n < 1:
            raise UnfoldError(f"the number of draws per event n must be positive, got {n}")
        self._check_condition(condition)
        events = condition.shape[0]
        repeated = condition.repeat_interleave(n, dim=0)
        modulation = _repeated(self.denoiser.modulation(condition), n)
        state = denoise(
            lambda noisy, t: self.predict_noise(noisy, t, repeated, modulation),
            (events * n, self.diffused_width),
            training_scheduler=self.scheduler,
            sampler=sampler,
            steps=steps,
            generator=generator,
            device=condition.device,
            dtype=condition.dtype,
            precision=precision,
            progress=progress,
        )
        partons = self.decode(state, repeated) if self.latent else state
        return partons.view(events, n, self.features)

    def _check_condition(self, condition: Tensor) -> None:
        if (
            condition.ndim != 2
            or condition.shape[1] != self.condition_width
            or condition.shape[0] < 1
        ):
            raise UnfoldError(
                f"condition must have shape (E, {self.condition_width}) with E >= 1, got {tuple(condition.shape)}"
            )

    @staticmethod
    def _randn(like: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _repeated(rows: Tensor | None, times: int) -> Tensor | None:
    """Each row repeated ``times`` times in place (as the conditions of several noisy states or draws)."""
    return None if rows is None else rows.repeat_interleave(times, dim=0)
