"""Generated files: reproducible, independent of the worker count, read like SPANet's, and
never half-written."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from recon.event_topology import EventTopology
from unfold.cli import main
from unfold.data.hdf5_schema import read_spanet, read_truth
from unfold.errors import UnfoldError
from unfold.generation.pipeline import GenerationConfig, generate


def _contents(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as file:
        file.visititems(lambda k, o: out.__setitem__(k, o[...]) if isinstance(o, h5py.Dataset) else None)
        out.update({f"@{k}": v for k, v in file.attrs.items()})
    return out


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a if not k.startswith("@code"))


def test_same_seed_same_file_and_worker_count_does_not_matter(tmp_path):
    config = dict(events=40, seed=9, mpi=False, shard_size=20)
    one = generate(GenerationConfig(out=tmp_path / "a", workers=1, **config), progress=False)
    again = generate(GenerationConfig(out=tmp_path / "b", workers=1, **config), progress=False)
    two = generate(GenerationConfig(out=tmp_path / "c", workers=2, **config), progress=False)
    other = generate(GenerationConfig(out=tmp_path / "d", workers=1, **{**config, "seed": 10}), progress=False)
    assert _same(_contents(one.train), _contents(again.train))
    assert _same(_contents(one.train), _contents(two.train))
    assert _same(_contents(one.test), _contents(two.test))
    assert not np.array_equal(_contents(one.train)["INPUTS/Momenta/pt"], _contents(other.train)["INPUTS/Momenta/pt"])
    with h5py.File(two.train) as file:
        assert len(file["INPUTS/Momenta/MASK"]) == 32 and file.attrs["split"] == "train"


def test_one_reader_for_our_files_and_spanets(semileptonic_files, spanet_example, event_files):
    ours = read_spanet(semileptonic_files[0], EventTopology.from_yaml(event_files["ttbar-semileptonic"]))
    theirs = read_spanet(spanet_example[0], EventTopology.from_yaml(spanet_example[1]))
    assert ours.sequential["Momenta"].shape[-1] == theirs.sequential["Momenta"].shape[-1] == 9
    assert set(theirs.targets) == {"lt", "ht", "h"} and theirs.targets["ht"].shape == (1000, 3)
    assert ours.regressions.shape[1] == theirs.regressions.shape[1] == 5
    for data in (ours, theirs):
        padded = ~data.object_mask
        assert (data.sequential["Momenta"][padded] == 0).all()
        assert np.isfinite(data.four_momenta).all()
        energy, px, py, pz = np.moveaxis(data.four_momenta[data.object_mask], -1, 0)
        assert (energy**2 - px**2 - py**2 - pz**2 > -1e-2 * energy**2).all()
    partons = read_truth(semileptonic_files[0], "PARTONS")
    assert {"b_had", "q1", "q2", "b_lep", "lepton", "neutrino"} <= partons.keys()


def test_missing_file_and_missing_groups_are_one_line_errors(tmp_path, capsys, event_files):
    topology = EventTopology.from_yaml(event_files["ttbar-semileptonic"])
    with pytest.raises(UnfoldError, match="file not found"):
        read_spanet(tmp_path / "nope.h5", topology)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as file:
        file.create_dataset("SOMETHING/else", data=np.zeros(3))
    with pytest.raises(UnfoldError, match=r"empty.h5: missing dataset 'INPUTS/Momenta/MASK'"):
        read_spanet(empty, topology)
    with pytest.raises(UnfoldError, match="missing group 'PARTONS'"):
        read_truth(empty, "PARTONS")
    assert main(["inspect", str(tmp_path / "nope.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.h5: file not found" in err


def test_bad_targets_and_nan_features_are_reported(tmp_path, semileptonic_files, event_files):
    topology = EventTopology.from_yaml(event_files["ttbar-semileptonic"])
    broken = tmp_path / "broken.h5"
    broken.write_bytes(semileptonic_files[1].read_bytes())
    with h5py.File(broken, "r+") as file:
        file["TARGETS/ht/b"][0] = 99
    with pytest.raises(UnfoldError, match=r"'TARGETS/ht/b' holds index 99; expected -1 or 0..15"):
        read_spanet(broken, topology)
    broken.write_bytes(semileptonic_files[1].read_bytes())
    with h5py.File(broken, "r+") as file:
        file["INPUTS/Momenta/pt"][0, 0] = np.nan
    with pytest.raises(UnfoldError, match=r"'INPUTS/Momenta/pt' holds 1 NaN/inf"):
        read_spanet(broken, topology)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace("  efficiency: 0.99\n", ""), "missing parameter 'jets.efficiency'"),
        (lambda text: text.replace("eta_resolution: 0.025", "eta_resolution: -0.025"), "'jets.eta_resolution' must be non-negative"),
        (lambda text: text.replace("noise: [3.0, 3.5, 4.0, 4.5]", "noise: [3.0, 3.5]"), "jets.resolution.noise has 2 values; expected 4"),
        (lambda text: text.replace("max_jets: 15", "max_jets: many"), "'jets.max_jets' must be a number"),
    ],
)
def test_bad_detector_card_fails_before_anything_is_written(tmp_path, capsys, edit, message):
    from importlib import resources

    card = tmp_path / "card.yaml"
    card.write_text(edit((resources.files("configs.detector") / "cms_like.yaml").read_text()))
    out = tmp_path / "out"
    assert main(["generate", "--events", "10", "--detector", str(card), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(card) in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("events", ["0", "-5"])
def test_nonpositive_event_counts_are_refused(tmp_path, capsys, events):
    assert main(["generate", "--events", events, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "--events must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_failing_run_leaves_no_partial_files(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--events", "10", "--out", str(out), "--pythia", "NoSuch:setting = 3", "--quiet", "--workers", "1"])
    assert code == 2
    assert "Pythia setting not understood: 'NoSuch:setting = 3'" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_inspect_prints_structure_and_physics(semileptonic_files, capsys):
    assert main(["inspect", str(semileptonic_files[0])]) == 0
    text = capsys.readouterr().out
    assert "INPUTS/" in text and "(300, 16)" in text
    assert "fully matched events" in text and "parton m(t_had)" in text
    assert "lepton charge: l+" in text and "MET against the true neutrinos: response" in text


def test_daughters_naming_their_source_index_into_that_source(tmp_path):
    """SPANet's convention: an index points into the concatenated objects unless the daughter names its source."""
    path = tmp_path / "two_sources.h5"
    with h5py.File(path, "w") as file:
        for source, n in (("Leptons", 1), ("Jets", 3)):
            file[f"INPUTS/{source}/pt"] = np.full((2, n), 40.0, np.float32)
            file[f"INPUTS/{source}/MASK"] = np.ones((2, n), bool)
        file["TARGETS/t/b"] = np.array([0, 2])
        file["TARGETS/t/l"] = np.array([0, -1])
    topology = EventTopology.from_dict(
        {"INPUTS": {"SEQUENTIAL": {"Leptons": {"pt": "log_normalize"}, "Jets": {"pt": "log_normalize"}}},
         "EVENT": {"t": [{"b": "Jets"}, "l"]}},
        origin="two_sources.yaml",
    )
    data = read_spanet(path, topology)
    assert data.targets["t"].tolist() == [[1, 0], [3, -1]]
