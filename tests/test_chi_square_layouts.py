"""The chi-square baseline on any SPANet layout: the same toy all-hadronic ttbar events written in this
project's layout (``Momenta`` with sin_phi/cos_phi, ``Met``, daughters b q1 q2) and in SPANet's own
(``Source`` with pt, eta, phi, mass, btag, no global input, daughters q1 q2 b, its example event file)
give the same chi-square efficiency table, whatever the collection name, feature order, azimuth
encoding or normalisation flags; inputs that give no four-momenta skip the baseline with one line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import vector
import yaml

from recon.chi_square import W_MASS, check_inputs
from recon.efficiency import efficiency_table
from recon.errors import ReconError
from recon.event_topology import EventTopology
from unfold.cli import main
from unfold.data.hdf5_schema import read_spanet
from unfold.data.recon_data import jet_multiplicity
from unfold.tasks.evaluate_recon import chi_square_assignments, default_jet_bins

PROJECT = Path(__file__).resolve().parents[1]
SLOTS = 10
# SPANet's event_files/full_hadronic_ttbar.yaml (github.com/Alexanders101/SPANet), comments dropped.
SPANET_EVENT_FILE = """
INPUTS:
  SEQUENTIAL:
    Source:
      mass: log_normalize
      pt: log_normalize
      eta: normalize
      phi: normalize
      btag: none
  GLOBAL:
EVENT:
  t1: [q1, q2, b]
  t2: [q1, q2, b]
PERMUTATIONS:
    EVENT:
      - [ t1, t2 ]
    t1:
      - [ q1, q2 ]
    t2:
      - [ q1, q2 ]
REGRESSIONS:
CLASSIFICATIONS:
"""


def _components(v) -> np.ndarray:
    return np.stack([v.E, v.px, v.py, v.pz], axis=-1)


def _two_body(parent: np.ndarray, m1: float, m2: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Isotropic decay of (E, 4) parents (E, px, py, pz) into daughters of masses m1, m2."""
    frame = vector.array({"E": parent[:, 0], "px": parent[:, 1], "py": parent[:, 2], "pz": parent[:, 3]})
    mass, n = frame.mass, len(parent)
    p_star = np.sqrt((mass**2 - (m1 + m2) ** 2) * (mass**2 - (m1 - m2) ** 2)) / (2 * mass)
    cos_theta, phi = rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)
    sin_theta = np.sqrt(1 - cos_theta**2)
    return [
        _components(vector.array({
            "px": sign * p_star * sin_theta * np.cos(phi), "py": sign * p_star * sin_theta * np.sin(phi),
            "pz": sign * p_star * cos_theta, "mass": np.full(n, m),
        }).boost_p4(frame))
        for sign, m in ((1.0, m1), (-1.0, m2))
    ]


