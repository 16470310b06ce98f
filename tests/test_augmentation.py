"""Detector-symmetry augmentation of recon training batches: a common azimuthal rotation and an eta
reflection per event keep every invariant (pT, mass, pair masses, tags, assignment targets) and move
every direction (object and MET azimuths, regressed neutrino components) together; an event file
that cannot take one is refused in one line before training."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from encoders import EncoderInputs
from encoders.kinematics import invariant_mass, to_cartesian, wrap_phi
from recon.assignment_loss import AssignmentTargets
from recon.event_topology import EventTopology
from unfold.data.augmentation import DetectorSymmetries, allowed_augmentations
from unfold.data.recon_data import AssignmentBatch
from unfold.errors import UnfoldError
from unfold.tasks.train_recon import ReconConfig, train_recon
from unfold.training.recon_module import ReconModule
from unfold.training.trainer import TrainerOptions

EVENTS, SLOTS = 2000, 8


def _batch(topology: EventTopology, generator: torch.Generator) -> AssignmentBatch:
    """Random raw inputs (real objects first, then padding of odd values) and targets in ``topology``'s layout."""
    (source,) = topology.sequential
    real = torch.arange(SLOTS) < torch.randint(4, SLOTS + 1, (EVENTS, 1), generator=generator)
    kinematics = {
        "pt": 20 + 100 * torch.rand(EVENTS, SLOTS, generator=generator),
        "eta": 5 * torch.rand(EVENTS, SLOTS, generator=generator) - 2.5,
        "phi": 2 * math.pi * torch.rand(EVENTS, SLOTS, generator=generator) - math.pi,
        "mass": 15 * torch.rand(EVENTS, SLOTS, generator=generator),
    }
    kinematics["sin_phi"], kinematics["cos_phi"] = torch.sin(kinematics["phi"]), torch.cos(kinematics["phi"])
    columns = [kinematics.get(f, (torch.rand(EVENTS, SLOTS, generator=generator) < 0.3).float()) for f in source.features]
    features = torch.where(real[..., None], torch.stack(columns, dim=-1), 7.0)  # padding: not a direction
    globals_ = []
    for met_source in topology.globals:
        met_phi = 2 * math.pi * torch.rand(EVENTS, generator=generator) - math.pi
        met = {"met": 50 * torch.rand(EVENTS, generator=generator), "sin_phi": torch.sin(met_phi),
               "cos_phi": torch.cos(met_phi), "phi": met_phi}
        globals_.append(torch.stack([met[f] for f in met_source.features], dim=-1))
    four = to_cartesian(kinematics["pt"], kinematics["eta"], kinematics["phi"], kinematics["mass"])
    regressions = torch.randn(EVENTS, len(topology.regressions), generator=generator) * 50
    targets = AssignmentTargets(
        indices=tuple(torch.randint(-1, SLOTS, (EVENTS, r.order), generator=generator) for r in topology.resonances),
        regressions=regressions,
        event_weights=torch.rand(EVENTS, generator=generator),
    )
    return AssignmentBatch(EncoderInputs((features,), (real,), tuple(globals_), four), targets)


def _column(batch: AssignmentBatch, topology: EventTopology, feature: str) -> torch.Tensor:
    return batch.inputs.sequential_features[0][..., topology.sequential[0].features.index(feature)]


def _assert_pair_masses_kept(before: torch.Tensor, after: torch.Tensor, real: torch.Tensor) -> None:
    """m^2 of every pair of real objects (float32 inputs, compared in float64) equal to float32
    rounding of the pair's energy squared; energies equal exactly, so the momenta were only turned."""
    torch.testing.assert_close(after[..., 0], before[..., 0], rtol=0, atol=0)
    pair = real[:, :, None] & real[:, None, :]
    sums = [(p4.double()[:, :, None, :] + p4.double()[:, None, :, :])[pair] for p4 in (before, after)]
    m2 = [s[:, 0] ** 2 - (s[:, 1:] ** 2).sum(-1) for s in sums]
    assert torch.all((m2[1] - m2[0]).abs() <= 1e-5 * sums[0][:, 0] ** 2)
    assert float(invariant_mass(sums[0]).median()) > 20.0  # pairs of jets, not a degenerate test


@pytest.fixture
def semileptonic(event_files) -> EventTopology:
    """This project's layout: sin_phi/cos_phi, a MET source, neutrino px, py, pz, eta regressed."""
    return EventTopology.from_yaml(event_files["ttbar-semileptonic"])


