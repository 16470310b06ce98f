"""Reading samples files and deriving observables: composites, leading objects, multiplicities."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import vector
from matplotlib import mathtext

from evaluation.errors import ReportError
from evaluation.kinematics import from_pt_eta_phi_m, invariant_mass
from evaluation.observables import (
    _ranked_values,
    compute_observables,
    correlation_pairs,
    latex_name,
)
from evaluation.samples_file import Collection, read_samples_file


def test_reader_accepts_the_schema_and_skips_non_kinematic_features(make_samples_file):
    samples = read_samples_file(make_samples_file(n_events=50, n_draws=4))
    assert (samples.n_events, samples.n_draws) == (50, 4)
    assert "pdgid" not in samples.partons.truth["b_had"]
    assert samples.partons.draws["q1"]["pt"].shape == (50, 4)
    assert samples.particles.draws["jets"].mask.shape == (50, 4, 8)
    assert samples.particles.truth["met"].mask is None
    assert samples.composites["t_had"] == ("b_had", "q1", "q2")
    assert samples.attrs["sampler"] == "ddim"


def test_composite_mass_is_the_mass_of_the_summed_constituents(make_samples_file):
    samples = read_samples_file(make_samples_file(n_events=50, n_draws=4, particles=False))
    observables = {o.name: o for o in compute_observables(samples)}
    truth = samples.partons.truth
    b, q1, q2 = (from_pt_eta_phi_m(*(truth[p][k] for k in ("pt", "eta", "phi", "mass"))) for p in ("b_had", "q1", "q2"))
    expected = invariant_mass(b + q1 + q2)
    np.testing.assert_allclose(observables["parton/t_had/mass"].truth, expected)
    assert observables["parton/t_had/mass"].draws.shape == (50, 4)
    # Both references are NaN wherever one constituent was unassigned or had no detector match.
    for level, values in ((samples.partons.reference, observables["parton/t_had/mass"].reference),
                          (samples.partons.matched, observables["parton/t_had/mass"].matched)):
        missing = np.isnan(level["q1"]["pt"])
        assert np.isnan(values[missing]).all()
    assert np.isnan(observables["parton/t_had/mass"].matched).mean() > 5 * np.isnan(observables["parton/t_had/mass"].reference).mean()
    dphi = observables["parton/t_had+t_lep/dphi"].truth
    assert ((dphi >= 0) & (dphi <= np.pi)).all()
    assert observables["parton/t_had/mass"].key
    assert not observables["parton/t_had/y"].key


def test_partial_parton_sets_drop_the_composites_they_cannot_build(tmp_path, make_samples_file):
    path = make_samples_file(particles=False)
    with h5py.File(path, "a") as file:
        del (
            file["PARTONS/neutrino"],
            file["SAMPLES/PARTONS/neutrino"],
            file["REFERENCE/PARTONS/neutrino"],
            file["MATCHED/PARTONS/neutrino"],
        )
    names = {o.name for o in compute_observables(read_samples_file(path))}
    assert "parton/t_had/mass" in names
    assert "parton/t_lep/mass" not in names
    assert "parton/ttbar/mass" not in names


def test_particle_level_multiplicities_and_leading_objects(make_samples_file):
    samples = read_samples_file(make_samples_file(n_events=40, n_draws=3, partons=False))
    observables = {o.name: o for o in compute_observables(samples)}
    jets = samples.particles.truth["jets"]
    np.testing.assert_array_equal(
        observables["particle/jets/multiplicity"].truth, jets.mask.sum(axis=1)
    )
    expected_b = (jets.mask & (jets.features["btag"] > 0.5)).sum(axis=1)
    np.testing.assert_array_equal(observables["particle/jets/b_multiplicity"].truth, expected_b)
    leading = np.where(jets.mask, jets.features["pt"], -np.inf).max(axis=1)
    np.testing.assert_allclose(observables["particle/jets1/pt"].truth, leading)
    assert observables["particle/jets1/pt"].draws.shape == (40, 3)
    np.testing.assert_allclose(observables["particle/jets2/pt"].truth, np.sort(jets.features["pt"] * jets.mask)[:, -2])
    assert observables["particle/jets2/pt"].key
    assert "particle/lepton2/pt" not in observables  # one slot: no second lepton
    every_jet = observables["particle/jets/pt"]
    assert not every_jet.per_event
    assert np.isfinite(every_jet.truth).sum() == jets.mask.sum()
    assert every_jet.draws.shape == (40 * 8, 3)
    assert not observables["particle/lepton/multiplicity"].key  # one slot: always one lepton
    assert ("particle/jets/multiplicity", "particle/jets1/pt") in correlation_pairs(
        set(observables)
    )


def test_the_second_object_is_the_second_in_pt_and_undefined_below_two():
    pt = np.array([[10.0, 50.0, 30.0, 99.0], [40.0, 0.0, 0.0, 0.0], [5.0, 7.0, 0.0, 0.0]])
    mask = np.array([[True, True, True, False], [True, False, False, False], [True, True, False, False]])
    second = _ranked_values(Collection({"pt": pt}, mask), "pt", rank=2)
    np.testing.assert_array_equal(second, [30.0, np.nan, 5.0])


def test_latex_names_render_as_mathtext():
    assert latex_name("t_had") == r"t_{\mathrm{had}}"
    assert latex_name("q1") == "q_{1}"
    assert latex_name("ttbar") == r"t\bar{t}"
    assert latex_name("t1_q1") == r"t_{1,\mathrm{q1}}"
    parser = mathtext.MathTextParser("agg")
    for name in ("t1_b", "t2_q2", "W_had", "b_lep", "jets", "lepton", "neutrino", "t_had_extra"):
        parser.parse(f"${latex_name(name)}$")  # raises on invalid mathtext


def test_file_without_truth_names_file_and_expected_groups(tmp_path):
    path = tmp_path / "no_truth.h5"
    with h5py.File(path, "w") as file:
        file["SAMPLES/PARTONS/b/pt"] = np.zeros((3, 2))
    with pytest.raises(ReportError, match=r"no_truth\.h5: no truth: expected a 'PARTONS'"):
        read_samples_file(path)


def test_missing_samples_group_names_the_key(make_samples_file):
    path = make_samples_file(particles=False)
    with h5py.File(path, "a") as file:
        del file["SAMPLES/PARTONS/q2"]
    with pytest.raises(
        ReportError, match=r"SAMPLES/PARTONS/q2/\w+: expected a dataset, found none"
    ):
        read_samples_file(path)


def test_wrong_shape_names_key_and_expected_shape(make_samples_file):
    path = make_samples_file(particles=False, n_events=20, n_draws=4)
    with h5py.File(path, "a") as file:
        del file["SAMPLES/PARTONS/q2/eta"]
        file["SAMPLES/PARTONS/q2/eta"] = np.zeros(20)
    with pytest.raises(
        ReportError, match=r"SAMPLES/PARTONS/q2/eta: expected shape \(E, n\), found \(20,\)"
    ):
        read_samples_file(path)


def test_non_hdf5_file_is_refused(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("not hdf5")
    with pytest.raises(ReportError, match="not a readable HDF5 file"):
        read_samples_file(path)


def test_w_decay_angle_is_the_daughter_against_the_w_flight_in_the_top_frame(make_samples_file):
    """A top decaying at rest to W + b, the W to q1 q2 at a known angle theta* to its flight, the whole event then
    boosted off the axis: ``parton/W_had/cos_theta_star`` returns cos theta* (a Lorentz-invariant definition, so
    the lab boost changes nothing)."""


    events = 200
    path = make_samples_file(n_events=events, n_draws=2, particles=False)
    cos_theta = np.random.default_rng(3).uniform(-1, 1, events)
    w_mass, top_mass, b_mass = 80.4, 173.0, 4.7
    w_momentum = np.sqrt((top_mass**2 - (w_mass + b_mass) ** 2) * (top_mass**2 - (w_mass - b_mass) ** 2)) / (2 * top_mass)
    flight, across = np.array([0.6, 0.0, 0.8]), np.array([0.8, 0.0, -0.6])  # the W's direction in the top frame, a normal
    quark = (w_mass / 2) * (cos_theta[:, None] * flight + np.sqrt(1 - cos_theta**2)[:, None] * across)  # in the W frame

    def momenta(px, pz, mass):
        return vector.array({"px": px, "py": np.zeros(events), "pz": pz, "M": np.full(events, mass)})

    w = momenta(np.full(events, w_momentum * flight[0]), np.full(events, w_momentum * flight[2]), w_mass)
    partons = {"q1": momenta(quark[:, 0], quark[:, 2], 0.0).boost_p4(w),
               "q2": momenta(-quark[:, 0], -quark[:, 2], 0.0).boost_p4(w),
               "b_had": momenta(-w.px, -w.pz, b_mass)}
    lab = vector.obj(px=120.0, py=-80.0, pz=300.0, M=top_mass)  # the top's momentum in the lab
    with h5py.File(path, "a") as file:
        for name, momentum in partons.items():
            boosted = momentum.boost_p4(lab)
            for key, values in (("pt", boosted.pt), ("eta", boosted.eta), ("phi", boosted.phi), ("mass", np.maximum(boosted.mass, 0))):
                file[f"PARTONS/{name}/{key}"][...] = values.astype(np.float32)
    observables = {o.name: o for o in compute_observables(read_samples_file(path))}
    np.testing.assert_allclose(observables["parton/W_had/cos_theta_star"].truth, cos_theta, atol=2e-3)
    assert observables["parton/W_had/cos_theta_star"].key
    assert observables["parton/W_lep/cos_theta_star"].draws.shape == (events, 2)
