"""Event weights in ``unfold report`` and in the efficiency tables, tested as equivalences: weight 2
on a subset S of the events must give what the same events with S written twice give."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from evaluation.calibration import calibrate
from evaluation.metrics import histogram_edges
from evaluation.recon_report import build_recon_report
from recon.efficiency import efficiency_table
from recon.event_topology import EventTopology
from unfold.cli import main

# Continuous per-event observables (a distribution, a mass with its peak, an angle), one per
# object (every jet: each carries its event's weight) and a discrete one (ties in the ranks).
FEATURES = ["parton/b_had/pt", "parton/t_had/mass", "parton/t_had+t_lep/dphi", "particle/jets/pt",
            "particle/jets/multiplicity"]
DISCRETE = {"particle/jets/multiplicity"}
EVENT_FILE = Path(__file__).resolve().parents[2] / "configs" / "events" / "ttbar_semileptonic.yaml"


def _rewrite(source: Path, out: Path, rows: np.ndarray, weights: np.ndarray | None) -> Path:
    """``source`` with its events taken in the order ``rows`` (repeats allowed) and ``weights`` in WEIGHTS/weight."""
    with h5py.File(source) as old, h5py.File(out, "w") as new:
        n_events = old["PARTONS/b_had/pt" if "PARTONS" in old else "INPUTS/Momenta/pt"].shape[0]
        new.attrs.update(old.attrs)

        def copy(name: str, node) -> None:
            if isinstance(node, h5py.Dataset):
                new[name] = node[()][rows] if node.shape and node.shape[0] == n_events else node[()]

        old.visititems(copy)
        if weights is not None:
            new["WEIGHTS/weight"] = weights
    return out


def _report(samples: Path, out: Path, features: list[str] = FEATURES) -> dict:
    assert main(["report", str(samples), "--out", str(out), "--labels", "model", "--bootstrap", "4",
                 "--features", ",".join(features)]) == 0
    return json.loads((out / "metrics.json").read_text())["observables"]


def test_a_weighted_report_equals_the_report_of_the_duplicated_events(make_samples_file, tmp_path):
    """Compared: every distance of the model and of the detector references (value, min and max over
    draws), the calibration's rank counts and coverages. Not compared: bootstrap errors, noise floors
    and the flatness p-value, which measure statistical noise, and an event of weight 2 is not two
    independent events (the p-value uses Kish's n_eff). The discrete observable's ranks are broken
    at random where truth and draws tie, so its calibration agrees within that noise only."""
    n = 120
    source = make_samples_file(n_events=n, n_draws=3)
    subset = np.arange(n) % 3 == 0
    rows = np.concatenate([np.arange(n), np.flatnonzero(subset)])
    weighted = _report(_rewrite(source, tmp_path / "w.h5", np.arange(n), np.where(subset, 2.0, 1.0)), tmp_path / "w")
    duplicated = _report(_rewrite(source, tmp_path / "d.h5", rows, np.ones(rows.size)), tmp_path / "d")
    plain = _report(source, tmp_path / "plain")
    assert set(weighted) == set(duplicated) == set(FEATURES)
    for name in FEATURES:
        w, d = weighted[name], duplicated[name]
        for group in ("reference", "matched"):
            for metric, summary in (w[group] or {}).items():
                assert summary["value"] == pytest.approx(d[group][metric]["value"], rel=1e-6, abs=1e-9), (name, group, metric)
        for metric, summary in w["distances"]["model"].items():
            for key in ("value", "min", "max"):
                assert summary[key] == pytest.approx(d["distances"]["model"][metric][key], rel=1e-6, abs=1e-9), (name, metric, key)
        # The peak's KDE bandwidth shrinks as n_eff^(-1/5); n_eff of the weighted file (Kish) is below
        # the duplicated file's count, so its peak is smoothed a little more: close, not equal.
        for key, peak in w.get("peaks", {}).items():
            assert peak == pytest.approx(d["peaks"][key], rel=0.03), (name, key)
        if not w["per_event"]:
            continue
        wc, dc = w["calibration"]["model"], d["calibration"]["model"]
        tolerance = 0.1 * (n + subset.sum()) if name in DISCRETE else 1e-6
        np.testing.assert_allclose(wc["rank_counts"], dc["rank_counts"], atol=tolerance, err_msg=name)
        for wcov, dcov in zip(wc["coverage"], dc["coverage"], strict=True):
            assert wcov["observed"] == pytest.approx(dcov["observed"], abs=0.1 if name in DISCRETE else 1e-9), name

    def shares(metrics: dict, name: str) -> np.ndarray:
        counts = np.asarray(metrics[name]["calibration"]["model"]["rank_counts"])
        return counts / counts.sum()

    assert sum(not np.allclose(shares(weighted, n), shares(plain, n), atol=1e-3)
               for n in FEATURES if plain[n]["per_event"]) >= 3, "the weights change the rank histograms"
    assert any(weighted[n]["distances"]["model"]["wasserstein"]["value"]
               != pytest.approx(plain[n]["distances"]["model"]["wasserstein"]["value"], rel=1e-3) for n in FEATURES)


def test_negative_weights_are_reported(make_samples_file, tmp_path):
    """NLO-like signed weights: the report is written (plots included) and every distance is a finite number."""
    source = make_samples_file(n_events=60, n_draws=3)
    weights = np.where(np.arange(60) % 5 == 0, -0.4, 1.2)
    features = ["parton/t_had/mass", "particle/jets/pt"]
    metrics = _report(_rewrite(source, tmp_path / "nlo.h5", np.arange(60), weights), tmp_path / "nlo", features)
    assert len(list((tmp_path / "nlo").glob("*.png"))) >= 3
    for name in features:
        for summary in metrics[name]["distances"]["model"].values():
            assert np.isfinite(summary["value"])
            assert summary["value"] >= 0


@pytest.mark.parametrize(("weights", "expected"), [
    (np.where(np.arange(40) == 3, np.nan, 1.0), "expected finite event weights with a positive sum"),
    (np.ones(39), "WEIGHTS/weight"),
    (np.full(40, -1.0), "expected finite event weights with a positive sum"),
])
def test_bad_weights_are_refused_before_anything_is_written(make_samples_file, tmp_path, capsys, weights, expected):
    path = _rewrite(make_samples_file(n_events=40, n_draws=3), tmp_path / "bad.h5", np.arange(40), weights)
    out = tmp_path / "report"
    assert main(["report", str(path), "--out", str(out), "--bootstrap", "4"]) != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(path) in error
    assert "WEIGHTS/weight" in error
    assert expected in error
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5", "samples.h5"]


def test_weighted_calibration_and_bin_range_count_a_weight_two_event_twice(rng):
    truth = rng.normal(size=300)
    draws = truth[:, None] + rng.normal(size=(300, 6))
    weights = np.where(np.arange(300) < 100, 2.0, 1.0)
    rows = np.concatenate([np.arange(300), np.arange(100)])
    weighted = calibrate(truth, draws, np.random.default_rng(0), weights)
    duplicated = calibrate(truth[rows], draws[rows], np.random.default_rng(0))
    np.testing.assert_array_equal(weighted.rank_counts, duplicated.rank_counts)
    np.testing.assert_allclose(weighted.observed_levels, duplicated.observed_levels)
    assert weighted.effective_events == pytest.approx(400**2 / (100 * 4 + 200))
    np.testing.assert_allclose(histogram_edges(truth, 32, weights=weights), histogram_edges(truth[rows], 32, weights=np.ones(400)))
    signed = calibrate(truth, draws, np.random.default_rng(0), np.where(np.arange(300) < 30, -1.0, 1.0))
    assert signed.rank_counts.sum() == pytest.approx(240)


def test_the_weighted_efficiency_table_equals_the_table_of_the_duplicated_events(event_files, rng):
    """SPANet's tables with weight 2 on a third of the events equal those of the events written twice."""
    topology = EventTopology.from_yaml(event_files["ttbar-semileptonic"])
    n = 600
    truth, predicted = {}, {}
    for resonance in topology.resonances:
        order = resonance.order
        slots = np.stack([rng.permutation(8)[:order] for _ in range(n)])
        slots[rng.random(n) < 0.15, 0] = -1  # not reconstructable
        truth[resonance.name] = slots
        wrong = rng.random(n) < 0.3
        predicted[resonance.name] = np.where(wrong[:, None], np.roll(slots, 1, axis=0), slots).clip(0)
    n_jets = rng.integers(4, 9, n)
    subset = rng.random(n) < 0.33
    rows = np.concatenate([np.arange(n), np.flatnonzero(subset)])
    bins = ("==4", "==5", ">=6")
    weighted = efficiency_table(predicted, truth, topology, n_jets, bins, np.where(subset, 2.0, 1.0))
    duplicated = efficiency_table({k: v[rows] for k, v in predicted.items()}, {k: v[rows] for k, v in truth.items()},
                                  topology, n_jets[rows], bins)
    plain = efficiency_table(predicted, truth, topology, n_jets, bins)
    assert json.dumps(weighted, sort_keys=True) == json.dumps(duplicated, sort_keys=True) or _close(weighted, duplicated)
    assert not _close(weighted, plain), "the weights change the table"


def _close(a, b) -> bool:
    """Nested tables equal up to float rounding."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is b
    return a == pytest.approx(b, rel=1e-12, abs=1e-12)


def test_the_recon_report_fills_its_mass_histograms_with_the_weights(predictions_writer, tmp_path, monkeypatch):
    """The correct / wrong mass histograms of a predictions file with weight 2 on a subset equal
    those of the file with that subset written twice, and differ from the unweighted ones."""
    source = predictions_writer(tmp_path / "predictions.h5", n_events=200)
    subset = np.arange(200) % 4 == 0
    rows = np.concatenate([np.arange(200), np.flatnonzero(subset)])
    drawn: list[dict] = []

    def capture(paths, *, edges, correct, wrong, correct_weights, wrong_weights, **_):
        drawn.append({"edges": edges, "correct": np.histogram(correct, edges, weights=correct_weights)[0],
                      "wrong": np.histogram(wrong, edges, weights=wrong_weights)[0]})

    monkeypatch.setattr("evaluation.recon_report.plot_recon_masses", capture)
    histograms = {}
    for label, path in (("weighted", _rewrite(source, tmp_path / "w.h5", np.arange(200), np.where(subset, 2.0, 1.0))),
                        ("duplicated", _rewrite(source, tmp_path / "d.h5", rows, None)),
                        ("plain", source)):
        drawn.clear()
        for job in build_recon_report(path, bins=16).jobs:
            job.draw([])
        histograms[label] = list(drawn)
    assert histograms["weighted"]
    for weighted, duplicated in zip(histograms["weighted"], histograms["duplicated"], strict=True):
        np.testing.assert_allclose(weighted["edges"], duplicated["edges"])
        np.testing.assert_allclose(weighted["correct"], duplicated["correct"])
        np.testing.assert_allclose(weighted["wrong"], duplicated["wrong"])
    assert any(not np.array_equal(w["correct"], p["correct"]) for w, p in zip(histograms["weighted"], histograms["plain"], strict=True))
