"""Lightning modules of the two unfoldings: the shared encoder conditioning a generative head.

:class:`PartonModule` conditions the latent variational diffusion of the partons on the
encoder's event vector (VLD, arXiv 2305.10399); :class:`ParticleModule` conditions the
multiplicity predictor and set denoiser on the event vector and the object embeddings
(arXiv 2404.14332). Both train end to end through the encoder unless it is frozen, with the
objective of ``model.objective``: diffusion or conditional flow matching (same networks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import yaml
from torch import Tensor

from encoders import EncoderInputs, EventEncoder
from recon.event_topology import EventTopology
from unfold.data.augmentation import Augmentation, detector_symmetries
from unfold.data.detector_slots import detector_slots, measured_leptons
from unfold.errors import UnfoldError
from unfold.generation.processes import get_process
from unfold.models.diffusion import Objective, SamplerName, resolve_sampler
from unfold.models.particle import ParticleBatch, ParticleRepresentation, SetLatentDiffusion
from unfold.models.particle.pairing import DetectorSlots
from unfold.models.particle.representation import Kinematics
from unfold.models.parton import (
    REPRESENTATIONS,
    PartonQueries,
    PartonRepresentation,
    VariationalLatentDiffusion,
)
from unfold.training.options import RENAMED, complete_options, saved_hyperparameters
from unfold.training.schedules import budget_cosine_schedule

__all__ = ["ParticleModule", "PartonModule", "encoder_options_from", "encoder_state_from"]

# Prefixes under which a checkpoint of each task stores the shared encoder.
ENCODER_PREFIXES = ("network.encoder.", "encoder.")
# EventEncoder keywords, which old recon checkpoints stored flat.
ENCODER_KEYWORDS = ("width", "depth", "heads", "dropout", "pair_bias", "feedforward_multiplier")
VALIDATION_SEED = 20_000  # seeds the validation draws (plus the batch index), apart from the training seeds


def encoder_state_from(checkpoint: Path) -> dict[str, Tensor]:
    """The shared encoder's weights (and normalisation buffers) from any task's checkpoint."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    for prefix in ENCODER_PREFIXES:
        encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if encoder:
            return encoder
    raise UnfoldError(f"{checkpoint}: holds no shared encoder (no keys under {ENCODER_PREFIXES})")


def encoder_options_from(checkpoint: Path) -> dict:
    """The complete EventEncoder keywords a recon, parton or particle checkpoint was built with
    (older checkpoints: recon's flat keywords, or the unfoldings' ``encoder: None`` for the defaults)."""
    saved = saved_hyperparameters(checkpoint)
    if "event_file_yaml" not in saved:
        raise UnfoldError(f"{checkpoint}: records no model options; expected a checkpoint of `unfold train recon|parton|particle`")
    encoder = saved["encoder"] if "encoder" in saved else {k: v for k, v in saved.items() if k in ENCODER_KEYWORDS}
    return complete_options(EventEncoder, encoder, skip={"sources"}, where=f"{checkpoint}: encoder")


