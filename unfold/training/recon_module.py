"""The Lightning module of jet-parton assignment: the network, its loss and a validation metric."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import lightning as L
import numpy as np
import torch
import yaml

from encoders import EventEncoder
from recon.assignment_loss import RegressionDistribution, assignment_loss
from recon.assignment_network import AssignmentNetwork
from recon.decoding import decode_assignments
from recon.efficiency import event_correctness
from recon.event_topology import EventTopology
from unfold.data.augmentation import Augmentation, detector_symmetries
from unfold.data.recon_data import AssignmentBatch
from unfold.training.options import complete_options, saved_hyperparameters
from unfold.training.schedules import budget_cosine_schedule

__all__ = ["ReconModule"]


class ReconModule(L.LightningModule):
    """Trains an :class:`~recon.assignment_network.AssignmentNetwork` with SPANet's symmetric loss.

    The event file travels inside the hyperparameters, and the feature normalisation inside
    the network's buffers, so a checkpoint rebuilds the model with no other file.
    """

    # Keywords that a configuration file sets under ``model:`` and ``optimizer:``.
    MODEL_OPTIONS = ("regression_distribution", "balance_patterns", "augment")
    OPTIMIZER_OPTIONS = ("learning_rate", "weight_decay")

    def __init__(
        self,
        *,
        event_file_yaml: str,
        encoder: dict | None = None,
        model: dict | None = None,
        regression_distribution: RegressionDistribution = "gaussian",
        balance_patterns: bool = True,
        augment: Sequence[Augmentation] | Literal["auto"] | None = "auto",
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        """
        Args:
            event_file_yaml: the SPANet event file's text (inputs, resonances, targets).
            encoder: EventEncoder keywords (width, depth, heads, dropout, pair_bias, ...).
            model: AssignmentNetwork keywords of the heads (branch_depth, attention_width, ...).
            regression_distribution: likelihood of the regression targets.
            balance_patterns: weight events by the inverse frequency of their pattern of present resonances.
            augment: detector symmetries drawn per event and training batch (:class:`DetectorSymmetries`);
                ``"auto"``: every one the inputs can take (on the default data, rotate_phi and
                reflect_eta lifted the event efficiency from 0.582 to 0.620 and the hadronic top
                from 0.464 to 0.522); None or empty: none. The checkpoint stores the resolved list.
            learning_rate: AdamW learning rate (cosine-annealed to 5% of it).
            weight_decay: AdamW weight decay.
        """
        super().__init__()
        self.topology = EventTopology.from_dict(yaml.safe_load(event_file_yaml), origin="the checkpoint's event file")
        self.symmetries = detector_symmetries(self.topology, augment)
        # Complete values, not overrides: a later change of a default never rebuilds this model differently.
        encoder = complete_options(EventEncoder, encoder, skip={"sources"}, where="encoder")
        model = complete_options(AssignmentNetwork, model, skip={"topology", *encoder}, where="model")
        self.save_hyperparameters({
            "event_file_yaml": event_file_yaml, "encoder": encoder, "model": model,
            "regression_distribution": regression_distribution, "balance_patterns": balance_patterns,
            "augment": self.symmetries.augmentations if self.symmetries else None,
            "learning_rate": learning_rate, "weight_decay": weight_decay,
        })
        self.network = AssignmentNetwork(topology=self.topology, **encoder, **model)
        self.register_buffer("pattern_weights", torch.ones(2 ** len(self.topology.resonances)))

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, **kwargs) -> ReconModule:
        """Lightning's loader; a checkpoint written before the options were nested (flat
        ``width``, ``depth``, ...) is rebuilt with the values it was saved with."""
        saved = saved_hyperparameters(checkpoint_path)
        if "augment" not in saved:  # written before augmentation existed: trained without it
            kwargs = {"augment": None, **kwargs}
        if "encoder" not in saved:
            network = set(inspect.signature(AssignmentNetwork).parameters) - {"topology"}
            encoder = set(inspect.signature(EventEncoder).parameters) - {"sources"}
            kwargs = {"encoder": {k: v for k, v in saved.items() if k in encoder},
                      "model": {k: v for k, v in saved.items() if k in network - encoder}, **kwargs}
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)

    def _loss(self, batch: AssignmentBatch):
        output = self.network(batch.inputs)
        weights = self.pattern_weights if self.hparams.balance_patterns else None
        loss = assignment_loss(
            output, batch.targets, topology=self.topology,
            regression_distribution=self.hparams.regression_distribution, pattern_weights=weights,
        )
        return output, loss

    def training_step(self, batch: AssignmentBatch, batch_idx: int) -> torch.Tensor:
        if self.symmetries is not None:
            batch = self.symmetries(batch)
        _, loss = self._loss(batch)
        size = len(batch.inputs.sequential_masks[0])
        self.log("train_loss", loss.total, prog_bar=True, batch_size=size)
        return loss.total

    def validation_step(self, batch: AssignmentBatch, batch_idx: int) -> None:
        output, loss = self._loss(batch)
        decoded = decode_assignments(output)
        names = self.topology.resonance_names
        outcome = event_correctness(
            {n: i.cpu().numpy() for n, i in zip(names, decoded.indices, strict=True)},
            {n: i.cpu().numpy() for n, i in zip(names, batch.targets.indices, strict=True)},
            self.topology,
        )
        any_present = outcome.reconstructable.any(axis=1)
        all_right = (outcome.correct == outcome.reconstructable).all(axis=1)
        size = len(any_present)
        self.log("val_loss", loss.total, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("val_event_efficiency", float(np.mean(all_right[any_present])) if any_present.any() else 0.0,
                 prog_bar=True, batch_size=max(int(any_present.sum()), 1), sync_dist=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
        schedule = budget_cosine_schedule(optimizer, self.trainer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
