"""The parton-level detector reference of `unfold sample`: every event reconstructed without truth
(chi-square or a recon run), beside the truth-matched jets, on real generated events."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import yaml

from evaluation.kinematics import from_pt_eta_phi_m, invariant_mass
from recon.event_topology import EventTopology
from unfold.cli import main
from unfold.data.hdf5_schema import read_spanet
from unfold.errors import UnfoldError
from unfold.tasks.references import parton_reference
from unfold.tasks.sample import default_fit_data, reconstruction

PROCESS = "ttbar-semileptonic"
PARTONS = ("b_had", "q1", "q2", "b_lep", "lepton", "neutrino")


@pytest.fixture(scope="module")
def events(semileptonic_files):
    _, test = semileptonic_files
    with h5py.File(test) as file:
        topology = EventTopology.from_dict(yaml.safe_load(file.attrs["event_file_yaml"]))
    return test, read_spanet(test, topology), topology


def _top_mass(reference: dict) -> np.ndarray:
    b, q1, q2 = (from_pt_eta_phi_m(*(reference[p][f] for f in ("pt", "eta", "phi", "mass"))) for p in ("b_had", "q1", "q2"))
    return invariant_mass(b + q1 + q2)


def test_chi_square_reference_reconstructs_every_event_without_truth(events, semileptonic_files):
    path, data, topology = events
    assign, method = reconstruction(path, topology, recon=None, fit_data=None)
    assignments = assign(data)
    assert method.startswith("chi-square")
    assert str(semileptonic_files[0]) in method
    reference = parton_reference(data, topology, PROCESS, assignments)
    matched = parton_reference(data, topology, PROCESS, data.targets)
    # Every selected event has >= 4 jets and one lepton, so every parton gets an object.
    for parton in PARTONS:
        assert np.isfinite(reference[parton]["pt"]).all(), parton
    assert np.isfinite(_top_mass(matched)).mean() < 0.8  # the matched subset is a minority population
    # The reconstruction reads no truth: hiding the targets changes nothing.
    hidden = dataclasses.replace(data, targets={k: np.full_like(v, -1) for k, v in data.targets.items()})
    again = reconstruction(path, topology, recon=None, fit_data=semileptonic_files[0])[0](hidden)
    for name in assignments:
        np.testing.assert_array_equal(again[name], assignments[name])
    # The reconstructed hadronic top sits near the top mass (chi-square centre, jet resolution).
    assert 150.0 < np.median(_top_mass(reference)) < 200.0


def test_the_lepton_is_the_selected_one_and_the_neutrino_solves_the_w_mass(events):
    path, data, topology = events
    assignments = reconstruction(path, topology, recon=None, fit_data=None)[0](data)
    reference = parton_reference(data, topology, PROCESS, assignments)
    lepton, neutrino = (from_pt_eta_phi_m(*(reference[p][f] for f in ("pt", "eta", "phi", "mass"))) for p in ("lepton", "neutrino"))
    w_mass = invariant_mass(lepton + neutrino)
    # Where the quadratic has real solutions (m_T(W) < m_W) the W mass is the constraint's 80.37 GeV.
    assert np.mean(np.abs(w_mass - 80.37) < 0.5) > 0.5


def test_a_recon_run_reconstructs_the_reference(events, semileptonic_files, tmp_path):
    path, data, topology = events
    runs = tmp_path / "runs"
    assert main(["train", "recon", "--data", str(semileptonic_files[0]), "--out", str(runs), "--epochs", "1",
                 "--limit", "50"]) == 0
    run = next((runs / "recon").iterdir())
    assign, method = reconstruction(path, topology, recon=run, fit_data=None)
    assignments = assign(data)
    assert method.startswith("recon model")
    assert str(run) in method
    reference = parton_reference(data, topology, PROCESS, assignments)
    for parton in PARTONS:
        assert np.isfinite(reference[parton]["pt"]).mean() > 0.95, parton
    lepton = data.sequential[topology.sequential[0].name]
    assert reference["lepton"]["pt"] == pytest.approx(
        np.take_along_axis(lepton[..., topology.sequential[0].features.index("pt")],
                           assignments["lt"][:, 1:2], axis=1)[:, 0])
    # several runs reconstruct as their ensemble (`--recon A --recon B`); a run mixed with itself assigns as alone
    assign_both, method_both = reconstruction(path, topology, recon=[run, run / "checkpoints" / "best.ckpt"], fit_data=None)
    assert method_both.count(str(run)) == 2
    for resonance, indices in assign_both(data).items():
        assert np.array_equal(indices, assignments[resonance]), resonance


def test_without_a_train_file_beside_the_data_the_user_is_told_what_to_pass(tmp_path):
    data = tmp_path / "events.h5"
    data.touch()
    with pytest.raises(UnfoldError, match=r"pass --fit-data TRAIN\.h5 or --recon RUN"):
        default_fit_data(data)
