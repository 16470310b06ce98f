"""``unfold acceptance``: efficiency and fake corrections for unfolded samples.

``train`` fits, on a file written by ``unfold generate --keep-missed``, the efficiency
p(selected | truth) (parton level: every generated event, ``PARTONS`` against ``MISSED/PARTONS``;
particle level: the fiducial events, ``PARTICLES`` against ``MISSED/PARTICLES`` where
``fiducial`` holds) and, at particle level, the fiducial probability p(fiducial | detector
event) of the selected events (``PARTICLES/fiducial`` against their detector inputs). It checks
both against counts on a held-out file: calibration (mean predicted probability against the
observed fraction in bins of the prediction) and the efficiency and fake rate in bins of
m(ttbar) and pT of the (hadronic) top.

``apply`` weights every draw of an ``unfold sample`` file by p_fid(detector) / efficiency(draw)
("Analysis-ready generative unfolding", arXiv 2509.02708): the weighted draws estimate the full
inclusive (parton) or fiducial (particle) distribution, not only that of the selected events.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import h5py
import numpy as np
import torch
import vector

from unfold.data.hdf5_io import atomic_output, open_h5
from unfold.data.hdf5_schema import MISSED, has_group, read_truth
from unfold.errors import UnfoldError
from unfold.generation.processes import Process, get_process
from unfold.models.acceptance import ProbabilityClassifier

__all__ = [
    "MISSED",
    "Calibration",
    "FitConfig",
    "Level",
    "apply_acceptance",
    "calibration",
    "detector_features",
    "efficiency_features",
    "fit_classifier",
    "load_acceptance",
    "rate_table",
    "train_acceptance",
]

Level = Literal["parton", "particle"]
_TRUTH = {"parton": "PARTONS", "particle": "PARTICLES"}
LEADING_JETS = 6  # particle-level jets in the efficiency features (the fiducial regions ask for 4 or 6)
DETECTOR_OBJECTS = 8  # detector objects (lepton, then jets hardest first) in the fiducial-probability features
_DETECTOR_FEATURES = ("pt", "eta", "btag", "etag", "utag")


@dataclass(frozen=True)
class FitConfig:
    """Classifier size and training: Adam on binary cross-entropy for at most ``epochs``, keeping the
    epoch of lowest loss on a ``validation`` share of the events, on which the logit is then
    Platt-scaled."""

    hidden: int = 64
    layers: int = 3
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 2e-3
    validation: float = 0.25
    seed: int = 0


def fit_classifier(features: np.ndarray, labels: np.ndarray, config: FitConfig = FitConfig()) -> ProbabilityClassifier:
    """Fit p(label = 1 | features) on (E, F) features and (E,) 0/1 labels."""
    x = torch.as_tensor(np.asarray(features, np.float32))
    y = torch.as_tensor(np.asarray(labels, np.float32))
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise UnfoldError(f"acceptance: expected (E, F) features and (E,) labels with E > 0, got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.min() == y.max():
        raise UnfoldError(f"acceptance: every training label is {int(y[0])}; a probability needs events of both kinds")
    if not 0.0 < config.validation < 1.0:
        raise UnfoldError(f"acceptance: validation share must lie strictly between 0 and 1, got {config.validation}")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    order = torch.randperm(len(x), generator=generator)
    n_validation = max(1, round(config.validation * len(x)))
    held, fit = order[:n_validation], order[n_validation:]
    model = ProbabilityClassifier(x.shape[1], config.hidden, config.layers)
    model.set_standardisation(x[fit])
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    loss_function = torch.nn.BCEWithLogitsLoss()
    best, best_state = float("inf"), copy.deepcopy(model.state_dict())
    for _ in range(config.epochs):
        model.train()
        for batch in fit[torch.randperm(len(fit), generator=generator)].split(config.batch_size):
            optimiser.zero_grad()
            loss_function(model(x[batch]), y[batch]).backward()
            optimiser.step()
        schedule.step()
        model.eval()
        with torch.no_grad():
            loss = float(loss_function(model(x[held]), y[held]))
        if loss < best:
            best, best_state = loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        logit = model.raw_logit(x[held])
    model.set_calibration(*_platt(logit, y[held]))
    return model


def _platt(logit: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Slope and shift of the logistic regression of ``labels`` on ``logit`` (Platt scaling)."""
    parameters = torch.tensor([1.0, 0.0], requires_grad=True)
    optimiser = torch.optim.LBFGS([parameters], max_iter=100, line_search_fn="strong_wolfe")
    loss_function = torch.nn.BCEWithLogitsLoss()

    def closure():
        optimiser.zero_grad()
        loss = loss_function(parameters[0] * logit + parameters[1], labels)
        loss.backward()
        return loss

    optimiser.step(closure)
    slope, shift = parameters.detach().tolist()
    return slope, shift


