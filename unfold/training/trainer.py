"""Lightning plumbing shared by every task: run folders, trainer, checkpoints, loggers."""

from __future__ import annotations

import csv
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import yaml
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt, restricted_string_type
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar, WeightAveraging
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerStatus

from unfold.errors import UnfoldError
from unfold.outputs import partial_name

__all__ = [
    "RunConfig",
    "TrainerOptions",
    "TrainingInterrupted",
    "build_trainer",
    "check_hardware",
    "check_resume",
    "checkpoint_task",
    "default_precision",
    "find_checkpoint",
    "new_run_dir",
    "newest_run",
    "resolved_config",
    "resumed_run",
    "write_config",
]


# Lightning's Timer reads max_time as days:hours:minutes:seconds.
MaxTime = restricted_string_type("MaxTime", r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$", "days:hours:minutes:seconds, e.g. 00:02:30:00")
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]


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
        patience: stop after this many epochs without a better validation metric (the one the best
            checkpoint follows); null: run every epoch. Small samples overfit early: on 9k
            all-hadronic events the best recon epoch came at 13 of 56.
        ema_decay: validate, checkpoint and keep an exponential moving average of the weights with this
            decay per optimiser step (Lightning's WeightAveraging; 0.995 averages over about 200
            steps, 3.5 epochs of the default data); null: the last step's weights.
    """

    epochs: PositiveInt = 20
    max_time: MaxTime | None = None
    accelerator: Accelerator = "auto"
    devices: PositiveInt | Literal["auto"] = "auto"
    precision: _PRECISION_INPUT | None = None
    strategy: str = "auto"
    batch_size: PositiveInt = 256
    seed: NonNegativeInt = 0
    patience: PositiveInt | None = None
    ema_decay: OpenUnitInterval | None = None


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


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """What every training run shares, in the layout of ``configs/models/<task>.yaml``.

    Attributes:
        data: training file; event_file: the SPANet event file of its inputs; out: root of runs/<task>/<id>/.
        encoder, model: constructor keywords of the shared encoder and of the task's network.
        optimizer: learning_rate and weight_decay of AdamW.
        validation_fraction: share of events held out (one seeded split, :mod:`unfold.data.datamodule`).
        resume: run folder or checkpoint to continue; limit: first N events only.
        weights: dataset of per-event weights scaling every loss term (None: SPANet's WEIGHTS/weight
            when the file has it, else ones).
    """

    data: Path
    event_file: Path
    out: Path = Path("runs")
    encoder: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    trainer: TrainerOptions = field(default_factory=TrainerOptions)
    validation_fraction: float = 0.1
    resume: Path | None = None
    limit: int | None = None
    weights: str | None = None


def resolved_config(config: RunConfig, module: L.LightningModule, **task_options) -> dict:
    """What a run's ``config.yaml`` holds: ``config``'s paths and the values ``module`` was built with
    (its resolved encoder, model and optimizer keywords), with the task's own options after ``weights``,
    in the layout ``--config`` reads back."""
    hparams = module.hparams
    return {
        "data": str(config.data), "event_file": str(config.event_file), "out": str(config.out),
        "limit": config.limit, "validation_fraction": config.validation_fraction, "resume": None,
        "weights": config.weights, **task_options, "encoder": dict(hparams.encoder),
        "model": {**hparams.model, **{key: hparams[key] for key in module.MODEL_OPTIONS}},
        "optimizer": {key: hparams[key] for key in module.OPTIMIZER_OPTIONS},
        "trainer": asdict(config.trainer),
    }


class _ConfigDumper(yaml.SafeDumper):
    """YAML of plain values; constrained strings (e.g. :data:`MaxTime`) are written as strings."""


_ConfigDumper.add_multi_representer(str, lambda dumper, value: dumper.represent_str(str(value)))


def write_config(run: Path, config: dict) -> None:
    (run / "config.yaml").write_text(yaml.dump(config, Dumper=_ConfigDumper, sort_keys=False))


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


class KeepEarlierMetrics(Callback):
    """Puts a resumed run's earlier ``metrics.csv`` rows back: Lightning's CSV logger deletes the
    file when it opens an existing folder. Rows past the resumed checkpoint's step are dropped,
    since those epochs are trained again."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.rows = rows

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Values stay the text Lightning wrote, so the kept rows read back exactly as before.
        kept = [{key: value for key, value in row.items() if value != ""} for row in self.rows
                if int(row.get("step") or 0) < trainer.global_step]
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.experiment.metrics[:0] = kept
                logger.save()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint under a temporary name and renames it into place, so Ctrl-C or
    SIGTERM during a save never leaves a truncated ``last.ckpt`` to resume from."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        partial = partial_name(path)
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM; the message says which checkpoint to resume from."""


class _Trainer(L.Trainer):
    """Lightning's Trainer, whose interrupted ``fit`` (it exits 1 on Ctrl-C and 0 on SIGTERM)
    raises :class:`TrainingInterrupted` instead, naming the checkpoint to resume from."""

    def fit(self, *args, **kwargs) -> None:
        try:
            super().fit(*args, **kwargs)
        except SystemExit:
            if self.state.status != TrainerStatus.INTERRUPTED:
                raise
            run = Path(self.default_root_dir)
            last = run / "checkpoints" / "last.ckpt"
            if last.is_file():
                raise TrainingInterrupted(f"last checkpoint {last} ({self.current_epoch} epochs finished); continue "
                                          f"with `unfold train {run.parent.name} --resume {run}`") from None
            raise TrainingInterrupted(f"no epoch finished, so {run} has no checkpoint to resume from") from None


def _metrics_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _make_trainer(options: TrainerOptions, **arguments) -> L.Trainer:
    """A trainer with the user's hardware options resolved (precision, devices, ddp for several)."""
    precision = options.precision or default_precision(options.accelerator)
    devices = int(options.devices) if str(options.devices).isdigit() else options.devices
    strategy = options.strategy
    if strategy == "auto" and isinstance(devices, int) and devices > 1:
        strategy = "ddp"
    return _Trainer(max_epochs=options.epochs, max_time=options.max_time, accelerator=options.accelerator,
                    devices=devices, strategy=strategy, precision=precision, **arguments)


