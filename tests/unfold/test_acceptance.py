"""Efficiency and fake corrections (arXiv 2509.02708): calibration against counts on held-out
samples, an analytic efficiency toy, the weights written into a samples file, and bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from scipy.special import expit
from scipy.stats import norm

from unfold.cli import main
from unfold.errors import UnfoldError
from unfold.generation.processes import get_process
from unfold.tasks.acceptance import (
    FitConfig,
    detector_features,
    efficiency_features,
    fit_classifier,
    load_acceptance,
    rate_table,
    train_acceptance,
)

PROCESS = get_process("ttbar-semileptonic")
# Default classifiers; with 6k training events their calibration chi2 over 10 deciles scattered from 8 to
# 38 between seeds (measured), with 20k it stays below 14, so the training files hold 20k events.
FAST = FitConfig()


def true_efficiency(b_pt: np.ndarray) -> np.ndarray:
    """The synthetic detector's efficiency: a logistic turn-on in the b_had parton pT (GeV)."""
    return expit((b_pt - 50.0) / 12.0)


def true_fiducial(jet_pt: np.ndarray) -> np.ndarray:
    """The synthetic p(fiducial | detector): a turn-on in the leading detector jet pT (GeV)."""
    return expit((jet_pt - 60.0) / 15.0)


def _objects(rng, events: int) -> dict[str, dict[str, np.ndarray]]:
    names = [slot.name for slot in PROCESS.partons] + ["t_had", "t_lep"]
    return {name: {"pt": rng.exponential(50.0, events) + 5.0, "eta": rng.normal(0.0, 1.5, events),
                   "phi": rng.uniform(-np.pi, np.pi, events), "mass": np.full(events, 172.5 if name[0] == "t" else 0.3)}
            for name in names}


def _particles(rng, events: int, *, fiducial: np.ndarray) -> dict[str, np.ndarray]:
    jets_pt = np.sort(rng.exponential(40.0, (events, 8)) + 20.0, axis=1)[:, ::-1]
    return {
        "jets/pt": jets_pt, "jets/eta": rng.normal(0, 1.2, (events, 8)), "jets/phi": rng.uniform(-3, 3, (events, 8)),
        "jets/mass": np.full((events, 8), 5.0), "jets/btag": (rng.random((events, 8)) < 0.3).astype(np.int64),
        "jets/MASK": np.ones((events, 8), bool), "lepton/pt": rng.exponential(40.0, (events, 1)) + 25.0,
        "lepton/eta": rng.normal(0, 1.0, (events, 1)), "lepton/MASK": np.ones((events, 1), bool), "fiducial": fiducial,
    }


def synthetic_file(path, rng, generated: int = 6000, *, missed: bool = True) -> dict:
    """A file in the layout of ``unfold generate --keep-missed`` with a known efficiency (in the b_had
    pT) and a known fiducial probability (in the leading detector jet pT of the selected events)."""
    partons = _objects(rng, generated)
    selected = rng.random(generated) < true_efficiency(partons["b_had"]["pt"])
    n_sel = int(selected.sum())
    detector_pt = np.sort(rng.exponential(20.0, (n_sel, 5)) + 25.0, axis=1)[:, ::-1]
    fiducial = rng.random(n_sel) < true_fiducial(detector_pt[:, 0])
    with h5py.File(path, "w") as file:
        file.attrs["process"] = PROCESS.name
        for group, rows in (("", selected), ("MISSED/", ~selected)):
            if group and not missed:
                continue
            for name, features in partons.items():
                for feature, values in features.items():
                    file[f"{group}PARTONS/{name}/{feature}"] = values[rows]
            flags = fiducial if not group else rng.random(int(rows.sum())) < 0.5
            for key, values in _particles(rng, int(rows.sum()), fiducial=flags).items():
                file[f"{group}PARTICLES/{key}"] = values
        momenta = {"pt": np.concatenate([np.full((n_sel, 1), 40.0), detector_pt], axis=1),
                   "eta": rng.normal(0, 1.2, (n_sel, 6)), "btag": (rng.random((n_sel, 6)) < 0.3).astype(np.float32),
                   "etag": np.zeros((n_sel, 6)), "utag": np.zeros((n_sel, 6)), "MASK": np.ones((n_sel, 6), bool)}
        momenta["utag"][:, 0] = 1.0
        for feature, values in momenta.items():
            file[f"INPUTS/Momenta/{feature}"] = values
    return {"partons": partons, "selected": selected, "detector_pt": detector_pt, "fiducial": fiducial}


