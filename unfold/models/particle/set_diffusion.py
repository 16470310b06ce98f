"""Variable-length latent diffusion of particle-level events: multiplicity, then a denoised set."""

from __future__ import annotations

from dataclasses import dataclass

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
    network_precision,
    training_target,
)
from unfold.models.particle.multiplicity import (
    MultiplicityDistribution,
    MultiplicityPredictor,
    TypedMultiplicity,
)
from unfold.models.particle.pairing import DetectorSlots, ResidualScale, pair_slots
from unfold.models.particle.representation import NUM_TYPES, SLOT_CLASS_NAMES, SLOT_CLASS_OF_TYPE, ParticleBatch
from unfold.models.particle.set_denoiser import SetDenoiser
from unfold.models.particle.set_vae import ObjectVAE
from unfold.models.weighting import weighted_mean

__all__ = ["ROWS_PER_CALL", "ParticleLoss", "ParticleSample", "SetLatentDiffusion"]

# Most draws per set-denoiser call while sampling: 1024 draws of ~13 real tokens at width 128 keep
# a call's activations near 7 MB per layer tensor.
ROWS_PER_CALL = 1024
# A call of draws of unequal size may hold up to this factor more tokens than real ones.
PADDING_SLACK = 1.15


@dataclass(frozen=True)
class ParticleLoss:
    """Training loss terms of :class:`SetLatentDiffusion` (each a scalar tensor).

    Attributes:
        multiplicity: mean -log p(M | event) [nats per event].
        reconstruction: masked mean squared error of the decoded object features.
        type_cross_entropy: masked mean cross-entropy of the decoded object types.
        event_reconstruction: mean squared error of the decoded event features (MET_x, MET_y).
        kl: KL(q(z | x) || N(0, 1)) per real object plus per event slot, averaged.
        diffusion: epsilon (flow matching: velocity) mean squared error on the real latent slots.
        total: the weighted sum that is minimised.
    """

    multiplicity: Tensor
    reconstruction: Tensor
    type_cross_entropy: Tensor
    event_reconstruction: Tensor
    kl: Tensor
    diffusion: Tensor
    total: Tensor


@dataclass(frozen=True)
class ParticleSample:
    """n unfoldings per detector event, in the standardised space of ``ParticleRepresentation``.

    Attributes:
        features: (E, n, M_max, F) object features, zero at padded slots.
        types: (E, n, M_max) long object types (argmax of the decoded logits), zero at padding.
        mask: (E, n, M_max) bool; the first ``multiplicity`` slots of each draw are True.
        multiplicity: (E, n) long sampled number of objects (jets and leptons).
        event_features: (E, n, G) event features (MET_x, MET_y).
    """

    features: Tensor
    types: Tensor
    mask: Tensor
    multiplicity: Tensor
    event_features: Tensor


