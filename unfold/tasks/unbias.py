"""Unbiasing a parton unfolding: fit the prior to the data at detector level, reweight the draws.

The data's tops are reconstructed without truth (the same jet assignment as the unfolding's
reference), so are the simulation's; the prior family's parameters are fitted with the template
method (:mod:`unfold.unbiasing.template_fit`); the unfolding's draws are reweighted from the prior
it was trained with to the fitted one (:mod:`unfold.unbiasing.draw_weights`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

from evaluation.metrics import effective_events
from recon.event_topology import EventTopology
from unfold.data.hdf5_io import atomic_output, check_new_output
from unfold.data.hdf5_schema import SpanetData, read_spanet, read_truth
from unfold.data.recon_data import detector_events
from unfold.errors import UnfoldError
from unfold.generation.processes import get_process
from unfold.tasks.references import parton_reference
from unfold.tasks.sample import reconstruction
from unfold.tasks.train_unfolding import process_of
from unfold.tasks.unfolding_model import UnfoldingModel
from unfold.training.trainer import find_checkpoint
from unfold.unbiasing.detector_observables import equal_mass_tops, m3, min_lepton_b_mass
from unfold.unbiasing.draw_weights import draw_weights, top_kinematics
from unfold.unbiasing.template_fit import DetectorSample, PriorFit, fit_prior
from unfold.unbiasing.top_prior import GeneratedPrior, top_names

__all__ = ["METHOD", "Unbiasing", "data_sample", "simulation_sample", "systematic_resample", "template_observables",
           "training_prior", "unbias_draws", "unbias_samples"]

Assign = Callable[[SpanetData], dict[str, np.ndarray]]


def template_observables(data: SpanetData, topology: EventTopology, process: str, assign: Assign) -> dict[str, np.ndarray]:
    """The fit's detector-level observables: the mass-hypothesis-free M3 and (with a lepton)
    m_lb^min and the equal-mass top masses ("equal_mass/t_had", "equal_mass/t_lep";
    :mod:`unfold.unbiasing.detector_observables`), and every top's pT as the jet assignment
    reconstructs it ("t_had/pt", ...)."""
    events = detector_events(data, topology)
    reference = parton_reference(data, topology, process, assign(data))
    out = {"m3": m3(events)}
    if get_process(process).leptons:
        out["mlb_min"] = min_lepton_b_mass(events)
        out.update({f"equal_mass/{top}": mass for top, mass in equal_mass_tops(events).items()})
    out.update({f"{top}/pt": values["pt"] for top, values in top_kinematics(reference, process).items()})
    return out


def data_sample(data: SpanetData, topology: EventTopology, process: str, assign: Assign) -> DetectorSample:
    """The data's detector-level observables and event weights."""
    return DetectorSample(template_observables(data, topology, process, assign),
                          np.asarray(data.event_weights, np.float64))


def simulation_sample(paths: Sequence[Path], topology: EventTopology, process: str, assign: Assign) -> DetectorSample:
    """Simulation files of ``process`` (one or several top masses) with their reconstructed and true
    tops, event weights and generated prior, concatenated."""
    observables: list[dict[str, np.ndarray]] = []
    tops: list[dict[str, dict[str, np.ndarray]]] = []
    weights = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UnfoldError(f"{path}: no such file (simulation for the unbiasing)")
        if (found := process_of(path, topology)) != process:
            raise UnfoldError(f"{path}: holds {found} events; the unfolding is of {process}")
        data = read_spanet(path, topology)
        sample = data_sample(data, topology, process, assign)
        truth = read_truth(path, "PARTONS")
        missing = [top for top in top_names(process) if top not in truth or not {"mass", "pt"} <= set(truth[top])]
        if missing:
            raise UnfoldError(f"{path}: no PARTONS/{missing[0]}/mass and pt; the prior is a function of the true tops")
        observables.append(dict(sample.observables))
        tops.append({top: {q: np.asarray(truth[top][q], np.float64) for q in ("mass", "pt")}
                     for top in top_names(process)})
        weights.append(sample.weights)
    return DetectorSample(
        observables={name: np.concatenate([o[name] for o in observables]) for name in observables[0]},
        weights=np.concatenate(weights),
        tops={top: {q: np.concatenate([t[top][q] for t in tops]) for q in ("mass", "pt")} for top in tops[0]},
        generated=GeneratedPrior.of_files(paths),
    )


def training_prior(run: Path, training_data: Sequence[Path] | None = None) -> GeneratedPrior:
    """The prior a run was trained with: that of ``training_data``, else of the ``data`` its config.yaml names."""
    if not training_data:
        config = find_checkpoint(Path(run)).parent.parent / "config.yaml"
        data = Path(yaml.safe_load(config.read_text())["data"]) if config.is_file() else None
        if data is None or not data.is_file():
            raise UnfoldError(f"{config}: the run's training data {data} is not there; give it with --training-data")
        training_data = [data]
    return GeneratedPrior.of_files(training_data)


