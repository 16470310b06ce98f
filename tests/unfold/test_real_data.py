"""Real data without truth: prediction and sampling on files stripped of truth, event weights, the
Python API on a moved run folder, and bad input refused in one line."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from recon.assignment_loss import AssignmentTargets, assignment_loss
from recon.assignment_network import AssignmentNetwork
from recon.event_topology import EventTopology
from unfold.cli import main
from unfold.data.hdf5_schema import read_spanet
from unfold.errors import UnfoldError
from unfold.models.parton import VariationalLatentDiffusion
from unfold.tasks.assignment_model import AssignmentModel
from unfold.tasks.predict_recon import NO_TARGETS
from unfold.tasks.train_recon import ReconConfig, train_recon
from unfold.tasks.train_unfolding import process_of
from unfold.tasks.unfolding_model import UnfoldingModel
from unfold.training.options import saved_hyperparameters
from unfold.training.trainer import TrainerOptions

EVENT_FILE = Path(__file__).resolve().parents[2] / "configs" / "events" / "ttbar_semileptonic.yaml"
TRUTH_GROUPS = ("TARGETS", "REGRESSIONS", "CLASSIFICATIONS", "PARTONS", "PARTICLES")


def stripped_copy(source: Path, out: Path, drop: tuple[str, ...] = (), *, attrs: bool = True,
                  extra: dict[str, np.ndarray] | None = None) -> Path:
    """A copy of ``source`` without the groups/datasets ``drop`` (and without root attributes unless ``attrs``)."""
    with h5py.File(source) as old, h5py.File(out, "w") as new:
        for name in old:
            if name not in drop:
                old.copy(old[name], new, name=name)
        for path in drop:
            if "/" in path and path in new:
                del new[path]
        if attrs:
            new.attrs.update(old.attrs)
        for key, value in (extra or {}).items():
            new[key] = value
    return out



@pytest.fixture(scope="module")
def recon_run(semileptonic_files, tmp_path_factory) -> Path:
    return train_recon(ReconConfig(
        data=semileptonic_files[0], event_file=EVENT_FILE, out=tmp_path_factory.mktemp("recon_runs"),
        encoder={"width": 32, "depth": 2, "heads": 4}, model={"attention_width": 16},
        trainer=TrainerOptions(epochs=1, batch_size=64, accelerator="cpu"),
    ))


@pytest.fixture(scope="module")
def full_predictions(recon_run, semileptonic_files, tmp_path_factory) -> Path:
    full = tmp_path_factory.mktemp("full") / "full.h5"
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--data", str(semileptonic_files[1]), "--out", str(full)]) == 0
    return full


@pytest.mark.parametrize("group", [*TRUTH_GROUPS, "root attributes"])
def test_predict_runs_on_a_file_stripped_of_each_truth_group(recon_run, full_predictions, semileptonic_files, tmp_path,
                                                             group, capsys):
    test, full = semileptonic_files[1], full_predictions
    stripped = stripped_copy(test, tmp_path / "stripped.h5", () if group == "root attributes" else (group,),
                             attrs=group != "root attributes")
    out = tmp_path / "stripped_predictions.h5"
    capsys.readouterr()
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--data", str(stripped), "--out", str(out)]) == 0
    with h5py.File(full) as reference, h5py.File(out) as file:
        n = len(file["EVENT_INDEX"])
        assert n == len(reference["EVENT_INDEX"])
        np.testing.assert_array_equal(file["EVENT_INDEX"][...], np.arange(n))
        np.testing.assert_array_equal(file["WEIGHTS/weight"][...], np.ones(n))
        for daughter in ("b", "q1", "q2"):  # the same inputs give the same assignments, truth or not
            np.testing.assert_array_equal(file[f"PREDICTIONS/ht/{daughter}"][...], reference[f"PREDICTIONS/ht/{daughter}"][...])
        for name in ("neutrino_pz", "log_invariant_mass"):
            assert np.isfinite(file[f"PREDICTIONS/REGRESSIONS/{name}"][...]).all()
            assert (file[f"PREDICTIONS/REGRESSIONS/{name}_uncertainty"][...] > 0).all()
        assert {"Momenta", "Met"} <= set(file["INPUTS"]), "every input source is copied"
        assert ("TARGETS" in file) == (group != "TARGETS")
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0, "the recon report reads it, truth or not"
    with h5py.File(out) as file:
        if group == "TARGETS":
            assert file.attrs["note"] == NO_TARGETS
            assert "efficiency" not in file.attrs
            assert NO_TARGETS in capsys.readouterr().out
        else:
            assert "efficiency" in file.attrs


def test_predict_streams_chunks_reads_only_limit_and_writes_embeddings(recon_run, semileptonic_files, tmp_path):
    test = semileptonic_files[1]
    whole, chunked = tmp_path / "whole.h5", tmp_path / "chunked.h5"
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--data", str(test), "--out", str(whole),
                 "--limit", "50"]) == 0
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--data", str(test), "--out", str(chunked),
                 "--limit", "50", "--chunk-size", "16", "--embeddings"]) == 0
    with h5py.File(whole) as a, h5py.File(chunked) as b:
        np.testing.assert_array_equal(b["EVENT_INDEX"][...], np.arange(50))
        np.testing.assert_array_equal(a["PREDICTIONS/lt/b"][...], b["PREDICTIONS/lt/b"][...])
        np.testing.assert_allclose(a["PREDICTIONS/ht/marginal_probability"][...],
                                   b["PREDICTIONS/ht/marginal_probability"][...], atol=1e-5)
        assert a.attrs["efficiency"] == b.attrs["efficiency"], "tables over chunks equal the table of the whole"
        assert b["PREDICTIONS/EMBEDDING"].shape == (50, 32)
        assert "PREDICTIONS/EMBEDDING" not in a


def test_weighted_efficiency_equals_the_duplicated_file(recon_run, semileptonic_files, tmp_path):
    """Weights 2 on a subset give the tables of a file holding that subset twice; negative weights are allowed."""
    test = semileptonic_files[1]
    with h5py.File(test) as file:
        n = len(file["INPUTS/Momenta/MASK"])
    subset = np.arange(n) % 3 == 0
    weights = np.where(subset, 2.0, 1.0).astype(np.float32)
    weighted = stripped_copy(test, tmp_path / "weighted.h5", extra={"WEIGHTS/weight": weights})
    duplicated = tmp_path / "duplicated.h5"
    with h5py.File(test) as old, h5py.File(duplicated, "w") as new:
        rows = np.concatenate([np.arange(n), np.flatnonzero(subset)])

        def duplicate(key: str, item) -> None:
            if isinstance(item, h5py.Dataset):
                new.create_dataset(key, data=item[...][rows])

        old.visititems(duplicate)
        new.attrs.update(old.attrs)
    tables = {}
    for name, path in (("weighted", weighted), ("duplicated", duplicated)):
        out = tmp_path / f"{name}_predictions.h5"
        assert main(["predict", "recon", "--checkpoint", str(recon_run), "--data", str(path), "--out", str(out)]) == 0
        with h5py.File(out) as file:
            tables[name] = file.attrs["efficiency"]
            if name == "weighted":
                np.testing.assert_array_equal(file["WEIGHTS/weight"][...], weights)
    assert tables["weighted"] == tables["duplicated"]
    evaluated = {}
    for name, path in (("weighted", weighted), ("duplicated", duplicated)):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "recon", "--checkpoint", str(recon_run), "--data", str(path), "--json", str(out)]) == 0
        evaluated[name] = json.loads(out.read_text())["model"]
    assert evaluated["weighted"] == evaluated["duplicated"] == json.loads(tables["weighted"])["model"]
    negative = stripped_copy(test, tmp_path / "negative.h5", extra={"nlo": np.where(subset, -0.5, 1.0)})
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--data", str(negative), "--weights", "nlo",
                 "--out", str(tmp_path / "negative_predictions.h5")]) == 0


@pytest.mark.parametrize(
    ("extra", "flag", "message"),
    [
        ({"w": np.ones(7)}, "w", r"weights 'w' have shape \(7,\); expected one per event"),
        ({"w": np.full(100, np.nan)}, "w", "NaN/inf"),
        ({}, "missing/weights", "missing dataset 'missing/weights'"),
    ],
)
def test_bad_weights_are_refused_in_one_line(recon_run, semileptonic_files, tmp_path, extra, flag, message, capsys):
    test = semileptonic_files[1]
    if extra and len(extra["w"]) == 100:
        with h5py.File(test) as file:
            extra = {"w": np.where(np.arange(len(file["INPUTS/Momenta/MASK"])) == 3, np.nan, 1.0)}
    path = stripped_copy(test, tmp_path / "bad.h5", extra=extra)
    out = tmp_path / "out.h5"
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--data", str(path), "--weights", flag,
                 "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert re.search(message, error)
    assert error.count("\n") == 1
    assert not out.exists()


def test_a_missing_input_is_named_and_nothing_is_written(recon_run, semileptonic_files, tmp_path, capsys):
    path = stripped_copy(semileptonic_files[1], tmp_path / "no_met.h5", ("INPUTS/Met/met",))
    out = tmp_path / "out.h5"
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--data", str(path), "--out", str(out)]) == 2
    assert "missing dataset 'INPUTS/Met/met'" in capsys.readouterr().err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.h5*"))


def test_training_needs_targets_and_names_them(semileptonic_files, tmp_path, capsys):
    path = stripped_copy(semileptonic_files[0], tmp_path / "no_targets.h5", ("TARGETS",))
    assert main(["train", "recon", "--data", str(path), "--out", str(tmp_path / "runs"), "--epochs", "1"]) == 2
    assert "missing group 'TARGETS'" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "recon").exists() or not any((tmp_path / "runs" / "recon").iterdir())


def test_the_recon_loss_with_weights_two_equals_the_subset_duplicated(event_files):
    """Deterministic: every term of SPANet's loss counts an event of weight 2 as two copies."""
    topology = EventTopology.from_yaml(event_files["ttbar-semileptonic"])
    torch.manual_seed(0)
    network = AssignmentNetwork(topology=topology, width=16, depth=1, heads=2)
    events, objects = 12, 8
    inputs_mask = torch.ones(events, objects, dtype=torch.bool)
    from encoders import EncoderInputs

    inputs = EncoderInputs((torch.randn(events, objects, 9),), (inputs_mask,), (torch.randn(events, 3),), None)
    perm = torch.stack([torch.randperm(objects) for _ in range(events)])
    targets = AssignmentTargets(indices=(perm[:, :2], perm[:, 2:5]), regressions=torch.randn(events, 5))
    weights = torch.where(torch.arange(events) % 3 == 0, 2.0, 1.0)
    rows = torch.cat([torch.arange(events), torch.where(weights == 2)[0]])

    def take(value, rows):
        from unfold.data.event_tensors import take_events

        return take_events(value, rows)

    weighted = assignment_loss(network(inputs), targets._replace(event_weights=weights), topology=topology)
    duplicated = assignment_loss(network(take(inputs, rows)), take(targets, rows), topology=topology)
    for term in ("total", "assignment", "detection", "regression"):
        assert float(getattr(weighted, term)) == pytest.approx(float(getattr(duplicated, term)), rel=1e-5)
    ignored = assignment_loss(network(inputs), targets, topology=topology)
    assert float(ignored.total) != pytest.approx(float(duplicated.total), rel=1e-3), "the test can tell weights apart"


