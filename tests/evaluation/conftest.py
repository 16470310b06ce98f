"""Synthetic samples files in the schema `unfold sample` writes, for the report's tests.

Draws are calibrated by construction: per event a posterior centre is drawn around the truth,
and the n draws scatter around that centre with the same width, so the truth is exchangeable
with the draws.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

SEMILEPTONIC_COMPOSITES = {
    "W_had": ["q1", "q2"],
    "t_had": ["b_had", "q1", "q2"],
    "W_lep": ["lepton", "neutrino"],
    "t_lep": ["b_lep", "lepton", "neutrino"],
    "ttbar": ["b_had", "q1", "q2", "b_lep", "lepton", "neutrino"],
}
PARTON_MASSES = {"b_had": 4.7, "q1": 0.3, "q2": 0.3, "b_lep": 4.7, "lepton": 0.0, "neutrino": 0.0}


def _posterior(
    truth: np.ndarray, width: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """(E, n) draws whose posterior (centre +- width) contains the truth as one more draw."""
    centre = truth + width * rng.normal(size=truth.shape)
    return centre[:, None] + width[..., None] * rng.normal(size=(*truth.shape, n))


def write_samples_file(
    path: Path,
    *,
    n_events: int = 300,
    n_draws: int = 8,
    seed: int = 7,
    partons: bool = True,
    particles: bool = True,
    reference: bool = True,
) -> Path:
    """Write a semi-leptonic ttbar samples file with the requested levels."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as file:
        file.attrs["composites"] = json.dumps(SEMILEPTONIC_COMPOSITES)
        file.attrs.update(
            process="ttbar-semileptonic", seed=seed, model="synthetic", sampler="ddim", steps=20,
            sqrt_s_gev=13000.0,
        )
        if partons and reference:
            file.attrs.update(
                reference="chi-square (synthetic)",
                reference_events=int(0.95 * n_events),
                reference_unassigned=json.dumps(dict.fromkeys(PARTON_MASSES, n_events // 100)),
                matched_fraction=json.dumps(dict.fromkeys(PARTON_MASSES, 0.8)),
            )
        if partons:
            for parton, mass in PARTON_MASSES.items():
                log_pt = rng.normal(4.0, 0.5, n_events)
                eta = rng.normal(0.0, 1.2, n_events)
                phi = rng.uniform(-np.pi, np.pi, n_events)
                truth = {
                    "pt": np.exp(log_pt),
                    "eta": eta,
                    "phi": phi,
                    "mass": np.full(n_events, mass),
                }
                draws = {
                    "pt": np.exp(_posterior(log_pt, np.full(n_events, 0.15), n_draws, rng)),
                    "eta": _posterior(eta, np.full(n_events, 0.1), n_draws, rng),
                    "phi": (_posterior(phi, np.full(n_events, 0.05), n_draws, rng) + np.pi)
                    % (2 * np.pi)
                    - np.pi,
                    "mass": np.full((n_events, n_draws), mass),
                }
                smeared = {
                    "pt": truth["pt"] * rng.normal(1.0, 0.2, n_events),
                    "eta": eta + rng.normal(0, 0.05, n_events),
                    "phi": phi,
                    "mass": np.full(n_events, mass),
                }
                # Reconstruction leaves 1 % of partons unassigned; 20 % have no truth-matched jet.
                unassigned = rng.random(n_events) < 0.01
                unmatched = rng.random(n_events) < 0.2
                for feature in truth:
                    file[f"PARTONS/{parton}/{feature}"] = truth[feature].astype(np.float32)
                    file[f"SAMPLES/PARTONS/{parton}/{feature}"] = draws[feature].astype(np.float32)
                    if reference:
                        for group, missing in (("REFERENCE", unassigned), ("MATCHED", unmatched)):
                            file[f"{group}/PARTONS/{parton}/{feature}"] = np.where(
                                missing, np.nan, smeared[feature]
                            ).astype(np.float32)
                file[f"PARTONS/{parton}/pdgid"] = np.full(n_events, 5)
        if particles:
            _write_particles(file, rng, n_events, n_draws, reference)
    return path


def _jets(rng: np.random.Generator, shape: tuple[int, ...], n_slots: int) -> dict[str, np.ndarray]:
    multiplicity = rng.integers(4, n_slots + 1, size=shape)
    mask = np.arange(n_slots) < multiplicity[..., None]
    pt = np.sort(rng.exponential(40.0, (*shape, n_slots)) + 25.0, axis=-1)[..., ::-1]
    return {
        "MASK": mask,
        "pt": np.where(mask, pt, 0.0),
        "eta": np.where(mask, rng.normal(0, 1.5, (*shape, n_slots)), 0.0),
        "phi": np.where(mask, rng.uniform(-np.pi, np.pi, (*shape, n_slots)), 0.0),
        "mass": np.where(mask, rng.uniform(2, 15, (*shape, n_slots)), 0.0),
        "btag": np.where(mask, (rng.random((*shape, n_slots)) < 0.3).astype(float), 0.0),
    }


def _write_particles(
    file: h5py.File, rng: np.random.Generator, n_events: int, n_draws: int, reference: bool
) -> None:
    prefixes = {"PARTICLES": (n_events,), "SAMPLES/PARTICLES": (n_events, n_draws)}
    if reference:
        prefixes["REFERENCE/PARTICLES"] = (n_events,)
    for prefix, shape in prefixes.items():
        for feature, values in _jets(rng, shape, 8).items():
            file[f"{prefix}/jets/{feature}"] = values
        file[f"{prefix}/lepton/MASK"] = np.ones((*shape, 1), dtype=bool)
        file[f"{prefix}/lepton/pt"] = rng.exponential(40.0, (*shape, 1)) + 25.0
        file[f"{prefix}/lepton/eta"] = rng.normal(0, 1.2, (*shape, 1))
        file[f"{prefix}/lepton/phi"] = rng.uniform(-np.pi, np.pi, (*shape, 1))
        file[f"{prefix}/lepton/mass"] = np.zeros((*shape, 1))
        file[f"{prefix}/lepton/pdgid"] = np.full((*shape, 1), 11)
        file[f"{prefix}/met/met"] = rng.exponential(50.0, shape)
        file[f"{prefix}/met/phi"] = rng.uniform(-np.pi, np.pi, shape)


@pytest.fixture
def make_samples_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_samples_file("name.h5", **options)`` writes into the test's tmp folder."""

    def make(name: str = "samples.h5", **options: object) -> Path:
        return write_samples_file(tmp_path / name, **options)

    return make


@pytest.fixture(scope="session")
def samples_writer() -> Callable[..., Path]:
    """:func:`write_samples_file` for fixtures wider than one test."""
    return write_samples_file


def write_predictions_file(path: Path, *, n_events: int = 200, seed: int = 3) -> Path:
    """A semi-leptonic recon predictions file: about 60 % of the hadronic tops right (q1/q2
    swapped in some), the rest wrong, with recon's per-event verdict in ``correct``."""
    rng = np.random.default_rng(seed)
    n_jets = 7
    mask = np.ones((n_events, n_jets), dtype=bool)
    truth_ht = np.tile([1, 2, 3], (n_events, 1))
    truth_lt = np.tile([4, 0], (n_events, 1))
    predicted_ht = truth_ht.copy()
    swap = rng.random(n_events) < 0.3
    predicted_ht[swap] = [1, 3, 2]
    wrong = rng.random(n_events) < 0.4
    predicted_ht[wrong] = [5, 6, 2]
    with h5py.File(path, "w") as file:
        # recon's verdict as `unfold predict recon` stores it: swapped qs are still correct.
        for name, daughters, predicted, truth, correct in (
            ("ht", ("b", "q1", "q2"), predicted_ht, truth_ht, ~wrong),
            ("lt", ("b", "l"), truth_lt, truth_lt, np.ones(n_events, dtype=bool)),
        ):
            for k, daughter in enumerate(daughters):
                file[f"PREDICTIONS/{name}/{daughter}"] = predicted[:, k].astype(np.int64)
                file[f"TARGETS/{name}/{daughter}"] = truth[:, k].astype(np.int64)
            file[f"PREDICTIONS/{name}/correct"] = correct
            for score in (
                "assignment_probability",
                "detection_probability",
                "marginal_probability",
                "entropy",
            ):
                file[f"PREDICTIONS/{name}/{score}"] = rng.random(n_events)
        phi = rng.uniform(-np.pi, np.pi, (n_events, n_jets))
        file["INPUTS/Momenta/pt"] = rng.exponential(50.0, (n_events, n_jets)) + 30.0
        file["INPUTS/Momenta/eta"] = rng.normal(0, 1.0, (n_events, n_jets))
        file["INPUTS/Momenta/sin_phi"] = np.sin(phi)
        file["INPUTS/Momenta/cos_phi"] = np.cos(phi)
        file["INPUTS/Momenta/mass"] = rng.uniform(5, 15, (n_events, n_jets))
        file["INPUTS/Momenta/MASK"] = mask
        # The layout of recon.efficiency.efficiency_table, per source (model, baseline).
        file.attrs["efficiency"] = json.dumps(
            {
                "model": {
                    "all": {
                        "event": 0.61,
                        "fraction": 0.9,
                        "ht": 0.7,
                        "lt": 0.8,
                        "by_jets": {
                            "==4": {"event": 0.64, "fraction": 0.3, "ht": 0.72, "lt": None}
                        },
                    },
                    "complete": {
                        "event": 0.55,
                        "fraction": 0.5,
                        "ht": 0.66,
                        "lt": 0.7,
                        "by_jets": {},
                    },
                },
                "baseline": {
                    "all": {"event": 0.41, "fraction": 0.9, "ht": 0.5, "lt": 0.6, "by_jets": {}}
                },
            }
        )
        file.attrs["event_file_yaml"] = "EVENT:\n  ht: [b, q1, q2]\n  lt: [b, l]\n"
    return path


@pytest.fixture(scope="session")
def predictions_writer() -> Callable[..., Path]:
    """:func:`write_predictions_file` for the tests."""
    return write_predictions_file
