"""A trained assignment network as a Python object: load a checkpoint, predict on arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from recon.decoding import decode_assignments
from unfold.data.hdf5_schema import SpanetData
from unfold.data.recon_data import assignment_tensors
from unfold.errors import UnfoldError
from unfold.training.recon_module import ReconModule
from unfold.training.trainer import (
    find_checkpoint,
)

__all__ = ["AssignmentModel"]



class AssignmentModel:
    """A trained assignment network ready for inference on arrays, with no file but its checkpoint.

    >>> model = AssignmentModel.load("runs/recon/20261123-120000")
    >>> result = model.predict(data)          # a SpanetData, e.g. from unfold.data.hdf5_schema.read_spanet
    >>> result["ht"]["indices"]               # (E, 3) jet indices of the hadronic top
    """

    def __init__(self, module: ReconModule) -> None:
        self.module = module.eval()
        self.topology = module.topology

    @classmethod
    def load(cls, run_or_checkpoint: str | Path, map_location: str = "cpu") -> AssignmentModel:
        checkpoint = find_checkpoint(Path(run_or_checkpoint))
        try:
            return cls(ReconModule.load_from_checkpoint(checkpoint, map_location=map_location))
        except (KeyError, RuntimeError) as error:
            raise UnfoldError(f"{checkpoint}: not a recon checkpoint ({str(error).splitlines()[0]})") from None

    @torch.no_grad()
    def predict(self, data: SpanetData, batch_size: int = 1024, progress: bool = False) -> dict[str, dict[str, np.ndarray]]:
        """Per resonance: ``indices`` (E, K), ``assignment_probability``, ``detection_probability``,
        ``marginal_probability`` and ``entropy`` (E,)."""
        tensors = assignment_tensors(data, self.topology)
        parts = []
        for start in tqdm(range(0, len(tensors), batch_size), desc="predict", disable=not progress, unit="batch"):
            batch = tensors.collate(list(range(start, min(start + batch_size, len(tensors)))))
            parts.append(decode_assignments(self.module.network(batch.inputs)))
        result = {}
        for r, name in enumerate(self.topology.resonance_names):
            result[name] = {
                "indices": torch.cat([p.indices[r] for p in parts]).numpy(),
                **{
                    key: torch.cat([getattr(p, key)[:, r] for p in parts]).float().numpy()
                    for key in ("assignment_probability", "detection_probability", "marginal_probability", "entropy")
                },
            }
        return result
