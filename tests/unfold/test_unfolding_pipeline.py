"""`unfold train parton|particle` and `unfold sample` as a user runs them, on real generated events."""

from __future__ import annotations

import csv
import json
import shutil

import h5py
import numpy as np
import pytest

from unfold.cli import main


def _train(task, files, out, *extra) -> object:
    assert main(["train", task, "--data", str(files[0]), "--out", str(out), "--epochs", "1", "--batch-size", "100",
                 "--accelerator", "cpu", *extra]) == 0
    (run,) = (out / task).iterdir()
    return run


@pytest.fixture(scope="module")
def parton_run(semileptonic_files, tmp_path_factory):
    return _train("parton", semileptonic_files, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def particle_run(semileptonic_files, tmp_path_factory):
    return _train("particle", semileptonic_files, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def recon_run(semileptonic_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "recon", "--data", str(semileptonic_files[0]), "--out", str(out), "--epochs", "1",
                 "--limit", "50"]) == 0
    (run,) = (out / "recon").iterdir()
    return run


def _sample(run, files, out, task, *extra) -> int:
    return main(["sample", task, "--checkpoint", str(run), "--data", str(files[1]), "--out", str(out), "--steps", "4",
                 "--n", "3", "--limit", "40", *extra])


def test_parton_samples_follow_the_schema(parton_run, semileptonic_files, tmp_path):
    out = tmp_path / "samples.h5"
    assert _sample(parton_run, semileptonic_files, out, "parton") == 0
    with h5py.File(out) as file:
        for parton in ("b_had", "q1", "q2", "b_lep", "lepton", "neutrino"):
            for feature in ("pt", "eta", "phi", "mass"):
                assert file[f"SAMPLES/PARTONS/{parton}/{feature}"].shape == (40, 3)
                assert file[f"PARTONS/{parton}/{feature}"].shape == (40,)
                assert file[f"REFERENCE/PARTONS/{parton}/{feature}"].shape == (40,)
        assert np.isfinite(file["SAMPLES/PARTONS/q1/pt"][...]).all()
        assert (file["SAMPLES/PARTONS/q1/pt"][...] >= 0).all()
        assert file["INPUTS/Momenta/MASK"].shape[0] == 40
        assert json.loads(file.attrs["composites"])["t_had"] == ["b_had", "q1", "q2"]
        assert file.attrs["sampler"] == "dpm-solver"  # the default of a v run
        truth_lepton = file["PARTONS/lepton/pt"][...]
        reference_lepton = file["REFERENCE/PARTONS/lepton/pt"][...]
        # the detector-level lepton is the truth lepton smeared by a few percent
        assert np.median(np.abs(reference_lepton / truth_lepton - 1)) < 0.05
        # the reference reconstructs every event without truth; the truth-matched jets miss some
        assert file.attrs["reference"].startswith("chi-square (resolutions fitted on truth-matched events of")
        assert file.attrs["reference_events"] == 40
        assert np.isfinite(file["REFERENCE/PARTONS/q2/pt"][...]).all()
        assert np.isnan(file["MATCHED/PARTONS/q2/pt"][...]).any()
        assert file.attrs["sqrt_s_gev"] == 13000.0


def test_sampling_is_reproducible_with_a_seed(parton_run, semileptonic_files, tmp_path):
    paths = [tmp_path / f"{name}.h5" for name in ("a", "b", "c")]
    for path, seed in zip(paths, ("1", "1", "2")):
        assert _sample(parton_run, semileptonic_files, path, "parton", "--seed", seed) == 0
    draws = [h5py.File(p)["SAMPLES/PARTONS/b_had/pt"][...] for p in paths]
    assert np.array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


@pytest.mark.parametrize("n", ["0", "-2"])
def test_nonpositive_draws_are_refused_and_nothing_is_written(parton_run, semileptonic_files, tmp_path, capsys, n):
    out = tmp_path / "samples.h5"
    assert main(["sample", "parton", "--checkpoint", str(parton_run), "--data", str(semileptonic_files[1]),
                 "--out", str(out), "--n", n]) == 2
    assert "--n must be a positive number" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_checkpoint_of_another_kind_is_refused(particle_run, semileptonic_files, tmp_path, capsys):
    assert _sample(particle_run, semileptonic_files, tmp_path / "s.h5", "parton") == 2
    assert "a particle run, but `unfold sample parton` was asked for" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_task_of_a_checkpoint_is_read_from_it(parton_run, semileptonic_files, tmp_path, capsys):
    out = tmp_path / "samples.h5"
    assert main(["sample", "--checkpoint", str(parton_run), "--data", str(semileptonic_files[1]), "--out", str(out),
                 "--steps", "2", "--n", "2", "--limit", "5", "--sampler", "ddim"]) == 0
    with h5py.File(out) as file:
        assert "SAMPLES/PARTONS" in file
        assert "SAMPLES/PARTICLES" not in file
        assert file.attrs["sampler"] == "ddim"


def test_a_recon_checkpoint_is_refused(recon_run, semileptonic_files, tmp_path, capsys):
    out = tmp_path / "samples.h5"
    assert main(["sample", "--checkpoint", str(recon_run), "--data", str(semileptonic_files[1]), "--out", str(out)]) == 2
    assert "not a parton or particle unfolding checkpoint" in capsys.readouterr().err
    assert not out.exists()


def test_a_checkpoint_of_another_topology_is_refused(parton_run, semileptonic_files, tmp_path, capsys):
    data = tmp_path / "allhadronic.h5"
    shutil.copy(semileptonic_files[1], data)
    with h5py.File(data, "a") as file:
        file.attrs["process"] = "ttbar-allhadronic"
    assert _sample(parton_run, (None, data), tmp_path / "s.h5", "parton") == 2
    assert "trained for ttbar-semileptonic" in capsys.readouterr().err
    assert not (tmp_path / "s.h5").exists()


def test_training_data_without_partons_is_refused(spanet_example, tmp_path, capsys):
    data, event_file = spanet_example
    code = main(["train", "parton", "--data", str(data), "--event-file", str(event_file), "--out", str(tmp_path),
                 "--epochs", "1", "--accelerator", "cpu"])
    assert code == 2
    assert "missing group 'PARTONS'" in capsys.readouterr().err


def test_each_run_samples_with_its_own_default_sampler_and_steps(parton_run, particle_run, semileptonic_files, tmp_path):
    """Parton runs (predicting v) DPM-Solver with 25 steps, particle diffusion runs DPM-Solver with 10; a choice
    (sampler, steps, the network's precision) applies to every run."""
    from unfold.errors import UnfoldError
    from unfold.tasks.sample import sample_unfoldings

    runs = {"parton": parton_run, "particle": particle_run}
    options = {"n": 2, "limit": 8, "devices": "cpu"}
    out = sample_unfoldings(runs, semileptonic_files[1], tmp_path / "default.h5", **options)
    with h5py.File(out) as file:
        assert (file.attrs["sampler"], file.attrs["steps"]) == ("dpm-solver", "parton: 25, particle: 10")
    out = sample_unfoldings(runs, semileptonic_files[1], tmp_path / "chosen.h5", sampler="ddim", steps=3,
                            precision="bfloat16", **options)
    with h5py.File(out) as file:
        assert (file.attrs["sampler"], file.attrs["steps"], file.attrs["precision"]) == ("ddim", 3, "bfloat16")
        assert np.isfinite(file["SAMPLES/PARTONS/b_had/pt"][...]).all()
    with pytest.raises(UnfoldError, match="sampler 'euler' does not apply to a diffusion run"):
        sample_unfoldings(runs, semileptonic_files[1], tmp_path / "bad.h5", sampler="euler", **options)
    assert not (tmp_path / "bad.h5").exists()


def test_a_run_predicting_v_samples_with_dpm_solver_unless_told(event_files):
    """Epsilon runs: DDPM 25; v runs: DPM-Solver 25 (DDPM narrows their posteriors); a choice still wins."""
    from unfold.training.unfolding_modules import PartonModule

    event_file = event_files["ttbar-semileptonic"].read_text()
    assert PartonModule(event_file_yaml=event_file, model={"prediction_type": "epsilon"}).sampling() == ("ddpm", 25)
    v_run = PartonModule(event_file_yaml=event_file, model={"prediction_type": "v_prediction"})
    assert v_run.sampling() == ("dpm-solver", 25)
    assert v_run.sampling(steps=10) == ("dpm-solver", 10)
    assert v_run.sampling("ddpm") == ("ddpm", 25)


def test_particle_samples_have_exactly_the_sampled_multiplicity(particle_run, semileptonic_files, tmp_path):
    out = tmp_path / "samples.h5"
    assert _sample(particle_run, semileptonic_files, out, "particle") == 0
    with h5py.File(out) as file:
        jets, lepton = file["SAMPLES/PARTICLES/jets/MASK"][...], file["SAMPLES/PARTICLES/lepton/MASK"][...]
        assert jets.shape == (40, 3, 16)
        assert np.array_equal(jets.sum(-1) + lepton.sum(-1), file["SAMPLES/PARTICLE_MULTIPLICITY"][...])
        assert file["SAMPLES/PARTICLES/met/met"].shape == (40, 3)
        assert file["PARTICLES/jets/MASK"].shape == (40, 16)
        assert file["REFERENCE/PARTICLES/jets/pt"].shape == (40, 16)


def test_too_few_particle_slots_is_a_clear_error(semileptonic_files, tmp_path, capsys):
    config = tmp_path / "small.yaml"
    config.write_text("model:\n  max_particles: 3\n")
    code = main(["train", "particle", "--data", str(semileptonic_files[0]), "--out", str(tmp_path / "runs"),
                 "--config", str(config), "--epochs", "1", "--accelerator", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "3" in err and err.count("\n") == 1


def test_report_reads_the_samples_file(parton_run, particle_run, semileptonic_files, tmp_path):
    out = tmp_path / "samples.h5"
    assert main(["sample", "--checkpoint", str(parton_run), "parton", "--data", str(semileptonic_files[1]),
                 "--out", str(out), "--steps", "3", "--n", "4", "--limit", "60"]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert any("t_had" in key for key in json.dumps(metrics).split('"'))
    t_had = metrics["observables"]["parton/t_had/mass"]
    assert t_had["entries"]["reference"] == 60 > t_had["entries"]["matched"]
    assert "reconstructing every event without truth" in (tmp_path / "report" / "index.html").read_text()


def test_resume_continues_the_run_and_keeps_its_statistics(parton_run, semileptonic_files, tmp_path):
    import torch

    run = tmp_path / "run"
    shutil.copytree(parton_run, run)
    before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert main(["train", "parton", "--data", str(semileptonic_files[0]), "--resume", str(run), "--epochs", "2",
                 "--batch-size", "100", "--accelerator", "cpu"]) == 0
    after = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert after["epoch"] == before["epoch"] + 1
    for key in ("vld.representation.mean", "vld.representation.scale"):
        assert torch.equal(after["state_dict"][key], before["state_dict"][key])


def test_validation_draws_the_same_noise_every_epoch(semileptonic_files, tmp_path):
    """A model that does not change scores the same validation loss at every epoch: the best checkpoint
    follows the model, not the draws of timesteps and noise."""
    run = _train("parton", semileptonic_files, tmp_path / "runs", "--epochs", "3", "--limit", "300",
                 "--learning-rate", "0", "--optimizer.weight_decay", "0")
    rows = [row for row in csv.DictReader((run / "metrics" / "metrics.csv").open()) if row.get("val_loss")]
    assert len(rows) == 3 and len({row["val_loss"] for row in rows}) == 1
    assert len({row["val_diffusion"] for row in rows}) == 1


def test_ema_weights_are_checkpointed_sampled_and_resumed(semileptonic_files, tmp_path, capsys):
    """--trainer.ema_decay: the checkpoint's weights (what sampling loads) are the average, the last
    step's weights ride along, and a resumed run continues both."""
    import torch

    from unfold.training.unfolding_modules import PartonModule

    run = _train("parton", semileptonic_files, tmp_path / "runs", "--trainer.ema_decay", "0.5",
                 "--epochs", "2", "--limit", "300")
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    averaged, last = saved["state_dict"], saved["current_model_state"]
    moved = [name for name, value in averaged.items() if value.is_floating_point() and not torch.equal(value, last[name])]
    assert len(moved) > len(averaged) // 2
    loaded = PartonModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt").state_dict()
    assert all(torch.equal(loaded[name], averaged[name]) for name in moved)
    assert _sample(run, semileptonic_files, tmp_path / "samples.h5", "parton") == 0
    resume = ["train", "parton", "--data", str(semileptonic_files[0]), "--resume", str(run), "--epochs", "3",
              "--batch-size", "100", "--accelerator", "cpu", "--limit", "300"]
    assert main(resume) == 2
    assert "holds averaged (EMA) weights; pass --trainer.ema_decay 0.5" in capsys.readouterr().err
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == saved["epoch"]
    assert main([*resume, "--trainer.ema_decay", "0.5"]) == 0
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["epoch"] == saved["epoch"] + 1 and "current_model_state" in resumed
    assert not torch.equal(resumed["state_dict"][moved[0]], averaged[moved[0]])


@pytest.mark.parametrize("task", ["parton", "particle"])
def test_draws_do_not_depend_on_the_devices(task, request, semileptonic_files, tmp_path):
    run = request.getfixturevalue(f"{task}_run")
    paths = {devices: tmp_path / f"{devices}.h5" for devices in ("cpu", "cpu,cpu")}
    for devices, path in paths.items():  # 40 events in batches of 8: five batches, three on one copy, two on the other
        assert _sample(run, semileptonic_files, path, task, "--batch-size", "8", "--devices", devices) == 0
    with h5py.File(paths["cpu"]) as one, h5py.File(paths["cpu,cpu"]) as two:
        names = []
        one["SAMPLES"].visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        assert names
        for name in names:
            assert np.array_equal(one["SAMPLES"][name][...], two["SAMPLES"][name][...], equal_nan=True), name
        assert (one.attrs["devices"], two.attrs["devices"]) == ("cpu", "cpu,cpu")


@pytest.mark.parametrize(("devices", "message"), [
    ("2", "--devices 2 asks for 2 GPUs but torch sees 0"),
    ("0", "--devices 0: a number of GPUs must be positive"),
    ("foo", "--devices foo: expected auto, a number of GPUs or comma-separated torch devices"),
    ("cpu,", "--devices cpu,: expected auto"),
    ("cuda:0", "--devices cuda:0: cuda:0 is not one of the 0 GPUs torch sees"),
])
def test_bad_devices_are_refused_and_nothing_is_written(parton_run, semileptonic_files, tmp_path, capsys, monkeypatch,
                                                        devices, message):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    out = tmp_path / "samples.h5"
    assert _sample(parton_run, semileptonic_files, out, "parton", "--devices", devices) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_devices_name_gpus_by_number_or_by_name(monkeypatch):
    import torch

    from unfold.tasks.sample import parse_devices

    assert parse_devices("auto") == [torch.device("cuda:0" if torch.cuda.is_available() else "cpu")]
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert parse_devices("auto") == [torch.device("cuda:0")]
    assert parse_devices("2") == [torch.device("cuda:0"), torch.device("cuda:1")]
    assert parse_devices("cuda:1, cpu,cpu") == [torch.device("cuda:1"), torch.device("cpu"), torch.device("cpu")]


def _datasets_and_attrs(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with h5py.File(path) as file:
        datasets = {}
        file.visititems(lambda name, item: datasets.update({name: item[...]}) if isinstance(item, h5py.Dataset) else None)
        return datasets, {key: str(value) for key, value in file.attrs.items()}


@pytest.mark.parametrize("task", ["parton", "particle", "parton --recon"])
def test_the_samples_file_does_not_depend_on_the_chunk_size(task, request, recon_run, semileptonic_files, tmp_path):
    """Streaming in chunks of 12 events (rounded up to 16, two batches of 8: chunks 16, 16, 8) writes the
    same file, every dataset and attribute, as one chunk: the draws, truth, references (the chi-square
    fitted once, or the recon run), inputs, weights and event index."""
    task, *extra = task.split()
    run = request.getfixturevalue(f"{task}_run")
    extra = ["--recon", str(recon_run)] if extra else []
    paths = {size: tmp_path / f"{size}.h5" for size in ("12", "4096")}
    for size, path in paths.items():
        assert _sample(run, semileptonic_files, path, task, "--batch-size", "8", "--chunk-size", size, *extra) == 0
    (chunked, chunked_attrs), (whole, whole_attrs) = (_datasets_and_attrs(path) for path in paths.values())
    assert chunked.keys() == whole.keys()
    assert {"EVENT_INDEX", "WEIGHTS/weight"} <= whole.keys()
    assert any(name.startswith(f"SAMPLES/{task.upper()}S/") for name in whole)
    for name, values in whole.items():
        assert (chunked[name].dtype, chunked[name].shape) == (values.dtype, values.shape), name
        assert np.array_equal(chunked[name], values, equal_nan=values.dtype.kind == "f"), name
    assert np.array_equal(whole["EVENT_INDEX"], np.arange(40))
    assert chunked_attrs == whole_attrs
    if extra:
        assert str(recon_run) in whole_attrs["reference"]


@pytest.fixture
def broken_at_event_30(semileptonic_files, tmp_path):
    """The test file (100 events) with event 30 emptied: a file that fails only where it is read."""
    data = tmp_path / "broken_test.h5"
    shutil.copy(semileptonic_files[1], data)
    with h5py.File(data, "a") as file:
        file["INPUTS/Momenta/MASK"][30] = False
    return data


def test_limit_reads_only_the_first_events(parton_run, broken_at_event_30, semileptonic_files, tmp_path):
    out = tmp_path / "samples.h5"
    assert main(["sample", "parton", "--checkpoint", str(parton_run), "--data", str(broken_at_event_30),
                 "--fit-data", str(semileptonic_files[0]), "--out", str(out), "--steps", "2", "--n", "2",
                 "--limit", "30", "--batch-size", "8", "--chunk-size", "8"]) == 0
    with h5py.File(out) as file:
        assert np.array_equal(file["EVENT_INDEX"][...], np.arange(30))
        assert file["SAMPLES/PARTONS/b_had/pt"].shape == (30, 2)
        assert file["PARTONS/b_had/pt"].shape == (30,)
        assert file.attrs["reference_events"] <= 30


def test_a_chunk_failing_midway_leaves_nothing_behind(parton_run, broken_at_event_30, semileptonic_files, tmp_path,
                                                      capsys):
    out = tmp_path / "out" / "samples.h5"
    assert main(["sample", "parton", "--checkpoint", str(parton_run), "--data", str(broken_at_event_30),
                 "--fit-data", str(semileptonic_files[0]), "--out", str(out), "--steps", "2", "--n", "2",
                 "--batch-size", "8", "--chunk-size", "8"]) == 2
    err = capsys.readouterr().err
    line = err.splitlines()[-1]  # one line, after the progress bar of the three chunks sampled before event 30
    assert line.startswith("unfold sample: error: ")
    assert "events have no objects (first: event 30)" in line
    assert list(out.parent.iterdir()) == []  # events 0-23 went to a partial file, which is gone
