"""``unfold closure``: the prior-dependence test of a trained unfolding, nothing trained.

A nominal file and one or more alternatives (another top mass, a reweighted spectrum, another tune),
all with truth, are unfolded with the same run (:class:`UnfoldingModel`); for each key observable of
``unfold report`` the shift of the unfolded distribution between the nominal and each alternative is
compared with the shift of the truth and of the detector level (:mod:`evaluation.closure`). Writes
``metrics.json``, ``index.html`` and one plot per observable into a report folder, replaced whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from evaluation.closure import (
    ClosureSample,
    Shift,
    closure_page,
    location,
    peak_window,
    plot_closure,
    shift_statistics,
)
from evaluation.observables import Observable, compute_observables
from evaluation.report import check_report_folder, report_folder
from evaluation.samples_file import Collection, ParticleLevel, PartonLevel, SamplesFile
from unfold.data.hdf5_schema import SpanetData, has_group, read_spanet, read_truth
from unfold.errors import UnfoldError
from unfold.generation.processes import get_process
from unfold.models.diffusion.sampler import check_precision
from unfold.tasks.references import particle_reference, parton_reference
from unfold.tasks.sample import reconstruction
from unfold.tasks.train_unfolding import process_of
from unfold.tasks.unbias import METHOD, data_sample, simulation_sample, training_prior, unbias_draws
from unfold.tasks.unfolding_model import UnfoldingModel
from unfold.unbiasing.draw_weights import draw_weights
from unfold.unbiasing.template_fit import default_parameters
from unfold.unbiasing.top_prior import top_names

__all__ = ["ClosureResult", "run_closure"]

TRUTH_GROUP = {"parton": "PARTONS", "particle": "PARTICLES"}


@dataclass(frozen=True)
class ClosureResult:
    """Where the report went and its headline lines (one per key observable and alternative)."""

    out: Path
    headline: str


def _check_file(path: Path, task: str, model: UnfoldingModel) -> None:
    """The file exists, has the truth closure compares with, and holds the process the run was trained for."""
    if not path.is_file():
        raise UnfoldError(f"{path}: no such file")
    group = TRUTH_GROUP[task]
    if not has_group(path, group):
        raise UnfoldError(f"{path}: no {group} group; closure compares unfoldings with the truth, give files with "
                          f"{group}/<object>/<feature> (as `unfold generate` writes them)")
    if task == "parton":
        process = process_of(path, model.topology)
        if process != model.process:
            raise UnfoldError(f"{path}: holds {process} events, but the run was trained for {model.process}")


def _observables(model: UnfoldingModel, path: Path, *, n: int, seed: int, steps: int | None, sampler: str | None,
                 precision: str, batch_size: int, assign: Callable[[SpanetData], dict[str, np.ndarray]] | None,
                 limit: int | None) -> tuple[list[Observable], SpanetData]:
    """Unfold every event of ``path`` n times and derive the report's observables (truth, draws and
    detector level side by side, as ``unfold report`` reads them from a samples file); also the
    file's detector-level events (their weights weight the sample)."""
    data = read_spanet(path, model.topology, limit=limit)
    draws = model.sample(data, n=n, seed=seed, steps=steps, batch_size=batch_size, sampler=sampler, precision=precision)
    truth = read_truth(path, TRUTH_GROUP[model.task], limit=data.n_events)
    partons = particles = None
    composites: dict[str, tuple[str, ...]] = {}
    if model.task == "parton":
        process = model.process
        reference = parton_reference(data, model.topology, process, assign(data))
        partons = PartonLevel(
            truth={name: {f: truth[name][f].astype(np.float64) for f in features} for name, features in draws.items()},
            draws={name: {f: v.astype(np.float64) for f, v in features.items()} for name, features in draws.items()},
            reference={name: reference[name] for name in draws if name in reference},
            matched={},
        )
        composites = dict(get_process(process).composites)
    else:
        draws.pop("multiplicity")  # the masks carry it
        slots = {name: truth[name]["MASK"].shape[1] for name in draws if "MASK" in truth[name]}
        reference = particle_reference(data, model.topology, slots)

        def collection(features: dict[str, np.ndarray], names) -> Collection:
            mask = features.get("MASK")
            return Collection({f: np.asarray(features[f], np.float64) for f in names if f in features},
                              None if mask is None else np.asarray(mask, bool))

        kinematic = {name: [f for f in features if f not in ("MASK", "pdgid", "charge")] for name, features in draws.items()}
        particles = ParticleLevel(
            truth={name: collection(truth[name], kinematic[name]) for name in draws},
            draws={name: collection(draws[name], kinematic[name]) for name in draws},
            reference={name: collection(reference[name], kinematic[name]) for name in draws if name in reference},
        )
    samples = SamplesFile(path=path, n_events=data.n_events, n_draws=n, partons=partons, particles=particles,
                          composites=composites, attrs={})
    return [o for o in compute_observables(samples) if o.key and o.per_event], data


