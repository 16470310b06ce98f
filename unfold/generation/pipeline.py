"""``unfold generate``: Pythia + FastJet + detector in parallel shards, merged into train/test files.

Events are produced in shards of fixed size, each with its own Pythia seed and detector RNG
drawn from one ``numpy.random.SeedSequence``; shards are merged in shard order, so the files
depend on the seed and not on how many worker processes ran them. Shards are made and submitted
as workers free up and appended to the files as they finish in order, so memory and the shard
folder stay bounded whatever the number of events asked for. Ctrl-C or SIGTERM ends the workers
and removes the shard folder and partial files; a shard folder left by a killed run (its
process gone) is removed by the next run in the same folder.
"""

from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from unfold.data.hdf5_io import append_arrays, atomic_output
from unfold.data.hdf5_schema import MISSED
from unfold.errors import UnfoldError
from unfold.generation.cross_section import CrossSection, CrossSectionMeter, combine
from unfold.generation.detector import selection_possible
from unfold.generation.detector_card import DetectorCard, load_detector_card
from unfold.generation.processes import Process, ProcessName, get_process
from unfold.generation.pythia_events import generate_truth, pythia_settings
from unfold.generation.simulation import simulate_event, truth_record
from unfold.outputs import process_alive, remove_stale_partials

__all__ = ["GenerationConfig", "GenerationResult", "default_paths", "ensure_default_data", "generate"]

SHARD_SIZE = 250
_POSITION = f"{MISSED}/selected_before"  # shard files only: selected events generated before each missed one
PYTHIA_MAX_SEED = 900_000_000  # Pythia's Random:seed range


@dataclass(frozen=True)
class GenerationConfig:
    """Everything that defines a generated data set (and so its files, bit for bit)."""

    process: ProcessName = "ttbar-semileptonic"
    events: int = 20_000  # 16k train, 4k test: recon on 16k train events is within 0.003 event efficiency of 20k (README)
    out: Path = Path("data")
    seed: int = 1
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    detector: Path | None = None
    mpi: bool = True
    pythia: tuple[str, ...] = ()
    test_fraction: float = 0.2
    max_particle_jets: int = 16
    shard_size: int = SHARD_SIZE
    keep_missed: bool = False  # also write the truth of the events that fail the selection, under MISSED/


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
_INTERRUPTIONS = {signal.SIGINT, signal.SIGTERM}


def _init_worker(counter) -> None:
    """Workers leave Ctrl-C to the parent (which ends them) and die quietly when it does."""
    global _counter
    _counter = counter
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTIONS)  # held by _worker_pool until now


@contextlib.contextmanager
def _worker_pool(workers: int, counter) -> Iterator[multiprocessing.pool.Pool]:
    """A fork pool that Ctrl-C or SIGTERM cannot leave half-made.

    ``multiprocessing.Pool`` interrupted inside its constructor, after forking its workers, never
    ends them: they wait for work forever, holding the caller's stderr open. So interruptions are
    held (blocked, and recorded if another thread takes them) until the pool is made and its exit
    registered, then delivered; the workers start with them blocked and unblock in ``_init_worker``.
    """
    def new_pool() -> multiprocessing.pool.Pool:
        return multiprocessing.get_context("fork").Pool(workers, _init_worker, (counter,))

    with contextlib.ExitStack() as stack:
        if threading.current_thread() is not threading.main_thread():  # Python delivers signals to the main thread only
            yield stack.enter_context(new_pool())
            return
        received: list[int] = []
        handlers = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in _INTERRUPTIONS}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTIONS)
        try:
            pool = stack.enter_context(new_pool())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for sig in received:
                signal.raise_signal(sig)
        yield pool


def _run_shard(shard: _Shard, process: Process, card: DetectorCard, max_particle_jets: int, folder: Path,
               keep_missed: bool = False) -> tuple[Path, CrossSection]:
    """Generate one shard's accepted events into ``folder``; returns its file and its Pythia's cross
    section over the events tried.

    With ``keep_missed`` the truth of every event that fails the selection goes to ``MISSED/`` with
    the number of selected events generated before it. The detector RNG is drawn only for events
    that may pass, so the selected events are the same with and without it.
    """
    rng = np.random.default_rng(shard.detector_seed)
    records, missed, tried = [], [], 0
    meter = CrossSectionMeter()
    truths = generate_truth(
        shard.settings,
        shard.pythia_seed,
        process,
        jet_radius=card.jets.cluster_radius,
        jet_pt_min=card.jets.cluster_pt_min,
        selection_possible=lambda lepton, jets: selection_possible(lepton, jets, card, leptons=process.leptons, min_jets=process.min_jets),
        keep_vetoed=keep_missed,
        cross_section=meter,
    )
    for truth in truths:
        tried += 1
        if truth is None:
            continue
        record = simulate_event(truth, process, card, rng, max_particle_jets=max_particle_jets) if truth.selectable else None
        if record is None:
            if keep_missed:
                missed.append({f"{MISSED}/{key}": value for key, value in truth_record(truth, process, card, max_particle_jets=max_particle_jets).items()})
                missed[-1][_POSITION] = np.int64(len(records))
            continue
        records.append(record)
        if _counter is not None:
            with _counter.get_lock():
                _counter.value += 1
        if len(records) == shard.events:
            break
    path = folder / f"shard-{shard.index:05d}.h5"
    with h5py.File(path, "w") as file:
        for batch in (records, missed):
            for key in batch[0] if batch else ():
                file.create_dataset(key, data=np.stack([np.asarray(r[key]) for r in batch]))
    return path, meter.cross_section(tried)


