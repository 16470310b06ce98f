"""``unfold generate``: Pythia + FastJet + detector in parallel shards, merged into train/test files.

Events are produced in shards of fixed size, each with its own Pythia seed and detector RNG
drawn from one ``numpy.random.SeedSequence``; shards are merged in shard order, so the files
depend on the seed and not on how many worker processes ran them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from unfold.data.hdf5_io import atomic_output, write_arrays
from unfold.errors import UnfoldError
from unfold.generation.detector import lepton_possible
from unfold.generation.detector_card import DetectorCard, load_detector_card
from unfold.generation.processes import Process, ProcessName, get_process
from unfold.generation.pythia_events import generate_truth, pythia_settings
from unfold.generation.simulation import simulate_event

__all__ = ["GenerationConfig", "GenerationResult", "default_paths", "ensure_default_data", "generate"]

SHARD_SIZE = 250
PYTHIA_MAX_SEED = 900_000_000  # Pythia's Random:seed range


@dataclass(frozen=True)
class GenerationConfig:
    """Everything that defines a generated data set (and so its files, bit for bit)."""

    process: ProcessName = "ttbar-semileptonic"
    events: int = 25_000
    out: Path = Path("data")
    seed: int = 1
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    detector: Path | None = None
    mpi: bool = True
    pythia: tuple[str, ...] = ()
    test_fraction: float = 0.2
    max_particle_jets: int = 16
    shard_size: int = SHARD_SIZE


@dataclass(frozen=True)
class GenerationResult:
    train: Path
    test: Path
    events: int
    tried: int
    seconds: float


def default_paths(out: Path, process: str) -> tuple[Path, Path]:
    """Train and test files of a process in folder ``out``."""
    stem = process.replace("-", "_")
    return out / f"{stem}_train.h5", out / f"{stem}_test.h5"


@dataclass(frozen=True)
class _Shard:
    index: int
    events: int
    pythia_seed: int
    detector_seed: np.random.SeedSequence
    settings: tuple[str, ...]


_counter = None  # events done, shared with worker processes


def _init_worker(counter) -> None:
    global _counter
    _counter = counter


def _run_shard(shard: _Shard, process: Process, card: DetectorCard, max_particle_jets: int, folder: Path) -> tuple[Path, int]:
    """Generate one shard's accepted events into ``folder``; returns its file and events tried."""
    rng = np.random.default_rng(shard.detector_seed)
    records, tried = [], 0
    truths = generate_truth(
        shard.settings,
        shard.pythia_seed,
        process,
        jet_radius=card.jets.cluster_radius,
        jet_pt_min=card.jets.cluster_pt_min,
        lepton_possible=lambda lepton: lepton_possible(lepton, card),
    )
    for truth in truths:
        tried += 1
        if truth is None:
            continue
        record = simulate_event(truth, process, card, rng, max_particle_jets=max_particle_jets)
        if record is None:
            continue
        records.append(record)
        if _counter is not None:
            with _counter.get_lock():
                _counter.value += 1
        if len(records) == shard.events:
            break
    path = folder / f"shard-{shard.index:05d}.h5"
    with h5py.File(path, "w") as file:
        for key in records[0]:
            file.create_dataset(key, data=np.stack([np.asarray(r[key]) for r in records]))
    return path, tried