class SetLatentDiffusion(nn.Module):
    """Particle-level unfolding by variable-length latent diffusion (arXiv 2404.14332).

    p(event | detector) = p(M | detector) p(objects, event features | M, detector): the
    multiplicity M is drawn first; then M per-object latents (from a per-object VAE) and one
    event-slot latent (from a VAE of the event features) are denoised jointly by a transformer
    that attends to the detector object embeddings, and decoded to features and type logits. With
    ``typed_counts`` the numbers of leptons, b jets and light jets are drawn in turn
    (:class:`TypedMultiplicity`), the denoiser is told each slot's class, and each slot's type is
    decoded within its class (a lepton slot as electron or muon), so every draw holds the drawn counts.
    Noise schedule and samplers come from ``diffusers`` via :mod:`unfold.models.diffusion.sampler`.
    Every term trains the conditioning tensors (the shared encoder) too. The diffusion learns the
    VAE's latents as they stand (detached, as the parton VLD does): letting its loss into the VAE
    encoders shrank the latents to a tenth of the unit scale the noise schedule is made for
    (per-dimension spread 0.09-0.44 against 1.0-1.4 detached) and the unfolded jets with them. With
    ``objective="flow-matching"`` the denoiser learns the velocity noise - z of conditional flow
    matching (arXiv 2210.02747) on the same latents and is sampled by the Euler ODE step.

    Args:
        condition_width: width D of the shared encoder's object embeddings and event vector.
        max_particles: number of object slots M_max.
        num_features: continuous features per object F.
        num_types: object types T.
        num_event_features: event-level features G.
        latent_width: latent width L per object and for the event slot.
        width: width of every network.
        depth: transformer layers of the denoiser.
        heads: attention heads of the denoiser.
        vae_depth: hidden layers of each VAE encoder and decoder.
        multiplicity_distribution: ``"categorical"`` or ``"negative-binomial"``.
        multiplicity_depth: hidden layers of the multiplicity MLP.
        num_train_timesteps: diffusion steps T of the training schedule.
        beta_schedule: ``diffusers`` beta schedule (diffusion only).
        prediction_type: What the diffusion denoiser predicts: ``"v_prediction"`` (the default: MET W1
            2.8-3.0 GeV in two seeds against 4.0-4.4 for the noise, README), ``"epsilon"`` (the noise) or
            ``"sample"``; diffusion only.
        objective: ``"diffusion"`` (DDPM) or ``"flow-matching"`` (velocity of
            the linear path; sampled with diffusers' FlowMatchEulerDiscreteScheduler).
        dropout: dropout in the denoiser.
        multiplicity_weight: weight of the multiplicity NLL.
        reconstruction_weight: weight of the feature, type and event reconstruction terms.
        kl_weight: weight of the VAE KL term.
        diffusion_weight: weight of the epsilon (velocity) MSE.
        anchor_width: features of the detector anchors the denoiser's detector tokens carry (0: none;
            see :class:`SetDenoiser`).
        detector_reads_particles: two-way attention between detector and generated tokens (the
            design before one-way attention; see :class:`SetDenoiser`).
        typed_counts: draw the numbers of leptons, b jets and light jets and generate each slot as its
            class (the design before drew one multiplicity and decoded every type freely).
        ranked_slots: with ``typed_counts``, also tell each slot its rank R within its class (the k-th
            hardest b jet, ...; ranks from ``ranked_slots`` - 1 on share one code), trained on the truth
            in pT order, so the slots need not break their symmetry to pick distinct detector objects
            (0: the slots of a class are exchangeable).
        paired_slots: with ``typed_counts`` and anchors, generate each slot relative to its detector
            counterpart, the detector object of the same class and pT rank (:mod:`unfold.models.particle.pairing`):
            the VAE and the diffusion see the particle features minus the counterpart's anchor, the denoiser is
            told the counterpart, and sampling adds it back; a slot without one is generated as it is.
        scaled_residuals: with ``paired_slots``, divide each class's residuals by their running RMS
            (:class:`~unfold.models.particle.pairing.ResidualScale`), so a lepton measured to 1 % is as
            visible to the VAE as a jet measured to 10 %.
    """

    def __init__(
        self,
        *,
        condition_width: int,
        max_particles: int = 16,
        num_features: int = 5,
        num_types: int = 4,
        num_event_features: int = 2,
        latent_width: int = 12,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        vae_depth: int = 3,
        multiplicity_distribution: MultiplicityDistribution = "categorical",
        multiplicity_depth: int = 2,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: PredictionType = "v_prediction",
        objective: Objective = DEFAULT_OBJECTIVE,
        dropout: float = 0.0,
        multiplicity_weight: float = 1.0,
        reconstruction_weight: float = 1.0,
        kl_weight: float = 1e-3,
        diffusion_weight: float = 1.0,
        anchor_width: int = 0,
        detector_reads_particles: bool = False,
        typed_counts: bool = True,
        ranked_slots: int = 4,
        paired_slots: bool = False,
        scaled_residuals: bool = True,
    ) -> None:
        super().__init__()
        if typed_counts and num_types != NUM_TYPES:
            raise UnfoldError(f"typed_counts needs the {NUM_TYPES} object types of ParticleRepresentation, got num_types {num_types}")
        if paired_slots and not (typed_counts and anchor_width):
            raise UnfoldError("paired_slots pairs each slot's class and rank with a detector object's: it needs typed_counts "
                              f"and detector anchors (got typed_counts {typed_counts}, anchor_width {anchor_width})")
        self.paired_slots = paired_slots
        self.residual_scale = ResidualScale(len(SLOT_CLASS_NAMES), num_features) if paired_slots and scaled_residuals else None
        self.max_particles = max_particles
        self.typed_counts = typed_counts
        self.ranked_slots = ranked_slots
        self.latent_width = latent_width
        self.objective = objective
        self.multiplicity_weight = multiplicity_weight
        self.reconstruction_weight = reconstruction_weight
        self.kl_weight = kl_weight
        self.diffusion_weight = diffusion_weight
        classes = {"num_classes": len(SLOT_CLASS_NAMES)} if typed_counts else {}
        self.multiplicity = (TypedMultiplicity if typed_counts else MultiplicityPredictor)(
            **classes,
            condition_width=condition_width,
            max_particles=max_particles,
            distribution=multiplicity_distribution,
            width=width,
            depth=multiplicity_depth,
        )
        self.particle_vae = ObjectVAE(
            num_features=num_features,
            num_types=num_types,
            latent_width=latent_width,
            width=width,
            depth=vae_depth,
        )
        self.event_vae = ObjectVAE(
            num_features=num_event_features,
            num_types=0,
            latent_width=latent_width,
            width=width,
            depth=vae_depth,
        )
        self.denoiser = SetDenoiser(
            latent_width=latent_width,
            condition_width=condition_width,
            width=width,
            depth=depth,
            heads=heads,
            dropout=dropout,
            anchor_width=anchor_width,
            detector_reads_particles=detector_reads_particles,
            num_slot_classes=len(SLOT_CLASS_NAMES) * max(ranked_slots, 1) if typed_counts else 0,
            paired_width=anchor_width + 1 if paired_slots else 0,
        )
        self.training_scheduler = make_training_scheduler(
            num_train_timesteps, beta_schedule, prediction_type=prediction_type, objective=objective
        )

    def loss(
        self,
        batch: ParticleBatch,
        objects: Tensor,
        object_mask: Tensor,
        event: Tensor,
        *,
        generator: torch.Generator | None = None,
        weights: Tensor | None = None,
        anchors: Tensor | None = None,
        detector_slots: DetectorSlots | None = None,
    ) -> ParticleLoss:
        """All training loss terms for one batch.

        Args:
            batch: standardised particle-level truth with M_max slots.
            objects: (E, N, D) detector object embeddings.
            object_mask: (E, N) bool real detector objects.
            event: (E, D) detector event vector.
            generator: source of the VAE, noise and timestep draws.
            weights: (E,) event weights of every term (:func:`unfold.models.weighting.weighted_mean`); None for ones.
            anchors: (E, N, anchor_width) detector kinematics in the particle feature space, with
                ``anchor_width`` > 0.
            detector_slots: the detector objects' classes and ranks, with ``paired_slots``.
        """
        self._check_condition(objects, object_mask, event)
        self._check_pairing(detector_slots)
        if batch.features.shape[:2] != (event.shape[0], self.max_particles):
            raise UnfoldError(
                f"particle batch has shape {tuple(batch.features.shape)}, expected "
                f"({event.shape[0]}, {self.max_particles}, F) to match the events and max_particles"
            )
        # Only the slots and objects some event of the batch fills (the denoiser ignores padding and the
        # objects' order): about 22 instead of 33 tokens per event on the default data.
        filled = batch.mask.any(dim=0).nonzero()
        used = int(filled.max()) + 1 if len(filled) else 1
        batch = ParticleBatch(batch.features[:, :used], batch.types[:, :used], batch.mask[:, :used], batch.event_features)
        objects, object_mask, anchors, detector_slots = _real_objects_first(objects, object_mask, anchors, detector_slots)
        mask = batch.mask.bool()
        keep = mask.unsqueeze(-1).to(event.dtype)
        num_events = event.shape[0]
        codes = paired = None
        features = batch.features
        if self.typed_counts:  # the truth is in pT order within each class
            classes = self._slot_classes(batch.types)
            in_class = nn.functional.one_hot(classes, len(SLOT_CLASS_NAMES)) * mask.unsqueeze(-1)
            ranks = (in_class.cumsum(dim=1) - 1).gather(-1, classes.unsqueeze(-1)).squeeze(-1).clamp(min=0)
            codes = self._slot_codes(classes, ranks)
            if self.paired_slots:
                counterparts, has_pair = pair_slots(anchors, detector_slots, classes, ranks, mask)
                paired = self._paired_input(counterparts, has_pair)
                features = features - counterparts
                if self.residual_scale is not None:
                    if self.training:
                        self.residual_scale.update(features[mask], classes[mask], has_pair[mask])
                    features = features / self.residual_scale(classes, has_pair)

        posterior = self.particle_vae.encode(features, batch.types, mask)
        latents = posterior.sample(generator) * keep
        decoded = self.particle_vae.decode(latents, mask)
        squared = (decoded.features - features) ** 2
        reconstruction = weighted_mean(squared.mean(dim=-1), weights, mask)
        cross_entropy = nn.functional.cross_entropy(
            decoded.type_logits.flatten(0, 1), batch.types.flatten().long(), reduction="none"
        )
        type_cross_entropy = weighted_mean(cross_entropy.view(mask.shape), weights, mask)

        slot_mask = torch.ones(num_events, 1, dtype=torch.bool, device=event.device)
        slot_types = torch.zeros(num_events, 1, dtype=torch.long, device=event.device)
        event_posterior = self.event_vae.encode(
            batch.event_features.unsqueeze(1), slot_types, slot_mask
        )
        event_latents = event_posterior.sample(generator)
        event_decoded = self.event_vae.decode(event_latents, slot_mask).features.squeeze(1)
        event_reconstruction = weighted_mean(((event_decoded - batch.event_features) ** 2).mean(-1), weights)
        kl = weighted_mean(posterior.kl(), weights, mask) + weighted_mean(event_posterior.kl().reshape(num_events, -1).mean(-1), weights)

        clean = torch.cat([event_latents, latents], dim=1).detach()  # the VAE is shaped by reconstruction and KL only
        keep_all = torch.cat([slot_mask, mask], dim=1).unsqueeze(-1).to(event.dtype)
        noise = _randn_like(clean, generator) * keep_all
        timesteps = draw_timesteps(self.training_scheduler, num_events, generator=generator, device=event.device)
        noisy = add_noise(self.training_scheduler, clean, noise, timesteps) * keep_all
        target = training_target(self.training_scheduler, clean, noise, timesteps)
        prediction = self.denoiser(
            noisy[:, 1:], mask, noisy[:, 0], timesteps, objects, object_mask, event, anchors, codes, paired
        )
        predicted = torch.cat([prediction.event_slot.unsqueeze(1), prediction.particles], dim=1)
        diffusion = weighted_mean(((predicted - target) ** 2).mean(-1), weights, keep_all.squeeze(-1) > 0)

        if self.typed_counts:
            log_prob = self.multiplicity.log_prob(event, in_class.sum(dim=1))
        else:
            log_prob = self.multiplicity.log_prob(event, batch.multiplicity)
        multiplicity = weighted_mean(-log_prob, weights)
        total = (
            self.multiplicity_weight * multiplicity
            + self.reconstruction_weight
            * (reconstruction + type_cross_entropy + event_reconstruction)
            + self.kl_weight * kl
            + self.diffusion_weight * diffusion
        )
        return ParticleLoss(
            multiplicity=multiplicity,
            reconstruction=reconstruction,
            type_cross_entropy=type_cross_entropy,
            event_reconstruction=event_reconstruction,
            kl=kl,
            diffusion=diffusion,
            total=total,
        )

    @torch.no_grad()
    def sample(
        self,
        objects: Tensor,
        object_mask: Tensor,
        event: Tensor,
        n: int,
        *,
        sampler: SamplerName | None = DEFAULT_SAMPLER,
        steps: int = 25,
        generator: torch.Generator | None = None,
        precision: Precision = "float32",
        progress: bool = False,
        rows_per_call: int = ROWS_PER_CALL,
        anchors: Tensor | None = None,
        detector_slots: DetectorSlots | None = None,
    ) -> ParticleSample:
        """Draw n particle-level unfoldings per detector event.

        Args:
            objects: (E, N, D) detector object embeddings.
            object_mask: (E, N) bool real detector objects.
            event: (E, D) detector event vector.
            n: draws per event.
            sampler: ``"ddpm"``, ``"ddim"``, ``"dpm-solver"`` or ``"ddpm-large"`` (diffusion), ``"euler"`` (flow
                matching), None for the objective's default.
            steps: denoising steps.
            generator: seeded generator on the tensors' device for reproducible draws.
            precision: arithmetic of the set denoiser (:data:`~unfold.models.diffusion.sampler.Precision`);
                the multiplicities and the VAE's decoder stay float32.
            progress: show a progress bar over the steps.
            rows_per_call: draws per denoiser call, which bounds the memory of a step.
            anchors: (E, N, anchor_width) detector kinematics in the particle feature space, with
                ``anchor_width`` > 0.
            detector_slots: the detector objects' classes and ranks, with ``paired_slots``.

        The E n draws are denoised together, but the denoiser sees almost only real tokens: the draws
        are sorted by (sampled multiplicity, number of detector objects) and grouped into calls of at
        most ``rows_per_call`` draws, each trimmed to its longest draw and padded by at most
        ``PADDING_SLACK``. The set denoiser is permutation equivariant and masks padding, so this gives
        the draws of the padded layout (E n draws of 1 + M_max + N tokens) up to float rounding, with
        about 13 instead of 33 tokens per draw on the default data.
        """
        self._check_condition(objects, object_mask, event)
        self._check_pairing(detector_slots)
        objects, object_mask, anchors, detector_slots = _real_objects_first(objects, object_mask, anchors, detector_slots)
        num_events, slots, width = event.shape[0], self.max_particles, self.latent_width
        slot_index = torch.arange(slots, device=event.device)
        if self.typed_counts:
            counts = self.multiplicity.sample(event, n, generator)
            multiplicity = counts.sum(dim=-1)
            # the slots of class 0 first, then class 1, ...: a slot's class is the number of class ends at or
            # before it (padding after the last end gets the last class; it is masked)
            ends = counts.cumsum(dim=-1).flatten(0, 1)
            classes = (slot_index.unsqueeze(-1) >= ends.unsqueeze(1)).sum(dim=-1).clamp(max=counts.shape[-1] - 1)
            starts = (ends - counts.flatten(0, 1)).gather(-1, classes)
            ranks = slot_index - starts
            codes = self._slot_codes(classes, ranks)
        else:
            multiplicity, classes, codes = self.multiplicity.sample(event, n, generator), None, None
        mask = slot_index < multiplicity.unsqueeze(-1)
        flat_mask = mask.flatten(0, 1)
        counterparts = paired = None
        if self.paired_slots:
            draws = torch.arange(num_events, device=event.device).repeat_interleave(n)
            counterparts, has_pair = pair_slots(anchors[draws], DetectorSlots(*(part[draws] for part in detector_slots)),
                                                classes, ranks, flat_mask)
            paired = self._paired_input(counterparts, has_pair)
        with network_precision(precision, event.device):  # the detector's keys and values in the denoiser's arithmetic
            predict_noise = _CompactDenoiser(
                self.denoiser, objects, object_mask, event, multiplicity, rows_per_call, anchors, codes, paired
            )
        latents = denoise(
            predict_noise,
            (num_events * n, 1 + slots, width),
            training_scheduler=self.training_scheduler,
            sampler=sampler,
            steps=steps,
            generator=generator,
            device=event.device,
            dtype=event.dtype,
            precision=precision,
            progress=progress,
        )
        # Decode only the sampled objects (padding decodes to zero features and type 0).
        decoded = self.particle_vae.decode(latents[:, 1:][flat_mask], flat_mask.new_ones(int(flat_mask.sum())))
        features = latents.new_zeros(num_events * n, slots, decoded.features.shape[-1])
        if counterparts is None:
            features[flat_mask] = decoded.features
        else:
            scale = 1.0 if self.residual_scale is None else self.residual_scale(classes[flat_mask], has_pair[flat_mask])
            features[flat_mask] = decoded.features * scale + counterparts[flat_mask]
        type_logits = decoded.type_logits
        if classes is not None:  # each slot's type among its class's types
            class_of_type = self._slot_classes(torch.arange(NUM_TYPES, device=event.device))
            type_logits = type_logits.masked_fill(class_of_type != classes[flat_mask].unsqueeze(-1), float("-inf"))
        types = torch.zeros(num_events * n, slots, dtype=torch.long, device=event.device)
        types[flat_mask] = type_logits.argmax(dim=-1)
        slot_mask = torch.ones(num_events * n, 1, dtype=torch.bool, device=event.device)
        event_features = self.event_vae.decode(latents[:, :1], slot_mask).features.squeeze(1)
        return ParticleSample(
            features=features.unflatten(0, (num_events, n)),
            types=types.unflatten(0, (num_events, n)),
            mask=mask,
            multiplicity=multiplicity,
            event_features=event_features.unflatten(0, (num_events, n)),
        )

    @staticmethod
    def _paired_input(counterparts: Tensor, has_pair: Tensor) -> Tensor:
        """The denoiser's paired input (B, M, F + 1): each slot's counterpart anchor (zero without one) and
        a flag that it has one."""
        return torch.cat([counterparts, has_pair.unsqueeze(-1).to(counterparts.dtype)], dim=-1)

    def _check_pairing(self, detector_slots: DetectorSlots | None) -> None:
        if self.paired_slots and detector_slots is None:
            raise UnfoldError("this particle model generates each slot relative to its detector counterpart (paired_slots): "
                              "detector_slots, the detector objects' classes and ranks, are required")
        if not self.paired_slots and detector_slots is not None:
            raise UnfoldError("this particle model pairs no slots with detector objects; got detector_slots")

    def _slot_codes(self, classes: Tensor, ranks: Tensor) -> Tensor:
        """The denoiser's slot code: the class, and with ``ranked_slots`` the rank within it (capped)."""
        if not self.ranked_slots:
            return classes
        return classes * self.ranked_slots + ranks.clamp(0, self.ranked_slots - 1)

    @staticmethod
    def _slot_classes(types: Tensor) -> Tensor:
        """Long slot classes (``SLOT_CLASS_NAMES``) of the object types (padding counts as its type 0)."""
        return torch.tensor(SLOT_CLASS_OF_TYPE, device=types.device)[types.long()]

    @staticmethod
    def _check_condition(objects: Tensor, object_mask: Tensor, event: Tensor) -> None:
        if (
            objects.dim() != 3
            or object_mask.shape != objects.shape[:2]
            or event.dim() != 2
            or event.shape[0] != objects.shape[0]
            or event.shape[1] != objects.shape[2]
        ):
            raise UnfoldError(
                "conditioning must be objects (E, N, D), object_mask (E, N) and event (E, D); got "
                f"{tuple(objects.shape)}, {tuple(object_mask.shape)}, {tuple(event.shape)}"
            )