def test_rotation_and_reflection_keep_invariants_and_move_directions_together(semileptonic):
    generator = torch.Generator().manual_seed(5)
    batch = _batch(semileptonic, generator)
    augmented = DetectorSymmetries(semileptonic, ["rotate_phi", "reflect_eta"])(batch, torch.Generator().manual_seed(6))
    real = batch.inputs.sequential_masks[0]
    # every invariant feature is untouched, bit for bit, and so are padding and the assignment targets
    for feature in ("pt", "mass", "btag", "qtag", "etag", "utag"):
        torch.testing.assert_close(_column(augmented, semileptonic, feature), _column(batch, semileptonic, feature), rtol=0, atol=0)
    torch.testing.assert_close(augmented.inputs.sequential_features[0][~real], batch.inputs.sequential_features[0][~real], rtol=0, atol=0)
    for before, after in zip(batch.targets.indices, augmented.targets.indices, strict=True):
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(augmented.targets.event_weights, batch.targets.event_weights, rtol=0, atol=0)
    # one common azimuthal shift per event, for every object and the MET
    phi = {
        label: torch.atan2(_column(b, semileptonic, "sin_phi"), _column(b, semileptonic, "cos_phi"))
        for label, b in (("before", batch), ("after", augmented))
    }
    shift = wrap_phi(phi["after"] - phi["before"])
    common = shift[:, :1]
    assert torch.allclose(torch.where(real, wrap_phi(shift - common), 0.0), torch.zeros(()), atol=1e-5)
    (met_before,), (met_after,) = batch.inputs.global_features, augmented.inputs.global_features
    met_shift = wrap_phi(torch.atan2(met_after[:, 1], met_after[:, 2]) - torch.atan2(met_before[:, 1], met_before[:, 2]))
    assert torch.allclose(wrap_phi(met_shift - common[:, 0]), torch.zeros(()), atol=1e-5)
    torch.testing.assert_close(met_after[:, 0], met_before[:, 0], rtol=0, atol=0)
    # the shifts cover the circle: a uniform angle has mean cos and sin near 0
    assert abs(float(torch.cos(common).mean())) < 0.1
    assert abs(float(torch.sin(common).mean())) < 0.1
    # eta flips sign with one common sign per event, about half of the events
    sign = torch.sign(_column(augmented, semileptonic, "eta") * _column(batch, semileptonic, "eta"))
    flipped = sign[:, 0] < 0
    assert torch.all(torch.where(real, sign == sign[:, :1], True))
    assert 0.45 < float(flipped.float().mean()) < 0.55
    # the four-momenta follow, so every pair of real objects keeps its invariant mass
    p4_before, p4_after = batch.inputs.four_momenta, augmented.inputs.four_momenta
    _assert_pair_masses_kept(p4_before, p4_after, real)
    recomputed = to_cartesian(_column(augmented, semileptonic, "pt"), _column(augmented, semileptonic, "eta"),
                              phi["after"], _column(augmented, semileptonic, "mass"))
    torch.testing.assert_close(p4_after[real], recomputed[real], rtol=1e-4, atol=1e-3)
    # the regressed neutrino turns with the event: px, py by the same angle, pz and eta by the same sign
    names = list(semileptonic.regressions)
    before, after = batch.targets.regressions, augmented.targets.regressions
    px, py, pz, eta = (names.index(f"neutrino_{c}") for c in ("px", "py", "pz", "eta"))
    nu_shift = wrap_phi(torch.atan2(after[:, py], after[:, px]) - torch.atan2(before[:, py], before[:, px]))
    assert torch.allclose(wrap_phi(nu_shift - common[:, 0]), torch.zeros(()), atol=1e-4)
    torch.testing.assert_close(torch.hypot(after[:, px], after[:, py]), torch.hypot(before[:, px], before[:, py]))
    for c in (pz, eta):
        torch.testing.assert_close(after[:, c], torch.where(flipped, -before[:, c], before[:, c]), rtol=0, atol=0)
    mass = names.index("log_invariant_mass")
    torch.testing.assert_close(after[:, mass], before[:, mass], rtol=0, atol=0)


SPANET_ALLHADRONIC = {
    "INPUTS": {"SEQUENTIAL": {"Source": {"mass": "log_normalize", "pt": "log_normalize", "eta": "normalize",
                                         "phi": "normalize", "btag": "none"}}},
    "EVENT": {"t1": ["q1", "q2", "b"], "t2": ["q1", "q2", "b"]},
    "PERMUTATIONS": {"EVENT": [["t1", "t2"]], "t1": [["q1", "q2"]], "t2": [["q1", "q2"]]},
}


def _spanet(features: dict[str, str] | None = None, origin: str = "spanet.yaml") -> EventTopology:
    raw = yaml.safe_load(yaml.safe_dump(SPANET_ALLHADRONIC))
    if features is not None:
        raw["INPUTS"]["SEQUENTIAL"]["Source"] = features
    return EventTopology.from_dict(raw, origin=origin)