def _finite(value):
    """``value`` with every NaN or infinite float as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def _headline(name: str, label: str, mean: Shift) -> str:
    return (f"{name:24s} {label:>24s}: truth {mean.truth:+8.3f} unfolded {mean.unfolded:+8.3f} +- {mean.error:.3f} "
            f"followed {mean.fraction:+.2f} +- {mean.fraction_error:.2f}")


def run_closure(
    run: Path,
    nominal: Path,
    alternatives: Sequence[Path],
    out: Path,
    *,
    labels: Sequence[str] | None = None,
    n: int = 33,
    resamples: int = 50,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    precision: str = "float32",
    batch_size: int = 256,
    device: str = "cpu",
    recon: Path | Sequence[Path] | None = None,
    fit_data: Path | None = None,
    limit: int | None = None,
    unbias: Sequence[Path] = (),
    unbias_parameters: Sequence[str] | None = None,
    training_data: Sequence[Path] | None = None,
) -> ClosureResult:
    """Unfold ``nominal`` and each of ``alternatives`` with ``run`` and write the closure report to ``out``.

    Args:
        labels: one per file, the nominal's first (default: "nominal" and the alternatives' stems).
        n: unfoldings per event; resamples: bootstrap resamples of the events.
        precision: arithmetic of the denoising network, as ``unfold sample --precision``.
        recon: recon run whose assignments reconstruct the detector level (default: the chi-square
            baseline fitted on the truth-matched events of ``fit_data``, default the nominal file).
        limit: use only the first N events of each file.
        unbias: simulation files (with truth; several top masses make a broad prior): also unbias
            every file's unfolding (:mod:`unfold.tasks.unbias`) and report its shifts beside.
        unbias_parameters: the prior parameters the unbiasing fits (default: the top-pT slope, and the
            top mass with a simulation of several top masses).
        training_data: the files the run was trained on (default: its config.yaml's ``data``).
    """
    files = [Path(nominal), *map(Path, alternatives)]
    if not alternatives:
        raise UnfoldError("--alternative: give at least one alternative file to compare with the nominal")
    names = list(labels) if labels else ["nominal", *(p.stem for p in alternatives)]
    if len(names) != len(files) or len(set(names)) != len(names):
        raise UnfoldError(f"--labels: {len(names)} distinct labels given ({', '.join(names)}); expected {len(files)}, "
                          "the nominal's first")
    if n < 1:
        raise UnfoldError(f"--n {n}: expected a positive number of unfoldings per event")
    if resamples < 2:
        raise UnfoldError(f"--bootstrap {resamples}: expected at least 2 resamples for a bootstrap error")
    check_precision(precision)
    out = Path(out)
    check_report_folder(out, files)
    model = UnfoldingModel.load(run, map_location=device)
    for path in files:
        _check_file(path, model.task, model)
    assign = None
    method = "none (particle level: the detector-level objects)"
    if model.task == "parton":
        assign, method = reconstruction(files[0], model.topology, recon=recon, fit_data=fit_data or files[0],
                                        batch_size=batch_size)
    if unbias and model.task != "parton":
        raise UnfoldError("--unbias: the prior family is one of top masses and top pT; give a parton run")
    trained = training_prior(run, training_data) if unbias else None
    simulation = simulation_sample(unbias, model.topology, model.process, assign) if unbias else None
    outcomes = [_observables(model, path, n=n, seed=seed, steps=steps, sampler=sampler, precision=precision,
                             batch_size=batch_size, assign=assign, limit=limit) for path in files]
    per_file = [{o.name: o for o in observables} for observables, _ in outcomes]
    samples = [{name: ClosureSample(o.truth, o.draws, o.reference, weights=data.event_weights)
                for name, o in observables.items()} for observables, (_, data) in zip(per_file, outcomes, strict=True)]
    metrics: dict = {
        "run": str(run), "task": model.task, "n_draws": n, "bootstrap": resamples, "seed": seed,
        **dict(zip(("sampler", "steps"), model.module.sampling(sampler, steps), strict=True)), "precision": precision,
        "detector_level": method,
        "files": {label: {"path": str(path), "events": len(next(iter(s.values())).truth)}
                  for label, path, s in zip(names, files, samples, strict=True)},
        "statistics": {"window_mean": "mean of the values inside the window", "median": "median of all values"},
        "observables": {},
        "unbiasing": {},
    }
    if simulation is not None:
        metrics["unbiasing_method"] = {
            "simulation": [str(p) for p in unbias], "simulation_top_masses": list(simulation.generated.masses),
            "trained_top_masses": list(trained.masses),
            "parameters": list(unbias_parameters or default_parameters(simulation.generated)), "method": METHOD}
    rows, headline, plots = [], [], []
    unbiased: list[dict[str, ClosureSample]] = []
    refit_weights: list[list[np.ndarray]] = []  # per file, the draws' weights under each bootstrap refit of its fit
    for label, observables, (_, data), sample in zip(names, per_file, outcomes, samples, strict=True):
        if simulation is None:
            break
        tops = {top: {q: observables[f"parton/{top}/{q}"].draws for q in ("mass", "pt")}
                for top in top_names(model.process)}
        unbiasing = unbias_draws(data_sample(data, model.topology, model.process, assign), simulation, tops, trained,
                                 free=unbias_parameters, resamples=resamples)
        unbiased.append({name: replace(s, draw_weights=unbiasing.weights) for name, s in sample.items()})
        refit_weights.append([draw_weights(tops, refit, trained) for refit in unbiasing.fit.bootstrap])
        metrics["unbiasing"][label] = unbiasing.summary()
        headline.append(f"unbiasing fit, {label}: {unbiasing.fit.summary()}, draws n_eff "
                        f"{unbiasing.effective_draws:.0f} of {unbiasing.weights.size}")
    for index, (name, observable) in enumerate(per_file[0].items()):
        low, high, rule = peak_window(name, observable.truth)
        entry: dict = {"label": observable.label, "unit": observable.unit, "window": [low, high], "window_rule": rule,
                       "locations": {label: location(s[name], (low, high)) for label, s in zip(names, samples, strict=True)}
                       | {f"{label}, unbiased": location(s[name], (low, high))
                          for label, s in zip(names, unbiased, strict=False)},
                       "shifts": {}}
        for label, alternative in zip(names[1:], samples[1:], strict=True):
            shifts = shift_statistics(samples[0][name], alternative[name], (low, high), resamples=resamples)
            entry["shifts"][label] = {statistic: shift.as_json() for statistic, shift in shifts.items()}
            rows.append((name, observable.unit, label, (low, high, rule), shifts))
            headline.append(_headline(name, label, shifts["window_mean"]))
        for label, alternative, refits in zip(names[1:], unbiased[1:], refit_weights[1:], strict=False):
            shifts = shift_statistics(unbiased[0][name], alternative[name], (low, high), resamples=resamples,
                                      refits=list(zip(refit_weights[0], refits, strict=True)))
            entry["shifts"][f"{label}, unbiased"] = {statistic: shift.as_json() for statistic, shift in shifts.items()}
            rows.append((name, observable.unit, f"{label}, unbiased", (low, high, rule), shifts))
            headline.append(_headline(name, f"{label}, unbiased", shifts["window_mean"]))
        metrics["observables"][name] = entry
        plots.append((f"{index:02d}_{name.replace('/', '_').replace('+', '_')}.png", name, observable, (low, high)))
    with report_folder(out, "unfold closure") as temporary:
        for file_name, name, observable, window in plots:
            plot_closure(temporary / file_name, label=observable.label, unit=observable.unit,
                         samples=[(label, s[name]) for label, s in zip(names, samples, strict=True)]
                         + [(f"{label}, unbiased", s[name]) for label, s in zip(names, unbiased, strict=False)],
                         window=window)
        (temporary / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2, allow_nan=False, default=str) + "\n")
        meta = {"run": run, "task": model.task, "draws per event": n,
                "sampler": f"{metrics['sampler']}, {metrics['steps']} steps", "bootstrap resamples": resamples,
                "detector level": method, **{f"file: {label}": f"{path} ({metrics['files'][label]['events']} events)"
                                             for label, path in zip(names, files, strict=True)}}
        images = [(file_name, f"{name}: truth (dashed) and unfolded (solid), window edges dotted")
                  for file_name, name, _, _ in plots]
        (temporary / "index.html").write_text(closure_page(f"Prior dependence: {Path(run).name}", meta, rows, images))
    header = f"{'observable':24s} {'alternative':>24s}: shift of the mean in the window (alternative - nominal)"
    return ClosureResult(out=out, headline="\n".join([header, *headline]))