def test_the_vld_loss_with_weights_two_matches_the_subset_duplicated_on_average(one_thread):
    """The VLD's terms are random (timesteps, noise); averaged over draws, weight 2 = two copies.
    The doubled events are far from the others, so ignoring the weights is visibly different."""
    torch.manual_seed(1)
    model = VariationalLatentDiffusion(features=4, condition_width=3, latent=True, latent_width=4, width=16, depth=1)
    events = 24
    x, condition = torch.randn(events, 4), torch.randn(events, 3)
    subset = torch.arange(events) < 6
    x[subset] += 6.0
    weights = torch.where(subset, 2.0, 1.0)
    rows = torch.cat([torch.arange(events), torch.where(subset)[0]])

    def mean_loss(**options):
        x_, c_ = options.pop("x"), options.pop("condition")
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            return np.mean([float(model(x_, c_, generator=generator, **options).total) for _ in range(60)])

    weighted = mean_loss(x=x, condition=condition, weights=weights)
    duplicated = mean_loss(x=x[rows], condition=condition[rows])
    ignored = mean_loss(x=x, condition=condition)
    assert weighted == pytest.approx(duplicated, rel=0.03)
    assert abs(ignored - duplicated) > 5 * abs(weighted - duplicated)


def test_the_particle_loss_with_weights_two_matches_the_subset_duplicated_on_average(one_thread):
    """As for the VLD: every term of the set diffusion's loss counts an event of weight 2 twice."""
    from unfold.models.particle import ParticleBatch, SetLatentDiffusion

    torch.manual_seed(2)
    model = SetLatentDiffusion(condition_width=8, max_particles=5, latent_width=4, width=16, depth=1, heads=2,
                               vae_depth=1, multiplicity_depth=1)
    events = 16
    multiplicity = torch.randint(1, 6, (events,))
    mask = torch.arange(5) < multiplicity[:, None]
    subset = torch.arange(events) < 4
    features = torch.randn(events, 5, 5) + 4.0 * subset[:, None, None]
    batch = ParticleBatch(features * mask[..., None], torch.randint(0, 4, (events, 5)) * mask, mask, torch.randn(events, 2))
    objects, object_mask, event = torch.randn(events, 6, 8), torch.ones(events, 6, dtype=torch.bool), torch.randn(events, 8)
    weights = torch.where(subset, 2.0, 1.0)
    rows = torch.cat([torch.arange(events), torch.where(subset)[0]])

    def mean_loss(rows, weights=None):
        taken = ParticleBatch(*(t[rows] for t in (batch.features, batch.types, batch.mask, batch.event_features)))
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            return np.mean([float(model.loss(taken, objects[rows], object_mask[rows], event[rows], generator=generator,
                                             weights=weights).total) for _ in range(40)])

    everything = torch.arange(events)
    weighted, duplicated, ignored = mean_loss(everything, weights), mean_loss(rows), mean_loss(everything)
    assert weighted == pytest.approx(duplicated, rel=0.03)
    assert abs(ignored - duplicated) > 5 * abs(weighted - duplicated)


