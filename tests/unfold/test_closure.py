"""`unfold closure`: the shift statistics on synthetic unfoldings, and the command on real events."""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest

from evaluation.closure import ClosureSample, peak_window, shift_statistics
from unfold.cli import main

EVENTS, DRAWS = 3000, 4
TOP_MASS, SHIFTED_MASS, RESOLUTION = 172.5, 175.0, 6.0  # GeV: a 2.5 GeV top-mass shift, smeared


def _sample(rng: np.random.Generator, mass: float, unfold) -> ClosureSample:
    """E events of a top-mass peak with a detector smearing, unfolded by ``unfold(truth) -> (E, n)``."""
    truth = rng.normal(mass, 1.5, EVENTS)
    return ClosureSample(truth, unfold(truth), truth + rng.normal(0.0, RESOLUTION, EVENTS))


def _followed(rng, unfold) -> dict:
    nominal, alternative = _sample(rng, TOP_MASS, unfold), _sample(rng, SHIFTED_MASS, unfold)
    return shift_statistics(nominal, alternative, (165.0, 180.0), resamples=40)


def _returns_truth(rng):
    return lambda truth: truth[:, None] + rng.normal(0.0, 0.5, (len(truth), DRAWS))


def _returns_prior(rng):
    return lambda truth: rng.normal(TOP_MASS, 1.5, (len(truth), DRAWS))


def _follows_half(rng):
    return lambda truth: (TOP_MASS + 0.5 * (truth - TOP_MASS))[:, None] + rng.normal(0.0, 0.5, (len(truth), DRAWS))


@pytest.mark.parametrize("statistic", ["window_mean", "median"])
def test_an_unfolding_that_returns_the_truth_follows_all_of_the_shift(rng, statistic):
    shift = _followed(rng, _returns_truth(rng))[statistic]
    assert shift.truth == pytest.approx(2.5, abs=0.25)
    assert shift.fraction_error < 0.1
    assert abs(shift.fraction - 1.0) < 3 * shift.fraction_error
    # The smeared detector level: its median moves with the truth; its mean in the window less, as
    # the window cuts the smeared peak's tails (what the report's detector column shows).
    if statistic == "median":
        assert shift.detector == pytest.approx(shift.truth, abs=4 * shift.detector_bootstrap)
    else:
        assert 3 * shift.detector_bootstrap < shift.detector < shift.truth
    assert len(shift.per_draw) == DRAWS
    assert shift.draws_error > 0


@pytest.mark.parametrize("statistic", ["window_mean", "median"])
def test_an_unfolding_that_returns_its_prior_follows_none_of_the_shift(rng, statistic):
    shift = _followed(rng, _returns_prior(rng))[statistic]
    assert shift.truth == pytest.approx(2.5, abs=0.25)
    assert shift.fraction_error < 0.1
    assert abs(shift.fraction) < 3 * shift.fraction_error


def test_a_partial_follower_is_told_apart_from_both(rng):
    shift = _followed(rng, _follows_half(rng))["window_mean"]
    assert abs(shift.fraction - 0.5) < 3 * shift.fraction_error
    assert abs(shift.fraction - 1.0) > 3 * shift.fraction_error
    assert abs(shift.fraction) > 3 * shift.fraction_error


def test_the_draws_spread_is_the_error_of_their_pooled_shift(rng):
    """Draws with no event-level noise but a random offset each: the draws' error is what remains."""
    offsets = rng.normal(0.0, 1.0, DRAWS)
    shift = _followed(rng, lambda truth: truth[:, None] + offsets * (truth[:, None] > TOP_MASS + 1.0))["window_mean"]
    assert shift.draws_error == pytest.approx(np.std(shift.per_draw, ddof=1) / np.sqrt(DRAWS))
    assert shift.error == pytest.approx(np.hypot(shift.draws_error, shift.bootstrap_error))


