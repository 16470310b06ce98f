"""`unfold train TASK` configuration: shipped defaults, errors, round trips, --encoder-from, old checkpoints."""

from __future__ import annotations

from importlib.metadata import version

import pytest
import torch
import yaml

from encoders import EventEncoder
from recon.assignment_network import AssignmentNetwork
from unfold.cli import main
from unfold.data.event_tensors import encoder_inputs
from unfold.data.hdf5_schema import read_spanet
from unfold.errors import UnfoldError
from unfold.models.particle import SetLatentDiffusion
from unfold.models.parton import VariationalLatentDiffusion
from unfold.training.options import complete_options
from unfold.training.recon_module import ReconModule
from unfold.training.unfolding_modules import ParticleModule, PartonModule

TINY = ["--epochs", "1", "--batch-size", "100", "--limit", "200", "--accelerator", "cpu"]


def _printed(capsys, *argv) -> dict:
    assert main(["train", *argv, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def _state(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def recon_run(semileptonic_files, tmp_path_factory):
    """A one-epoch recon run of the shipped `small` variant (pair bias on: the file has four-momenta)."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "recon", "--data", str(semileptonic_files[0]), "--out", str(out), "--config", "small",
                 "--test", "null", *TINY]) == 0
    (run,) = (out / "recon").iterdir()
    return run


def test_print_config_gives_todays_defaults(capsys):
    recon = _printed(capsys, "recon")
    assert recon["trainer"]["epochs"] == 20
    assert recon["trainer"]["batch_size"] == 256
    assert recon["encoder"]["pair_bias"] == "auto"
    assert recon["optimizer"] == {"learning_rate": 1e-3, "weight_decay": 1e-4}
    assert recon["trainer"]["ema_decay"] is None
    for task, epochs, ema_decay in (("parton", 100, None), ("particle", 35, 0.995)):
        unfolding = _printed(capsys, task)
        assert (unfolding["trainer"]["epochs"], unfolding["trainer"]["ema_decay"]) == (epochs, ema_decay)
        assert unfolding["optimizer"] == {"learning_rate": 1e-3, "weight_decay": 1e-5}
        assert unfolding["encoder"] == recon["encoder"] | {"pair_bias": False}
    assert _printed(capsys, "parton")["model"]["representation"] == "polar-decay-chain"
    assert _printed(capsys, "parton")["model"]["block_conditioning"] == "with-time"


@pytest.mark.parametrize(("task", "module", "constructor", "skip"), [
    ("recon", ReconModule, AssignmentNetwork, {"topology", "width", "depth", "heads", "dropout", "pair_bias",
                                               "feedforward_multiplier"}),
    ("parton", PartonModule, VariationalLatentDiffusion, PartonModule.SUPPLIED_MODEL_OPTIONS),
    ("particle", ParticleModule, SetLatentDiffusion, ParticleModule.SUPPLIED_MODEL_OPTIONS),
])
def test_shipped_configs_equal_the_constructors_defaults(capsys, task, module, constructor, skip):
    printed = _printed(capsys, task)
    encoder = complete_options(EventEncoder, {}, skip={"sources"}, where="encoder")
    assert printed["encoder"] == encoder | ({"pair_bias": "auto"} if task == "recon" else {})
    model = {key: printed["model"].pop(key) for key in module.MODEL_OPTIONS}
    auto = {"mass_prior": "auto"} if task == "recon" else {}  # resolved from the inputs at training time
    assert printed["model"] == complete_options(constructor, {}, skip=skip, where="model") | auto
    resolved = {"detector_anchors": "auto", "paired_slots": "auto"} if task == "particle" else {}  # at training time
    defaults = complete_options(module, {}, skip={"event_file_yaml"}, where=task)
    assert model == {key: defaults[key] for key in model} | resolved


def test_a_shipped_variant_is_chosen_by_name_and_the_command_line_wins(capsys):
    small = _printed(capsys, "parton", "--config", "small", "--encoder.depth", "3", "--latent")
    assert small["encoder"]["width"] == 32
    assert small["encoder"]["depth"] == 3
    assert small["model"]["width"] == 64
    assert small["model"]["latent"] is True  # the shipped default is the plain diffusion
    assert _printed(capsys, "parton", "--latent", "--plain")["model"]["latent"] is False  # the last switch wins
    assert _printed(capsys, "particle", "--config", "particle_large")["model"]["heads"] == 8


@pytest.mark.parametrize(("task", "content", "key", "allowed"), [
    ("parton", "model: {widht: 64}", "model.widht", "width"),
    ("recon", "encoder: {depth: deep}", "encoder.depth", "int"),
    ("particle", "model: {multiplicity_distribution: poisson}", "model.multiplicity_distribution", "negative-binomial"),
    ("recon", "trainr: {epochs: 1}", "trainr.epochs", "trainer"),
])
def test_a_bad_config_file_is_one_line_naming_the_key(tmp_path, capsys, task, content, key, allowed):
    config = tmp_path / "bad.yaml"
    config.write_text(content + "\n")
    assert main(["train", task, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert key in err
    assert allowed in err
    assert "Traceback" not in err


def test_a_bad_flag_is_one_line_naming_the_key(capsys):
    assert main(["train", "parton", "--representation", "polar"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "model.representation" in err
    assert "'decay-chain', 'polar-decay-chain', 'hadronic-polar-decay-chain', 'lepton-anchored', 'objects'" in err
    assert main(["train", "recon", "--encoder.widht", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "encoder.widht" in err
    assert "width" in err


def test_the_python_api_refuses_an_unknown_keyword(event_files):
    with pytest.raises(UnfoldError, match=r"model: unknown option\(s\) \['widht'\]"):
        PartonModule(event_file_yaml=event_files["ttbar-semileptonic"].read_text(), model={"widht": 64})


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert version("unfold-suite") in capsys.readouterr().out
    assert main(["train", "recon", "--help"]) == 0
    text = capsys.readouterr().out
    entry = text[text.index("--trainer.epochs EPOCHS, --epochs"):].split("--trainer.max_time")[0]
    assert "default: 20" in entry
    assert text.count("--epochs EPOCHS") == 1
    assert "default: None" not in text


def test_a_runs_config_reproduces_the_run(recon_run):
    written = yaml.safe_load((recon_run / "config.yaml").read_text())
    assert written["encoder"]["pair_bias"] is True
    assert written["encoder"]["width"] == 32
    assert main(["train", "recon", "--config", str(recon_run / "config.yaml")]) == 0
    (again,) = set((recon_run.parent).iterdir()) - {recon_run}
    assert (again / "config.yaml").read_text() == (recon_run / "config.yaml").read_text()
    first, second = _state(recon_run), _state(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first), "same configuration, same seed: same weights"


def _from_recon(task, recon_run, files, out) -> object:
    assert main(["train", task, "--data", str(files[0]), "--out", str(out), "--encoder-from", str(recon_run),
                 "--freeze-encoder", *TINY]) == 0
    (run,) = (out / task).iterdir()
    return run


@pytest.fixture(scope="module")
def parton_run(recon_run, semileptonic_files, tmp_path_factory):
    """A one-epoch parton run with the shipped defaults, its frozen encoder from ``recon_run``."""
    return _from_recon("parton", recon_run, semileptonic_files, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def particle_run(recon_run, semileptonic_files, tmp_path_factory):
    """A one-epoch particle run with the shipped defaults, its frozen encoder from ``recon_run``."""
    return _from_recon("particle", recon_run, semileptonic_files, tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("task", ["parton", "particle"])
def test_encoder_from_a_recon_run_follows_its_architecture(recon_run, request, capsys, task):
    recon = yaml.safe_load((recon_run / "config.yaml").read_text())
    assert _printed(capsys, task, "--encoder-from", str(recon_run))["encoder"] == recon["encoder"]
    run = request.getfixturevalue(f"{task}_run")
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["encoder"] == recon["encoder"]  # width 32 and pair bias on, not the unfolding defaults
    source, state = _state(recon_run), _state(run)
    encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
    assert any("pair_bias" in k for k in encoder)
    assert all(torch.equal(v, source[f"network.{k}"]) for k, v in encoder.items()), "a frozen encoder keeps its weights"


def test_a_changed_default_does_not_change_an_old_checkpoint(recon_run, parton_run, monkeypatch):
    monkeypatch.setitem(EventEncoder.__init__.__kwdefaults__, "width", 16)
    monkeypatch.setitem(EventEncoder.__init__.__kwdefaults__, "depth", 1)
    monkeypatch.setitem(VariationalLatentDiffusion.__init__.__kwdefaults__, "width", 32)
    parton = PartonModule.load_from_checkpoint(parton_run / "checkpoints" / "last.ckpt", map_location="cpu")
    assert parton.encoder.width == 32
    assert len(parton.encoder.blocks) == 2
    assert parton.vld.denoiser.input.out_features == 256
    recon = ReconModule.load_from_checkpoint(recon_run / "checkpoints" / "last.ckpt", map_location="cpu")
    assert recon.network.encoder.width == 32


def test_checkpoints_written_before_the_configuration_system_still_load(recon_run, parton_run, tmp_path):
    """Recon stored flat keywords; the unfoldings stored only overrides, model ones in the old vocabulary."""
    recon = torch.load(recon_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    saved = recon["hyper_parameters"]
    recon["hyper_parameters"] = {"event_file_yaml": saved["event_file_yaml"], **saved["encoder"], **saved["model"],
                                 "learning_rate": 1e-3, "weight_decay": 1e-4}
    torch.save(recon, tmp_path / "recon.ckpt")
    assert ReconModule.load_from_checkpoint(tmp_path / "recon.ckpt").network.encoder.width == 32
    parton = torch.load(parton_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    saved = parton["hyper_parameters"]
    before = {**saved, "object_queries": False, "representation": "decay-chain",
              "model": saved["model"] | {"block_conditioning": False}}
    parton["state_dict"] = PartonModule(**before).state_dict()  # weights from before them
    del parton["representation_features"]  # stored since 2026-12-07
    parton["hyper_parameters"] = {"event_file_yaml": saved["event_file_yaml"], "process": saved["process"],
                                  "representation": "decay-chain", "model": {"hidden_width": 256},
                                  "encoder": {k: saved["encoder"][k] for k in ("width", "depth", "pair_bias")},
                                  "learning_rate": 1e-3, "freeze_encoder": False}
    torch.save(parton, tmp_path / "parton.ckpt")
    old_parton = PartonModule.load_from_checkpoint(tmp_path / "parton.ckpt")
    assert old_parton.vld.denoiser.input.out_features == 256
    assert old_parton.parton_queries is None, "saved before the object queries: the event vector only, whatever the default"
    assert old_parton.vld.scheduler.config.prediction_type == "epsilon", "saved before v prediction: the noise"
    assert old_parton.vld.noise_draws == 1
    assert old_parton.vld.denoiser.modulator is None, "saved before block conditioning: the denoiser's input only"
    assert old_parton.sampling() == ("ddpm", 25), "an epsilon run samples as it always did"


def test_particle_runs_anchor_on_the_detector_objects_and_old_checkpoints_load_as_saved(particle_run, tmp_path):
    written = yaml.safe_load((particle_run / "config.yaml").read_text())
    assert written["model"]["detector_anchors"] is True, "auto: the fixture's inputs give four-momenta"
    checkpoint = torch.load(particle_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    saved = dict(checkpoint["hyper_parameters"])
    assert saved.pop("detector_anchors") is True
    assert saved.pop("paired_slots") is True, "auto: with the anchors and the counts by class"
    assert saved["model"]["detector_reads_particles"] is False, "one-way attention is today's default"
    assert saved["model"]["typed_counts"] is True, "counts by class are today's default"
    assert saved["model"]["prediction_type"] == "v_prediction", "v is today's default"
    saved["model"] = {k: v for k, v in saved["model"].items()
                      if k not in ("detector_reads_particles", "typed_counts", "prediction_type")}
    before = {**saved, "model": {**saved["model"], "typed_counts": False}}
    checkpoint["state_dict"] = ParticleModule(**before, detector_anchors=False).state_dict()  # weights from before them
    checkpoint["hyper_parameters"] = saved
    torch.save(checkpoint, tmp_path / "particle.ckpt")
    old = ParticleModule.load_from_checkpoint(tmp_path / "particle.ckpt")
    assert old.diffusion.denoiser.anchor_in is None, "saved before the anchors: the embeddings only, whatever the default"
    assert old.diffusion.denoiser.detector_reads_particles, "saved before one-way attention: two-way"
    assert not old.diffusion.typed_counts, "saved before the typed counts: one multiplicity"
    assert not old.diffusion.paired_slots, "saved before the pairing: every slot generated as it is"
    assert old.diffusion.training_scheduler.config.prediction_type == "epsilon", "saved before v prediction: the noise"


def test_an_anchored_particle_model_needs_four_momenta(particle_run, semileptonic_files):
    module = ParticleModule.load_from_checkpoint(particle_run / "checkpoints" / "last.ckpt", map_location="cpu")
    inputs = encoder_inputs(read_spanet(semileptonic_files[0], module.topology, limit=4), module.topology)
    draws, _ = module.sample(inputs, 2)
    assert draws.features.shape[:2] == (4, 2)
    with pytest.raises(UnfoldError, match="reads the detector objects' four-momenta"):
        module.anchors(inputs._replace(four_momenta=None), draws.mask.new_ones(4, inputs.four_momenta.shape[1]))