@pytest.fixture(scope="module")
def spanet_layout_train(semileptonic_files, tmp_path_factory) -> Path:
    """The training file as a user's SPANet-layout file: no root attributes, SPANet's WEIGHTS/weight."""
    out = tmp_path_factory.mktemp("user") / "user_train.h5"
    with h5py.File(semileptonic_files[0]) as file:
        n = len(file["INPUTS/Momenta/MASK"])
    return stripped_copy(semileptonic_files[0], out, attrs=False,
                         extra={"WEIGHTS/weight": np.where(np.arange(n) % 4 == 0, -0.2, 1.3).astype(np.float32)})


@pytest.fixture(scope="module")
def parton_run(spanet_layout_train, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parton_runs")
    assert main(["train", "parton", "--config", "small", "--data", str(spanet_layout_train), "--out", str(out),
                 "--epochs", "1", "--batch-size", "64", "--accelerator", "cpu", "--model.object_queries", "true", "--latent"]) == 0
    (run,) = (out / "parton").iterdir()
    return run


def test_the_process_comes_from_partons_or_the_event_file(spanet_layout_train, semileptonic_files, tmp_path, event_files):
    assert process_of(spanet_layout_train) == "ttbar-semileptonic"
    bare = stripped_copy(semileptonic_files[1], tmp_path / "bare.h5", ("PARTONS",), attrs=False)
    with pytest.raises(UnfoldError, match="or pass --process"):
        process_of(bare)
    assert process_of(bare, EventTopology.from_yaml(event_files["ttbar-semileptonic"])) == "ttbar-semileptonic"
    assert process_of(stripped_copy(bare, tmp_path / "hadronic.h5"),
                      EventTopology.from_yaml(event_files["ttbar-allhadronic"])) == "ttbar-allhadronic"


def test_a_parton_run_on_a_user_file_records_process_and_weights(parton_run):
    import yaml

    config = yaml.safe_load((parton_run / "config.yaml").read_text())
    assert config["process"] == "ttbar-semileptonic"
    assert config["weights"] is None, "SPANet's WEIGHTS/weight is read without being named"
    metrics = (parton_run / "metrics" / "metrics.csv").read_text()
    assert "val_loss" in metrics
    assert "nan" not in metrics.lower()


def test_the_python_api_samples_from_a_moved_run_on_a_file_without_truth(parton_run, recon_run, semileptonic_files,
                                                                         tmp_path, monkeypatch):
    moved, moved_recon = tmp_path / "elsewhere" / "parton", tmp_path / "elsewhere" / "recon"
    shutil.copytree(parton_run, moved)
    shutil.copytree(recon_run, moved_recon)
    bare = stripped_copy(semileptonic_files[1], tmp_path / "bare.h5", TRUTH_GROUPS, attrs=False)
    monkeypatch.chdir(tmp_path)
    model = UnfoldingModel.load(moved)
    assert model.task == "parton"
    assert model.process == "ttbar-semileptonic"
    draws = model.sample(bare, n=3, steps=4, limit=20, batch_size=8)
    assert set(draws) == {"b_had", "q1", "q2", "b_lep", "lepton", "neutrino"}
    assert draws["b_had"]["pt"].shape == (20, 3)
    assert (draws["b_had"]["pt"] > 0).all()
    again = model.sample(read_spanet(bare, model.topology, limit=20), n=3, steps=4, batch_size=8)
    np.testing.assert_array_equal(draws["q1"]["eta"], again["q1"]["eta"]), "same seed and batches, same draws"
    heads = AssignmentModel.load(moved_recon).predict_all(bare, embeddings=True)
    assert heads["ht"]["indices"].shape[1] == 3
    assert set(heads["REGRESSIONS"]) == {"neutrino_px", "neutrino_py", "neutrino_pz", "neutrino_eta", "log_invariant_mass"}
    assert heads["EMBEDDING"].shape == (len(heads["ht"]["indices"]), 32)


def test_a_weighted_particle_training_runs(semileptonic_files, tmp_path):
    with h5py.File(semileptonic_files[0]) as file:
        n = len(file["INPUTS/Momenta/MASK"])
    data = stripped_copy(semileptonic_files[0], tmp_path / "weighted.h5", extra={"my/w": np.linspace(-0.5, 2.0, n)})
    assert main(["train", "particle", "--config", "small", "--data", str(data), "--out", str(tmp_path / "runs"),
                 "--epochs", "1", "--batch-size", "64", "--accelerator", "cpu", "--weights", "my/w", "--limit", "120"]) == 0


def test_the_onnx_export_matches_torch_on_other_event_and_object_counts(recon_run, semileptonic_files, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export check needs the onnx extra: pip install -e '.[onnx]'")
    from unfold.tasks.export_recon import OnnxAssignmentNetwork, onnx_inputs

    out = tmp_path / "recon.onnx"
    assert main(["export", "recon", str(recon_run), "--onnx", str(out), "--data", str(semileptonic_files[1])]) == 0
    model = AssignmentModel.load(recon_run)
    data = read_spanet(semileptonic_files[1], model.topology, start=60, limit=37)  # not the tracing events
    used = int(data.masks["Momenta"].sum(axis=1).max())  # fewer object slots than traced
    data = dataclasses.replace(data, sequential={"Momenta": data.sequential["Momenta"][:, :used]},
                               masks={"Momenta": data.masks["Momenta"][:, :used]}, four_momenta=data.four_momenta[:, :used])
    feeds = onnx_inputs(data, model.topology)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feeds), strict=True))
    wrapper = OnnxAssignmentNetwork(model.module.network).eval()
    with torch.no_grad():
        expected = dict(zip(wrapper.output_names, wrapper(*(torch.from_numpy(feeds[n]) for n in wrapper.input_names)), strict=True))
    assert outputs["log_probs_ht"].shape == (37, used, used, used)
    for name, value in expected.items():
        value = value.numpy()
        finite = np.isfinite(value)
        np.testing.assert_array_equal(np.isfinite(outputs[name]), finite)
        # float32 round-off relative to log-probabilities of several hundred (the mass prior's chi-square)
        np.testing.assert_allclose(outputs[name][finite], value[finite], atol=1e-4, rtol=1e-5)
    # the README's decoding: the most probable tuple of each resonance; where the resonances share
    # no jet it is the assignment the greedy decoding of the torch model picks
    log_probs = outputs["log_probs_ht"]
    b, q1, q2 = np.unravel_index(log_probs.reshape(len(log_probs), -1).argmax(1), log_probs.shape[1:])
    lt = outputs["log_probs_lt"]
    lt_b, lt_l = np.unravel_index(lt.reshape(len(lt), -1).argmax(1), lt.shape[1:])
    disjoint = np.array([len({*h, *t}) == 5 for h, t in zip(zip(b, q1, q2, strict=True), zip(lt_b, lt_l, strict=True), strict=True)])
    predicted = model.predict(data)["ht"]["indices"]
    assert disjoint.any()
    np.testing.assert_array_equal(b[disjoint], predicted[disjoint, 0])
    # q1 and q2 are symmetric (PERMUTATIONS), so their tuple probabilities tie: equal up to the swap
    np.testing.assert_array_equal(np.sort(np.stack([q1, q2], 1)[disjoint], 1), np.sort(predicted[disjoint, 1:], 1))