METHOD = ("template fit of the reweighted simulation (the broad-prior unbiasing of arXiv 2501.12363); draws "
          "reweighted by the prior ratio")


@dataclass(frozen=True)
class Unbiasing:
    """The fitted prior and the (E, n) weights it gives the draws (each event's summing to n)."""

    fit: PriorFit
    weights: np.ndarray

    @property
    def effective_draws(self) -> float:
        return float(effective_events(self.weights))

    def summary(self) -> dict:
        """The fit and the draws' Kish effective number, for metrics and file attributes (JSON)."""
        fit = self.fit
        return {"parameters": asdict(fit.parameters), "errors": fit.errors, "free": list(fit.free), "chi2": fit.chi2,
                "ndf": fit.ndf, "simulation_effective_events": fit.effective_simulation,
                "effective_draws": self.effective_draws, "draws": int(self.weights.size), "method": METHOD}


def unbias_draws(detector: DetectorSample, simulation: DetectorSample, draw_tops: Mapping[str, Mapping[str, np.ndarray]],
                 trained: GeneratedPrior, *, free: Sequence[str] | None = None, resamples: int = 30) -> Unbiasing:
    """Fit the prior to ``detector`` (the data's observables and weights) with ``simulation`` and weight
    the draws, whose tops are ``draw_tops`` (top -> {"mass", "pt"} (E, n)), from the ``trained`` prior to it."""
    fit = fit_prior(detector, simulation, free=free, resamples=resamples)
    return Unbiasing(fit, draw_weights(draw_tops, fit.parameters, trained))


def systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(E, n) indices of n draws per event picked with probabilities weights / sum (systematic
    resampling: one uniform offset per event, every draw with at least floor(n w / sum w) copies)."""
    events, n = weights.shape
    cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    points = (rng.uniform(size=(events, 1)) + np.arange(n)) / n
    return np.minimum((cumulative[:, None, :] <= points[:, :, None]).sum(axis=2), n - 1)


def unbias_samples(samples: Path, out: Path, simulation: Sequence[Path], *,
                   free: Sequence[str] | None = None, training_data: Sequence[Path] | None = None,
                   recon: Path | Sequence[Path] | None = None, fit_data: Path | None = None, resamples: int = 30,
                   seed: int = 0) -> Unbiasing:
    """Fit the prior to the detector level of a parton ``unfold sample`` file and write ``out``: the same
    file with every event's draws resampled in proportion to their prior ratio (so ``unfold report``,
    ``unfold acceptance`` and every other reader see unweighted unfoldings under the fitted prior)
    and the fit in the attribute ``unbiasing`` (JSON). Written under a temporary name, then moved."""
    samples, out = Path(samples), Path(out)
    check_new_output(samples, out, "samples file")
    with h5py.File(samples, "r") as file:
        checkpoints = json.loads(file.attrs.get("checkpoints", "{}"))
        if "parton" not in checkpoints or "SAMPLES/PARTONS" not in file:
            raise UnfoldError(f"{samples}: no parton unfoldings (SAMPLES/PARTONS); unbias a parton `unfold sample` file")
        inputs = Path(str(file.attrs["inputs"]))
        rows = file["EVENT_INDEX"][()]
        event_weights = file["WEIGHTS/weight"][()].astype(np.float64)
        draws = {name: {f: group[f][()] for f in group} for name, group in file["SAMPLES/PARTONS"].items()}
    if not inputs.is_file():
        raise UnfoldError(f"{samples}: its detector-level events {inputs} are not there (attribute inputs)")
    if rows.size and not np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size)):
        raise UnfoldError(f"{samples}: EVENT_INDEX is not one consecutive range of {inputs}")
    model = UnfoldingModel.load(checkpoints["parton"])
    assign, _ = reconstruction(inputs, model.topology, recon=recon, fit_data=fit_data)
    data = read_spanet(inputs, model.topology, start=int(rows[0]) if rows.size else 0, limit=rows.size)
    detector = data_sample(data, model.topology, model.process, assign)
    unbiasing = unbias_draws(DetectorSample(detector.observables, event_weights),
                             simulation_sample(simulation, model.topology, model.process, assign),
                             top_kinematics(draws, model.process), training_prior(Path(checkpoints["parton"]), training_data),
                             free=free, resamples=resamples)
    weights = unbiasing.weights
    picks = systematic_resample(weights, np.random.default_rng(seed))
    summary = {**unbiasing.summary(), "simulation": [str(p) for p in simulation]}
    with atomic_output(out) as partial:
        shutil.copyfile(samples, partial)
        with h5py.File(partial, "r+") as file:
            def resample(name: str, item) -> None:
                if isinstance(item, h5py.Dataset) and item.shape[:2] == weights.shape:
                    item[...] = np.take_along_axis(item[()], picks.reshape(picks.shape + (1,) * (item.ndim - 2)),
                                                   axis=1)

            for group in ("SAMPLES", "ACCEPTANCE"):
                if group in file:
                    file[group].visititems(resample)
            file.attrs["unbiasing"] = json.dumps(summary)
    return unbiasing
