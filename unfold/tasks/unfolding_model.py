"""A trained parton or particle unfolding as a Python object: load a checkpoint, draw unfoldings.

>>> from unfold.tasks.unfolding_model import UnfoldingModel
>>> model = UnfoldingModel.load("runs/parton/20261123-120000")   # needs nothing but the checkpoint
>>> draws = model.sample("my_events.h5", n=33)                   # any SPANet-layout file with the inputs
>>> draws["b_had"]["pt"]                                          # (E, 33) GeV
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unfold.data.event_tensors import encoder_inputs, map_tensors, take_events
from unfold.data.hdf5_schema import SpanetData, read_spanet
from unfold.errors import UnfoldError
from unfold.models.diffusion.sampler import DEFAULT_SAMPLER
from unfold.tasks.sample import batch_generator, checkpoint_task
from unfold.tasks.train_unfolding import MODULES
from unfold.training.trainer import find_checkpoint

__all__ = ["UnfoldingModel"]


class UnfoldingModel:
    """A trained unfolding (``task`` is ``"parton"`` or ``"particle"``) ready to sample on arrays or files.

    Draws use the generators of ``unfold sample`` (one per batch, seeded from ``seed`` and the batch
    index), so the same seed and batch size give the same unfoldings as the command.
    """

    def __init__(self, module, task: str) -> None:
        self.module = module.eval()
        self.task = task
        self.topology = module.topology

    @classmethod
    def load(cls, run_or_checkpoint: str | Path, map_location: str = "cpu") -> UnfoldingModel:
        """Load a parton or particle run folder or ``.ckpt``; the task is read from the checkpoint."""
        task = checkpoint_task(Path(run_or_checkpoint))
        checkpoint = find_checkpoint(Path(run_or_checkpoint))
        try:
            module = MODULES[task].load_from_checkpoint(checkpoint, map_location=map_location)
        except (KeyError, TypeError, RuntimeError) as error:
            raise UnfoldError(f"{checkpoint}: not a {task} unfolding checkpoint ({str(error).splitlines()[0][:120]})") from None
        return cls(module, task)

    @property
    def process(self) -> str | None:
        """The process a parton unfolding was trained for (None for particle unfoldings)."""
        return self.module.hparams.get("process")

    @torch.no_grad()
    def sample(
        self,
        data: SpanetData | str | Path,
        n: int = 33,
        *,
        sampler: str | None = DEFAULT_SAMPLER,
        steps: int | None = None,
        batch_size: int = 256,
        seed: int = 0,
        limit: int | None = None,
        precision: str = "float32",
        progress: bool = False,
    ) -> dict[str, dict[str, np.ndarray] | np.ndarray]:
        """n unfoldings of every event of ``data`` (a SpanetData or a SPANet-layout file; only the inputs are read),
        with ``sampler`` and ``steps``, or for None the run's defaults (``module.sampling()``), the denoising
        network in ``precision`` ("float32" or "bfloat16").

        Returns:
            parton: parton name -> feature (pt, eta, phi, mass) -> (E, n) arrays (GeV).
            particle: collection name -> feature -> (E, n, M) arrays ((E, n) for event-level ones such as
            MET), and ``multiplicity`` (E, n), the number of unfolded jets and leptons of each draw.
        """
        if n < 1:
            raise UnfoldError(f"n must be a positive number of unfoldings per event, got {n}")
        if batch_size < 1:
            raise UnfoldError(f"batch_size must be positive, got {batch_size}")
        if not isinstance(data, SpanetData):
            data = read_spanet(data, self.topology, limit=limit)
        inputs = encoder_inputs(data, self.topology)
        device = self.module.device
        parts = []
        for index, rows in enumerate(tqdm(torch.arange(data.n_events).split(batch_size), desc=f"sample {self.task}",
                                          disable=not progress, unit="batch")):
            batch = map_tensors(lambda tensor: tensor.to(device), take_events(inputs, rows))
            generator = batch_generator(seed, self.task, index, device)
            parts.append(self.module.sample(batch, n, sampler=sampler, steps=steps, precision=precision,
                                            generator=generator))
        if self.task == "parton":
            return {name: {feature: torch.cat([p[name][feature] for p in parts]).cpu().float().numpy() for feature in features}
                    for name, features in parts[0].items()}
        collections = [decoded for _, decoded in parts]
        result: dict = {name: {feature: np.concatenate([c[name][feature] for c in collections]) for feature in features}
                        for name, features in collections[0].items()}
        result["multiplicity"] = torch.cat([draws.multiplicity for draws, _ in parts]).cpu().numpy()
        return result