class _CompactDenoiser:
    """``predict_noise(x_t, t)`` of :func:`denoise` for the (E n, 1 + M_max, L) states of n draws per
    event, calling the set denoiser on real tokens only.

    The detector objects come real ones first (:func:`_real_objects_first`, which ``sample`` applies), so
    a call can cut them to its longest object list. The detector tokens and projected event vector are
    computed once per event and the time embedding once per step (every
    draw is at the same time). Draws are sorted by (multiplicity, detector objects) and cut into
    calls of at most ``rows_per_call`` draws (:func:`_merge_groups`), each trimmed to its longest
    particle set and object list.
    """

    def __init__(self, denoiser: SetDenoiser, objects: Tensor, object_mask: Tensor, event: Tensor,
                 multiplicity: Tensor, rows_per_call: int, anchors: Tensor | None = None,
                 codes: Tensor | None = None, paired: Tensor | None = None) -> None:
        if rows_per_call < 1:
            raise UnfoldError(f"rows_per_call must be positive, got {rows_per_call}")
        self.denoiser = denoiser
        num_events, n = multiplicity.shape
        memory, event_condition = denoiser.detector_memory(objects, object_mask, event, anchors)
        object_count = object_mask.sum(dim=1)
        counts = multiplicity.flatten()
        events = torch.arange(num_events, device=event.device).repeat_interleave(n)
        lengths = torch.stack([counts, object_count[events]], dim=1)
        order = torch.argsort(lengths[:, 0] * (object_mask.shape[1] + 1) + lengths[:, 1], stable=True)
        shapes, sizes = torch.unique_consecutive(lengths[order], dim=0, return_counts=True)
        self.calls = []
        start = 0
        for rows in _merge_groups(shapes.tolist(), sizes.tolist(), rows_per_call):
            rows = order[start : start + rows]
            start += len(rows)
            row_events = events[rows]
            slots, width = int(counts[rows].max()), int(object_count[row_events].max())
            particle_mask = torch.arange(slots, device=event.device) < counts[rows].unsqueeze(-1)
            row_codes = None if codes is None else codes[rows, :slots]
            row_paired = None if paired is None else paired[rows, :slots]
            self.calls.append((rows, slots, particle_mask, event_condition[row_events],
                               memory.select(row_events, width), row_codes, row_paired))

    def __call__(self, states: Tensor, timesteps: Tensor) -> Tensor:
        """The prediction (noise or velocity) for states (E n, 1 + M_max, L), zero at padded slots."""
        time = self.denoiser.time_embedding(timesteps[:1])
        prediction = torch.zeros_like(states)
        for rows, slots, particle_mask, event_condition, memory, codes, paired in self.calls:
            state = states[rows]
            keep = particle_mask.unsqueeze(-1).to(states.dtype)
            output = self.denoiser.predict(state[:, 1 : 1 + slots] * keep, particle_mask, state[:, 0],
                                           time + event_condition, memory, codes, paired)
            prediction[rows, 0] = output.event_slot.to(prediction.dtype)
            prediction[rows, 1 : 1 + slots] = output.particles.to(prediction.dtype)
        return prediction