def test_the_real_spanet_example_predicts_every_head_without_truth(spanet_example, tmp_path):
    """SPANet's own ttH file (Delphes; three resonances, five regressions, a signal classification):
    trained here, then predicted on a copy stripped of TARGETS, REGRESSIONS and CLASSIFICATIONS."""
    path, event_file = spanet_example
    run = train_recon(ReconConfig(
        data=path, event_file=event_file, out=tmp_path / "runs", encoder={"width": 32, "depth": 1, "heads": 4},
        model={"attention_width": 8}, trainer=TrainerOptions(epochs=1, batch_size=128, accelerator="cpu"), limit=600,
    ))
    bare = stripped_copy(path, tmp_path / "measured.h5", ("TARGETS", "REGRESSIONS", "CLASSIFICATIONS"), attrs=False)
    out = tmp_path / "predictions.h5"
    assert main(["predict", "recon", "--checkpoint", str(run), "--data", str(bare), "--out", str(out), "--limit", "200"]) == 0
    with h5py.File(out) as file:
        signal = file["PREDICTIONS/CLASSIFICATIONS/signal"][...]
        assert signal.shape == (200, 2)
        np.testing.assert_allclose(signal.sum(axis=1), 1.0, rtol=1e-5)
        assert set(file["PREDICTIONS/h"]) >= {"b1", "b2", "marginal_probability"}
        assert (file["PREDICTIONS/REGRESSIONS/neutrino_pz_uncertainty"][...] > 0).all()
        assert "TARGETS" not in file
        assert file.attrs["note"] == NO_TARGETS