def _shards(config: GenerationConfig, process: Process) -> list[_Shard]:
    n_shards = -(-config.events // config.shard_size)
    seeds = np.random.SeedSequence(config.seed).spawn(n_shards)
    return [
        _Shard(
            index=i,
            events=min(config.shard_size, config.events - i * config.shard_size),
            pythia_seed=int(seed.generate_state(1)[0] % PYTHIA_MAX_SEED) + 1,
            detector_seed=seed.spawn(1)[0],
            settings=pythia_settings(process, mpi=config.mpi, extra=config.pythia),
        )
        for i, seed in enumerate(seeds)
    ]


def _validate(config: GenerationConfig) -> None:
    if config.events <= 0:
        raise UnfoldError(f"--events must be a positive number of events, got {config.events}")
    if config.shard_size <= 0:
        raise UnfoldError(f"shard size must be positive, got {config.shard_size}")
    if config.workers <= 0:
        raise UnfoldError(f"--workers must be at least 1, got {config.workers}")
    if not 0.0 < config.test_fraction < 1.0:
        raise UnfoldError(f"--test-fraction must lie strictly between 0 and 1, got {config.test_fraction}")
    if not 0 <= config.seed < 2**63:
        raise UnfoldError(f"--seed must be a non-negative integer, got {config.seed}")
    for line in config.pythia:
        if "=" not in line:
            raise UnfoldError(f"--pythia {line!r}: expected 'Key = value', e.g. '6:m0 = 173.5'")


def generate(config: GenerationConfig, *, progress: bool = True) -> GenerationResult:
    """Generate, simulate and write the train and test files of ``config``."""
    _validate(config)
    process = get_process(config.process)
    card = load_detector_card(config.detector)
    shards = _shards(config, process)
    train_path, test_path = default_paths(Path(config.out), config.process)
    train_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix=".shards-", dir=train_path.parent))
    try:
        counter = multiprocessing.Value("q", 0)
        workers = min(config.workers, len(shards))
        bar = tqdm(total=config.events, unit="ev", desc=f"generate {config.process}", disable=not progress, smoothing=0.1)
        with multiprocessing.get_context("fork").Pool(workers, _init_worker, (counter,)) as pool:
            jobs = [pool.apply_async(_run_shard, (s, process, card, config.max_particle_jets, folder)) for s in shards]
            while not all(job.ready() for job in jobs):
                time.sleep(0.2)
                bar.update(counter.value - bar.n)
            results = [job.get() for job in jobs]
        bar.update(counter.value - bar.n)
        bar.close()
        tried = sum(t for _, t in results)
        n_test = max(1, round(config.events * config.test_fraction))
        attrs = _attributes(config, process, card, tried)
        _merge([p for p, _ in results], train_path, 0, config.events - n_test, {**attrs, "split": "train"})
        _merge([p for p, _ in results], test_path, config.events - n_test, config.events, {**attrs, "split": "test"})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return GenerationResult(train_path, test_path, config.events, tried, time.perf_counter() - start)


def _merge(shards: list[Path], path: Path, begin: int, end: int, attrs: dict) -> None:
    """Concatenate events [begin, end) of the ordered shards into ``path`` (atomically)."""
    arrays: dict[str, list[np.ndarray]] = {}
    offset = 0
    for shard in shards:
        with h5py.File(shard, "r") as file:
            n = len(file["INPUTS/Momenta/MASK"])
            lo, hi = max(begin - offset, 0), min(end - offset, n)
            if lo < hi:
                file.visititems(
                    lambda key, obj, lo=lo, hi=hi: arrays.setdefault(key, []).append(obj[lo:hi])
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            offset += n
    with atomic_output(path) as partial, h5py.File(partial, "w") as file:
        write_arrays(file, {key: np.concatenate(parts) for key, parts in sorted(arrays.items())}, attrs)


def _attributes(config: GenerationConfig, process: Process, card: DetectorCard, tried: int) -> dict:
    event_file = resources.files("configs.events") / process.event_file
    return {
        "process": config.process,
        "seed": config.seed,
        "events_generated": tried,
        "selection_efficiency": config.events / tried,
        "mpi": config.mpi,
        "pythia_settings": json.dumps(list(pythia_settings(process, mpi=config.mpi, extra=config.pythia))),
        "generator": f"Pythia {metadata.version('pythia8mc')} (pythia8mc), anti-kT jets by FastJet's core (fjcore) in Pythia's SlowJet, checked against FastJet {metadata.version('fastjet')}",
        "detector_card": card.text,
        "detector_card_path": card.path,
        "event_file": process.event_file,
        "event_file_yaml": event_file.read_text(),
        "composites": json.dumps(process.composites),
        "code_version": metadata.version("unfold-suite"),
    }


def ensure_default_data(process: ProcessName = "ttbar-semileptonic", out: Path = Path("data")) -> tuple[Path, Path]:
    """The default train/test files, generated on first use with the default settings."""
    train, test = default_paths(out, process)
    if not (train.is_file() and test.is_file()):
        print(f"default data not found in {out}/: generating {GenerationConfig.events} {process} events (first use only)")
        generate(GenerationConfig(process=process, out=out))
    return train, test
