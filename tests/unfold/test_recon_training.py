"""`unfold train/evaluate/predict recon` as a user runs them, on real generated events."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from unfold.cli import main
from unfold.data.hdf5_schema import read_spanet
from unfold.errors import UnfoldError
from unfold.tasks.assignment_model import AssignmentModel
from unfold.tasks.train_recon import ReconConfig, train_recon
from unfold.training.trainer import TrainerOptions


@pytest.fixture(scope="module")
def recon_run(semileptonic_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    train, _ = semileptonic_files
    code = main(["train", "recon", "--data", str(train), "--out", str(out), "--epochs", "2", "--batch-size", "64",
                 "--accelerator", "cpu"])
    assert code == 0
    (run,) = (out / "recon").iterdir()
    return run


def test_a_run_folder_holds_everything(recon_run):
    assert (recon_run / "checkpoints" / "best.ckpt").is_file()
    assert (recon_run / "checkpoints" / "last.ckpt").is_file()
    assert "val_event_efficiency" in (recon_run / "metrics" / "metrics.csv").read_text()
    assert any((recon_run / "tensorboard").iterdir())
    assert "event_file" in (recon_run / "config.yaml").read_text()


def test_evaluate_writes_spanet_tables_for_model_and_baseline(recon_run, semileptonic_files, tmp_path):
    train, test = semileptonic_files
    out = tmp_path / "eff.json"
    assert main(["evaluate", "recon", "--checkpoint", str(recon_run), "--data", str(test), "--train", str(train),
                 "--json", str(out)]) == 0
    tables = json.loads(out.read_text())
    assert set(tables) == {"model", "chi-square"}
    for table in tables.values():
        for category in ("all", "complete"):
            assert {"event", "fraction", "lt", "ht", "by_jets"} <= set(table[category])
            assert set(table[category]["by_jets"]) == {"==4", "==5", ">=6"}
    # the chi-square baseline on semi-leptonic ttbar reaches tens of percent, not zero
    assert tables["chi-square"]["complete"]["event"] > 0.15


def test_predict_writes_assignments_and_probabilities(recon_run, semileptonic_files, tmp_path):
    _, test = semileptonic_files
    out = tmp_path / "predictions.h5"
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--data", str(test), "--out", str(out)]) == 0
    with h5py.File(out) as file:
        n = len(file["TARGETS/ht/b"])
        for key in ("b", "q1", "q2", "assignment_probability", "detection_probability", "marginal_probability", "entropy"):
            assert file[f"PREDICTIONS/ht/{key}"].shape == (n,)
        jets = np.stack([file[f"PREDICTIONS/ht/{d}"][...] for d in ("b", "q1", "q2")] + [file["PREDICTIONS/lt/b"][...]], 1)
        assert all(len(set(row)) == 4 for row in jets.tolist()), "decoding never reuses a jet"
        marginal = file["PREDICTIONS/ht/marginal_probability"][...]
        assert np.allclose(marginal, file["PREDICTIONS/ht/assignment_probability"][...] * file["PREDICTIONS/ht/detection_probability"][...], atol=1e-5)
        assert "model" in json.loads(file.attrs["efficiency"])
        # recon's per-event verdict is stored and is the one its efficiency table counts
        correct = file["PREDICTIONS/ht/correct"][...]
        reconstructable = np.stack([file[f"TARGETS/ht/{d}"][...] for d in ("b", "q1", "q2")], 1).min(1) >= 0
        assert not correct[~reconstructable].any()
        assert correct[reconstructable].mean() == pytest.approx(json.loads(file.attrs["efficiency"])["model"]["all"]["ht"])


def test_evaluate_and_predict_take_an_ensemble_of_runs(recon_run, semileptonic_files, tmp_path, capsys):
    """Repeating --checkpoint predicts with the runs' mixture; a run mixed with itself predicts as it does alone."""
    train, test = semileptonic_files
    tables = {}
    for label, runs in (("one", [recon_run]), ("two", [recon_run, recon_run / "checkpoints" / "best.ckpt"])):
        out = tmp_path / f"{label}.json"
        options = [item for run in runs for item in ("--checkpoint", str(run))]
        assert main(["evaluate", "recon", *options, "--data", str(test), "--train", str(train), "--limit", "300",
                     "--json", str(out)]) == 0
        tables[label] = json.loads(out.read_text())
    assert "the ensemble of 2 runs" in capsys.readouterr().out
    assert tables["two"] == tables["one"]
    out = tmp_path / "predictions.h5"
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--checkpoint", str(recon_run), "--data", str(test),
                 "--out", str(out), "--limit", "50"]) == 0
    with h5py.File(out) as file:
        assert file.attrs["checkpoint"] == f"{recon_run}, {recon_run}"
    assert main(["predict", "recon", "--checkpoint", str(recon_run), "--checkpoint", str(recon_run), "--data", str(test),
                 "--out", str(tmp_path / "embedded.h5"), "--embeddings", "--limit", "50"]) == 2
    assert "ask for embeddings with one run" in capsys.readouterr().err
    assert not (tmp_path / "embedded.h5").exists()


