"""The efficiency-corrected report (issue 14): a toy with a known efficiency, the MISSED copy of
``unfold sample``, and reports of files without ACCEPTANCE unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from unfold.cli import main

FEATURES = ["parton/b_had/pt", "parton/t_had/mass"]


def efficiency(pt: np.ndarray) -> np.ndarray:
    """The toy's selection efficiency: a turn-on in the b quark's pT, 50 % at 55 GeV (the median)."""
    return 0.05 + 0.9 / (1.0 + np.exp(-(pt - 55.0) / 12.0))


def _toy(write_samples_file: Callable[..., Path], tmp_path: Path, *, events: int = 3000, acceptance: bool = True, missed: bool = True) -> Path:
    """A parton-level samples file of the events a known efficiency selects, with (``missed``) the
    truth of those it missed under MISSED/ and (``acceptance``) ACCEPTANCE/ as unfold acceptance apply writes."""
    generated = write_samples_file(tmp_path / "generated.h5", n_events=events, n_draws=4, particles=False)
    rng = np.random.default_rng(5)
    with h5py.File(generated) as file:
        selected = rng.random(events) < efficiency(file["PARTONS/b_had/pt"][()])
        keys: list[str] = []
        file.visititems(lambda key, node: keys.append(key) if isinstance(node, h5py.Dataset) else None)
        arrays = {key: file[key][()] for key in keys}
        attrs = dict(file.attrs)
    # The fixture's draws scatter twice its posterior width (15 % in pT) around the truth: wider than the
    # truth, so 1 / efficiency of a draw would overshoot where the efficiency is steep. Here the b pT draws
    # scatter 3 %, as a sharp posterior of a prior-consistent unfolding.
    truth_pt = arrays["PARTONS/b_had/pt"].astype(np.float64)
    arrays["SAMPLES/PARTONS/b_had/pt"] = (truth_pt[:, None] * rng.normal(1.0, 0.03, (events, 4))).astype(np.float32)
    out = tmp_path / f"toy-{int(acceptance)}{int(missed)}.h5"
    with h5py.File(out, "w") as file:
        file.attrs.update(attrs)
        for key, values in arrays.items():
            file[key] = values[selected]
            if missed and key.startswith("PARTONS/"):
                file[f"MISSED/{key}"] = values[~selected]
        if acceptance:
            draws = arrays["SAMPLES/PARTONS/b_had/pt"][selected]
            file["ACCEPTANCE/efficiency"] = efficiency(draws).astype(np.float32)
            file["ACCEPTANCE/fiducial_probability"] = np.ones(int(selected.sum()), np.float32)
            file["ACCEPTANCE/weight"] = (1.0 / efficiency(draws)).astype(np.float32)
            file["ACCEPTANCE"].attrs.update(level="parton", min_efficiency=0.01)
    return out


def _report(samples: Path, out: Path) -> dict:
    assert main(["report", str(samples), "--out", str(out), "--labels", "model", "--bootstrap", "10",
                 "--features", ",".join(FEATURES)]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_the_corrected_unfolding_matches_the_full_truth_and_the_uncorrected_does_not(samples_writer, tmp_path):
    report = _report(_toy(samples_writer, tmp_path), tmp_path / "report")
    metrics = report["acceptance"]
    # The draws' own distance to the truth of the selected events is what the corrected unfolding can
    # reach against the full truth.
    own = report["observables"]["parton/b_had/pt"]["distances"]["model"]["wasserstein"]["value"]
    assert metrics["level"] == "parton"
    assert "inclusive" in metrics["space"]
    distances = metrics["observables"]["parton/b_had/pt"]["distances"]
    noise = metrics["observables"]["parton/b_had/pt"]["noise_floor"]["wasserstein"]
    corrected, uncorrected = (distances[f"model {kind}"]["wasserstein"] for kind in ("corrected (mean of 4 draws)", "uncorrected"))
    # The selection moves the b pT by ~15 GeV, far beyond the noise and the draws' own width.
    assert uncorrected["value"] > 10 * noise
    assert uncorrected["value"] > 3 * corrected["value"]
    assert corrected["value"] < own + 2 * noise + 2 * corrected["error"]
    # The predicted efficiency follows the observed one within the binomial errors and the draws' scatter.
    rate = metrics["rates"]["parton/b_had/pt"]["efficiency"]
    observed = np.array(rate["observed"], float)
    error = np.maximum(np.array(rate["error_down"], float), np.array(rate["error_up"], float))
    predicted = np.array(rate["predicted"]["model"]["mean"], float)
    enough = np.array(rate["events"]) > 50
    assert np.all(np.abs(predicted - observed)[enough] < 4 * error[enough] + 0.06)
    assert observed[enough][0] < 0.3 < 0.7 < observed[enough][-1]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Compared space: the inclusive parton-level space" in page
    assert (tmp_path / "report" / "accept_parton__b_had__pt.png").is_file()
    assert (tmp_path / "report" / "efficiency_parton__b_had__pt.png").is_file()


def test_cross_sections_of_the_corrected_level_are_those_of_the_full_space(samples_writer, tmp_path):
    toy = _toy(samples_writer, tmp_path)
    with h5py.File(toy, "r+") as file:
        file.attrs["luminosity_fb_inv"] = 0.01
        selected = len(file["PARTONS/b_had/pt"])
    _report(toy, tmp_path / "report")
    document = json.loads((tmp_path / "report" / "cross_sections.json").read_text())
    sigma = {source: entry["total"][0] for source, entry in document["observables"]["parton/b_had/pt"]["sources"].items()}
    full, corrected, uncorrected = (sigma[key] for key in ("truth, full space (selected + missed)",
                                                            "model (efficiency-corrected)", "model"))
    # Within the bin range the full truth holds about twice the selected events; the corrected
    # unfolding restores it (the draws' smearing moves a few per cent across the range's edges).
    assert full > 1.7 * selected / 0.01
    assert corrected == pytest.approx(full, rel=0.08)
    assert uncorrected < 0.6 * full


def test_a_report_without_acceptance_is_unchanged_by_the_missed_events(samples_writer, tmp_path):
    plain = _report(_toy(samples_writer, tmp_path, acceptance=False, missed=False), tmp_path / "plain")
    with_missed = _report(_toy(samples_writer, tmp_path, acceptance=False, missed=True), tmp_path / "missed")
    assert "acceptance" not in with_missed
    assert plain["observables"] == with_missed["observables"]
    assert not list((tmp_path / "missed").glob("accept_*"))


def test_acceptance_without_the_missed_truth_is_a_one_line_error(samples_writer, tmp_path, capsys):
    toy = _toy(samples_writer, tmp_path, missed=False)
    assert main(["report", str(toy), "--out", str(tmp_path / "report"), "--features", ",".join(FEATURES)]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert "MISSED/PARTONS" in error[0]
    assert "--keep-missed" in error[0]


def test_unfold_sample_copies_the_missed_truth(tmp_path):
    """The copy round-trips; with --limit only the same share of the missed events is kept."""
    from unfold.tasks.sample import _copy_missed

    data = tmp_path / "data.h5"
    rng = np.random.default_rng(0)
    truth = {f"MISSED/PARTONS/b_had/{f}": rng.normal(size=40) for f in ("pt", "eta", "phi", "mass")}
    truth |= {"MISSED/PARTICLES/jets/pt": rng.normal(size=(40, 6)), "MISSED/PARTICLES/fiducial": rng.random(40) < 0.5}
    with h5py.File(data, "w") as file:
        for key, values in truth.items():
            file[key] = values
    for share, kept in ((1.0, 40), (0.25, 10)):
        with h5py.File(tmp_path / f"samples-{share}.h5", "w") as file:
            assert _copy_missed(data, file, share) == {"missed_events": kept, "missed_events_in_data": 40}
            for key, values in truth.items():
                np.testing.assert_array_equal(file[key][()], values[:kept])
    with h5py.File(data, "w") as file:
        file["PARTONS/b_had/pt"] = np.ones(3)
    with h5py.File(tmp_path / "none.h5", "w") as file:
        assert _copy_missed(data, file, 1.0) == {}
        assert "MISSED" not in file


def test_particle_level_compares_with_the_fiducial_space_and_shows_the_fake_rate(samples_writer, tmp_path):
    """Fiducial: leading jet pT above its median; the detector selects 70 % of the fiducial events and
    30 % of the others (fakes). With draws equal to the truth and an exact fiducial probability the
    corrected unfolding is the fiducial truth of a random 70 % (within the noise of the full fiducial
    truth), and the predicted fake rate is the observed one."""
    events, draws = 2000, 3
    generated = samples_writer(tmp_path / "generated.h5", n_events=events, n_draws=draws, partons=False)
    rng = np.random.default_rng(9)
    with h5py.File(generated) as file:
        keys: list[str] = []
        file.visititems(lambda key, node: keys.append(key) if isinstance(node, h5py.Dataset) else None)
        arrays = {key: file[key][()] for key in keys}
        attrs = dict(file.attrs)
    for key in [k for k in arrays if k.startswith("PARTICLES/")]:
        arrays[f"SAMPLES/{key}"] = np.repeat(arrays[key][:, None], draws, axis=1)
    leading = arrays["PARTICLES/jets/pt"].max(axis=1)
    fiducial = leading > np.median(leading)
    selected = rng.random(events) < np.where(fiducial, 0.7, 0.3)
    samples = tmp_path / "particle.h5"
    with h5py.File(samples, "w") as file:
        file.attrs.update(attrs)
        for key, values in arrays.items():
            file[key] = values[selected]
            if key.startswith("PARTICLES/"):
                file[f"MISSED/{key}"] = values[~selected]
        file["PARTICLES/fiducial"] = fiducial[selected]
        file["MISSED/PARTICLES/fiducial"] = fiducial[~selected]
        p_fid = fiducial[selected].astype(np.float32)
        file["ACCEPTANCE/efficiency"] = np.full((int(selected.sum()), draws), 0.7, np.float32)
        file["ACCEPTANCE/fiducial_probability"] = p_fid
        file["ACCEPTANCE/weight"] = np.repeat(p_fid[:, None] / 0.7, draws, axis=1)
        file["ACCEPTANCE"].attrs.update(level="particle", min_efficiency=0.01)
    assert main(["report", str(samples), "--out", str(tmp_path / "report"), "--labels", "model", "--bootstrap", "10",
                 "--features", "particle/jets1/pt,particle/jets/multiplicity"]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())["acceptance"]
    assert metrics["level"] == "particle"
    assert metrics["missed_in_space"] == int((fiducial & ~selected).sum())
    distances = metrics["observables"]["particle/jets1/pt"]["distances"]
    noise = metrics["observables"]["particle/jets1/pt"]["noise_floor"]["wasserstein"]
    assert distances[f"model corrected (mean of {draws} draws)"]["wasserstein"]["value"] < 3 * noise
    assert distances["model uncorrected"]["wasserstein"]["value"] > 5 * noise  # the fakes sit below the cut
    fake = metrics["rates"]["particle/jets1/pt"]["fake rate"]
    observed, predicted = np.array(fake["observed"], float), np.array(fake["predicted"]["model"]["mean"], float)
    np.testing.assert_allclose(predicted[np.isfinite(observed)], observed[np.isfinite(observed)], atol=1e-6)
    efficiency = metrics["rates"]["particle/jets1/pt"]["efficiency"]
    filled = np.array(efficiency["events"]) > 30
    error = np.maximum(np.array(efficiency["error_down"], float), np.array(efficiency["error_up"], float))
    assert np.all(np.abs(np.array(efficiency["observed"], float)[filled] - 0.7) < 4 * error[filled] + 0.02)
    assert (tmp_path / "report" / "efficiency_particle__jets1__pt.png").is_file()