def _exponential_average(decay: float) -> WeightAveraging:
    """Lightning's weight averaging as an exponential moving average of the parameters after every step;
    the buffers (normalisation and running statistics) follow the model. The update is the lerp
    ``averaged + (1 - decay) (current - averaged)``, exact for weights that do not change, so a frozen
    encoder keeps its weights bit for bit (Lightning's ``decay * averaged + (1 - decay) * current`` rounds them)."""
    def update(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        return torch.lerp(averaged, current, 1.0 - decay)

    return WeightAveraging(use_buffers=False, avg_fn=update)


def build_trainer(run: Path, options: TrainerOptions, *, monitor: str, mode: str) -> L.Trainer:
    """Trainer writing checkpoints (every epoch's last, and the best by ``monitor``), CSV and
    TensorBoard metrics into ``run``; a resumed run keeps its earlier metrics rows."""
    earlier = _metrics_rows(run / "metrics" / "metrics.csv")
    return _make_trainer(
        options,
        default_root_dir=run,
        logger=[CSVLogger(run, name="metrics", version=""), TensorBoardLogger(run, name="tensorboard", version="")],
        callbacks=[
            ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor=monitor, mode=mode),
            # No monitor: overwritten at every epoch's end (save_last=True would only follow "best").
            ModelCheckpoint(dirpath=run / "checkpoints", filename="last", enable_version_counter=False),
            TQDMProgressBar(refresh_rate=10),
            EventThroughput(),
            *([KeepEarlierMetrics(earlier)] if earlier else []),
            *([EarlyStopping(monitor=monitor, mode=mode, patience=options.patience)] if options.patience else []),
            *([_exponential_average(options.ema_decay)] if options.ema_decay is not None else []),
        ],
        plugins=[AtomicCheckpointIO()],
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




def resumed_run(path: Path) -> tuple[Path, Path]:
    """The run folder and checkpoint that ``--resume PATH`` continues: a checkpoint file, or a
    run folder's latest epoch (``last.ckpt``, not the best one)."""
    path = Path(path)
    checkpoint = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not checkpoint.is_file():
        raise UnfoldError(f"{path}: nothing to resume (expected a .ckpt file or a run folder with checkpoints/last.ckpt)")
    return checkpoint.parent.parent, checkpoint


def check_hardware(options: TrainerOptions) -> None:
    """Refuse an accelerator this machine lacks and more devices than it has, before any work."""
    gpu = options.accelerator in ("gpu", "cuda")
    if gpu and not torch.cuda.is_available():
        raise UnfoldError(f"--accelerator {options.accelerator}: no CUDA GPU on this machine; expected cpu or auto")
    if options.accelerator == "mps" and not torch.backends.mps.is_available():
        raise UnfoldError("--accelerator mps: no Apple GPU on this machine; expected cpu or auto")
    if isinstance(options.devices, int):
        on_gpu = gpu or (options.accelerator == "auto" and torch.cuda.is_available())
        available = torch.cuda.device_count() if on_gpu else len(os.sched_getaffinity(0))
        if options.devices > available:
            kind = "CUDA GPUs" if on_gpu else "CPU cores"
            raise UnfoldError(f"--devices {options.devices}: this machine has {available} {kind}; expected at most {available}")
    # Lightning itself judges the combination (a precision needing a missing package, an unknown
    # strategy), from a trainer that writes nothing; its device report is left to the real one.
    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():  # the real trainer warns again where it matters
            warnings.simplefilter("ignore")
            _make_trainer(options, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    except Exception as error:  # Lightning raises MisconfigurationException, ValueError, ModuleNotFoundError, ...
        given = f"--accelerator {options.accelerator} --devices {options.devices} --precision {options.precision} " \
                f"--strategy {options.strategy}"
        raise UnfoldError(f"{given}: Lightning refuses this combination ({' '.join(str(error).split())[:200]})") from None
    finally:
        quiet.setLevel(level)


def checkpoint_task(hyperparameters: dict) -> Literal["recon", "parton", "particle"] | None:
    """Which task saved a checkpoint, from the keywords its module was built with."""
    if "event_file_yaml" not in hyperparameters:
        return None
    if "regression_distribution" in hyperparameters:
        return "recon"
    return "parton" if "process" in hyperparameters else "particle"


def check_resume(path: Path, task: str, ema_decay: float | None = None) -> Path:
    """The checkpoint ``--resume PATH`` continues, refused when unreadable (e.g. truncated by a
    killed run), written by another task, or averaged (EMA) when the resumed run would not average:
    its model weights are the average, so continuing without one would silently lose the last step's."""
    run, checkpoint = resumed_run(path)
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many kinds (RuntimeError, EOFError, UnpicklingError) for a bad file
        raise UnfoldError(f"--resume {path}: {checkpoint} is not a readable checkpoint "
                          f"({str(error).splitlines()[0][:100]}); resume from another run or checkpoint") from None
    found = checkpoint_task(dict(saved.get("hyper_parameters", {})) if isinstance(saved, dict) else {})
    if found != task:
        raise UnfoldError(f"--resume {path}: a {found or 'foreign'} checkpoint; expected a {task} run")
    if ema_decay is None and "current_model_state" in saved:
        config = run / "config.yaml"
        decay = yaml.safe_load(config.read_text()).get("trainer", {}).get("ema_decay") if config.is_file() else None
        raise UnfoldError(f"--resume {path}: {checkpoint} holds averaged (EMA) weights; pass --trainer.ema_decay "
                          f"{decay or 'D'} to continue the run with its average")
    return checkpoint


