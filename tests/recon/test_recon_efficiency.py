"""SPANet-style efficiencies: symmetry groups, categories, jet bins and weights, checked by hand
and against a per-event brute-force oracle."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from recon.efficiency import (
    ALLHADRONIC_JET_BINS,
    SEMILEPTONIC_JET_BINS,
    efficiency_table,
    event_correctness,
    format_efficiency_tables,
    jet_bin_mask,
)
from recon.errors import ReconError
from recon.event_topology import EventTopology


@pytest.fixture(scope="module")
def semileptonic(event_files) -> EventTopology:
    return EventTopology.from_yaml(event_files["ttbar-semileptonic"])


@pytest.fixture(scope="module")
def allhadronic(event_files) -> EventTopology:
    return EventTopology.from_yaml(event_files["ttbar-allhadronic"])


def _assignments(**resonances: list[list[int]]) -> dict[str, np.ndarray]:
    return {name: np.array(rows, dtype=np.int64) for name, rows in resonances.items()}


def test_daughter_swap_is_correct_but_b_swap_is_not(semileptonic):
    truth = _assignments(lt=[[1, 0]] * 3, ht=[[2, 3, 4]] * 3)
    predicted = _assignments(lt=[[1, 0]] * 3, ht=[[2, 4, 3], [3, 2, 4], [2, 3, 5]])
    outcome = event_correctness(predicted, truth, semileptonic)
    np.testing.assert_array_equal(outcome.correct, [[True, True], [True, False], [True, False]])
    assert outcome.reconstructable.all()


def test_top_swap_is_correct_only_through_the_event_group(allhadronic):
    truth = _assignments(t1=[[0, 1, 2]], t2=[[3, 4, 5]])
    predicted = _assignments(t1=[[3, 5, 4]], t2=[[0, 2, 1]])
    assert event_correctness(predicted, truth, allhadronic).correct.all()
    raw = {
        "INPUTS": {"SEQUENTIAL": {"Momenta": {"pt": "none"}}},
        "EVENT": {"t1": ["b", "q1", "q2"], "t2": ["b", "q1", "q2"]},
        "PERMUTATIONS": {"t1": [["q1", "q2"]], "t2": [["q1", "q2"]]},
    }
    without_event_group = EventTopology.from_dict(raw)
    assert not event_correctness(predicted, truth, without_event_group).correct.any()


def _brute_force(predicted, truth, topology):
    """Per event and in plain Python: the event permutation with most correct resonances."""
    names = topology.resonance_names
    n_events = len(truth[names[0]])
    correct = np.zeros((n_events, len(names)), dtype=bool)
    for e in range(n_events):
        best = None
        for sigma in topology.event_group:
            row = []
            for i, j in enumerate(sigma):
                true, guess = list(truth[names[i]][e]), list(predicted[names[j]][e])
                same = any([guess[k] for k in g] == true for g in topology.resonances[i].group)
                row.append(min(true) >= 0 and same)
            if best is None or sum(row) > sum(best):
                best = row
        correct[e] = best
    return correct


@pytest.mark.parametrize("topology_name", ["ttbar-allhadronic", "ttbar-semileptonic"])
def test_event_correctness_matches_brute_force(topology_name, rng, event_files):
    topology = EventTopology.from_yaml(event_files[topology_name])
    truth = {r.name: rng.integers(-1, 4, (500, r.order)) for r in topology.resonances}
    predicted = {r.name: rng.integers(0, 4, (500, r.order)) for r in topology.resonances}
    outcome = event_correctness(predicted, truth, topology)
    np.testing.assert_array_equal(outcome.correct, _brute_force(predicted, truth, topology))
    np.testing.assert_array_equal(
        outcome.reconstructable,
        np.stack([(truth[n] >= 0).all(axis=1) for n in topology.resonance_names], axis=1),
    )
    assert outcome.correct.any()


def test_hand_checked_table(semileptonic):
    """Five events: complete and right; complete, ht wrong; only ht matched and right; nothing matched; complete and right."""
    truth = _assignments(
        lt=[[1, 0], [1, 0], [-1, 0], [-1, -1], [2, 0]],
        ht=[[2, 3, 4], [2, 3, 4], [1, 2, 3], [-1, 2, 3], [1, 3, 4]],
    )
    predicted = _assignments(
        lt=[[1, 0], [1, 0], [4, 0], [1, 0], [2, 0]],
        ht=[[2, 4, 3], [3, 2, 4], [1, 3, 2], [2, 3, 4], [1, 3, 4]],
    )
    n_jets = np.array([4, 5, 5, 6, 7])
    table = efficiency_table(predicted, truth, semileptonic, n_jets, SEMILEPTONIC_JET_BINS)
    every = table["all"]
    assert every["fraction"] == pytest.approx(4 / 5)
    assert every["event"] == pytest.approx(3 / 4)
    assert every["lt"] == pytest.approx(3 / 3)
    assert every["ht"] == pytest.approx(3 / 4)
    complete = table["complete"]
    assert complete["fraction"] == pytest.approx(3 / 5)
    assert complete["event"] == pytest.approx(2 / 3)
    assert complete["ht"] == pytest.approx(2 / 3)
    assert every["by_jets"]["==5"] == {"event": 0.5, "fraction": 0.4, "lt": 1.0, "ht": 0.5}
    assert complete["by_jets"]["==5"] == {"event": 0.0, "fraction": 0.2, "lt": 1.0, "ht": 0.0}
    assert every["by_jets"][">=6"] == {"event": 1.0, "fraction": 0.2, "lt": 1.0, "ht": 1.0}
    assert complete["by_jets"]["==4"]["fraction"] == pytest.approx(1 / 5)
    json.dumps(table, allow_nan=False)


def test_empty_bins_are_none(allhadronic):
    truth = _assignments(t1=[[0, 1, 2]], t2=[[3, 4, 5]])
    table = efficiency_table(truth, truth, allhadronic, np.array([6]), ALLHADRONIC_JET_BINS)
    assert table["all"]["by_jets"]["==7"] == {
        "event": None,
        "fraction": 0.0,
        "t1": None,
        "t2": None,
    }
    assert table["complete"]["by_jets"]["==6"] == {
        "event": 1.0,
        "fraction": 1.0,
        "t1": 1.0,
        "t2": 1.0,
    }


def test_integer_weights_equal_repeated_events(allhadronic, rng):
    truth = {name: rng.integers(-1, 3, (300, 3)) for name in ("t1", "t2")}
    predicted = {name: rng.integers(0, 3, (300, 3)) for name in ("t1", "t2")}
    n_jets = rng.integers(6, 10, 300)
    weights = rng.integers(0, 4, 300)
    weighted = efficiency_table(
        predicted, truth, allhadronic, n_jets, ALLHADRONIC_JET_BINS, weights=weights
    )
    repeat = lambda a: np.repeat(a, weights, axis=0)  # noqa: E731
    repeated = efficiency_table(
        {k: repeat(v) for k, v in predicted.items()},
        {k: repeat(v) for k, v in truth.items()},
        allhadronic,
        repeat(n_jets),
        ALLHADRONIC_JET_BINS,
    )
    for category in ("all", "complete"):
        for key, value in repeated[category].items():
            if key != "by_jets":
                assert weighted[category][key] == pytest.approx(value)
        for spec, row in repeated[category]["by_jets"].items():
            assert weighted[category]["by_jets"][spec] == pytest.approx(row)
    assert weighted != efficiency_table(predicted, truth, allhadronic, n_jets, ALLHADRONIC_JET_BINS)


def test_jet_bins():
    n_jets = np.array([3, 4, 5, 6, 9])
    np.testing.assert_array_equal(jet_bin_mask(n_jets, "==4"), [False, True, False, False, False])
    np.testing.assert_array_equal(jet_bin_mask(n_jets, ">=6"), [False, False, False, True, True])
    np.testing.assert_array_equal(jet_bin_mask(n_jets, "< 5"), [True, True, False, False, False])
    np.testing.assert_array_equal(jet_bin_mask(n_jets, "<=5"), [True, True, True, False, False])
    np.testing.assert_array_equal(jet_bin_mask(n_jets, ">6"), [False, False, False, False, True])
    for bad in ("6", "=6", ">=six", "6+"):
        with pytest.raises(ReconError, match="expected a comparison"):
            jet_bin_mask(n_jets, bad)


def test_any_topology_on_the_real_spanet_example(spanet_example, rng):
    """ttH (three resonances, Higgs b1 <-> b2): the truth itself, with daughters swapped, is fully correct."""
    path, event_file = spanet_example
    topology = EventTopology.from_yaml(event_file)
    with h5py.File(path) as file:
        truth = {
            r.name: np.stack([file[f"TARGETS/{r.name}/{d}"][:] for d in r.daughters], axis=1)
            for r in topology.resonances
        }
        n_jets = (
            file["INPUTS/Momenta/MASK"][:]
            & (file["INPUTS/Momenta/etag"][:] == 0)
            & (file["INPUTS/Momenta/utag"][:] == 0)
        ).sum(axis=1)
    predicted = {**truth, "h": truth["h"][:, ::-1], "ht": truth["ht"][:, [0, 2, 1]]}
    table = efficiency_table(predicted, truth, topology, n_jets, SEMILEPTONIC_JET_BINS)
    reconstructable = np.stack([(t >= 0).all(axis=1) for t in truth.values()], axis=1)
    assert table["all"]["fraction"] == pytest.approx(reconstructable.any(axis=1).mean())
    assert table["complete"]["fraction"] == pytest.approx(reconstructable.all(axis=1).mean())
    assert all(table["all"][key] == 1.0 for key in ("event", "lt", "ht", "h"))
    shuffled = {name: rng.permutation(a) for name, a in truth.items()}
    assert (
        efficiency_table(shuffled, truth, topology, n_jets, SEMILEPTONIC_JET_BINS)["all"]["event"]
        < 0.2
    )
    assert sum(
        table["all"]["by_jets"][b]["fraction"] for b in SEMILEPTONIC_JET_BINS
    ) == pytest.approx(table["all"]["fraction"])


def test_format_side_by_side(semileptonic):
    truth = _assignments(lt=[[1, 0], [1, 0]], ht=[[2, 3, 4], [-1, 3, 4]])
    wrong = _assignments(lt=[[2, 0], [1, 0]], ht=[[2, 3, 4], [2, 3, 4]])
    model = efficiency_table(truth, truth, semileptonic, np.array([4, 6]), SEMILEPTONIC_JET_BINS)
    baseline = efficiency_table(wrong, truth, semileptonic, np.array([4, 6]), SEMILEPTONIC_JET_BINS)
    text = format_efficiency_tables({"SPANet": model, "chi-square": baseline})
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert "SPANet" in lines[2]
    assert "chi-square" in lines[2]
    all_row = next(line for line in lines if line.startswith("all"))
    assert all_row.split("|")[2].split() == ["1.000", "0.500"]
    assert any(">=6 jets" in line for line in lines)
    assert "-" in next(line for line in lines if "==5 jets" in line).split("|")[2]
    assert "SPANet" in format_efficiency_tables({"SPANet": model})
    other_bins = efficiency_table(truth, truth, semileptonic, np.array([4, 6]), ("==4",))
    with pytest.raises(ReconError, match="other keys or bins"):
        format_efficiency_tables({"SPANet": model, "chi-square": other_bins})
    with pytest.raises(ReconError, match="no tables"):
        format_efficiency_tables({})


def test_bad_inputs_raise(semileptonic, allhadronic):
    truth = _assignments(lt=[[1, 0]], ht=[[2, 3, 4]])
    bins = SEMILEPTONIC_JET_BINS
    with pytest.raises(ReconError, match=r"expected \['lt', 'ht'\]"):
        efficiency_table({"ht": truth["ht"]}, truth, semileptonic, np.array([4]), bins)
    with pytest.raises(
        ReconError, match=r"predicted\['ht'\] has shape \(1, 2\); expected \(E, 3\)"
    ):
        efficiency_table(
            {**truth, "ht": truth["ht"][:, :2]}, truth, semileptonic, np.array([4]), bins
        )
    with pytest.raises(ReconError, match="number of events"):
        efficiency_table(
            {k: np.repeat(v, 2, axis=0) for k, v in truth.items()},
            truth,
            semileptonic,
            np.array([4]),
            bins,
        )
    with pytest.raises(ReconError, match="dtype float"):
        efficiency_table(
            {**truth, "lt": truth["lt"].astype(float)}, truth, semileptonic, np.array([4]), bins
        )
    with pytest.raises(ReconError, match="n_jets has shape"):
        efficiency_table(truth, truth, semileptonic, np.array([4, 5]), bins)
    with pytest.raises(ReconError, match="sum to zero or less"):
        efficiency_table(truth, truth, semileptonic, np.array([4]), bins, weights=np.array([-1.0]))
    with pytest.raises(ReconError, match="must be finite"):
        efficiency_table(truth, truth, semileptonic, np.array([4]), bins, weights=np.array([np.nan]))
    with pytest.raises(ReconError, match="sum to zero"):
        efficiency_table(truth, truth, semileptonic, np.array([4]), bins, weights=np.array([0.0]))
    clash = EventTopology.from_dict(
        {"INPUTS": {"SEQUENTIAL": {"Momenta": {"pt": "none"}}}, "EVENT": {"event": ["a", "b"]}}
    )
    with pytest.raises(ReconError, match="clashes"):
        efficiency_table({"event": truth["lt"]}, {"event": truth["lt"]}, clash, np.array([4]), bins)