def test_a_fitted_reweighting_adds_the_spread_over_its_refits_to_the_error(rng):
    """Draws from a flat prior, reweighted toward fitted masses: each refit's masses move the
    unfolded shift, and that spread is the fit's error."""
    nominal, alternative = (_sample(rng, mass, lambda truth: rng.uniform(165.0, 180.0, (len(truth), DRAWS)))
                            for mass in (TOP_MASS, SHIFTED_MASS))

    def toward(sample, mass):  # a narrow prior around the fitted mass, as the unbiasing's weights
        return np.exp(-0.5 * ((sample.draws - mass) / 2.0) ** 2)

    fitted = [(TOP_MASS + a, SHIFTED_MASS + b) for a, b in rng.normal(0.0, 0.5, (8, 2))]
    refits = [(toward(nominal, m0), toward(alternative, m1)) for m0, m1 in fitted]
    weighted = [replace(s, draw_weights=toward(s, m)) for s, m in ((nominal, TOP_MASS), (alternative, SHIFTED_MASS))]
    shift = shift_statistics(*weighted, (165.0, 180.0), resamples=10, refits=refits)["window_mean"]
    by_hand = [_window_mean(alternative, w1) - _window_mean(nominal, w0) for w0, w1 in refits]
    assert shift.fit_error == pytest.approx(np.std(by_hand, ddof=1))
    assert 0.3 < shift.fit_error < 1.5  # the fitted masses' spread, 0.7 GeV on the difference
    assert shift.error == pytest.approx(np.sqrt(shift.draws_error**2 + shift.bootstrap_error**2 + shift.fit_error**2))
    assert shift_statistics(*weighted, (165.0, 180.0), resamples=10)["window_mean"].fit_error is None


def _window_mean(sample: ClosureSample, draw_weights: np.ndarray) -> float:
    """The pooled draws' mean in 165-180 GeV under these draw weights."""
    inside = (sample.draws >= 165.0) & (sample.draws <= 180.0)
    return float(np.sum(sample.draws * draw_weights * inside) / np.sum(draw_weights * inside))


def test_windows_are_fixed_for_top_and_w_masses_and_central_otherwise(rng):
    values = rng.exponential(100.0, 10_000)
    assert peak_window("parton/t_had/mass", values)[:2] == (165.0, 180.0)
    assert peak_window("parton/t2/mass", values)[:2] == (165.0, 180.0)
    assert peak_window("parton/W_lep/mass", values)[:2] == (74.0, 87.0)
    low, high, _ = peak_window("parton/ttbar/mass", values)
    assert low == pytest.approx(np.quantile(values, 0.01))
    assert high == pytest.approx(np.quantile(values, 0.99))


# -- the command on real events ---------------------------------------------------------------------------

SCALE = 1.1  # the alternative's partons have 10 % more p_T; its detector inputs are the nominal's


@pytest.fixture(scope="module")
def parton_run(semileptonic_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "parton", "--data", str(semileptonic_files[0]), "--out", str(out), "--epochs", "1",
                 "--batch-size", "100", "--accelerator", "cpu"]) == 0
    (run,) = (out / "parton").iterdir()
    return run


@pytest.fixture(scope="module")
def harder_partons(semileptonic_files, tmp_path_factory):
    """The test file with every parton's p_T scaled by SCALE: a known truth shift, the same inputs."""
    path = tmp_path_factory.mktemp("alternative") / "harder.h5"
    shutil.copy(semileptonic_files[1], path)
    with h5py.File(path, "a") as file:
        for name in file["PARTONS"]:
            file[f"PARTONS/{name}/pt"][...] = file[f"PARTONS/{name}/pt"][()] * SCALE
    return path


def _closure(run, nominal, alternative, out, *extra) -> int:
    return main(["closure", str(run), "--nominal", str(nominal), "--alternative", str(alternative), "--out", str(out),
                 "--n", "2", "--steps", "2", "--bootstrap", "5", "--limit", "60", "--device", "cpu",
                 "--fit-data", str(nominal), *extra])