def test_an_ensemble_refuses_members_of_another_regression_likelihood():
    from importlib.resources import files

    from unfold.training.recon_module import ReconModule

    event_file = (files("configs") / "events" / "ttbar_semileptonic.yaml").read_text()
    encoder = {"width": 16, "depth": 1, "heads": 2}
    gaussian, laplacian = (ReconModule(event_file_yaml=event_file, encoder=encoder, regression_distribution=family)
                           for family in ("gaussian", "laplacian"))
    with pytest.raises(UnfoldError, match="member 2 regresses with a laplacian likelihood, member 1 with a gaussian"):
        AssignmentModel(gaussian, laplacian)
    assert AssignmentModel(gaussian, gaussian).members == 2


def test_the_python_api_needs_only_the_checkpoint(recon_run, semileptonic_files, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere"
    shutil.copytree(recon_run, moved)
    monkeypatch.chdir(tmp_path)
    model = AssignmentModel.load(moved)
    data = read_spanet(semileptonic_files[1], model.topology, limit=50)
    result = model.predict(data)
    assert result["ht"]["indices"].shape == (50, 3)
    assert ((result["ht"]["entropy"] >= 0) & np.isfinite(result["ht"]["entropy"])).all()


def test_fine_tuning_refuses_another_topology(recon_run, spanet_example, tmp_path):
    config = ReconConfig(data=spanet_example[0], event_file=spanet_example[1], out=tmp_path, init_from=recon_run,
                         trainer=TrainerOptions(epochs=1, accelerator="cpu"))
    with pytest.raises(UnfoldError, match="trained for another topology"):
        train_recon(config)


def test_trains_unmodified_on_the_real_spanet_file(spanet_example, tmp_path):
    data, event_file = spanet_example
    run = train_recon(ReconConfig(data=data, event_file=event_file, out=tmp_path, limit=300,
                                  trainer=TrainerOptions(epochs=1, batch_size=100, accelerator="cpu")))
    model = AssignmentModel.load(run)
    assert model.topology.resonance_names == ("lt", "ht", "h")


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(semileptonic_files, tmp_path, event_files):
    """Multi-device training without a GPU: two gloo processes (Lightning's ddp_spawn)."""
    run = train_recon(ReconConfig(
        data=semileptonic_files[0], event_file=event_files["ttbar-semileptonic"], out=tmp_path, limit=200,
        trainer=TrainerOptions(epochs=1, batch_size=50, accelerator="cpu", devices="2", strategy="ddp_spawn"),
    ))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    AssignmentModel.load(run)


def test_unknown_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "recon", "--checkpoint", str(tmp_path), "--data", str(tmp_path / "x.h5")]) == 2
    assert "no checkpoint found" in capsys.readouterr().err


def test_resume_continues_a_recon_run(recon_run, semileptonic_files, tmp_path):
    import torch

    run = tmp_path / "run"
    shutil.copytree(recon_run, run)
    before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    assert main(["train", "recon", "--data", str(semileptonic_files[0]), "--resume", str(run), "--epochs", "3",
                 "--batch-size", "64", "--accelerator", "cpu", "--test", "null"]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == before + 1


def test_patience_stops_the_run_that_many_epochs_after_its_best(semileptonic_files, tmp_path):
    """Early stopping on the validation event efficiency: the run ends `patience` epochs after its best."""
    train, _ = semileptonic_files
    assert main(["train", "recon", "--data", str(train), "--out", str(tmp_path), "--epochs", "30",
                 "--batch-size", "64", "--accelerator", "cpu", "--trainer.patience", "2",
                 "--config", "recon_small"]) == 0
    (run,) = (tmp_path / "recon").iterdir()
    rows = [line.split(",") for line in (run / "metrics" / "metrics.csv").read_text().splitlines()]
    header = rows[0]
    efficiency = [float(r[header.index("val_event_efficiency")]) for r in rows[1:] if r[header.index("val_event_efficiency")]]
    best = max(range(len(efficiency)), key=lambda epoch: (efficiency[epoch], -epoch))
    assert len(efficiency) < 30
    assert len(efficiency) == best + 1 + 2
