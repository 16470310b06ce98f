"""Lightning plumbing shared by every task: run folders, trainer, checkpoints, loggers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from unfold.errors import UnfoldError

__all__ = [
    "TrainerOptions",
    "build_trainer",
    "default_precision",
    "find_checkpoint",
    "new_run_dir",
    "newest_run",
    "resumed_run",
    "split_loaders",
    "split_rows",
    "write_config",
]


@dataclass(frozen=True)
class TrainerOptions:
    """The Lightning options a user sets on the command line.

    Attributes:
        epochs: maximum epochs.
        max_time: wall-clock limit, Lightning's DD:HH:MM:SS (e.g. 00:00:10:00).
        accelerator: cpu, gpu or auto.
        devices: number of devices (several use DDP) or auto.
        precision: Lightning precision (null: bf16-mixed on GPUs that support it, 32-true elsewhere).
        strategy: Lightning strategy (auto: ddp with several devices).
        batch_size: events per batch (per device).
        seed: seed of initialisation, split and shuffling.
    """

    epochs: int = 20
    max_time: str | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    precision: int | str | None = None
    strategy: str = "auto"
    batch_size: int = 256
    seed: int = 0


def new_run_dir(root: Path, task: str) -> Path:
    """A fresh ``<root>/<task>/<timestamp>`` folder."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = root / task / stamp
    suffix = 1
    while run.exists():
        run = root / task / f"{stamp}-{suffix}"
        suffix += 1
    run.mkdir(parents=True)
    return run


def write_config(run: Path, config: dict) -> None:
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def default_precision(accelerator: str) -> str:
    """bf16 mixed precision on CUDA GPUs that support it, full precision elsewhere."""
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


class EventThroughput(Callback):
    """Shows training events/s in the progress bar and logs it."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        events = len(batch[0].sequential_masks[0]) if hasattr(batch[0], "sequential_masks") else len(batch[0])
        rate = events / max(time.perf_counter() - self._start, 1e-9)
        module.log("events_per_s", rate, prog_bar=True, on_step=True, on_epoch=False, batch_size=events)


def build_trainer(run: Path, options: TrainerOptions, *, monitor: str, mode: str) -> L.Trainer:
    """Trainer writing checkpoints (every epoch's last, and the best by ``monitor``), CSV and
    TensorBoard metrics into ``run``."""
    precision = options.precision or default_precision(options.accelerator)
    devices = int(options.devices) if str(options.devices).isdigit() else options.devices
    strategy = options.strategy
    if strategy == "auto" and isinstance(devices, int) and devices > 1:
        strategy = "ddp"
    return L.Trainer(
        default_root_dir=run,
        max_epochs=options.epochs,
        max_time=options.max_time,
        accelerator=options.accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        logger=[CSVLogger(run, name="metrics", version=""), TensorBoardLogger(run, name="tensorboard", version="")],
        callbacks=[
            ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor=monitor, mode=mode),
            # No monitor: overwritten at every epoch's end (save_last=True would only follow "best").
            ModelCheckpoint(dirpath=run / "checkpoints", filename="last", enable_version_counter=False),
            TQDMProgressBar(refresh_rate=10),
            EventThroughput(),
        ],
        log_every_n_steps=10,
        enable_model_summary=False,
        gradient_clip_val=1.0,
    )


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file, or the best (else last) checkpoint of a run folder."""
    path = Path(path)
    if path.is_file():
        return path
    for name in ("best.ckpt", "last.ckpt"):
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    raise UnfoldError(f"{path}: no checkpoint found (expected a .ckpt file or a run folder with checkpoints/best.ckpt)")


def newest_run(root: Path, task: str) -> Path:
    """The most recent run folder of a task that has a checkpoint."""
    runs = sorted((p for p in (root / task).glob("*") if (p / "checkpoints").is_dir()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise UnfoldError(f"no trained {task} run under {root / task}; run `unfold train {task}` first or pass --checkpoint")
    return runs[-1]


def split_rows(n_events: int, *, validation_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of event indices into training and validation rows."""
    n_val = max(1, int(n_events * validation_fraction))
    if n_events - n_val < 1:
        raise UnfoldError(f"{n_events} events are too few to split into training and validation")
    order = torch.randperm(n_events, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[n_val:], order[:n_val]


def resumed_run(path: Path) -> tuple[Path, Path]:
    """The run folder and checkpoint that ``--resume PATH`` continues: a checkpoint file, or a
    run folder's latest epoch (``last.ckpt``, not the best one)."""
    path = Path(path)
    checkpoint = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not checkpoint.is_file():
        raise UnfoldError(f"{path}: nothing to resume (expected a .ckpt file or a run folder with checkpoints/last.ckpt)")
    return checkpoint.parent.parent, checkpoint


def split_loaders(dataset, *, batch_size: int, validation_fraction: float, seed: int):
    """Shuffled train and fixed validation loaders of an :class:`~unfold.data.event_tensors.IndexedTensors`.

    Returns the training rows too, so statistics (normalisations, class weights) are fitted on
    training events only; they are the rows :func:`split_rows` gives for the same seed.
    """
    train_rows, val_rows = split_rows(len(dataset), validation_fraction=validation_fraction, seed=seed)

    def loader(rows: list[int], shuffle: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, rows), batch_size=batch_size, shuffle=shuffle, collate_fn=dataset.collate
        )

    return train_rows, loader(train_rows, True), loader(val_rows, False)