class ConditionedModule(L.LightningModule):
    """The shared encoder, its optional freezing, and the optimiser common to the unfoldings.

    Batches are (encoder inputs, truth, (E,) event weights); the weights scale every loss term."""

    # Keywords that a configuration file sets under ``model:`` and ``optimizer:`` (besides the
    # generative model's own).
    MODEL_OPTIONS: tuple[str, ...] = ()
    # The generative model's keywords that the module fills in itself (no configuration sets them).
    SUPPLIED_MODEL_OPTIONS: frozenset[str] = frozenset()
    OPTIMIZER_OPTIONS = ("learning_rate", "weight_decay")
    # Keywords added after checkpoints were written without them -> the value those checkpoints mean:
    # the module's own, and the generative model's (under ``model``).
    OPTIONS_BEFORE_THEY_EXISTED: dict[str, object] = {}
    MODEL_OPTIONS_BEFORE_THEY_EXISTED: dict[str, object] = {}
    # The sampler and number of steps a run of each objective samples with unless told otherwise.
    DEFAULT_SAMPLING: dict[Objective, tuple[SamplerName, int]] = {"diffusion": ("ddpm", 25), "flow-matching": ("euler", 25)}

    def __init__(self, *, event_file_yaml: str, encoder: dict, freeze_encoder: bool) -> None:
        super().__init__()
        self.topology = EventTopology.from_dict(yaml.safe_load(event_file_yaml), origin="the checkpoint's event file")
        self.encoder = EventEncoder(sources=self.topology.sources, **encoder)
        self.encoder.requires_grad_(not freeze_encoder)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, **kwargs):
        """Lightning's loader; a checkpoint written before the options were stored complete
        (``encoder: None``, model keywords in the old vocabulary), or before one of
        ``OPTIONS_BEFORE_THEY_EXISTED``, is rebuilt as it was saved."""
        saved = saved_hyperparameters(checkpoint_path)
        kwargs = {key: value for key, value in cls.OPTIONS_BEFORE_THEY_EXISTED.items() if key not in saved} | kwargs
        if "weight_decay" not in saved:
            model = {RENAMED.get(k, k): v for k, v in (saved.get("model") or {}).items()}
            if "max_particles" in saved:
                model["max_particles"] = saved["max_particles"]
            kwargs = {"encoder": saved.get("encoder") or {}, "model": model, **kwargs}
        model = kwargs.get("model", saved.get("model") or {})
        if any(key not in model for key in cls.MODEL_OPTIONS_BEFORE_THEY_EXISTED):
            kwargs["model"] = cls.MODEL_OPTIONS_BEFORE_THEY_EXISTED | model
        try:
            return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)
        except UnfoldError as error:  # raised by on_load_checkpoint, which does not know the file
            raise UnfoldError(f"{checkpoint_path}: {error}") from None

    def _turned(self, inputs: EncoderInputs, truth, events: int, device: torch.device):
        """A training batch's detector inputs and truth, each event turned by its own draw of the detector's
        symmetries (``self.symmetries``), the same draw for both; unchanged without symmetries."""
        if self.symmetries is None:
            return inputs, truth
        angle, sign = self.symmetries.draw(events, device)
        return (self.symmetries.transform_inputs(inputs, angle, sign),
                self.representation.rotated_and_reflected(truth, angle, sign))

    def load_encoder(self, checkpoint: Path) -> None:
        """Start the encoder from another run (recon, parton or particle) of the same inputs."""
        state = encoder_state_from(checkpoint)
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UnfoldError(
                f"{checkpoint}: its encoder does not fit this one (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                "expected the same event-file inputs and encoder options (encoder.width, depth, heads, pair_bias, ...)"
            )

    def configure_optimizers(self):
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
        schedule = budget_cosine_schedule(optimizer, self.trainer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def sampling(self, sampler: SamplerName | None = None, steps: int | None = None) -> tuple[SamplerName, int]:
        """The sampler and steps this run samples with: the given ones, else its :attr:`DEFAULT_SAMPLING`.

        Raises:
            UnfoldError: If ``sampler`` does not apply to the run's objective.
        """
        default_sampler, default_steps = self.DEFAULT_SAMPLING[self.objective]
        return resolve_sampler(self.objective, sampler or default_sampler), steps or default_steps

    def validation_draws(self, batch_idx: int) -> torch.Generator:
        """The noise, timesteps and VAE samples of a validation batch, the same at every epoch: a diffusion
        loss drawn afresh varied by +-0.01 (4 %) between epochs of a converged particle run, enough to pick
        the "best" checkpoint at random among the last dozen epochs."""
        return torch.Generator(device=self.device).manual_seed(VALIDATION_SEED + batch_idx)

    def _log_terms(self, stage: str, loss, size: int) -> Tensor:
        for name, value in vars(loss).items():
            self.log(f"{stage}_{name}" if name != "total" else f"{stage}_loss", value, prog_bar=name == "total",
                     batch_size=size, sync_dist=stage == "val")
        return loss.total


class PartonModule(ConditionedModule):
    """Parton-level unfolding: VLD conditioned on the encoder's event vector (and per-parton object summaries).

    Args:
        event_file_yaml: the SPANet event file's text (the encoder's inputs).
        process: the process whose partons are unfolded (``unfold.generation.processes``).
        representation: the parton features, ``"polar-decay-chain"`` (the default: masses and rest-frame decay
            directions, consistent by construction, each top's transverse momentum as log pT and azimuth),
            ``"decay-chain"`` (the same with each top's (px, py); the default before 2026-12-07),
            ``"hadronic-polar-decay-chain"`` (polar for the tops without a charged lepton only),
            ``"lepton-anchored"`` (the chain with the lepton generated relative to the measured one and its top
            built upward from it) or ``"objects"`` (the VLD code's 11 x 5).
        object_queries: condition also on one attention summary of the detector objects per
            parton (:class:`~unfold.models.parton.PartonQueries`), not only on the event vector (default:
            with v prediction and eight noisy states per event, better than the detector on 11 of 15
            observables in three seeds against 8-10 without, README); ``"auto"``: with the latent VLD only
            (the earlier default). Saved resolved.
        random_pair_labels: train on each W's two quarks labelled at random instead of by transverse
            momentum (:meth:`PartonRepresentation.relabel`); sampled pairs are ordered again on decoding.
        lift_directions: train on the hadronic top's rest-frame decay directions scaled by random chi_3 radii
            (:meth:`DecayChainRepresentation.lifted`), so a direction the detector leaves open is a full-dimensional
            density rather than a law on a sphere; decoding normalises (default since 2026-12-07, late: the light
            quarks' pT and the hadronic W's decay angle closer to the truth, README "Decay directions on helicity axes").
        augment: the detector's symmetries drawn per event and training batch, applied alike to the detector
            inputs and the partons (:class:`~unfold.data.augmentation.DetectorSymmetries`,
            :meth:`PartonRepresentation.rotated_and_reflected`); ``"auto"`` (default): every one the inputs allow
            (three seeds: pT(t_had) W1 0.26-0.29 of the detector's against 0.30-0.43 without, README); None: none.
            Saved resolved.
        encoder: EventEncoder keywords (width, depth, heads, pair_bias, ...).
        model: VariationalLatentDiffusion keywords (latent, latent_width, width, depth, objective, ...);
            a checkpoint saved before ``objective`` existed loads as diffusion, its default.
        learning_rate: AdamW learning rate (1e-3 as the VLD code), cosine-annealed to 5% of it.
        weight_decay: AdamW weight decay.
        freeze_encoder: keep the encoder's weights fixed (e.g. when started from a recon run).

    ``encoder`` and ``model`` are stored complete (every keyword with its value), so a later
    change of a default never rebuilds a saved model differently.
    """

    MODEL_OPTIONS = ("representation", "object_queries", "random_pair_labels", "lift_directions", "augment")
    SUPPLIED_MODEL_OPTIONS = frozenset({"features", "condition_width", "representation"})
    # A checkpoint saved before the object queries conditions on the event vector only, one saved before the
    # random pair labels was trained on the quarks as truth orders them, one saved before augment without it, one
    # saved before lift_directions on decay directions left on the unit sphere.
    OPTIONS_BEFORE_THEY_EXISTED = {"object_queries": False, "random_pair_labels": False, "lift_directions": False,
                                   "augment": None}
    # A checkpoint saved before them predicts the noise, trained on one noisy state per event and conditions its
    # denoiser at the input only.
    MODEL_OPTIONS_BEFORE_THEY_EXISTED = {"prediction_type": "epsilon", "noise_draws": 1, "block_conditioning": False}
    # DPM-Solver++ 25 steps for runs that predict v: DDPM 25 narrows their posteriors (README: pT(t_had) W1 8.9 against
    # 2.0 GeV on one run; the epsilon runs' DDPM 25 keeps m(ttbar), which their DPM-Solver loses).
    CLEAN_STATE_SAMPLING: tuple[SamplerName, int] = ("dpm-solver", 25)

    def __init__(
        self,
        *,
        event_file_yaml: str,
        process: str = "ttbar-semileptonic",
        representation: Literal["decay-chain", "polar-decay-chain", "hadronic-polar-decay-chain", "lepton-anchored", "objects"] = "polar-decay-chain",
        object_queries: bool | Literal["auto"] = True,
        random_pair_labels: bool = True,
        lift_directions: bool = True,
        augment: Sequence[Augmentation] | Literal["auto"] | None = "auto",
        encoder: dict | None = None,
        model: dict | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        freeze_encoder: bool = False,
    ) -> None:
        if representation not in REPRESENTATIONS:
            raise UnfoldError(f"unknown parton representation {representation!r}; expected one of {list(REPRESENTATIONS)}")
        encoder = complete_options(EventEncoder, encoder, skip={"sources"}, where="encoder")
        model = complete_options(
            VariationalLatentDiffusion, model, skip=self.SUPPLIED_MODEL_OPTIONS, where="model"
        )
        if object_queries == "auto":
            object_queries = model["latent"]
        super().__init__(event_file_yaml=event_file_yaml, encoder=encoder, freeze_encoder=freeze_encoder)
        self.symmetries = detector_symmetries(self.topology, augment)
        self.save_hyperparameters({
            "event_file_yaml": event_file_yaml, "process": process, "representation": representation,
            "object_queries": object_queries, "random_pair_labels": random_pair_labels, "lift_directions": lift_directions,
            "augment": self.symmetries.augmentations if self.symmetries else None, "encoder": encoder,
            "model": model, "learning_rate": learning_rate, "weight_decay": weight_decay, "freeze_encoder": freeze_encoder,
        })
        parton_features = REPRESENTATIONS[representation].for_process(get_process(process))
        self.parton_queries = (
            PartonQueries(queries=len(parton_features.daughters), width=self.encoder.width, heads=self.encoder.heads)
            if object_queries else None
        )
        condition_width = self.encoder.width + (self.parton_queries.width if object_queries else 0)
        self.vld = VariationalLatentDiffusion(
            features=parton_features.features, condition_width=condition_width, representation=parton_features, **model
        )

    @property
    def representation(self) -> PartonRepresentation:
        return self.vld.representation

    @property
    def objective(self) -> Objective:
        """``"diffusion"`` or ``"flow-matching"``: what the denoiser learns and how it is sampled."""
        return self.vld.objective

    def sampling(self, sampler: SamplerName | None = None, steps: int | None = None) -> tuple[SamplerName, int]:
        """As :meth:`ConditionedModule.sampling`; a run that predicts v or the clean state samples with
        :attr:`CLEAN_STATE_SAMPLING` unless told otherwise."""
        if sampler is None and self.vld.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
            sampler, steps = self.CLEAN_STATE_SAMPLING[0], steps or self.CLEAN_STATE_SAMPLING[1]
        return super().sampling(sampler, steps)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["representation_features"] = list(self.representation.feature_names)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint whose generated features the representation reads otherwise now (checkpoints saved
        before the features were stored are checked for the Breit-Wigner coordinates of resonance masses, which the
        normal scores replaced)."""
        features = list(self.representation.feature_names)
        saved = checkpoint.get("representation_features", features)
        if any(key.endswith("representation.pole_mass_squared") for key in checkpoint.get("state_dict", {})):
            saved = [name.replace(":mass_normal_score", ":breit_wigner_coordinate") for name in features]
        if saved != features:
            changed = [name for name in saved if name not in features] or saved
            raise UnfoldError(
                f"its parton features {changed[:3]}... are not those the {type(self.representation).__name__} reads "
                f"now: it was written by another version; retrain it with `unfold train parton`"
            )

    def condition(self, inputs: EncoderInputs) -> Tensor:
        """The VLD's condition (E, C): the encoder's event vector, then the parton queries' summaries."""
        encoded = self.encoder(inputs)
        if self.parton_queries is None:
            return encoded.event
        return torch.cat([encoded.event, self.parton_queries(encoded.objects, encoded.object_mask)], dim=-1)

    def training_step(self, batch: tuple[EncoderInputs, Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, partons, weights = batch
        partons = self._lifted(self._labelled(partons, generator=None), generator=None)
        inputs, partons = self._turned(inputs, partons, len(partons), partons.device)
        return self._log_terms("train", self.vld(partons, self.condition(inputs), weights=weights), len(partons))

    def validation_step(self, batch: tuple[EncoderInputs, Tensor, Tensor], batch_idx: int) -> None:
        inputs, partons, weights = batch
        # The same labels at every epoch, from a stream apart from the batch's noise draws (seeded by batch_idx).
        labels = self.validation_draws(-1 - batch_idx)
        partons = self._lifted(self._labelled(partons, generator=labels), generator=labels)
        loss = self.vld(partons, self.condition(inputs), weights=weights, generator=self.validation_draws(batch_idx))
        self._log_terms("val", loss, len(partons))

    def _labelled(self, partons: Tensor, generator: torch.Generator | None) -> Tensor:
        """The batch's partons, with the quark pairs labelled at random under ``random_pair_labels``."""
        pairs = len(self.representation.pt_ordered)
        if not (self.hparams.random_pair_labels and pairs):
            return partons
        swap = torch.rand(len(partons), pairs, generator=generator, device=partons.device) < 0.5
        return self.representation.relabel(partons, swap)

    def _lifted(self, partons: Tensor, generator: torch.Generator | None) -> Tensor:
        """The batch's partons with their decay directions lifted off the unit sphere under ``lift_directions``."""
        return self.representation.lifted(partons, generator) if self.hparams.lift_directions else partons

    @torch.no_grad()
    def sample(self, inputs: EncoderInputs, n: int, **options) -> dict[str, dict[str, Tensor]]:
        """n unfoldings per event: parton name -> feature (pt, eta, phi, mass) -> (E, n); ``sampler`` and
        ``steps`` default to :meth:`sampling`'s."""
        sampler, steps = self.sampling(options.pop("sampler", None), options.pop("steps", None))
        draws = self.vld.sample(self.condition(inputs), n, sampler=sampler, steps=steps, **options)
        return self.representation.decode(draws, self.anchors(inputs))

    def anchors(self, inputs: EncoderInputs) -> dict[str, Tensor]:
        """The (E, 4) detector object of every parton the representation generates relative to one (the
        measured lepton); none for the other representations."""
        if not self.representation.anchored:
            return {}
        return {name: measured_leptons(inputs, self.topology) for name in self.representation.anchored}


class ParticleModule(ConditionedModule):
    """Particle-level unfolding: multiplicity predictor + set denoiser conditioned on the encoder.

    Args:
        event_file_yaml, encoder, learning_rate, weight_decay, freeze_encoder: as :class:`PartonModule`.
        detector_anchors: the set denoiser's detector tokens also carry each detector object's measured
            four-momentum in the particle feature space (:meth:`ParticleRepresentation.detector_features`);
            needs inputs with four-momenta (pt, eta, phi, mass). ``unfold train particle`` resolves the
            configuration's ``auto`` to whether the training file gives them.
        paired_slots: generate each particle slot relative to its detector counterpart, the detector object of
            the same class (lepton, b-tagged or untagged jet) and pT rank (:mod:`unfold.models.particle.pairing`);
            needs detector anchors and counts by class. ``unfold train particle`` resolves ``auto`` to both being on.
        kinematics: the particle objects' features, ``"log-pt"`` or ``"cartesian"``
            (:mod:`unfold.models.particle.representation`); log-pt, where a momentum's error is
            relative, took the leading-jet pT W1 from 14.1 to 2.6 GeV (40 epochs, the detector's: 0.95).
        augment: the detector's symmetries drawn per event and training batch, applied alike to the detector inputs
            and the particle set (:meth:`ParticleRepresentation.rotated_and_reflected`); as :class:`PartonModule`'s.
        model: SetLatentDiffusion keywords (max_particles, M_max, the slots of the unfolded set of
            jets and the lepton; latent_width, width, depth, heads, multiplicity_distribution, objective, ...).
    """

    MODEL_OPTIONS = ("detector_anchors", "kinematics", "paired_slots", "augment")
    SUPPLIED_MODEL_OPTIONS = frozenset({"condition_width", "anchor_width", "paired_slots"})
    # A checkpoint saved before the anchors conditions on the encoder's embeddings only, one saved before
    # the kinematics option has cartesian features, one saved before one-way attention lets its
    # detector tokens read the particles, one saved before the typed counts draws one multiplicity, and one
    # saved before the pairing generates every slot as it is, one saved before the residual scale pairs unscaled.
    OPTIONS_BEFORE_THEY_EXISTED = {"detector_anchors": False, "kinematics": "cartesian", "paired_slots": False,
                                   "augment": None}
    MODEL_OPTIONS_BEFORE_THEY_EXISTED = {"detector_reads_particles": True, "typed_counts": False, "scaled_residuals": False,
                                         "prediction_type": "epsilon"}
    # DPM-Solver++ 10 steps: on paired runs closer to the truth than DDPM 25 in all four comparisons (leading jet W1
    # 1.48 against 2.83 GeV with the default, seed 1; 1.97 against 3.35 with the EMA, seed 0) at half the time (README).
    DEFAULT_SAMPLING = {**ConditionedModule.DEFAULT_SAMPLING, "diffusion": ("dpm-solver", 10)}

    def __init__(
        self,
        *,
        event_file_yaml: str,
        detector_anchors: bool = True,
        kinematics: Kinematics = "log-pt",
        paired_slots: bool = False,
        augment: Sequence[Augmentation] | Literal["auto"] | None = None,
        encoder: dict | None = None,
        model: dict | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        freeze_encoder: bool = False,
    ) -> None:
        encoder = complete_options(EventEncoder, encoder, skip={"sources"}, where="encoder")
        model = complete_options(SetLatentDiffusion, model, skip=self.SUPPLIED_MODEL_OPTIONS, where="model")
        super().__init__(event_file_yaml=event_file_yaml, encoder=encoder, freeze_encoder=freeze_encoder)
        self.symmetries = detector_symmetries(self.topology, augment)
        self.save_hyperparameters({
            "event_file_yaml": event_file_yaml, "detector_anchors": detector_anchors, "kinematics": kinematics,
            "paired_slots": paired_slots, "augment": self.symmetries.augmentations if self.symmetries else None,
            "encoder": encoder,
            "model": model, "learning_rate": learning_rate, "weight_decay": weight_decay, "freeze_encoder": freeze_encoder,
        })
        self.representation = ParticleRepresentation(max_particles=model["max_particles"], kinematics=kinematics)
        anchor_width = self.representation.num_features if detector_anchors else 0
        self.diffusion = SetLatentDiffusion(condition_width=self.encoder.width, anchor_width=anchor_width,
                                            paired_slots=paired_slots, **model)

    @property
    def objective(self) -> Objective:
        """``"diffusion"`` or ``"flow-matching"``: what the denoiser learns and how it is sampled."""
        return self.diffusion.objective

    def anchors(self, inputs: EncoderInputs, object_mask: Tensor) -> Tensor | None:
        """The detector anchors (E, N, F) of the set denoiser, None when the model has none."""
        if not self.hparams.detector_anchors:
            return None
        if inputs.four_momenta is None:
            raise UnfoldError("this particle unfolding reads the detector objects' four-momenta (detector_anchors); "
                              "expected inputs that give pt, eta, phi and mass")
        return self.representation.detector_features(inputs.four_momenta, object_mask)

    def detector_slots(self, inputs: EncoderInputs) -> DetectorSlots | None:
        """The detector objects' classes and pT ranks that the slots pair with, None without ``paired_slots``."""
        return detector_slots(inputs, self.topology) if self.hparams.paired_slots else None

    def _loss(self, inputs: EncoderInputs, truth: ParticleBatch, weights: Tensor, generator: torch.Generator | None = None):
        encoded = self.encoder(inputs)
        return self.diffusion.loss(truth, encoded.objects, encoded.object_mask, encoded.event,
                                   weights=weights, anchors=self.anchors(inputs, encoded.object_mask),
                                   detector_slots=self.detector_slots(inputs), generator=generator)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        inputs, truth, weights = batch
        inputs, truth = self._turned(inputs, ParticleBatch(*truth), len(weights), weights.device)
        return self._log_terms("train", self._loss(inputs, truth, weights), len(weights))

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, truth, weights = batch
        loss = self._loss(inputs, ParticleBatch(*truth), weights, self.validation_draws(batch_idx))
        self._log_terms("val", loss, len(weights))

    @torch.no_grad()
    def sample(self, inputs: EncoderInputs, n: int, **options):
        """n unfoldings per event, decoded to collections: name -> feature -> (E, n, M) (global: (E, n));
        ``sampler`` and ``steps`` default to :meth:`sampling`'s."""
        sampler, steps = self.sampling(options.pop("sampler", None), options.pop("steps", None))
        encoded = self.encoder(inputs)
        draws = self.diffusion.sample(encoded.objects, encoded.object_mask, encoded.event, n,
                                      anchors=self.anchors(inputs, encoded.object_mask),
                                      detector_slots=self.detector_slots(inputs), sampler=sampler, steps=steps, **options)
        return draws, self.representation.decode(draws.features, draws.types, draws.mask, draws.event_features)
