"""Differential cross sections: the toy integral N / L, the data and draws errors, weights, the
luminosity's sources, and the report's cross-section part (note, figures, exports)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from evaluation.cross_sections import differential_cross_section, resolve_luminosity
from evaluation.errors import ReportError
from evaluation.exports import read_json, read_root
from evaluation.observables import compute_observables
from evaluation.report import write_report
from evaluation.samples_file import read_samples_file
from unfold.cli import main

EDGES = np.linspace(0.0, 10.0, 11)


def test_toy_of_unit_weights_integrates_to_events_over_luminosity(rng):
    n, luminosity = 400, 2.5
    values = rng.uniform(0.0, 10.0, n)
    section = differential_cross_section(values, EDGES, luminosity, unit="GeV")
    assert np.sum(section.values * np.diff(EDGES)) == pytest.approx(n / luminosity)
    assert section.total[0] == pytest.approx(n / luminosity)
    # Poisson: sqrt(N) / L for the total, sqrt(N_bin) / (L dx) per bin.
    assert section.total[1] == pytest.approx(np.sqrt(n) / luminosity)
    counts, _ = np.histogram(values, EDGES)
    assert section.stat_data == pytest.approx(np.sqrt(counts) / luminosity)
    assert section.sigma_unit == "fb/GeV"
    assert np.all(section.stat_draws == 0)


def test_values_outside_the_bins_and_nan_count_nowhere():
    section = differential_cross_section(np.array([-1.0, 0.0, 10.0, 11.0, np.nan]), EDGES, 1.0)
    assert section.total[0] == pytest.approx(2.0)  # 0 and the closed last edge 10


def test_event_weights_reach_every_object_of_their_event():
    # Two events of three objects each (R = 6), weights 2 and 0.5; one object absent (NaN).
    values = np.array([0.5, 1.5, np.nan, 0.5, 0.5, 9.5])
    section = differential_cross_section(values, EDGES, 1.0, event_weights=np.array([2.0, 0.5]))
    assert section.values[0] == pytest.approx(2.0 + 0.5 + 0.5)
    assert section.values[1] == pytest.approx(2.0)
    assert section.values[9] == pytest.approx(0.5)
    # Compound Poisson per event: the second event's two entries in bin 0 move together.
    assert section.stat_data[0] == pytest.approx(np.hypot(2.0, 0.5 * 2))
    assert section.total[1] == pytest.approx(np.hypot(2.0 * 2, 0.5 * 3))


def test_draws_give_the_mean_histogram_with_its_spread_and_data_errors(rng):
    n_events, n_draws = 50, 4
    draws = rng.uniform(0.0, 10.0, (n_events, n_draws))
    section = differential_cross_section(draws, EDGES, 1.0, source="model")
    per_draw = np.array([np.histogram(draws[:, k], EDGES)[0] for k in range(n_draws)])
    assert section.values == pytest.approx(per_draw.mean(axis=0))
    assert section.stat_draws == pytest.approx(per_draw.std(axis=0, ddof=1))
    # Each event spreads over bins by the share of its draws there: variance sum_e (share)^2.
    shares = np.array([np.histogram(draws[e], EDGES)[0] / n_draws for e in range(n_events)])
    assert section.stat_data == pytest.approx(np.sqrt((shares**2).sum(axis=0)))
    assert section.total[0] == pytest.approx(n_events)
    assert section.total[2] == pytest.approx(0.0, abs=1e-12)  # every draw keeps every event in range
    identical = differential_cross_section(np.repeat(draws[:, :1], n_draws, axis=1), EDGES, 1.0)
    assert np.all(identical.stat_draws == 0)


def test_per_draw_weights_scale_the_draws(rng):
    draws = rng.uniform(0.0, 10.0, (30, 3))
    plain = differential_cross_section(draws, EDGES, 1.0)
    weighted = differential_cross_section(draws, EDGES, 1.0, event_weights=np.full((30, 3), 1 / 0.8))
    assert weighted.values == pytest.approx(plain.values / 0.8)
    assert weighted.stat_data == pytest.approx(plain.stat_data / 0.8)


@pytest.mark.parametrize("luminosity", [0.0, -1.0, float("nan"), float("inf")])
def test_luminosity_must_be_positive(luminosity):
    with pytest.raises(ReportError, match="positive"):
        differential_cross_section(np.ones(3), EDGES, luminosity)
    with pytest.raises(ReportError, match="--luminosity"):
        resolve_luminosity(luminosity, {}, Path("samples.h5"))


def test_rows_must_split_into_events():
    with pytest.raises(ReportError, match="do not split into 2 events"):
        differential_cross_section(np.ones(3), EDGES, 1.0, event_weights=np.ones(2))


def test_luminosity_comes_from_the_option_then_the_file_else_off():
    path = Path("samples.h5")
    assert resolve_luminosity(3.0, {"luminosity_fb_inv": "7.0"}, path)[0] == 3.0
    assert resolve_luminosity(None, {"luminosity_fb_inv": "7.0"}, path)[0] == 7.0
    value, note = resolve_luminosity(None, {}, path)
    assert value is None
    assert note.startswith("cross sections off")
    assert "\n" not in note
    with pytest.raises(ReportError, match="luminosity_fb_inv"):
        resolve_luminosity(None, {"luminosity_fb_inv": "-2"}, path)


FEATURE = "parton/t_had/mass"


def test_report_without_luminosity_notes_it_in_one_line(make_samples_file, tmp_path):
    samples = make_samples_file(n_events=120, n_draws=4, particles=False)
    result = write_report([samples], tmp_path / "report", features=[FEATURE], resamples=2)
    notes = [line for line in result.headline.splitlines() if "cross sections" in line]
    assert len(notes) == 1
    assert notes[0].startswith("cross sections off")
    assert not (tmp_path / "report" / "cross_sections.json").exists()


def test_report_with_the_file_luminosity_writes_cross_sections(make_samples_file, tmp_path):
    samples = make_samples_file(n_events=120, n_draws=4, particles=False)
    with h5py.File(samples, "a") as file:
        file.attrs["luminosity_fb_inv"] = 0.25
    out = tmp_path / "report"
    result = write_report([samples], out, features=[FEATURE], resamples=2)
    assert "cross sections: luminosity 0.25 fb^-1" in result.headline
    assert (out / f"xsec_{FEATURE.replace('/', '__')}.png").is_file()
    document = json.loads((out / "cross_sections.json").read_text())
    assert document["luminosity_fb_inv"] == 0.25
    entry = document["observables"][FEATURE]
    assert set(entry["sources"]) == {"truth", "samples"}
    assert entry["sigma_unit"] == "fb/GeV"
    # Every truth value inside the bin range counts once: sigma = N_in / L.
    sections = {s.source: s for s in read_json(out / "cross_sections.json")}
    edges = sections["truth"].edges
    truth = next(o for o in compute_observables(read_samples_file(samples)) if o.name == FEATURE).truth
    inside = np.sum((truth >= edges[0]) & (truth <= edges[-1]))
    assert inside >= 110
    assert sections["truth"].total[0] == pytest.approx(inside / 0.25)
    histograms = read_root(out / "cross_sections.root")
    assert histograms[f"{FEATURE}/samples"].values() == pytest.approx(sections["samples"].values)
    assert f"{FEATURE}/samples_draws" in histograms
    # --luminosity overrides the file's: dsigma/dx scales as 1 / L.
    again = write_report([samples], out, features=[FEATURE], resamples=2, luminosity=0.5)
    assert "(--luminosity)" in again.headline
    halved = {s.source: s for s in read_json(out / "cross_sections.json")}
    assert halved["truth"].values == pytest.approx(sections["truth"].values / 2)


def test_negative_luminosity_fails_in_one_line_through_the_cli(make_samples_file, tmp_path, capsys):
    samples = make_samples_file(n_events=40, n_draws=2, particles=False)
    out = tmp_path / "report"
    assert main(["report", str(samples), "--out", str(out), "--features", FEATURE, "--luminosity", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--luminosity" in err
    assert not out.exists()