def _shard(config: GenerationConfig, index: int, settings: tuple[str, ...]) -> _Shard:
    """Shard ``index``; its seed is ``SeedSequence(config.seed).spawn(n)[index]``, made alone so
    no list of every shard is ever held."""
    seed = np.random.SeedSequence(config.seed, spawn_key=(index,))
    return _Shard(
        index=index,
        events=min(config.shard_size, config.events - index * config.shard_size),
        pythia_seed=int(seed.generate_state(1)[0] % PYTHIA_MAX_SEED) + 1,
        detector_seed=seed.spawn(1)[0],
        settings=settings,
    )


def _remove_stale_shards(folder: Path) -> None:
    """Remove what killed runs left in ``folder``: shard folders ``.shards-<pid>-*`` and partial
    files ``.<name>.partial-<pid>`` whose process is gone."""
    for stale in folder.glob(".shards-*"):
        pid = stale.name.split("-")[1]
        if stale.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    remove_stale_partials(folder)


def _shard_results(config: GenerationConfig, process: Process, card: DetectorCard, folder: Path,
                   progress: bool) -> Iterator[tuple[Path, CrossSection]]:
    """(file, cross section over its events tried) of every shard in shard order. At most two
    shards per worker are in flight; the next is made and submitted only when one finishes."""
    n_shards = -(-config.events // config.shard_size)
    settings = pythia_settings(process, mpi=config.mpi, extra=config.pythia)
    counter = multiprocessing.Value("q", 0)
    workers = min(config.workers, n_shards)
    with _worker_pool(workers, counter) as pool, tqdm(total=config.events, unit="ev", desc=f"generate {config.process}",
                                                       disable=not progress, smoothing=0.1) as bar:
        pending: collections.deque = collections.deque()
        submitted = 0
        while submitted < n_shards or pending:
            while submitted < n_shards and len(pending) < 2 * workers:
                shard = _shard(config, submitted, settings)
                pending.append(pool.apply_async(_run_shard, (shard, process, card, config.max_particle_jets, folder, config.keep_missed)))
                submitted += 1
            pending[0].wait(0.2)
            bar.update(counter.value - bar.n)
            if pending[0].ready():
                yield pending.popleft().get()
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
    train_path, test_path = default_paths(Path(config.out), config.process)
    train_path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_shards(train_path.parent)
    start = time.perf_counter()
    n_train = config.events - max(1, round(config.events * config.test_fraction))
    folder = Path(tempfile.mkdtemp(prefix=f".shards-{os.getpid()}-", dir=train_path.parent))
    try:
        with atomic_output(train_path) as train_partial, atomic_output(test_path) as test_partial, \
                h5py.File(train_partial, "w") as train, h5py.File(test_partial, "w") as test:
            written, parts = 0, []
            # closing(): an interruption ends the pool at once, not when the traceback is freed.
            with contextlib.closing(_shard_results(config, process, card, folder, progress)) as results:
                for shard, part in results:
                    parts.append(part)
                    written = _split_append(shard, written, n_train, train, test)
                    shard.unlink()
            cross_section = combine(parts)
            tried = cross_section.tried
            attrs = {**_attributes(config, process, card, tried), **cross_section.attributes()}
            # Each file's luminosity is its share of the selected events: L_file = L n_file / n_selected.
            for file, split, share in ((train, "train", n_train), (test, "test", config.events - n_train)):
                file.attrs.update({**attrs, "split": split, "luminosity_fb_inv": cross_section.luminosity_fb_inv * share / config.events})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return GenerationResult(train_path, test_path, config.events, tried, time.perf_counter() - start)


def _split_append(shard: Path, written: int, n_train: int, train: h5py.File, test: h5py.File) -> int:
    """Append a shard's events to the train file up to event ``n_train`` and to the test file after
    it; returns the events written so far. Missed events go to the file of the next selected event
    generated after them, so each file's selected and missed events come from one stretch of the stream."""
    with h5py.File(shard, "r") as file:
        keys: list[str] = []
        file.visititems(lambda key, obj: keys.append(key) if isinstance(obj, h5py.Dataset) else None)
        arrays = {key: file[key][()] for key in sorted(keys)}
    selected = {key: value for key, value in arrays.items() if not key.startswith(f"{MISSED}/")}
    missed = {key: value for key, value in arrays.items() if key.startswith(f"{MISSED}/") and key != _POSITION}
    n = len(selected["INPUTS/Momenta/MASK"])
    cut = min(max(n_train - written, 0), n)
    to_train = arrays[_POSITION] < cut if missed else np.zeros(0, bool)
    for file, rows, missed_rows in ((train, slice(0, cut), to_train), (test, slice(cut, n), ~to_train)):
        if rows.stop > rows.start:
            append_arrays(file, {key: value[rows] for key, value in selected.items()})
        if missed_rows.any():
            append_arrays(file, {key: value[missed_rows] for key, value in missed.items()})
    return written + n


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
        "fiducial_region": json.dumps(asdict(process.fiducial)),
        "keep_missed": config.keep_missed,
        "code_version": metadata.version("unfold-suite"),
    }


def ensure_default_data(process: ProcessName = "ttbar-semileptonic", out: Path = Path("data")) -> tuple[Path, Path]:
    """The default train/test files, generated on first use with the default settings."""
    train, test = default_paths(out, process)
    if not (train.is_file() and test.is_file()):
        print(f"default data not found in {out}/: generating {GenerationConfig.events} {process} events (first use only)")
        generate(GenerationConfig(process=process, out=out))
    return train, test