def _probability(model: ProbabilityClassifier, features: np.ndarray) -> np.ndarray:
    return model.probability(torch.as_tensor(np.asarray(features, np.float32))).numpy().astype(np.float64)


# --- features -------------------------------------------------------------------------------

def efficiency_features(truth: dict[str, dict[str, np.ndarray]], level: Level, process: Process) -> np.ndarray:
    """(..., F) truth features the efficiency depends on, from ``truth`` {object: {feature: (...) or
    (..., M)}} (a file's truth group or an unfolded sample's draws).

    Parton level: log(1 + pT), eta, cos phi, sin phi of each top decay product (their acceptance and
    separation decide the selection). Particle level: log(1 + pT), eta, b label of the
    :data:`LEADING_JETS` hardest jets (zeros where absent), the jet count, and the lepton's
    log(1 + pT) and eta where the process has one.
    """
    columns: list[np.ndarray] = []
    if level == "parton":
        for slot in process.partons:
            obj = _object(truth, slot.name, ("pt", "eta", "phi"))
            columns += [np.log1p(obj["pt"]), obj["eta"], np.cos(obj["phi"]), np.sin(obj["phi"])]
        return np.stack(columns, axis=-1).astype(np.float32)
    jets = _object(truth, "jets", ("pt", "eta", "btag", "MASK"))
    mask = jets["MASK"].astype(bool)
    pt = np.where(mask, jets["pt"], 0.0)
    order = np.argsort(-pt, axis=-1, kind="stable")[..., :LEADING_JETS]
    for values in (np.log1p(pt), jets["eta"], jets["btag"]):
        leading = np.where(np.take_along_axis(mask, order, -1), np.take_along_axis(values, order, -1), 0.0)
        width = leading.shape[-1]
        if width < LEADING_JETS:
            leading = np.concatenate([leading, np.zeros((*leading.shape[:-1], LEADING_JETS - width))], axis=-1)
        columns += list(np.moveaxis(leading, -1, 0))
    columns.append(mask.sum(axis=-1).astype(np.float64))
    if process.leptons:
        lepton = _object(truth, "lepton", ("pt", "eta", "MASK"))
        present = lepton["MASK"][..., 0] > 0
        columns += [np.where(present, np.log1p(lepton["pt"][..., 0]), 0.0), np.where(present, lepton["eta"][..., 0], 0.0)]
    return np.stack(columns, axis=-1).astype(np.float32)


def _object(truth: dict[str, dict[str, np.ndarray]], name: str, features: tuple[str, ...]) -> dict[str, np.ndarray]:
    if name not in truth or any(f not in truth[name] for f in features):
        raise UnfoldError(f"acceptance: truth object {name!r} with features {list(features)} not found; have {sorted(truth)}")
    return {f: np.asarray(truth[name][f], np.float64) for f in features}


def detector_features(file: h5py.File, events: slice = slice(None)) -> np.ndarray:
    """(E, F) detector features of the selected events of an open generated or samples file:
    log(1 + pT), eta and the b, e and mu tags of the first :data:`DETECTOR_OBJECTS` objects of
    ``INPUTS/Momenta`` (zeros for padding) and the object count."""
    keys = [f"INPUTS/Momenta/{f}" for f in (*_DETECTOR_FEATURES, "MASK")]
    for key in keys:
        if key not in file:
            raise UnfoldError(f"{file.filename}: missing dataset {key!r}; expected the detector objects of the selected events")
    mask = file["INPUTS/Momenta/MASK"][events].astype(bool)[:, :DETECTOR_OBJECTS]
    columns = []
    for feature in _DETECTOR_FEATURES:
        values = file[f"INPUTS/Momenta/{feature}"][events][:, :DETECTOR_OBJECTS].astype(np.float64)
        values = np.log1p(np.clip(values, 0.0, None)) if feature == "pt" else values
        values = np.where(mask, values, 0.0)
        if values.shape[1] < DETECTOR_OBJECTS:
            values = np.pad(values, ((0, 0), (0, DETECTOR_OBJECTS - values.shape[1])))
        columns.append(values)
    return np.concatenate([*columns, mask.sum(axis=1, keepdims=True)], axis=1).astype(np.float32)