def test_closure_reports_the_known_truth_shift_and_an_unmoved_unfolding(parton_run, semileptonic_files,
                                                                      harder_partons, tmp_path):
    nominal = semileptonic_files[1]
    out = tmp_path / "closure"
    assert _closure(parton_run, nominal, harder_partons, out, "--labels", "nominal,harder", "--precision", "bfloat16") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == "bfloat16"
    observables = metrics["observables"]
    for name in ("parton/t_had/mass", "parton/t_lep/mass", "parton/W_had/mass", "parton/t_had/pt",
                 "parton/t_lep/pt", "parton/ttbar/mass", "parton/ttbar/pt"):
        assert name in observables
    assert observables["parton/t_had/mass"]["window"] == [165.0, 180.0]
    with h5py.File(nominal) as file:
        b_pt = file["PARTONS/b_had/pt"][:60]
    shift = observables["parton/b_had/pt"]["shifts"]["harder"]["median"]
    # A scaled sample's median is the scaled median: the truth shift is known exactly.
    assert shift["truth"] == pytest.approx(
        (SCALE - 1) * observables["parton/b_had/pt"]["locations"]["nominal"]["median"]["truth"], rel=1e-4)
    assert observables["parton/b_had/pt"]["locations"]["nominal"]["median"]["truth"] in b_pt
    # Same inputs and seed (and precision): the draws and the detector level do not move, so nothing is followed.
    assert shift["unfolded"] == 0.0
    assert shift["fraction"] == 0.0
    assert shift["detector"] == 0.0
    assert len(shift["per_draw"]) == 2
    html = (out / "index.html").read_text()
    assert "parton/t_had/mass" in html
    assert "fraction followed" in html
    images = sorted(p.name for p in out.glob("*.png"))
    assert len(images) == len(observables)
    assert all(name in html for name in images)


def test_a_file_without_truth_is_refused_naming_it(parton_run, semileptonic_files, tmp_path, capsys):
    measured = tmp_path / "measured.h5"
    shutil.copy(semileptonic_files[1], measured)
    with h5py.File(measured, "a") as file:
        del file["PARTONS"]
    assert _closure(parton_run, semileptonic_files[1], measured, tmp_path / "out") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(measured) in error
    assert "PARTONS" in error
    assert not (tmp_path / "out").exists()


def test_another_process_is_refused(parton_run, semileptonic_files, tmp_path, capsys):
    other = tmp_path / "other.h5"
    shutil.copy(semileptonic_files[1], other)
    with h5py.File(other, "a") as file:
        file.attrs["process"] = "ttbar-allhadronic"
    assert _closure(parton_run, semileptonic_files[1], other, tmp_path / "out") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(other) in error
    assert "ttbar-allhadronic" in error


@pytest.mark.parametrize("missing", ["run", "file"])
def test_a_missing_run_or_file_is_one_line(parton_run, semileptonic_files, tmp_path, capsys, missing):
    run = tmp_path / "no-run" if missing == "run" else parton_run
    alternative = tmp_path / "no-file.h5" if missing == "file" else semileptonic_files[1]
    assert _closure(run, semileptonic_files[1], alternative, tmp_path / "out") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(tmp_path / ("no-run" if missing == "run" else "no-file.h5")) in error


