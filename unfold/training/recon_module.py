"""The Lightning module of jet-parton assignment: the network, its loss and a validation metric."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import yaml

from recon.assignment_loss import assignment_loss
from recon.assignment_network import AssignmentNetwork
from recon.decoding import decode_assignments
from recon.efficiency import event_correctness
from recon.event_topology import EventTopology
from unfold.data.recon_data import AssignmentBatch

__all__ = ["ReconModule"]


class ReconModule(L.LightningModule):
    """Trains an :class:`~recon.assignment_network.AssignmentNetwork` with SPANet's symmetric loss.

    The event file travels inside the hyperparameters, and the feature normalisation inside
    the network's buffers, so a checkpoint rebuilds the model with no other file.
    """

    def __init__(
        self,
        *,
        event_file_yaml: str,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
        pair_bias: bool = False,
        branch_depth: int = 1,
        attention_width: int = 32,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        regression_distribution: str = "gaussian",
        balance_patterns: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.topology = EventTopology.from_dict(yaml.safe_load(event_file_yaml), origin="the checkpoint's event file")
        self.network = AssignmentNetwork(
            topology=self.topology, width=width, depth=depth, heads=heads, dropout=dropout,
            pair_bias=pair_bias, branch_depth=branch_depth, attention_width=attention_width,
        )
        self.register_buffer("pattern_weights", torch.ones(2 ** len(self.topology.resonances)))

    def _loss(self, batch: AssignmentBatch):
        output = self.network(batch.inputs)
        weights = self.pattern_weights if self.hparams.balance_patterns else None
        loss = assignment_loss(
            output, batch.targets, topology=self.topology,
            regression_distribution=self.hparams.regression_distribution, pattern_weights=weights,
        )
        return output, loss

    def training_step(self, batch: AssignmentBatch, batch_idx: int) -> torch.Tensor:
        _, loss = self._loss(batch)
        size = len(batch.inputs.sequential_masks[0])
        self.log("train_loss", loss.total, prog_bar=True, batch_size=size)
        return loss.total

    def validation_step(self, batch: AssignmentBatch, batch_idx: int) -> None:
        output, loss = self._loss(batch)
        decoded = decode_assignments(output)
        names = self.topology.resonance_names
        outcome = event_correctness(
            {n: i.cpu().numpy() for n, i in zip(names, decoded.indices)},
            {n: i.cpu().numpy() for n, i in zip(names, batch.targets.indices)},
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
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.05 * self.hparams.learning_rate)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
