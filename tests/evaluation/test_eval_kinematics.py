"""Four-vectors through scikit-hep `vector`: our conventions on top of it (negative and massless
masses, missing objects) and the azimuthal helpers."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.kinematics import delta_phi, delta_r, from_pt_eta_phi_m, invariant_mass


def test_two_back_to_back_massless_objects_have_twice_their_energy_as_mass():
    p = from_pt_eta_phi_m(np.array([40.0]), np.array([0.0]), np.array([0.0]), np.array([0.0]))
    q = from_pt_eta_phi_m(np.array([40.0]), np.array([0.0]), np.array([np.pi]), np.array([0.0]))
    assert invariant_mass(p + q)[0] == pytest.approx(80.0)


def test_collinear_massless_sums_are_massless_not_nan(rng):
    pt = rng.exponential(50.0, 200) + 20.0
    eta, phi = rng.normal(0, 2, 200), rng.uniform(-np.pi, np.pi, 200)
    p = from_pt_eta_phi_m(pt, eta, phi, np.zeros(200))
    mass = invariant_mass(p + from_pt_eta_phi_m(3 * pt, eta, phi, np.zeros(200)))
    assert np.isfinite(mass).all()
    assert (mass >= 0).all()
    assert mass.max() < 1e-3


def test_negative_smeared_masses_count_as_zero():
    negative = from_pt_eta_phi_m(np.array([30.0]), np.array([1.0]), np.array([0.5]), np.array([-4.0]))
    massless = from_pt_eta_phi_m(np.array([30.0]), np.array([1.0]), np.array([0.5]), np.array([0.0]))
    assert negative.E[0] == pytest.approx(massless.E[0])


def test_missing_objects_propagate_as_nan():
    p = from_pt_eta_phi_m(np.array([np.nan, 30.0]), np.zeros(2), np.zeros(2), np.zeros(2))
    mass = invariant_mass(p + p)
    assert np.isnan(mass[0])
    assert mass[1] == pytest.approx(0.0)


def test_angular_separations_wrap(rng):
    assert delta_phi(np.array(3.0), np.array(-3.0)) == pytest.approx(6.0 - 2 * np.pi)
    a, b = rng.uniform(-np.pi, np.pi, 500), rng.uniform(-np.pi, np.pi, 500)
    assert (np.abs(delta_phi(a, b)) <= np.pi).all()
    assert delta_r(np.array(0.0), np.array(3.0), np.array(0.0), np.array(-3.0)) == pytest.approx(2 * np.pi - 6.0)
