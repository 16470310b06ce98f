"""A trained assignment network as a Python object: load a checkpoint (or several, as an ensemble), predict on arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from recon.decoding import decode_assignments
from recon.ensemble import AssignmentEnsemble
from recon.errors import ReconError
from unfold.data.hdf5_schema import SpanetData, read_spanet
from unfold.data.recon_data import assignment_tensors
from unfold.errors import UnfoldError
from unfold.training.recon_module import ReconModule
from unfold.training.trainer import find_checkpoint

__all__ = ["PROBABILITIES", "AssignmentModel", "run_list"]

# Per-resonance scores of a decoded assignment (recon.decoding.DecodedAssignments).
PROBABILITIES = ("assignment_probability", "detection_probability", "marginal_probability", "entropy")


def run_list(runs: str | Path | Sequence[str | Path]) -> list[Path]:
    """One recon run (folder or checkpoint) or several, as a list: what an ensemble is loaded from."""
    return [Path(runs)] if isinstance(runs, str | Path) else [Path(run) for run in runs]


class AssignmentModel:
    """A trained assignment network ready for inference on arrays, with no file but its checkpoint.

    >>> model = AssignmentModel.load("runs/recon/20261123-120000")
    >>> result = model.predict("my_events.h5")  # or a SpanetData from unfold.data.hdf5_schema.read_spanet
    >>> result["ht"]["indices"]                 # (E, 3) jet indices of the hadronic top
    >>> heads = model.predict_all("my_events.h5", embeddings=True)
    >>> heads["REGRESSIONS"]["neutrino_pz"]     # {"value": (E,), "uncertainty": (E,)} in GeV
    >>> ensemble = AssignmentModel.load("runs/recon/a", "runs/recon/b", "runs/recon/c")

    Several runs of one event file predict as their mixture (:class:`recon.ensemble.AssignmentEnsemble`):
    networks trained from different seeds on a small sample err apart, and their mean is surer than each.
    ``module`` is the first run's.
    """

    def __init__(self, module: ReconModule, *others: ReconModule) -> None:
        self.module = module.eval()
        self.topology = module.topology
        self.members = 1 + len(others)
        distribution = module.hparams.regression_distribution
        for index, other in enumerate(others, start=2):
            if other.hparams.regression_distribution != distribution:
                raise UnfoldError(f"ensemble member {index} regresses with a {other.hparams.regression_distribution} "
                                  f"likelihood, member 1 with a {distribution} one; every member needs the same")
        networks = [module.network, *(other.eval().network for other in others)]
        try:
            self.network = networks[0] if not others else AssignmentEnsemble(networks, distribution)
        except ReconError as error:
            raise UnfoldError(str(error)) from None

    @classmethod
    def load(cls, *runs_or_checkpoints: str | Path, map_location: str = "cpu") -> AssignmentModel:
        """The model of one run (folder or ``.ckpt``), or the ensemble of several."""
        if not runs_or_checkpoints:
            raise UnfoldError("no recon run given; expected at least one run folder or checkpoint")
        modules = []
        for run in runs_or_checkpoints:
            checkpoint = find_checkpoint(Path(run))
            try:
                modules.append(ReconModule.load_from_checkpoint(checkpoint, map_location=map_location))
            except (KeyError, RuntimeError) as error:
                raise UnfoldError(f"{checkpoint}: not a recon checkpoint ({str(error).splitlines()[0]})") from None
        return cls(*modules)

    def predict(self, data: SpanetData | str | Path, batch_size: int = 1024, progress: bool = False) -> dict[str, dict[str, np.ndarray]]:
        """The assignments: per resonance ``indices`` (E, K), ``assignment_probability``,
        ``detection_probability``, ``marginal_probability`` and ``entropy`` (E,)."""
        result = self.predict_all(data, batch_size=batch_size, progress=progress)
        return {name: result[name] for name in self.topology.resonance_names}

    @torch.no_grad()
    def predict_all(
        self, data: SpanetData | str | Path, batch_size: int = 1024, progress: bool = False, embeddings: bool = False
    ) -> dict[str, dict[str, np.ndarray] | np.ndarray]:
        """Everything the network predicts for every event of ``data`` (a SpanetData or a file in the SPANet
        layout; only the inputs the model reads are needed).

        Returns:
            per resonance: ``indices`` (E, K), ``assignment_probability``, ``detection_probability``,
            ``marginal_probability`` and ``entropy`` (E,); ``REGRESSIONS``: target -> {``value``,
            ``uncertainty``} (E,), the predicted mean and the Gaussian sigma (Laplace b) of the
            regression head; ``CLASSIFICATIONS``: target -> (E, C) class probabilities; with
            ``embeddings``, ``EMBEDDING``: (E, D) the encoder's event vector.
        """
        if embeddings and self.members > 1:
            raise UnfoldError(f"the event embedding is one run's encoder output; this ensemble has {self.members} "
                              "runs: ask for embeddings with one run")
        if not isinstance(data, SpanetData):
            data = read_spanet(data, self.topology)
        tensors = assignment_tensors(data, self.topology)
        network = self.network
        decoded, regression_mean, regression_scale, classes, events = [], [], [], [], []
        for start in tqdm(range(0, len(tensors), batch_size), desc="predict", disable=not progress, unit="batch"):
            batch = tensors.collate(list(range(start, min(start + batch_size, len(tensors)))))
            output = network(batch.inputs)
            decoded.append(decode_assignments(output))
            regression_mean.append(output.regression_mean.float())
            regression_scale.append(output.regression_log_scale.float().exp())
            classes.append([logits.float().softmax(dim=-1) for logits in output.classification_logits])
            if embeddings:
                events.append(self.module.network.encoder(batch.inputs).event.float())
        result: dict = {}
        for r, name in enumerate(self.topology.resonance_names):
            result[name] = {
                "indices": torch.cat([p.indices[r] for p in decoded]).numpy(),
                **{key: torch.cat([getattr(p, key)[:, r] for p in decoded]).float().numpy() for key in PROBABILITIES},
            }
        mean, scale = torch.cat(regression_mean).numpy(), torch.cat(regression_scale).numpy()
        result["REGRESSIONS"] = {
            name: {"value": mean[:, i], "uncertainty": scale[:, i]} for i, name in enumerate(self.topology.regressions)
        }
        result["CLASSIFICATIONS"] = {
            name: torch.cat([c[i] for c in classes]).numpy() for i, name in enumerate(self.topology.classifications)
        }
        if embeddings:
            result["EMBEDDING"] = torch.cat(events).numpy()
        return result