def _chi2(rows: list[dict]) -> float:
    """Chi-square of observed against predicted fractions per bin. The error is binomial twice over:
    the held-out counts' and the classifier's own, which learned from a training sample of the same
    size (n events per bin in each)."""
    return sum((r["observed"] - r["predicted"]) ** 2 / (2 * r["predicted"] * (1 - r["predicted"]) / r["events"])
               for r in rows)


def _calibration_chi2(calibration: dict) -> float:
    """:func:`_chi2` over the deciles of the prediction that train_acceptance reports."""
    keys = ("observed", "predicted", "events")
    return _chi2([dict(zip(keys, values, strict=True)) for values in zip(*(calibration[k] for k in keys), strict=True)])


def _bound(ndf: int) -> float:
    """Chi-square bound: the mean plus three standard deviations."""
    return ndf + 3 * np.sqrt(2 * ndf)


@pytest.fixture(scope="module")
def particle_run(tmp_path_factory):
    """Particle-level corrections trained on one synthetic file, with an independent held-out file."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("acceptance")
    synthetic_file(folder / "train.h5", rng, generated=20_000)
    held_out = synthetic_file(folder / "test.h5", rng)
    metrics = train_acceptance(folder / "train.h5", folder / "test.h5", folder / "run", level="particle", config=FAST)
    return folder, held_out, metrics


@pytest.mark.usefixtures("one_thread")
def test_fake_probability_matches_held_out_counts(particle_run):
    folder, held_out, metrics = particle_run
    fake = metrics["fake_rate"]
    # Calibration in deciles of the prediction, from train_acceptance's own check on the test file.
    assert _calibration_chi2(fake["calibration"]) < _bound(fake["calibration"]["ndf"])
    # In bins of the variable that drives it: predicted mean probability vs observed fraction.
    corrections = load_acceptance(folder / "run")
    with h5py.File(folder / "test.h5") as file:
        p_fid = corrections.fiducial.probability(torch.as_tensor(detector_features(file))).numpy()
    rows = rate_table(held_out["detector_pt"][:, 0], held_out["fiducial"].astype(float), p_fid,
                      np.array([25, 40, 55, 70, 90, 120, 400.0]))
    assert _chi2(rows) < _bound(len(rows))
    # And against the known truth probability.
    assert np.abs(p_fid - true_fiducial(held_out["detector_pt"][:, 0])).mean() < 0.05


@pytest.mark.usefixtures("one_thread")
def test_parton_efficiency_matches_held_out_counts(tmp_path):
    rng = np.random.default_rng(8)
    synthetic_file(tmp_path / "train.h5", rng, generated=20_000)
    held_out = synthetic_file(tmp_path / "test.h5", rng)
    metrics = train_acceptance(tmp_path / "train.h5", tmp_path / "test.h5", tmp_path / "run", level="parton", config=FAST)
    calib = metrics["efficiency"]["calibration"]
    assert _calibration_chi2(calib) < _bound(calib["ndf"])
    assert metrics["efficiency"]["observed"] == pytest.approx(held_out["selected"].mean())
    corrections = load_acceptance(tmp_path / "run")
    features = efficiency_features(held_out["partons"], "parton", PROCESS)
    probability = corrections.efficiency.probability(torch.as_tensor(features)).numpy()
    b_pt = held_out["partons"]["b_had"]["pt"]
    rows = rate_table(b_pt, held_out["selected"].astype(float), probability, np.array([5, 25, 40, 50, 60, 75, 100, 1000.0]))
    assert _chi2(rows) < _bound(len(rows))
    assert np.abs(probability - true_efficiency(b_pt)).mean() < 0.05


@pytest.mark.usefixtures("one_thread")
def test_efficiency_corrected_toy_matches_the_full_truth():
    """Truth x ~ N(0, 1), detector y = x + N(0, s), selection y > 0: efficiency Phi(x / s). The
    "unfolding" is the truth of the selected events; weighted by 1 / learned efficiency it must
    match an independent full truth sample within errors, and must not without the weights."""
    rng = np.random.default_rng(3)
    s, events = 0.5, 20_000

    def sample():
        x = rng.normal(size=events)
        return x, x + rng.normal(0.0, s, events) > 0.0

    x_fit, selected_fit = sample()
    model = fit_classifier(x_fit[:, None], selected_fit, FAST)
    x, selected = sample()
    x_full, _ = sample()
    efficiency = model.probability(torch.as_tensor(x[selected, None], dtype=torch.float32)).numpy()
    grid = np.linspace(-0.5, 2.5, 31, dtype=np.float32)
    learned = model.probability(torch.as_tensor(grid[:, None])).numpy()
    assert np.abs(learned - norm.cdf(grid / s)).max() < 0.05  # the known efficiency curve
    edges = np.linspace(-0.75, 2.5, 14)
    truth, _ = np.histogram(x_full, edges)

    def chi2_per_bin(weights):
        corrected, _ = np.histogram(x[selected], edges, weights=weights)
        variance, _ = np.histogram(x[selected], edges, weights=weights**2)
        return float(((corrected - truth) ** 2 / (variance + truth)).sum() / len(truth))

    ndf = len(truth)
    assert chi2_per_bin(1.0 / efficiency) < 1.0 + 3 * np.sqrt(2.0 / ndf)
    assert chi2_per_bin(np.ones(int(selected.sum()))) > 10.0


@pytest.mark.usefixtures("one_thread")
def test_apply_writes_weights_that_restore_the_generated_count(particle_run, tmp_path):
    """Particle-level draws = the held-out file's own truth (an exact unfolding): the weighted draws
    of the fiducial selected events count the fiducial events of the whole sample."""
    folder, held_out, _ = particle_run
    samples = tmp_path / "samples.h5"
    with h5py.File(folder / "test.h5") as source, h5py.File(samples, "w") as file:
        for feature in ("pt", "eta", "btag", "etag", "utag", "MASK"):
            file[f"INPUTS/Momenta/{feature}"] = source[f"INPUTS/Momenta/{feature}"][...]
        for key in ("jets/pt", "jets/eta", "jets/btag", "jets/MASK", "lepton/pt", "lepton/eta", "lepton/MASK"):
            file[f"SAMPLES/PARTICLES/{key}"] = np.repeat(source[f"PARTICLES/{key}"][...][:, None], 2, axis=1)
        file["WEIGHTS/weight"] = np.ones(len(held_out["fiducial"]), np.float32)
        missed_fiducial = int(source["MISSED/PARTICLES/fiducial"][...].sum())
    assert main(["acceptance", "apply", str(folder / "run"), str(samples)]) == 0
    with h5py.File(samples) as file:
        weight = file["ACCEPTANCE/weight"][...]
        efficiency = file["ACCEPTANCE/efficiency"][...]
        p_fid = file["ACCEPTANCE/fiducial_probability"][...]
    assert weight.shape == efficiency.shape == (len(held_out["fiducial"]), 2)
    np.testing.assert_allclose(weight, p_fid[:, None] / np.clip(efficiency, 0.01, None), rtol=1e-5)
    # Fiducial events in the sample: the selected fiducial ones plus the missed fiducial ones.
    expected = held_out["fiducial"].sum() + missed_fiducial
    estimate = weight[:, 0].sum()
    assert abs(estimate - expected) < 4 * np.sqrt((weight[:, 0] ** 2).sum() + expected)
    assert abs(held_out["fiducial"].sum() - expected) > 4 * np.sqrt(expected)  # the correction matters


def test_missing_missed_group_and_wrong_samples_are_one_line_errors(particle_run, tmp_path, capsys):
    rng = np.random.default_rng(1)
    synthetic_file(tmp_path / "plain_train.h5", rng, generated=300, missed=False)
    synthetic_file(tmp_path / "plain_test.h5", rng, generated=300, missed=False)
    with pytest.raises(UnfoldError, match=r"plain_train.h5: missing group 'MISSED/PARTONS'.*--keep-missed"):
        train_acceptance(tmp_path / "plain_train.h5", tmp_path / "plain_test.h5", tmp_path / "run")
    assert main(["acceptance", "train", str(tmp_path / "plain_train.h5"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "plain_train.h5: missing group 'MISSED/PARTONS'" in err
    assert not (tmp_path / "run").exists()
    samples = tmp_path / "samples.h5"
    with h5py.File(samples, "w") as file:
        file["SAMPLES/PARTONS/b_had/pt"] = np.ones((3, 2))
    assert main(["acceptance", "apply", str(particle_run[0] / "run"), str(samples)]) == 2
    assert "samples.h5: missing group 'SAMPLES/PARTICLES'" in capsys.readouterr().err