def test_a_declared_phi_is_shifted_by_one_angle_mod_two_pi():
    """SPANet's all-hadronic layout (phi itself, no MET): phi + a wrapped into [-pi, pi)."""
    topology = _spanet()
    batch = _batch(topology, torch.Generator().manual_seed(7))
    augmented = DetectorSymmetries(topology, ["rotate_phi"])(batch, torch.Generator().manual_seed(8))
    real = batch.inputs.sequential_masks[0]
    before, after = _column(batch, topology, "phi"), _column(augmented, topology, "phi")
    assert torch.all((after[real] >= -math.pi) & (after[real] < math.pi))
    shift = torch.remainder(after - before, 2 * math.pi)
    deviation = wrap_phi(shift - shift[:, :1])
    assert torch.all(torch.where(real, deviation.abs() < 1e-5, True))
    torch.testing.assert_close(_column(augmented, topology, "eta"), _column(batch, topology, "eta"), rtol=0, atol=0)
    _assert_pair_masses_kept(batch.inputs.four_momenta, augmented.inputs.four_momenta, real)


@pytest.mark.parametrize(
    ("augmentation", "features", "message"),
    [
        ("rotate_phi", {"pt": "log_normalize", "eta": "normalize", "mass": "log_normalize"}, "nothing to rotate"),
        ("reflect_eta", {"pt": "log_normalize", "phi": "normalize", "mass": "log_normalize"}, "nothing to reflect"),
        ("reflect_eta", {"pt": "log_normalize", "eta": "log_normalize", "phi": "normalize"}, "Source/eta is declared log_normalize"),
        ("rotate_phi", {"pt": "none", "eta": "none", "sin_phi": "none"}, "sin_phi is declared without cos_phi"),
    ],
    ids=["no-phi", "no-eta", "log-normalised-eta", "half-pair"],
)
def test_an_event_file_that_cannot_take_an_augmentation_is_refused_in_one_line(augmentation, features, message):
    with pytest.raises(UnfoldError, match=message) as refused:
        DetectorSymmetries(_spanet(features), [augmentation])
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith("spanet.yaml: model.augment")


def test_training_with_both_augmentations_records_them_and_refuses_before_any_work(spanet_example, tmp_path, one_thread):
    """A 1-epoch run on the real SPANet example (sin/cos azimuths, neutrino regressions) takes both
    and writes them to config.yaml; an event file without phi stops before a run folder exists."""
    data, event_file = spanet_example
    model = {"augment": ["rotate_phi", "reflect_eta"]}
    run = train_recon(ReconConfig(data=data, event_file=event_file, out=tmp_path / "runs", limit=300, model=model,
                                  trainer=TrainerOptions(epochs=1, batch_size=100, accelerator="cpu")))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["augment"] == ["rotate_phi", "reflect_eta"]
    with (run / "metrics" / "metrics.csv").open() as file:
        losses = [float(row["val_loss"]) for row in csv.DictReader(file) if row.get("val_loss")]
    assert losses
    assert np.isfinite(losses).all()
    no_phi = yaml.safe_load(Path(event_file).read_text())
    for source in no_phi["INPUTS"]["SEQUENTIAL"].values():
        source.pop("sin_phi"), source.pop("cos_phi")
    for source in (no_phi["INPUTS"].get("GLOBAL") or {}).values():
        source.pop("sin_phi"), source.pop("cos_phi")
    (tmp_path / "no_phi.yaml").write_text(yaml.safe_dump(no_phi))
    with pytest.raises(UnfoldError, match="nothing to rotate"):
        train_recon(ReconConfig(data=data, event_file=tmp_path / "no_phi.yaml", out=tmp_path / "refused", model=model,
                                trainer=TrainerOptions(epochs=1, accelerator="cpu")))
    assert not (tmp_path / "refused").exists()


def test_auto_takes_every_augmentation_the_inputs_allow_and_old_checkpoints_keep_none(tmp_path):
    """``model.augment: auto`` (the default) resolves to what the event file can take and is stored
    resolved; a checkpoint written before augmentation existed loads without it."""
    assert allowed_augmentations(_spanet()) == ["rotate_phi", "reflect_eta"]
    no_phi = {"pt": "log_normalize", "eta": "normalize", "mass": "log_normalize"}
    assert allowed_augmentations(_spanet(no_phi)) == ["reflect_eta"]
    module = ReconModule(event_file_yaml=yaml.safe_dump(SPANET_ALLHADRONIC), encoder={"width": 16, "depth": 1, "heads": 2})
    assert module.hparams.augment == ["rotate_phi", "reflect_eta"]
    assert module.symmetries is not None
    old = dict(module.hparams)
    del old["augment"]
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": old, "pytorch-lightning_version": "2.5.0"}, path)
    loaded = ReconModule.load_from_checkpoint(path, map_location="cpu")
    assert loaded.symmetries is None
    assert loaded.hparams.augment is None
