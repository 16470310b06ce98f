"""``unfold sample``: n unfoldings per event, streamed over the input in chunks and batches over one or more devices.

The samples file keeps the schema of the README: ``SAMPLES/PARTONS/<parton>/<feature>``
(E, n), ``SAMPLES/PARTICLES/<collection>/<feature>`` (E, n, M) with MASK, the truth groups
beside them, ``REFERENCE/`` detector-level counterparts (partons: every event reconstructed
without truth, by a recon run or the chi-square), ``MATCHED/PARTONS`` the truth-matched jets
(NaN where unmatched) and the detector inputs, so ``unfold report`` needs nothing else. From a
``--keep-missed`` file it also copies ``MISSED/`` (the truth of the events the detector missed) and,
with particle draws, ``PARTICLES/fiducial``: the full space the efficiency-corrected report compares with.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from unfold.data.event_tensors import encoder_inputs, map_tensors, take_events
from unfold.data.hdf5_io import append_arrays, atomic_output, event_chunks
from unfold.data.hdf5_schema import (
    MISSED,
    SpanetData,
    count_events,
    has_group,
    read_spanet,
    read_truth,
)
from unfold.data.recon_data import detector_events
from unfold.errors import UnfoldError
from unfold.models.diffusion.sampler import DEFAULT_SAMPLER, check_precision
from unfold.tasks.assignment_model import AssignmentModel, run_list
from unfold.tasks.evaluate_recon import fit_chi_square
from unfold.tasks.references import assigned_partons, particle_reference, parton_reference
from unfold.tasks.train_unfolding import MODULES, Task, process_of
from unfold.training.trainer import checkpoint_task as saved_task
from unfold.training.trainer import find_checkpoint

__all__ = [
    "DEFAULT_SAMPLER",
    "batch_generator",
    "checkpoint_task",
    "default_fit_data",
    "parse_devices",
    "reconstruction",
    "sample_unfoldings",
]

# The truth group copied beside each task's samples.
_TRUTH = {"parton": "PARTONS", "particle": "PARTICLES"}
# The truth of the events the detector missed (unfold generate --keep-missed), copied whole.


def sample_unfoldings(
    checkpoints: dict[str, Path],
    data_path: Path,
    out: Path,
    *,
    n: int = 33,
    sampler: str | None = DEFAULT_SAMPLER,
    steps: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    devices: str = "auto",
    limit: int | None = None,
    recon: Path | Sequence[Path] | None = None,
    fit_data: Path | None = None,
    weights: str | None = None,
    chunk_size: int = 4096,
    precision: str = "float32",
) -> Path:
    """Draw n unfoldings of every event of ``data_path`` (the first ``limit``) with each trained task and
    write them, with the truth, detector-level references and inputs, to ``out`` (atomically). Each run
    samples with ``sampler`` and ``steps``, or for None with its own defaults (``module.sampling()``).

    The file needs only the detector inputs: truth (``PARTONS``, ``PARTICLES``) and the truth-matched
    jets (``TARGETS``) are copied where present, and the root attribute ``truth`` lists what was
    found (``none`` for measured events). Every event's weight (``weights`` dataset, else SPANet's
    ``WEIGHTS/weight``, else 1) and its row in ``data_path`` go to ``WEIGHTS/weight`` and ``EVENT_INDEX``.

    The parton-level reference reconstructs every event: with the ``recon`` run's assignments, else
    with the chi-square baseline fitted once on ``fit_data`` (default: :func:`default_fit_data`).

    The input is streamed: ``chunk_size`` events (rounded up to a multiple of ``batch_size``) are read,
    sampled and appended to ``out`` at a time, so memory does not grow with the file. Batches go
    round-robin to ``devices`` (see :func:`parse_devices`), one model copy and thread per device; each
    batch draws from its own generator, seeded by its index in the file (:func:`batch_generator`), so
    the samples depend on ``seed`` and ``batch_size`` but not on the devices or the chunk size.
    ``precision`` is the denoising network's arithmetic (:data:`unfold.models.diffusion.sampler.Precision`).
    """
    if n < 1:
        raise UnfoldError(f"--n must be a positive number of unfoldings per event, got {n}")
    if batch_size < 1:
        raise UnfoldError(f"--batch-size must be positive, got {batch_size}")
    if seed < 0:
        raise UnfoldError(f"--seed must be a non-negative integer, got {seed}")
    if chunk_size < 1:
        raise UnfoldError(f"--chunk-size must be positive, got {chunk_size}")
    check_precision(precision)
    targets = parse_devices(devices)
    copies = {task: [_load(task, path, target) for target in targets] for task, path in checkpoints.items()}
    modules = {task: models[0] for task, models in copies.items()}
    sampling = {task: module.sampling(sampler, steps) for task, module in modules.items()}
    samplers, steps_used = (_shared_or_each({task: used[part] for task, used in sampling.items()}) for part in (0, 1))
    topology = next(iter(modules.values())).topology
    process = process_of(data_path, topology)
    for task, module in modules.items():
        trained_for = getattr(module.hparams, "process", process)
        if trained_for != process:
            raise UnfoldError(f"{checkpoints[task]}: trained for {trained_for}, but {data_path} holds {process} events")
        if module.topology.sources != topology.sources:
            raise UnfoldError(
                f"{checkpoints[task]}: trained on other detector inputs than the {next(iter(checkpoints))} run"
            )
    in_file = count_events(data_path, topology)
    total = in_file if limit is None else min(limit, in_file)
    if total < 1:
        raise UnfoldError(f"{data_path}: no events to unfold")
    chunks = event_chunks(total, -(-chunk_size // batch_size) * batch_size)
    truth_groups = [group for group in ("PARTONS", "PARTICLES") if has_group(data_path, group)]
    with h5py.File(data_path, "r") as source:
        has_fiducial = "PARTICLES" in truth_groups and "PARTICLES/fiducial" in source
    if "parton" in modules:
        assign, method = reconstruction(data_path, topology, recon=recon, fit_data=fit_data, batch_size=batch_size)
        partons = modules["parton"].representation.daughters
        tally = _ReferenceTally(partons)
    attrs: dict[str, object] = {"n": n, "sampler": samplers, "steps": steps_used, "precision": precision, "seed": seed,
                                "batch_size": batch_size,
                                "inputs": str(data_path), "devices": ",".join(map(str, targets)),
                                "checkpoints": json.dumps({k: str(v) for k, v in checkpoints.items()}),
                                "truth": ", ".join(truth_groups) or "none: the input file holds no PARTONS or PARTICLES",
                                **_collision_energy(data_path), **_generated_luminosity(data_path, total / in_file)}
    description = f"sample {'+'.join(copies)} (n={n}, {samplers}, {steps_used} steps, {precision}, {attrs['devices']})"
    with (tqdm(total=-(-total // batch_size) * len(copies), desc=description, unit="batch") as progress,
          atomic_output(out) as partial, h5py.File(partial, "w") as file):
        for events in chunks:
            data = read_spanet(data_path, topology, start=events.start, limit=events.stop - events.start, weights=weights)
            inputs = encoder_inputs(data, topology)
            batches = list(torch.arange(data.n_events).split(batch_size))
            arrays: dict[str, np.ndarray] = {}
            for task, models in copies.items():
                draw = functools.partial(_draw, task, inputs, batches, n=n, sampler=sampling[task][0],
                                         steps=sampling[task][1], precision=precision, seed=seed,
                                         first=events.start // batch_size)
                parts = _round_robin(draw, models, len(batches), progress)
                truth = None
                if _TRUTH[task] in truth_groups:
                    truth = read_truth(data_path, _TRUTH[task], start=events.start, limit=data.n_events)
                if task == "parton":
                    _parton_arrays(arrays, parts, data, topology, modules[task], truth, assign(data))
                    tally.add(arrays)
                else:
                    _particle_arrays(arrays, parts, data, topology, truth)
                    if has_fiducial:
                        arrays["PARTICLES/fiducial"] = _rows(data_path, "PARTICLES/fiducial", events.start, data.n_events)
            source = topology.sequential[0]
            for i, feature in enumerate(source.features):
                arrays[f"INPUTS/{source.name}/{feature}"] = data.sequential[source.name][..., i]
            arrays[f"INPUTS/{source.name}/MASK"] = data.masks[source.name]
            arrays["EVENT_INDEX"] = data.event_index
            arrays["WEIGHTS/weight"] = data.event_weights
            append_arrays(file, arrays)
        attrs["weights"] = data.weights_key or "none (all 1)"
        attrs.update(_copy_missed(data_path, file, total / in_file))
        if "parton" in modules:
            attrs.update(tally.attrs(method))
            attrs["composites"] = json.dumps(modules["parton"].representation.composites)
            attrs["process"] = modules["parton"].hparams.process
        for key, value in attrs.items():
            file.attrs[key] = value
    return out


def default_fit_data(data_path: Path) -> Path:
    """The training file beside a ``*_test.h5`` file (as ``unfold generate`` writes them), on
    whose truth-matched events the chi-square reference fits its mass resolutions."""
    if data_path.stem.endswith("_test"):
        train = data_path.with_name(f"{data_path.stem.removesuffix('_test')}_train{data_path.suffix}")
        if train.is_file():
            return train
    raise UnfoldError(f"{data_path}: no *_train.h5 beside it to fit the chi-square reference on; pass --fit-data "
                      "TRAIN.h5 or --recon RUN")


def reconstruction(data_path: Path, topology, *, recon: Path | Sequence[Path] | None, fit_data: Path | None,
                   batch_size: int = 1024) -> tuple[Callable[[SpanetData], dict[str, np.ndarray]], str]:
    """The jet-parton assignment of events without truth, ready to apply chunk by chunk, and a line
    saying how it is made: the trained ``recon`` run's (of several runs, their ensemble's), else the
    chi-square baseline's (resolutions fitted once on the truth-matched events of ``fit_data``); lepton
    daughters are the selected lepton.

    The recon network runs in batches of ``batch_size`` from the start of each chunk: with chunks
    that are whole batches, the assignments do not depend on the chunking (the network's float
    rounding, which can swap a symmetric pair such as the W's two quarks, depends on the batch)."""
    if recon is not None:
        runs = run_list(recon)
        model = AssignmentModel.load(*runs)
        if model.topology.sources != topology.sources or model.topology.resonance_names != topology.resonance_names:
            raise UnfoldError(f"{runs[0]}: a recon run for other detector inputs or resonances than {data_path}")

        def assign(data: SpanetData) -> dict[str, np.ndarray]:
            predicted = {name: result["indices"] for name, result in model.predict(data, batch_size=batch_size).items()}
            return assigned_partons(data, topology, predicted)

        return assign, "recon model " + ", ".join(str(find_checkpoint(run)) for run in runs)
    fit = fit_data if fit_data is not None else default_fit_data(data_path)
    if not fit.is_file():
        raise UnfoldError(f"--fit-data {fit}: no such file")
    baseline = fit_chi_square(fit, topology)

    def assign_chi_square(data: SpanetData) -> dict[str, np.ndarray]:
        return assigned_partons(data, topology, baseline.assign(detector_events(data, topology), topology))

    return assign_chi_square, f"chi-square (resolutions fitted on truth-matched events of {fit})"


def parse_devices(devices: str) -> list[torch.device]:
    """The devices of ``--devices``: ``auto`` (cuda:0 when torch sees a GPU, else cpu), N (the first N
    GPUs) or comma-separated torch devices (``cpu``, ``cuda:1``, ``cuda:0,cuda:1``; repeats such as
    ``cpu,cpu`` give one model copy each). Raises a one-line :class:`UnfoldError` for anything else."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices == "auto":
        return [torch.device("cuda:0" if visible else "cpu")]
    if devices.lstrip("+-").isdecimal():
        count = int(devices)
        if count < 1:
            raise UnfoldError(f"--devices {devices}: a number of GPUs must be positive")
        if count > visible:
            raise UnfoldError(f"--devices {devices} asks for {count} GPUs but torch sees {visible}")
        return [torch.device("cuda", index) for index in range(count)]
    try:
        parsed = [torch.device(name.strip()) for name in devices.split(",")]
    except RuntimeError:
        raise UnfoldError(f"--devices {devices}: expected auto, a number of GPUs or comma-separated torch devices "
                          "such as cpu or cuda:0,cuda:1") from None
    for device in parsed:
        if device.type == "cuda" and (device.index or 0) >= visible:
            raise UnfoldError(f"--devices {devices}: {device} is not one of the {visible} GPUs torch sees")
    return parsed


def batch_generator(seed: int, task: str, index: int, device: torch.device) -> torch.Generator:
    """The generator of batch ``index`` of ``task`` on ``device``, seeded with the ``(task, index)``
    child of ``numpy.random.SeedSequence(seed)``: independent streams per batch and task, whichever
    device draws the batch."""
    stream = np.random.SeedSequence(seed, spawn_key=(list(MODULES).index(task), index))
    return torch.Generator(device=device).manual_seed(int(stream.generate_state(1, np.uint64)[0]))


def _shared_or_each(values: dict[str, object]) -> object:
    """The value every task shares, else ``task: value`` for each, as one text (a samples file attribute)."""
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{task}: {value}" for task, value in values.items())


def _draw(task: str, inputs, batches: list[torch.Tensor], module, index: int, *, n: int, sampler: str, steps: int,
          precision: str, seed: int, first: int):
    """The draws of a chunk's batch ``index`` (batch ``first + index`` of the file) with ``module`` on its
    device, moved to the CPU: parton -> name -> feature -> (E, n); particle -> ((E, n) multiplicities,
    decoded collections)."""
    batch = map_tensors(lambda tensor: tensor.to(module.device), take_events(inputs, batches[index]))
    generator = batch_generator(seed, task, first + index, module.device)
    result = module.sample(batch, n, sampler=sampler, steps=steps, precision=precision, generator=generator)
    if task == "particle":
        draws, collections = result
        return draws.multiplicity.cpu(), collections
    return {name: {feature: values.cpu() for feature, values in features.items()} for name, features in result.items()}


def _round_robin(draw: Callable, models: list, count: int, progress: tqdm) -> list:
    """``draw(model, index)`` for batches 0..count-1, batch i on ``models[i % len(models)]`` in that
    model's own thread; the results in batch order. A failure cancels the batches not yet started.
    One model draws in the calling thread, where torch's CPU kernels ran a fifth faster than from a worker
    thread (particle sampling, 2 threads: 117-122 s against 143 s for the default test file)."""
    if len(models) == 1:
        parts = []
        for index in range(count):
            parts.append(draw(models[0], index))
            progress.update()
        return parts
    pools = [ThreadPoolExecutor(max_workers=1) for _ in models]
    try:
        futures = [pools[i % len(models)].submit(draw, models[i % len(models)], i) for i in range(count)]
        parts = []
        for future in futures:
            parts.append(future.result())
            progress.update()
        return parts
    finally:
        for pool in pools:
            pool.shutdown(cancel_futures=True)


def checkpoint_task(path: Path) -> Task:
    """Which unfolding (parton or particle) a run folder or checkpoint holds, from its saved hyperparameters."""
    checkpoint = find_checkpoint(path)
    try:
        hyperparameters = torch.load(checkpoint, map_location="cpu", weights_only=False).get("hyper_parameters", {})
    except Exception as error:  # torch raises many kinds for a file that is not a checkpoint
        raise UnfoldError(f"{checkpoint}: not a readable checkpoint ({str(error).splitlines()[0][:120]})") from None
    task = saved_task(hyperparameters)
    if task not in ("parton", "particle"):
        raise UnfoldError(f"{checkpoint}: not a parton or particle unfolding checkpoint (a {task or 'foreign'} run?)")
    return task


def _load(task: str, path: Path, device: torch.device):
    checkpoint = find_checkpoint(path)
    try:
        return MODULES[task].load_from_checkpoint(checkpoint, map_location=device).eval()
    except (KeyError, TypeError, RuntimeError) as error:
        raise UnfoldError(f"{checkpoint}: not a {task} unfolding checkpoint ({str(error).splitlines()[0][:120]})") from None


def _parton_arrays(arrays, parts, data, topology, module, truth, assignments) -> None:
    """One chunk's parton draws, truth (``truth`` None: the file has none), and the reconstructed
    (``assignments``) and truth-matched detector references."""
    for name, features in parts[0].items():
        for feature in features:
            arrays[f"SAMPLES/PARTONS/{name}/{feature}"] = torch.cat([p[name][feature] for p in parts]).numpy().astype(np.float32)
    if truth is not None:
        for name in module.representation.daughters:
            for feature in ("pt", "eta", "phi", "mass"):
                arrays[f"PARTONS/{name}/{feature}"] = truth[name][feature]
    references = (("REFERENCE", assignments), ("MATCHED", data.targets)) if data.has_targets else (("REFERENCE", assignments),)
    for group, slots in references:
        for name, features in parton_reference(data, topology, module.hparams.process, slots).items():
            for feature, values in features.items():
                arrays[f"{group}/PARTONS/{name}/{feature}"] = values.astype(np.float32)


def _rows(data_path: Path, key: str, start: int, count: int) -> np.ndarray:
    """Rows ``start`` .. ``start + count`` of dataset ``key`` of the data file."""
    with h5py.File(data_path, "r") as source:
        return source[key][start:start + count]


def _copy_missed(data_path: Path, file: h5py.File, share: float) -> dict[str, object]:
    """Copy the truth of the events the detector missed (``MISSED/``, written by ``unfold generate
    --keep-missed``) into the samples file, for the efficiency-corrected report: all of it, or with
    ``--limit`` its first ``share`` (missed events are stored in generation order, as the selected
    ones, so the first share comes from the same stretch of the event stream). Returns the attributes
    recording it (empty when the data file has no ``MISSED/``)."""
    with h5py.File(data_path, "r") as source:
        if MISSED not in source:
            return {}
        keys: list[str] = []
        source[MISSED].visititems(lambda key, node: keys.append(key) if isinstance(node, h5py.Dataset) else None)
        if not keys:
            return {}
        events = len(source[f"{MISSED}/{keys[0]}"])
        kept = events if share >= 1.0 else round(events * share)
        for key in keys:
            file[f"{MISSED}/{key}"] = source[f"{MISSED}/{key}"][:kept]
    return {"missed_events": kept, "missed_events_in_data": events}


def _generated_luminosity(data_path: Path, share: float) -> dict[str, float]:
    """The generator's cross section and the equivalent luminosity of the unfolded events: the data
    file's ``luminosity_fb_inv`` times the ``share`` of its events unfolded (empty if it has none)."""
    with h5py.File(data_path, "r") as file:
        attrs = {key: float(file.attrs[key]) for key in ("cross_section_fb", "cross_section_error_fb", "luminosity_fb_inv")
                 if key in file.attrs}
    if "luminosity_fb_inv" in attrs:
        attrs["luminosity_fb_inv"] *= share
    return attrs


def _collision_energy(data_path: Path) -> dict[str, float]:
    """``sqrt_s_gev`` from the Beams:eCM line of the data file's Pythia settings (empty if it has none)."""
    with h5py.File(data_path, "r") as file:
        settings = json.loads(file.attrs.get("pythia_settings", "[]"))
    for line in settings:
        key, _, value = line.partition("=")
        if key.strip() == "Beams:eCM":
            return {"sqrt_s_gev": float(value)}
    return {}


class _ReferenceTally:
    """Counts over every chunk of how many events the parton reference reconstructs and how many are
    truth-matched, for the root attributes."""

    def __init__(self, partons: list[str]) -> None:
        self.partons = list(partons)
        self.events = 0
        self.complete = 0
        self.unassigned = np.zeros(len(self.partons), np.int64)
        self.matched: np.ndarray | None = None

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        """Count one chunk's ``REFERENCE/PARTONS`` (and ``MATCHED/PARTONS``, where the file has targets)."""
        reconstructed = np.stack([np.isfinite(arrays[f"REFERENCE/PARTONS/{p}/pt"]) for p in self.partons], axis=1)
        self.events += len(reconstructed)
        self.complete += int(reconstructed.all(axis=1).sum())
        self.unassigned += (~reconstructed).sum(axis=0)
        if f"MATCHED/PARTONS/{self.partons[0]}/pt" in arrays:
            matched = np.array([np.isfinite(arrays[f"MATCHED/PARTONS/{p}/pt"]).sum() for p in self.partons])
            self.matched = matched if self.matched is None else self.matched + matched

    def attrs(self, method: str) -> dict[str, object]:
        """How the parton reference was made, on how many events, and the truth-matched coverage."""
        attrs: dict[str, object] = {
            "reference": method,
            "reference_events": self.complete,
            "reference_unassigned": json.dumps({p: int(u) for p, u in zip(self.partons, self.unassigned, strict=True)}),
        }
        if self.matched is not None:
            attrs["matched_fraction"] = json.dumps({p: int(m) / self.events for p, m in zip(self.partons, self.matched, strict=True)})
        return attrs


def _particle_arrays(arrays, parts, data, topology, truth) -> None:
    """One chunk's particle draws, truth (``truth`` None: the file has none) and detector reference."""
    decoded = [collections for _, collections in parts]
    for name, features in decoded[0].items():
        for feature in features:
            arrays[f"SAMPLES/PARTICLES/{name}/{feature}"] = np.concatenate([d[name][feature] for d in decoded])
    arrays["SAMPLES/PARTICLE_MULTIPLICITY"] = torch.cat([multiplicity for multiplicity, _ in parts]).numpy()
    if truth is not None:
        for name, features in decoded[0].items():
            for feature in features:
                arrays[f"PARTICLES/{name}/{feature}"] = truth[name][feature]
        slots = {name: truth[name]["MASK"].shape[1] for name in decoded[0] if "MASK" in truth[name]}
    else:  # measured events: the detector reference padded to the unfolded slots
        slots = {name: features["MASK"].shape[-1] for name, features in decoded[0].items() if "MASK" in features}
    for name, features in particle_reference(data, topology, slots).items():
        for feature, values in features.items():
            if f"SAMPLES/PARTICLES/{name}/{feature}" in arrays:
                arrays[f"REFERENCE/PARTICLES/{name}/{feature}"] = values