# --- training data --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sample:
    """One file's events for the classifiers: efficiency features and labels (selected = 1), and for
    the selected events their detector features and fiducial flags (None at parton level)."""

    efficiency_x: np.ndarray
    efficiency_y: np.ndarray
    efficiency_parton: dict[str, dict[str, np.ndarray]]
    detector_x: np.ndarray | None
    fiducial: np.ndarray | None
    selected_parton: dict[str, dict[str, np.ndarray]]


def process_of_file(path: Path) -> Process:
    with open_h5(path) as file:
        name = file.attrs.get("process")
    if name is None:
        raise UnfoldError(f"{path}: missing attribute 'process'; expected a file written by unfold generate")
    return get_process(str(name))


def _fiducial(path: Path, group: str) -> np.ndarray:
    with open_h5(path) as file:
        key = f"{group}/fiducial"
        if key not in file:
            raise UnfoldError(f"{path}: missing dataset {key!r}; expected the per-event fiducial flag (regenerate with this version)")
        return file[key][...].astype(bool)


def _read_sample(path: Path, level: Level, process: Process) -> _Sample:
    group = _TRUTH[level]
    missed_group = f"{MISSED}/{group}"
    if not has_group(path, missed_group):
        raise UnfoldError(f"{path}: missing group {missed_group!r}; expected the truth of the events the detector missed "
                          "(generate with unfold generate --keep-missed)")
    selected, missed = read_truth(path, group), read_truth(path, missed_group)
    if level == "parton":
        selected_parton, missed_parton = selected, missed
    else:
        selected_parton, missed_parton = read_truth(path, "PARTONS"), read_truth(path, f"{MISSED}/PARTONS")
    x_selected, x_missed = efficiency_features(selected, level, process), efficiency_features(missed, level, process)
    keep_selected, keep_missed = np.ones(len(x_selected), bool), np.ones(len(x_missed), bool)
    detector_x = fiducial = None
    if level == "particle":
        fiducial = _fiducial(path, "PARTICLES")
        keep_selected, keep_missed = fiducial, _fiducial(path, f"{MISSED}/PARTICLES")
        with open_h5(path) as file:
            detector_x = detector_features(file)
    parton = {name: {f: np.concatenate([selected_parton[name][f][keep_selected], missed_parton[name][f][keep_missed]])
                     for f in ("pt", "eta", "phi", "mass")} for name in selected_parton}
    return _Sample(
        efficiency_x=np.concatenate([x_selected[keep_selected], x_missed[keep_missed]]),
        efficiency_y=np.concatenate([np.ones(int(keep_selected.sum())), np.zeros(int(keep_missed.sum()))]),
        efficiency_parton=parton,
        detector_x=detector_x,
        fiducial=fiducial,
        selected_parton=selected_parton,
    )