def toy_allhadronic(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n all-hadronic ttbar events at detector level, hardest first in ``SLOTS`` slots.

    Tops (pt 100-400 GeV, Breit-Wigner mass of PDG width 1.4 GeV) decay to b W, W to q q'; each
    quark becomes a jet whose four-momentum is scaled by a 10 % Gaussian response, plus up to three
    ISR jets (pt 15 GeV + exponential of mean 10 GeV) that often outrank a soft quark, so about half
    the events keep all six quarks among the six leading jets. b jets are tagged with probability
    0.75, others 0.03.

    Returns:
        pt, eta, phi, mass, btag, MASK (n, SLOTS); met, met_phi (n,); t1, t2 (n, 3) slots of (b, q1, q2).
    """
    quarks = []
    for _ in range(2):
        top = vector.array({
            "pt": rng.uniform(100, 400, n), "eta": rng.uniform(-2, 2, n), "phi": rng.uniform(-np.pi, np.pi, n),
            "mass": 172.57 + 0.7 * np.clip(rng.standard_cauchy(n), -20, 20),
        })
        b, w = _two_body(_components(top), 4.8, W_MASS, rng)
        quarks += [b, *_two_body(w, 0.33, 0.33, rng)]
    response = np.clip(rng.normal(1.0, 0.1, (n, 6, 1)), 0.6, None)
    isr = vector.array({
        "pt": 15 + rng.exponential(10, (n, 3)), "eta": rng.uniform(-2.5, 2.5, (n, 3)),
        "phi": rng.uniform(-np.pi, np.pi, (n, 3)), "mass": rng.uniform(2, 10, (n, 3)),
    })
    jets = np.concatenate([np.stack(quarks, axis=1) * response, _components(isr)], axis=1)
    real = np.concatenate([np.ones((n, 6), bool), rng.random((n, 3)) < [0.8, 0.4, 0.2]], axis=1)
    jets = vector.array({"E": jets[..., 0], "px": jets[..., 1], "py": jets[..., 2], "pz": jets[..., 3]})
    order = np.argsort(np.where(real, -jets.pt, np.inf), axis=1, kind="stable")
    slot_of = np.argsort(order, axis=1)  # where each object lands
    is_b = np.zeros((n, 9), bool)
    is_b[:, [0, 3]] = True
    tagged = rng.random((n, 9)) < np.where(is_b, 0.75, 0.03)
    pad = ((0, 0), (0, SLOTS - 9))
    out = {
        name: np.pad(np.where(real, value, 0.0)[np.arange(n)[:, None], order], pad).astype(np.float32)
        for name, value in (("pt", jets.pt), ("eta", jets.eta), ("phi", jets.phi), ("mass", np.maximum(jets.mass, 0)),
                            ("btag", tagged))
    }
    out["MASK"] = np.pad(real[np.arange(n)[:, None], order], pad)
    met = vector.array({"px": -jets.px[:, :6].sum(1), "py": -jets.py[:, :6].sum(1)})
    out["met"], out["met_phi"] = met.rho.astype(np.float32), met.phi.astype(np.float32)
    out["t1"], out["t2"] = slot_of[:, 0:3], slot_of[:, 3:6]
    return out


def _write(path: Path, inputs: dict[str, dict[str, np.ndarray]], targets: dict[str, dict[str, np.ndarray]]) -> Path:
    with h5py.File(path, "w") as file:
        for source, features in inputs.items():
            for name, values in features.items():
                file[f"INPUTS/{source}/{name}"] = values
        for resonance, daughters in targets.items():
            for name, values in daughters.items():
                file[f"TARGETS/{resonance}/{name}"] = values
    return path


def project_layout(events: dict[str, np.ndarray], path: Path) -> Path:
    """The events as this project's generator writes them (configs/events/ttbar_allhadronic.yaml)."""
    zeros = np.zeros_like(events["pt"])
    momenta = {"pt": events["pt"], "eta": events["eta"], "sin_phi": np.sin(events["phi"]), "cos_phi": np.cos(events["phi"]),
               "mass": events["mass"], "btag": events["btag"], "qtag": zeros, "etag": zeros, "utag": zeros,
               "MASK": events["MASK"]}
    met = {"met": events["met"], "sin_phi": np.sin(events["met_phi"]), "cos_phi": np.cos(events["met_phi"])}
    targets = {t: dict(zip(("b", "q1", "q2"), events[t].T, strict=True)) for t in ("t1", "t2")}
    return _write(path, {"Momenta": momenta, "Met": met}, targets)


def spanet_layout(events: dict[str, np.ndarray], path: Path, source: str = "Source", azimuth: str = "phi") -> Path:
    """The events as SPANet's all-hadronic example stores them: one collection, daughters q1 q2 b."""
    features = {"pt": events["pt"], "eta": events["eta"], "mass": events["mass"], "btag": events["btag"],
                "MASK": events["MASK"]}
    if azimuth == "phi":
        features["phi"] = events["phi"]
    else:
        features["sin_phi"], features["cos_phi"] = np.sin(events["phi"]), np.cos(events["phi"])
    targets = {t: dict(zip(("b", "q1", "q2"), events[t].T, strict=True)) for t in ("t1", "t2")}
    return _write(path, {source: features}, targets)


def spanet_event_file(path: Path, *, source: str = "Source", features: dict[str, str] | None = None) -> Path:
    """SPANet's all-hadronic event file, with another collection name or features if given."""
    raw = yaml.safe_load(SPANET_EVENT_FILE)
    declared = raw["INPUTS"]["SEQUENTIAL"].pop("Source")
    raw["INPUTS"]["SEQUENTIAL"][source] = features if features is not None else declared
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def toy_events() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(20261201)
    return toy_allhadronic(1500, rng), toy_allhadronic(600, rng)


@pytest.fixture(scope="module")
def project_table(toy_events, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("project")
    train, test = (project_layout(events, folder / f"{name}.h5") for name, events in zip(("train", "test"), toy_events, strict=True))
    return _chi_square_table(train, test, PROJECT / "configs" / "events" / "ttbar_allhadronic.yaml")


def _chi_square_table(train: Path, test: Path, event_file: Path) -> dict:
    """The chi-square efficiency table ``unfold evaluate recon`` shows, fitted on ``train``."""
    topology = EventTopology.from_yaml(event_file)
    data = read_spanet(test, topology, require_targets=True)
    assigned = chi_square_assignments(train, data, topology)
    return efficiency_table(assigned, data.targets, topology, jet_multiplicity(data, topology), default_jet_bins(topology))


def test_the_toy_is_a_real_test_of_the_baseline(project_table):
    """Far from chance (1 in 90 for the six leading jets and a random pairing), far from perfect
    (the tuned baseline tries the 6, 7 or 8 leading jets, whichever does best on the training toy)."""
    assert 0.25 < project_table["complete"]["event"] < 0.8


SPANET_FLAGS = {"mass": "log_normalize", "pt": "log_normalize", "eta": "normalize", "phi": "normalize", "btag": "none"}
VARIANTS = {
    "spanet-example": {},
    "no-normalisation-flags": {"features": dict.fromkeys(SPANET_FLAGS, "none")},
    "every-feature-log-normalised": {"features": {**dict.fromkeys(SPANET_FLAGS, "log_normalize"), "eta": "normalize",
                                                  "phi": "normalize"}},
    "other-collection-name-and-order": {"source": "Jets", "features": {"btag": "none", "phi": "normalize", "eta": "normalize",
                                                                       "pt": "log_normalize", "mass": "log_normalize"}},
    "sin-cos-azimuth": {"azimuth": "sin_cos", "features": {"pt": "log_normalize", "eta": "normalize", "sin_phi": "normalize",
                                                          "cos_phi": "normalize", "mass": "log_normalize", "btag": "none"}},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_spanet_layouts_give_the_chi_square_of_the_project_layout(variant, toy_events, project_table, tmp_path):
    options = VARIANTS[variant]
    source = options.get("source", "Source")
    train, test = (
        spanet_layout(events, tmp_path / f"{name}.h5", source=source, azimuth=options.get("azimuth", "phi"))
        for name, events in zip(("train", "test"), toy_events, strict=True)
    )
    event_file = spanet_event_file(tmp_path / "event.yaml", source=source, features=options.get("features"))
    table = _chi_square_table(train, test, event_file)
    for category in ("all", "complete"):
        assert table[category]["fraction"] == pytest.approx(project_table[category]["fraction"])
        assert table[category]["event"] == pytest.approx(project_table[category]["event"], abs=1e-9)
        for top in ("t1", "t2"):
            assert table[category][top] == pytest.approx(project_table[category][top], abs=1e-9)


def test_inputs_without_four_momenta_or_met_are_refused_in_one_line(tmp_path, event_files):
    no_phi = spanet_event_file(tmp_path / "no_phi.yaml", features={"pt": "log_normalize", "eta": "normalize", "btag": "none"})
    with pytest.raises(ReconError, match=r"^\S+no_phi.yaml: no sequential input .* needs four-momenta$"):
        check_inputs(EventTopology.from_yaml(no_phi))
    semileptonic = yaml.safe_load(Path(event_files["ttbar-semileptonic"]).read_text())
    semileptonic["INPUTS"].pop("GLOBAL")
    with pytest.raises(ReconError, match="no global input declares the MET"):
        check_inputs(EventTopology.from_dict(semileptonic, origin="no_met.yaml"))
    assert check_inputs(EventTopology.from_yaml(spanet_event_file(tmp_path / "spanet.yaml"))) == "allhadronic"


@pytest.mark.parametrize("features", [None, {"pt": "log_normalize", "eta": "normalize", "mass": "log_normalize", "btag": "none"}],
                         ids=["spanet-example", "no-azimuth"])
def test_train_recon_test_on_a_spanet_file_prints_both_rows_or_says_why_not(features, toy_events, tmp_path, capsys, one_thread):
    """`unfold train recon --test` on SPANet's layout: model and chi-square side by side, or, where the
    inputs give no four-momenta, the model alone and one line saying the baseline was skipped."""
    train, test = (spanet_layout(events, tmp_path / f"{name}.h5") for name, events in zip(("train", "test"), toy_events, strict=True))
    event_file = spanet_event_file(tmp_path / "event.yaml", features=features)
    code = main(["train", "recon", "--data", str(train), "--event-file", str(event_file), "--test", str(test),
                 "--out", str(tmp_path / "runs"), "--epochs", "1", "--batch-size", "256", "--accelerator", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = captured.out.split("efficiency on", 1)[1]
    if features is None:
        assert "chi-square" in table
        assert "model" in table
        assert "skipped" not in table
    else:
        assert "chi-square" not in table.split("note:")[0]
        assert "model" in table
        (note,) = [line for line in table.splitlines() if line.startswith("note:")]
        assert "chi-square baseline skipped" in note
        assert "four-momenta" in note
