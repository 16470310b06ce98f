"""``unfold train parton|particle``: train an unfolding conditioned on the shared encoder."""

from __future__ import annotations

from dataclasses import dataclass
from inspect import signature
from pathlib import Path
from typing import Literal

import h5py
import lightning as L
import numpy as np
import torch

from encoders import EncoderInputs
from recon.event_topology import EventTopology
from unfold.data.datamodule import EventDataModule, split_rows
from unfold.data.event_tensors import IndexedTensors, encoder_inputs, take_events
from unfold.data.hdf5_io import open_h5
from unfold.data.hdf5_schema import has_group, read_spanet, read_truth
from unfold.errors import UnfoldError
from unfold.generation.processes import PROCESSES
from unfold.models.particle import SetLatentDiffusion
from unfold.training.trainer import (
    RunConfig,
    build_trainer,
    find_checkpoint,
    new_run_dir,
    resolved_config,
    resumed_run,
    write_config,
)
from unfold.training.unfolding_modules import ParticleModule, PartonModule, encoder_options_from

__all__ = ["MODULES", "UnfoldingConfig", "process_of", "train_unfolding"]


Task = Literal["parton", "particle"]
MODULES = {"parton": PartonModule, "particle": ParticleModule}


@dataclass(frozen=True, kw_only=True)
class UnfoldingConfig(RunConfig):
    """A parton or particle unfolding run, in the layout of ``configs/models/{parton,particle}.yaml``.

    Attributes:
        encoder: EventEncoder keywords; with ``encoder_from`` the source run's own options replace them,
            so the encoder's architecture follows the run it starts from.
        model: the generative model's keywords (VariationalLatentDiffusion, plus ``representation``
            for partons; SetLatentDiffusion for particles).
        optimizer: learning_rate and weight_decay of AdamW.
        process: (parton) the process whose partons are unfolded; None: from the file (:func:`process_of`).
    """

    task: Task
    encoder_from: Path | None = None
    freeze_encoder: bool = False
    process: str | None = None


def process_of(path: Path, topology: EventTopology | None = None) -> str:
    """The process of the events in ``path``, from the file and the event topology alone.

    In order: the ``process`` root attribute (``unfold generate`` writes it); the process whose
    parton names the file's ``PARTONS`` group holds; the process whose jet-matched resonances are
    ``topology``'s. Raises a one-line error naming the choices when none decides.
    """
    with open_h5(path) as file:
        process = file.attrs.get("process")
        partons = set(file["PARTONS"]) if isinstance(file.get("PARTONS"), h5py.Group) else None
    if process is not None:
        return str(process)
    if partons is not None:
        for name, candidate in PROCESSES.items():
            if {slot.name for slot in candidate.partons} <= partons:
                return name
    if topology is not None:
        for name, candidate in PROCESSES.items():
            if {slot.resonance for slot in candidate.partons if slot.resonance} == set(topology.resonance_names):
                return name
    found = f"PARTONS holds {sorted(partons)}" if partons is not None else "no PARTONS group"
    raise UnfoldError(
        f"{path}: no 'process' attribute, {found} and the event file's resonances "
        f"{list(topology.resonance_names) if topology else '?'} match no process; expected the parton names of one of "
        + "; ".join(f"{n}: {[s.name for s in p.partons]}" for n, p in PROCESSES.items()) + " (or pass --process)"
    )


def _truth_tensors(module, task: Task, path: Path, rows: list[int] | None, limit: int | None, weights: np.ndarray,
                   inputs: EncoderInputs):
    """Encode every event's truth, first fitting the representation on the training ``rows``
    weighted by their event ``weights`` (None keeps the statistics a resumed checkpoint brought).
    A parton representation that generates a parton relative to its measurement reads it from ``inputs``."""
    group = "PARTONS" if task == "parton" else "PARTICLES"
    truth = read_truth(path, group, limit=limit)
    training = None if rows is None else {name: {f: np.asarray(v)[rows] for f, v in fs.items()} for name, fs in truth.items()}
    if task == "particle":
        if training is not None:
            module.representation.fit(training, weights[rows])
        encoded = module.representation.encode(truth)
        return encoded.features, encoded.types, encoded.mask, encoded.event_features
    anchors = module.anchors(inputs)
    if training is not None:
        module.representation.fit(training, torch.from_numpy(weights[rows]), {name: a[rows] for name, a in anchors.items()})
    return module.representation.encode(truth, anchors)


def train_unfolding(config: UnfoldingConfig) -> Path:
    """Train a parton or particle unfolding; returns the run folder."""
    if config.task not in MODULES:
        raise UnfoldError(f"unknown unfolding task {config.task!r}; expected one of {list(MODULES)}")
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    topology = EventTopology.from_yaml(config.event_file)
    data = read_spanet(config.data, topology, limit=config.limit, weights=config.weights)
    group = "PARTONS" if config.task == "parton" else "PARTICLES"
    if not has_group(config.data, group):
        raise UnfoldError(f"{config.data}: missing group {group!r}; expected {group}/<object>/<feature> truth to train "
                          f"the {config.task} unfolding on")
    inputs = encoder_inputs(data, topology)
    train_rows, _ = split_rows(data.n_events, validation_fraction=config.validation_fraction, seed=config.trainer.seed)
    checkpoint = None
    if config.resume is not None:
        run, checkpoint = resumed_run(config.resume)
        module = MODULES[config.task].load_from_checkpoint(checkpoint, map_location="cpu")
    else:
        run = new_run_dir(config.out, config.task)
        source = find_checkpoint(config.encoder_from) if config.encoder_from is not None else None
        module_class = MODULES[config.task]
        model = dict(config.model)
        options = {key: model.pop(key) for key in module_class.MODEL_OPTIONS if key in model}
        if config.task == "parton":
            options["process"] = config.process or process_of(config.data, topology)
        else:
            if options.get("detector_anchors", "auto") == "auto":
                options["detector_anchors"] = data.four_momenta is not None
            if options.get("paired_slots", "auto") == "auto":
                typed_counts = model.get("typed_counts", signature(SetLatentDiffusion).parameters["typed_counts"].default)
                options["paired_slots"] = bool(options["detector_anchors"] and typed_counts)
        module = module_class(
            event_file_yaml=Path(config.event_file).read_text(), model=model, freeze_encoder=config.freeze_encoder,
            encoder=encoder_options_from(source) if source is not None else config.encoder, **options, **config.optimizer,
        )
        if source is not None:
            module.load_encoder(source)
        else:
            module.encoder.fit_normalization(take_events(inputs, torch.as_tensor(train_rows)),
                                             torch.from_numpy(data.event_weights[train_rows]))
    truth = _truth_tensors(module, config.task, config.data, None if checkpoint else train_rows, config.limit,
                           data.event_weights, inputs)
    dataset = IndexedTensors((inputs, truth, torch.from_numpy(data.event_weights)), data.n_events)
    data_module = EventDataModule(
        dataset, batch_size=config.trainer.batch_size, validation_fraction=config.validation_fraction, seed=config.trainer.seed
    )
    if config.resume is None:
        process = {"process": module.hparams.process} if config.task == "parton" else {}
        encoder_from = None if config.encoder_from is None else str(config.encoder_from)
        write_config(run, resolved_config(config, module, **process, encoder_from=encoder_from,
                                          freeze_encoder=config.freeze_encoder))
    trainer = build_trainer(run, config.trainer, monitor="val_loss", mode="min")
    trainer.fit(module, datamodule=data_module, ckpt_path=checkpoint)
    return run