# --- checks against counts ------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """Predicted against observed probability in bins of the prediction (equal-count bins).

    Attributes:
        predicted: (B,) mean predicted probability per bin. observed: (B,) observed fraction.
        error: (B,) binomial error sqrt(p (1 - p) / n) of the observed fraction at the predicted p.
        events: (B,) events per bin. chi2: sum of ((observed - predicted) / error)^2 over B bins.
    """

    predicted: np.ndarray
    observed: np.ndarray
    error: np.ndarray
    events: np.ndarray
    chi2: float

    @property
    def ndf(self) -> int:
        return len(self.predicted)

    def as_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()} | {"ndf": self.ndf}


def calibration(probability: np.ndarray, labels: np.ndarray, bins: int = 10) -> Calibration:
    """Calibration of predicted probabilities (E,) against 0/1 labels (E,) in ``bins`` quantile bins."""
    order = np.argsort(probability, kind="stable")
    groups = [g for g in np.array_split(order, bins) if len(g)]
    predicted = np.array([probability[g].mean() for g in groups])
    observed = np.array([labels[g].mean() for g in groups])
    events = np.array([len(g) for g in groups])
    error = np.sqrt(np.clip(predicted * (1 - predicted), 1e-6, None) / events)
    return Calibration(predicted, observed, error, events, float((((observed - predicted) / error) ** 2).sum()))


def key_observables(parton: dict[str, dict[str, np.ndarray]], process: Process) -> dict[str, np.ndarray]:
    """m(ttbar) and pT of the hadronic (first) top, GeV, from the parton truth."""
    tops = [name for name, _, kind in process.record_objects if kind == "t"]
    momenta = [vector.array({f: np.asarray(parton[name][f], np.float64) for f in ("pt", "eta", "phi", "mass")})
               for name in tops]
    return {"m_ttbar": np.asarray(sum(momenta[1:], momenta[0]).mass), f"pt_{tops[0]}": np.asarray(momenta[0].pt)}


def rate_table(values: np.ndarray, labels: np.ndarray, probability: np.ndarray, edges: np.ndarray) -> list[dict]:
    """Per bin of ``values``: events, observed fraction of label 1 with its binomial error, and the
    classifier's mean probability."""
    rows = []
    index = np.digitize(values, edges) - 1
    for b in range(len(edges) - 1):
        inside = index == b
        n = int(inside.sum())
        if n == 0:
            continue
        fraction = float(labels[inside].mean())
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "events": n, "observed": fraction,
                     "error": float(np.sqrt(max(fraction * (1 - fraction), 1.0 / n) / n)),
                     "predicted": float(probability[inside].mean())})
    return rows


EDGES = {"m_ttbar": np.array([300, 400, 500, 600, 800, 1000, 3000.0]), "pt": np.array([0, 50, 100, 150, 200, 300, 500, 2000.0])}


def _tables(observables: dict[str, np.ndarray], labels: np.ndarray, probability: np.ndarray) -> dict[str, list[dict]]:
    return {name: rate_table(values, labels, probability, EDGES["m_ttbar" if name == "m_ttbar" else "pt"])
            for name, values in observables.items()}


# --- the run --------------------------------------------------------------------------------

@dataclass(frozen=True)
class AcceptanceRun:
    """Trained corrections: the efficiency classifier and (particle level) the fiducial probability."""

    level: Level
    process: Process
    efficiency: ProbabilityClassifier
    fiducial: ProbabilityClassifier | None


def train_acceptance(train: Path, test: Path, out: Path, *, level: Level = "parton",
                     config: FitConfig = FitConfig()) -> dict:
    """Fit the corrections on ``train``, check them on ``test`` and write ``out``/acceptance.pt and
    ``out``/metrics.json; returns the metrics."""
    if level not in get_args(Level):
        raise UnfoldError(f"--level {level!r}: expected one of {list(get_args(Level))}")
    process = process_of_file(train)
    if process_of_file(test) != process:
        raise UnfoldError(f"{test}: holds {process_of_file(test).name} events, but {train} holds {process.name}")
    fit, check = _read_sample(train, level, process), _read_sample(test, level, process)
    efficiency = fit_classifier(fit.efficiency_x, fit.efficiency_y, config)
    fiducial = None
    if level == "particle":
        fiducial = fit_classifier(fit.detector_x, fit.fiducial, config)
    probability = _probability(efficiency, check.efficiency_x)
    metrics: dict = {
        "level": level, "process": process.name, "train": str(train), "test": str(test), "config": asdict(config),
        "efficiency": {
            "observed": float(check.efficiency_y.mean()), "predicted": float(probability.mean()),
            "events": len(check.efficiency_y),
            "calibration": calibration(probability, check.efficiency_y).as_dict(),
            "by_observable": _tables(key_observables(check.efficiency_parton, process), check.efficiency_y, probability),
        },
    }
    if fiducial is not None:
        fake = ~check.fiducial
        p_fake = 1.0 - _probability(fiducial, check.detector_x)
        metrics["fake_rate"] = {
            "observed": float(fake.mean()), "predicted": float(p_fake.mean()), "events": len(fake),
            "calibration": calibration(p_fake, fake.astype(float)).as_dict(),
            "by_observable": _tables(key_observables(check.selected_parton, process), fake.astype(float), p_fake),
        }
    out.mkdir(parents=True, exist_ok=True)
    state = {"level": level, "process": process.name, "config": asdict(config),
             "efficiency": {"features": efficiency.mean.numel(), "state_dict": efficiency.state_dict()},
             "fiducial": None if fiducial is None else {"features": fiducial.mean.numel(), "state_dict": fiducial.state_dict()}}
    with atomic_output(out / "acceptance.pt") as partial:
        torch.save(state, partial)
    with atomic_output(out / "metrics.json") as partial:
        partial.write_text(json.dumps(metrics, indent=2))
    return metrics