def test_closure_unbiases_each_file_with_a_fitted_prior(parton_run, semileptonic_files, tmp_path):
    train, test = semileptonic_files
    heavier = tmp_path / "heavier.h5"
    assert main(["reweight", str(test), "--out", str(heavier), "--top-mass", "175.5"]) == 0
    broad = tmp_path / "broad-part.h5"  # the test events, labelled as a second run at 175.5 GeV
    shutil.copy(test, broad)
    with h5py.File(broad, "a") as file:
        file.attrs["pythia_settings"] = str([*ast.literal_eval(file.attrs["pythia_settings"]), "6:m0 = 175.5"])
    out = tmp_path / "closure"
    assert _closure(parton_run, test, heavier, out, "--labels", "nominal,heavier", "--unbias", str(train),
                    str(broad)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unbiasing_method"]["parameters"] == ["top_mass", "top_pt_slope"]  # several masses: both
    assert (metrics["sampler"], metrics["steps"], metrics["precision"]) == ("dpm-solver", 2, "float32")  # a v run's, the steps given
    fits = metrics["unbiasing"]
    assert set(fits) == {"nominal", "heavier"}
    for fit in fits.values():
        assert 169.0 <= fit["parameters"]["top_mass"] <= 179.5  # within the fit's bounds around 173-175.5 GeV
        assert fit["free"] == ["top_mass", "top_pt_slope"] and fit["errors"]["top_mass"] > 0
        assert 0 < fit["effective_draws"] <= fit["draws"] == 60 * 2
    # The same events, weighted toward a heavier top: unweighted, the truth shift would be exactly 0.
    mass = metrics["observables"]["parton/t_had/mass"]["shifts"]
    assert mass["heavier"]["window_mean"]["truth"] > 0.3
    assert set(mass) == {"heavier", "heavier, unbiased"}
    assert mass["heavier"]["window_mean"]["fit_error"] is None
    unbiased = mass["heavier, unbiased"]["window_mean"]
    assert unbiased["fit_error"] > 0  # five refits of each file's fit move the unbiased shift
    assert unbiased["error"] >= unbiased["fit_error"]
    locations = metrics["observables"]["parton/t_had/mass"]["locations"]
    assert set(locations) == {"nominal", "heavier", "nominal, unbiased", "heavier, unbiased"}
    assert locations["nominal, unbiased"]["median"]["truth"] == locations["nominal"]["median"]["truth"]
    assert mass["heavier, unbiased"]["window_mean"]["truth"] == mass["heavier"]["window_mean"]["truth"]
    assert "heavier, unbiased" in (out / "index.html").read_text()


def test_unfold_unbias_resamples_each_events_draws_under_the_fitted_prior(parton_run, semileptonic_files, tmp_path,
                                                                          capsys):
    train, test = semileptonic_files
    samples, out = tmp_path / "samples.h5", tmp_path / "unbiased.h5"
    assert main(["sample", "parton", "--n", "4", "--checkpoint", str(parton_run), "--data", str(test), "--out",
                 str(samples), "--limit", "50", "--steps", "2"]) == 0
    assert main(["unbias", str(samples), "--simulation", str(train), "--out", str(out), "--bootstrap", "3"]) == 0
    assert "fitted prior: top_pt_slope" in capsys.readouterr().out
    with h5py.File(samples) as before, h5py.File(out) as after:
        fit = json.loads(after.attrs["unbiasing"])
        assert fit["free"] == ["top_pt_slope"]  # one generated top mass: the slope alone
        old = np.stack([before[f"SAMPLES/PARTONS/b_had/{f}"][()] for f in ("pt", "eta", "phi")], axis=-1)
        new = np.stack([after[f"SAMPLES/PARTONS/b_had/{f}"][()] for f in ("pt", "eta", "phi")], axis=-1)
        # Every new draw is one of the same event's old draws, whole (all its features together).
        assert all(any(np.array_equal(draw, candidate) for candidate in old[event]) for event in range(50)
                   for draw in new[event])
        assert np.array_equal(before["PARTONS/b_had/pt"][()], after["PARTONS/b_had/pt"][()])
        assert "unbiasing" not in before.attrs
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("case", ["same-file", "no-simulation", "particle-samples"])
def test_unfold_unbias_refuses_bad_input_in_one_line(parton_run, semileptonic_files, tmp_path, capsys, case):
    train, test = semileptonic_files
    samples = tmp_path / "samples.h5"
    assert main(["sample", "parton", "--n", "2", "--checkpoint", str(parton_run), "--data", str(test), "--out",
                 str(samples), "--limit", "10", "--steps", "2"]) == 0
    if case == "particle-samples":
        with h5py.File(samples, "a") as file:
            del file["SAMPLES/PARTONS"]
    out = samples if case == "same-file" else tmp_path / "out.h5"
    simulation = tmp_path / "missing.h5" if case == "no-simulation" else train
    capsys.readouterr()
    assert main(["unbias", str(samples), "--simulation", str(simulation), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    expected = {"same-file": "is the samples file", "no-simulation": "missing.h5: no such file",
                "particle-samples": "no parton unfoldings"}[case]
    assert expected in error
    assert not (tmp_path / "out.h5").exists()
