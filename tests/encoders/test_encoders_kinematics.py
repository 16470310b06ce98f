"""Torch kinematics against the scikit-hep `vector` package."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import vector

from encoders import kinematics


@pytest.fixture
def momenta(rng: np.random.Generator) -> dict[str, np.ndarray]:
    size = 200
    return {
        "pt": rng.uniform(5.0, 300.0, size),
        "eta": rng.uniform(-3.0, 3.0, size),
        "phi": rng.uniform(-math.pi, math.pi, size),
        "mass": rng.uniform(0.0, 50.0, size),
    }


def _torch(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64)


def test_to_cartesian_matches_vector(momenta: dict[str, np.ndarray]) -> None:
    expected = vector.array(momenta)
    p4 = kinematics.to_cartesian(
        *(_torch(momenta[k]) for k in ("pt", "eta", "phi", "mass"))
    ).numpy()
    np.testing.assert_allclose(p4[:, 0], expected.E, rtol=1e-10)
    np.testing.assert_allclose(p4[:, 1], expected.px, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(p4[:, 2], expected.py, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(p4[:, 3], expected.pz, rtol=1e-10, atol=1e-9)


def test_to_cylindrical_round_trip_matches_vector(momenta: dict[str, np.ndarray]) -> None:
    expected = vector.array(momenta)
    p4 = torch.stack(
        [_torch(expected.E), _torch(expected.px), _torch(expected.py), _torch(expected.pz)], dim=-1
    )
    pt, eta, phi, mass = (x.numpy() for x in kinematics.to_cylindrical(p4))
    np.testing.assert_allclose(pt, expected.pt, rtol=1e-10)
    np.testing.assert_allclose(eta, expected.eta, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(phi, expected.phi, atol=1e-10)
    np.testing.assert_allclose(mass, expected.mass, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(
        kinematics.rapidity(p4).numpy(), expected.rapidity, rtol=1e-9, atol=1e-9
    )


def test_delta_r_and_pair_mass_match_vector(momenta: dict[str, np.ndarray]) -> None:
    a = vector.array(momenta)
    b = vector.array({k: np.roll(v, 1) for k, v in momenta.items()})
    delta = kinematics.delta_r(_torch(a.eta), _torch(a.phi), _torch(b.eta), _torch(b.phi)).numpy()
    np.testing.assert_allclose(delta, a.deltaR(b), rtol=1e-10)

    def p4(v: vector.VectorNumpy4D) -> torch.Tensor:
        return torch.stack([_torch(v.E), _torch(v.px), _torch(v.py), _torch(v.pz)], dim=-1)

    np.testing.assert_allclose(
        kinematics.pair_mass_squared(p4(a), p4(b)).numpy(), (a + b).mass2, rtol=1e-8
    )


def test_delta_phi_wraps_across_pi() -> None:
    phi_a = torch.tensor([3.1, -3.1, 0.5])
    phi_b = torch.tensor([-3.1, 3.1, 0.5 + 2 * math.pi])
    expected = torch.tensor([6.2 - 2 * math.pi, 2 * math.pi - 6.2, 0.0])
    torch.testing.assert_close(kinematics.delta_phi(phi_a, phi_b), expected, atol=1e-5, rtol=0)
    wrapped = kinematics.wrap_phi(torch.linspace(-20, 20, 101))
    assert bool(((wrapped >= -math.pi) & (wrapped < math.pi)).all())


def test_lorentz_boost_matches_vector(momenta: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    particles = vector.array(momenta)
    frames = vector.array({key: rng.permutation(values) for key, values in momenta.items()})
    expected = particles.boostCM_of_p4(frames)
    p4 = torch.stack([_torch(particles.E), _torch(particles.px), _torch(particles.py), _torch(particles.pz)], -1)
    frame_p4 = torch.stack([_torch(frames.E), _torch(frames.px), _torch(frames.py), _torch(frames.pz)], -1)
    boosted = kinematics.lorentz_boost(p4, frame_p4[:, 1:] / frame_p4[:, :1]).numpy()
    for column, name in enumerate(("E", "px", "py", "pz")):
        np.testing.assert_allclose(boosted[:, column], getattr(expected, name), rtol=1e-8, atol=1e-6)


def test_lorentz_boost_into_the_rest_frame_and_back(momenta: dict[str, np.ndarray]) -> None:
    p4 = kinematics.to_cartesian(*(_torch(momenta[k]) for k in ("pt", "eta", "phi", "mass")))
    velocity = p4[:, 1:] / p4[:, :1]
    at_rest = kinematics.lorentz_boost(p4, velocity)
    torch.testing.assert_close(at_rest[:, 1:], torch.zeros_like(at_rest[:, 1:]), atol=1e-7, rtol=0)
    torch.testing.assert_close(at_rest[:, 0], _torch(momenta["mass"]), atol=1e-7, rtol=1e-9)
    torch.testing.assert_close(kinematics.lorentz_boost(at_rest, -velocity), p4, atol=1e-7, rtol=1e-9)