def _merge_groups(shapes: list[list[int]], sizes: list[int], rows_per_call: int) -> list[int]:
    """The draws per denoiser call for consecutive groups of ``sizes`` draws with (particles, objects)
    ``shapes``, sorted: adjacent groups share a call while it stays within ``rows_per_call`` draws
    and its padded tokens within ``PADDING_SLACK`` of its real ones; a group above ``rows_per_call``
    is split."""
    calls: list[int] = []
    rows = real = particles = objects = 0
    for (count, width), size in zip(shapes, sizes, strict=True):
        tokens = 1 + count + width
        padded = (rows + size) * (1 + max(particles, count) + max(objects, width))
        if rows and (rows + size > rows_per_call or padded > PADDING_SLACK * (real + size * tokens)):
            calls.append(rows)
            rows = real = particles = objects = 0
        rows, real = rows + size, real + size * tokens
        particles, objects = max(particles, count), max(objects, width)
        while rows > rows_per_call:  # a call of this group alone
            calls.append(rows_per_call)
            rows -= rows_per_call
            real = rows * tokens
    if rows:
        calls.append(rows)
    return calls


def _real_objects_first(
    objects: Tensor, object_mask: Tensor, anchors: Tensor | None, detector_slots: DetectorSlots | None = None
) -> tuple[Tensor, Tensor, Tensor | None, DetectorSlots | None]:
    """The detector objects (and their anchors, classes and ranks) reordered real ones first and cut to the
    most that any event holds (at least one slot): the set denoiser ignores the objects' order and their padding."""
    object_mask = object_mask.bool()
    width = max(int(object_mask.sum(dim=1).max()), 1) if object_mask.numel() else 1
    order = torch.argsort((~object_mask).to(torch.uint8), dim=1, stable=True)[:, :width]

    def take(values: Tensor) -> Tensor:
        return values.gather(1, order.unsqueeze(-1).expand(-1, -1, values.shape[-1]))

    slots = None if detector_slots is None else DetectorSlots(*(part.gather(1, order) for part in detector_slots))
    return take(objects), object_mask.gather(1, order), None if anchors is None else take(anchors), slots


def _randn_like(reference: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(
        reference.shape, generator=generator, device=reference.device, dtype=reference.dtype
    )