def test_the_parton_onnx_graphs_reproduce_torch_sampling(parton_run, semileptonic_files, tmp_path):
    """A scheduler loop over the exported denoising step gives torch's draws (same noise)."""
    onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export check needs the onnx extra: pip install -e '.[onnx]'")
    from unfold.data.event_tensors import encoder_inputs
    from unfold.models.diffusion.sampler import denoise
    from unfold.tasks.export_recon import onnx_inputs

    out = tmp_path / "parton.onnx"
    assert main(["export", "parton", str(parton_run), "--onnx", str(out), "--data", str(semileptonic_files[1])]) == 0
    model = UnfoldingModel.load(parton_run)
    vld = model.module.vld
    data = read_spanet(semileptonic_files[1], model.topology, start=50, limit=9)
    sessions = {part: onnxruntime.InferenceSession(str(tmp_path / f"parton.{part}.onnx")) for part in ("condition", "denoiser", "decoder")}
    feeds = onnx_inputs(data, model.topology)
    (condition,) = sessions["condition"].run(None, {i.name: feeds[i.name] for i in sessions["condition"].get_inputs()})

    def onnx_noise(state, t):
        (noise,) = sessions["denoiser"].run(None, {"state": state.numpy(), "timestep": t.numpy().astype(np.int64),
                                                   "condition": condition})
        return torch.from_numpy(noise)

    options = {"training_scheduler": vld.scheduler, "sampler": "ddim", "steps": 5, "device": "cpu", "dtype": torch.float32}
    latent = denoise(onnx_noise, (9, vld.diffused_width), generator=torch.Generator().manual_seed(4), **options)
    (partons,) = sessions["decoder"].run(None, {"latent": latent.numpy(), "condition": condition})
    with torch.no_grad():
        torch_condition = model.module.condition(encoder_inputs(data, model.topology))
    expected = vld.sample(torch_condition, 1, sampler="ddim", steps=5, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(partons, expected[:, 0].detach().numpy(), atol=1e-3)


@pytest.fixture(scope="module")
def particle_run(semileptonic_files, tmp_path_factory) -> Path:
    """A weighted particle run trained on turned events: weights from an arbitrary dataset, negative ones included."""
    with h5py.File(semileptonic_files[0]) as file:
        n = len(file["INPUTS/Momenta/MASK"])
    folder = tmp_path_factory.mktemp("particle")
    data = stripped_copy(semileptonic_files[0], folder / "weighted.h5", extra={"my/w": np.linspace(-0.5, 2.0, n)})
    assert main(["train", "particle", "--config", "small", "--data", str(data), "--out", str(folder / "runs"),
                 "--epochs", "1", "--batch-size", "64", "--accelerator", "cpu", "--weights", "my/w", "--limit", "120",
                 "--model.augment", "[rotate_phi]"]) == 0
    (run,) = (folder / "runs" / "particle").iterdir()
    assert saved_hyperparameters(next(run.glob("checkpoints/*.ckpt")))["augment"] == ["rotate_phi"]
    return run


@pytest.mark.parametrize("task", ["parton", "particle"])
def test_sample_runs_on_measured_events_and_says_truth_is_absent(task, parton_run, particle_run, recon_run,
                                                                 semileptonic_files, tmp_path):
    run = parton_run if task == "parton" else particle_run
    bare = stripped_copy(semileptonic_files[1], tmp_path / "measured.h5", TRUTH_GROUPS, attrs=False,
                         extra={"WEIGHTS/weight": np.full(100, 0.5, np.float32)})
    out = tmp_path / "samples.h5"
    assert main(["sample", task, "--checkpoint", str(run), "--data", str(bare), "--out", str(out), "--n", "2",
                 "--steps", "2", "--limit", "30", "--recon", str(recon_run)]) == 0
    with h5py.File(out) as file:
        assert file.attrs["truth"].startswith("none")
        assert not {"PARTONS", "PARTICLES", "MATCHED"} & set(file)
        np.testing.assert_array_equal(file["EVENT_INDEX"][...], np.arange(30))
        np.testing.assert_array_equal(file["WEIGHTS/weight"][...], np.full(30, 0.5))
        level = "PARTONS" if task == "parton" else "PARTICLES"
        assert f"SAMPLES/{level}" in file
        assert f"REFERENCE/{level}" in file, "the detector-level reference needs no truth"


def test_a_weighted_report_matches_the_report_of_the_duplicated_file(parton_run, recon_run, semileptonic_files, tmp_path):
    """Samples with weight 2 on a third of the events: every unbinned distance equals the one of a
    samples file holding those events twice (binned ones differ only by the bins' quantiles)."""
    samples = tmp_path / "samples.h5"
    assert main(["sample", "parton", "--checkpoint", str(parton_run), "--data", str(semileptonic_files[1]),
                 "--out", str(samples), "--n", "2", "--steps", "2", "--limit", "60", "--recon", str(recon_run)]) == 0
    subset = np.arange(60) % 3 == 0
    weighted, duplicated = tmp_path / "weighted.h5", tmp_path / "duplicated.h5"
    rows = np.concatenate([np.arange(60), np.flatnonzero(subset)])
    with h5py.File(samples) as old, h5py.File(weighted, "w") as w, h5py.File(duplicated, "w") as d:
        def copy(key: str, item) -> None:
            if isinstance(item, h5py.Dataset):
                w.create_dataset(key, data=item[...] if key != "WEIGHTS/weight" else np.where(subset, 2.0, 1.0))
                d.create_dataset(key, data=item[...][rows] if key != "WEIGHTS/weight" else np.ones(len(rows)))

        old.visititems(copy)
        w.attrs.update(old.attrs)
        d.attrs.update(old.attrs)
    metrics = {}
    for name, path in (("weighted", weighted), ("duplicated", duplicated)):
        out = tmp_path / f"report_{name}"
        assert main(["report", str(path), "--out", str(out), "--labels", "model", "--bootstrap", "5"]) == 0
        metrics[name] = json.loads((out / "metrics.json").read_text())["observables"]
    assert metrics["weighted"].keys() == metrics["duplicated"].keys()
    for name, observable in metrics["weighted"].items():
        for metric in ("wasserstein", "energy", "ks"):
            got = observable["distances"]["model"][metric]["value"]
            expected = metrics["duplicated"][name]["distances"]["model"][metric]["value"]
            assert got == pytest.approx(expected, rel=1e-6, abs=1e-9), f"{name} {metric}"
    unweighted = tmp_path / "unweighted"
    with h5py.File(weighted, "a") as file:
        del file["WEIGHTS/weight"]
    assert main(["report", str(weighted), "--out", str(unweighted), "--labels", "model", "--bootstrap", "5"]) == 0
    plain = json.loads((unweighted / "metrics.json").read_text())["observables"]
    assert any(plain[n]["distances"]["model"]["wasserstein"]["value"]
               != pytest.approx(metrics["duplicated"][n]["distances"]["model"]["wasserstein"]["value"], rel=1e-6)
               for n in plain), "the weights change the distances"


def test_a_report_on_measured_events_compares_with_the_detector_level(parton_run, recon_run, semileptonic_files,
                                                                      tmp_path):
    bare = stripped_copy(semileptonic_files[1], tmp_path / "measured.h5", TRUTH_GROUPS, attrs=False)
    samples = tmp_path / "samples.h5"
    assert main(["sample", "parton", "--checkpoint", str(parton_run), "--data", str(bare), "--out", str(samples),
                 "--n", "2", "--steps", "2", "--limit", "40", "--recon", str(recon_run)]) == 0
    out = tmp_path / "report"
    assert main(["report", str(samples), "--out", str(out), "--bootstrap", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["compared_with"] == "detector level"
    assert "No truth in samples.h5" in (out / "index.html").read_text()
    observable = next(iter(metrics["observables"].values()))
    assert observable["reference"] is None
    assert observable["distances"]["samples"]["wasserstein"]["value"] is not None
    assert observable["calibration"] == {}