def load_acceptance(run: Path) -> AcceptanceRun:
    """The corrections saved by :func:`train_acceptance` in folder ``run``."""
    path = Path(run) / "acceptance.pt"
    if not path.is_file():
        raise UnfoldError(f"{path}: file not found; expected the output of unfold acceptance train")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = FitConfig(**state["config"])

    def build(entry):
        if entry is None:
            return None
        model = ProbabilityClassifier(entry["features"], config.hidden, config.layers)
        model.load_state_dict(entry["state_dict"])
        return model.eval()

    return AcceptanceRun(state["level"], get_process(state["process"]), build(state["efficiency"]), build(state["fiducial"]))


_PARTIAL = "ACCEPTANCE.partial"
# Weights are bounded at 1 / MIN_EFFICIENCY. Measured on 3k default events (600 test events, parton
# run 20261201-022546, 8 draws): at 0.01 the Kish effective size was 77 of 600 and the corrected
# cross section 65 % high (draws with a soft parton lepton got efficiencies near zero); at 0.1 it
# was 383 and 8 % low, with W1 to the full truth better on the top pTs, m(ttbar), lepton and b pT.
MIN_EFFICIENCY = 0.1


def apply_acceptance(run: Path, samples: Path, *, min_efficiency: float = MIN_EFFICIENCY) -> dict[str, float]:
    """Write ``ACCEPTANCE/efficiency`` (E, n), ``ACCEPTANCE/fiducial_probability`` (E,) and
    ``ACCEPTANCE/weight`` (E, n) = ``WEIGHTS/weight`` x p_fid / max(efficiency, ``min_efficiency``)
    into an ``unfold sample`` file (replacing earlier ones); returns the weights' summary."""
    if not 0.0 < min_efficiency <= 1.0:
        raise UnfoldError(f"--min-efficiency must lie in (0, 1], got {min_efficiency}")
    corrections = load_acceptance(run)
    group = f"SAMPLES/{_TRUTH[corrections.level]}"
    if not has_group(samples, group):
        raise UnfoldError(f"{samples}: missing group {group!r}; expected {corrections.level}-level draws for the "
                          f"{corrections.level} corrections of {run}")
    draws = read_truth(samples, group)
    efficiency = _probability(corrections.efficiency, efficiency_features(draws, corrections.level, corrections.process))
    with open_h5(samples) as file:
        process = file.attrs.get("process", corrections.process.name)
        if process != corrections.process.name:
            raise UnfoldError(f"{samples}: holds {process} unfoldings, but {run} corrects {corrections.process.name} events")
        events = efficiency.shape[0]
        fiducial = np.ones(events)
        if corrections.fiducial is not None:
            fiducial = _probability(corrections.fiducial, detector_features(file))
        weight = file["WEIGHTS/weight"][...].astype(np.float64) if "WEIGHTS/weight" in file else np.ones(events)
    total = weight[:, None] * fiducial[:, None] / np.clip(efficiency, min_efficiency, None)
    # Written under a temporary name and moved into place: an interruption leaves the file's earlier
    # ACCEPTANCE (or none) intact, never a half-written one.
    with h5py.File(samples, "r+") as file:
        if _PARTIAL in file:
            del file[_PARTIAL]
        partial = file.create_group(_PARTIAL)
        partial["efficiency"] = efficiency.astype(np.float32)
        partial["fiducial_probability"] = fiducial.astype(np.float32)
        partial["weight"] = total.astype(np.float32)
        partial.attrs.update({"run": str(run), "level": corrections.level, "min_efficiency": min_efficiency,
                              "method": "arXiv 2509.02708 (classifier efficiency and fake corrections)"})
        if "ACCEPTANCE" in file:
            del file["ACCEPTANCE"]
        file.move(_PARTIAL, "ACCEPTANCE")
    return {"events": float(events), "mean_efficiency": float(efficiency.mean()),
            "mean_fiducial_probability": float(fiducial.mean()), "mean_weight": float(total.mean())}
