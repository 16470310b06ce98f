"""Numpy kinematics against the scikit-hep `vector` package."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.kinematics import (
    azimuth,
    delta_phi,
    delta_r,
    from_pt_eta_phi_m,
    invariant_mass,
    pseudorapidity,
    rapidity,
    sum_momenta,
    transverse_momentum,
)

vector = pytest.importorskip("vector")


def _random_objects(rng, size):
    return (
        rng.exponential(50.0, size) + 20.0,
        rng.normal(0, 1.5, size),
        rng.uniform(-np.pi, np.pi, size),
        rng.uniform(0, 20, size),
    )


def test_sums_and_their_kinematics_match_vector(rng):
    a, b, c = (_random_objects(rng, 500) for _ in range(3))
    ours = sum_momenta([from_pt_eta_phi_m(*x) for x in (a, b, c)])
    va, vb, vc = (
        vector.array({"pt": x[0], "eta": x[1], "phi": x[2], "mass": x[3]}) for x in (a, b, c)
    )
    theirs = va + vb + vc
    np.testing.assert_allclose(ours.px, theirs.px, rtol=1e-10)
    np.testing.assert_allclose(ours.energy, theirs.E, rtol=1e-10)
    np.testing.assert_allclose(invariant_mass(ours), theirs.mass, rtol=1e-8)
    np.testing.assert_allclose(transverse_momentum(ours), theirs.pt, rtol=1e-10)
    np.testing.assert_allclose(rapidity(ours), theirs.rapidity, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(pseudorapidity(ours), theirs.eta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(azimuth(ours), theirs.phi, atol=1e-10)


def test_angular_separations_match_vector_and_wrap(rng):
    a, b = _random_objects(rng, 500), _random_objects(rng, 500)
    va = vector.array({"pt": a[0], "eta": a[1], "phi": a[2], "mass": a[3]})
    vb = vector.array({"pt": b[0], "eta": b[1], "phi": b[2], "mass": b[3]})
    np.testing.assert_allclose(delta_phi(a[2], b[2]), va.deltaphi(vb), atol=1e-10)
    np.testing.assert_allclose(delta_r(a[1], a[2], b[1], b[2]), va.deltaR(vb), atol=1e-10)
    assert delta_phi(np.array(3.0), np.array(-3.0)) == pytest.approx(6.0 - 2 * np.pi)


def test_missing_objects_propagate_as_nan():
    p = from_pt_eta_phi_m(np.array([np.nan, 30.0]), np.zeros(2), np.zeros(2), np.zeros(2))
    mass = invariant_mass(sum_momenta([p, p]))
    assert np.isnan(mass[0])
    assert mass[1] == pytest.approx(0.0, abs=1e-6)
