"""Weighted training equals training on the duplicated events: weight 2 on a subset S and 1
elsewhere must train a model exactly as the same events with S copied twice and unit weights.

What is compared: deterministic full-batch AdamW steps on CPU (one batch holding every event, no
dropout, fixed initialisation), so the weighted mean loss of one batch is the mean loss of the
duplicated batch and every step must agree up to float rounding. Compared: the loss trajectory
(relative 1e-5) and the mean absolute parameter difference after the steps. Not the largest single
difference: Adam divides by the root of the squared gradient, so a parameter whose gradient is at
rounding level moves by up to the learning rate on rounding alone. The recon test also fits what training fits first (input and regression normalisation,
pattern-balance weights) with the training code, so weighted statistics are part of what is compared.
A control run that ignores the weights must differ, so the tests can fail.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from encoders.normalization import fit_standardisation
from recon.assignment_loss import pattern_balance_weights, resonance_presence
from recon.event_topology import EventTopology
from unfold.data.event_tensors import IndexedTensors, take_events
from unfold.data.hdf5_schema import read_spanet
from unfold.data.recon_data import assignment_tensors
from unfold.models.parton import VariationalLatentDiffusion
from unfold.tasks.evaluate_recon import training_table
from unfold.tasks.train_recon import ReconConfig, fit_statistics, train_recon
from unfold.training.recon_module import ReconModule
from unfold.training.trainer import TrainerOptions

EVENT_FILE = Path(__file__).resolve().parents[2] / "configs" / "events" / "ttbar_semileptonic.yaml"
STEPS = 5


def _with_weights(tensors: IndexedTensors, rows: torch.Tensor, weights: torch.Tensor) -> IndexedTensors:
    """The events ``rows`` of ``tensors`` (repeats allowed), with event weights ``weights``."""
    batch = take_events(tensors.tensors, rows)
    return IndexedTensors(batch._replace(targets=batch.targets._replace(event_weights=weights)), len(rows))


def _train_recon(tensors: IndexedTensors) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """Losses of STEPS full-batch AdamW steps of a tiny recon model (fixed initialisation), its
    final parameters and its fitted input means."""
    torch.manual_seed(3)
    module = ReconModule(event_file_yaml=EVENT_FILE.read_text(), encoder={"width": 16, "depth": 1, "heads": 2},
                         model={"attention_width": 8}, learning_rate=3e-3)
    rows = torch.arange(len(tensors))
    fit_statistics(module, tensors, rows)
    optimizer = torch.optim.AdamW(module.parameters(), lr=module.hparams.learning_rate,
                                  weight_decay=module.hparams.weight_decay)
    batch = tensors.collate(rows.tolist())
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        total = module._loss(batch)[1].total
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    means = torch.cat([b for n, b in module.named_buffers() if n.endswith("normalizer.mean")])
    return losses, torch.cat([p.detach().flatten() for p in module.parameters()]), means


def test_weighted_recon_training_equals_training_on_the_duplicated_events(semileptonic_files, one_thread):
    topology = EventTopology.from_yaml(EVENT_FILE)
    data = read_spanet(semileptonic_files[0], topology, limit=80, require_targets=True)
    tensors = assignment_tensors(data, topology)
    events = torch.arange(data.n_events)
    subset = events % 3 == 0
    duplicated_rows = torch.cat([events, events[subset]])

    weighted = _train_recon(_with_weights(tensors, events, torch.where(subset, 2.0, 1.0)))
    duplicated = _train_recon(_with_weights(tensors, duplicated_rows, torch.ones(len(duplicated_rows))))
    ignored = _train_recon(_with_weights(tensors, events, torch.ones(data.n_events)))

    assert weighted[0] == pytest.approx(duplicated[0], rel=1e-5)
    torch.testing.assert_close(weighted[2], duplicated[2], rtol=1e-6, atol=1e-6)  # weighted normalisation
    gap = (weighted[1] - duplicated[1]).abs().mean()
    assert gap < 1e-5
    assert ignored[0] != pytest.approx(duplicated[0], rel=1e-3), "ignoring the weights gives other losses"
    assert (ignored[1] - duplicated[1]).abs().mean() > 100 * gap, "ignoring the weights trains another model"


def test_weighted_pattern_balance_counts_a_weight_two_event_twice(semileptonic_files):
    """Pattern-balance weights from weighted pattern counts equal those of the duplicated events;
    signed weights that leave a pattern with a negative sum fall back to |w|, never below zero."""
    topology = EventTopology.from_yaml(EVENT_FILE)
    data = read_spanet(semileptonic_files[0], topology, limit=200, require_targets=True)
    targets = assignment_tensors(data, topology).tensors.targets
    present = resonance_presence(list(targets.indices), list(targets.resonance_masks))
    weights = torch.where(torch.arange(len(present)) % 2 == 0, 2.0, 1.0)
    rows = torch.cat([torch.arange(len(present)), torch.where(weights == 2.0)[0]])
    balanced = pattern_balance_weights(present, topology.event_group, weights)
    torch.testing.assert_close(balanced, pattern_balance_weights(present[rows], topology.event_group))
    assert not torch.allclose(balanced, pattern_balance_weights(present, topology.event_group))
    signed = pattern_balance_weights(present, topology.event_group, torch.where(weights == 2.0, -3.0, 1.0))
    assert (signed > 0).all()
    assert torch.isfinite(signed).all()


def _train_vld(x: torch.Tensor, condition: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor | None,
               monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], torch.Tensor]:
    """STEPS full-batch AdamW steps of a tiny VLD whose random numbers (posterior sample,
    timestep, diffusion noise) are tied to each event's id in fixed per-step tables, so that a
    duplicated event draws exactly what its original draws."""
    torch.manual_seed(5)
    model = VariationalLatentDiffusion(features=x.shape[1], condition_width=condition.shape[1], latent=True, latent_width=4,
                                       width=16, depth=1, noise_draws=1)  # the tables hold one draw per event
    table = torch.Generator().manual_seed(9)
    noise = torch.randn(STEPS, 2, int(ids.max()) + 1, 4, generator=table)
    timesteps = torch.randint(0, model.scheduler.config.num_train_timesteps, (STEPS, int(ids.max()) + 1),
                              generator=table)
    state = {"step": 0, "call": 0}

    def randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        state["call"] += 1
        return noise[state["step"], (state["call"] - 1) % 2, ids].to(like.dtype)

    monkeypatch.setattr(model, "_randn", randn)
    monkeypatch.setattr(torch, "randint", lambda *args, **kwargs: timesteps[state["step"], ids])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(STEPS):
        state["step"] = step
        optimizer.zero_grad()
        total = model(x, condition, weights=weights).total
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    monkeypatch.undo()
    return losses, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_weighted_parton_training_equals_training_on_the_duplicated_events(monkeypatch, one_thread):
    generator = torch.Generator().manual_seed(1)
    events = 40
    x, condition = torch.randn(events, 6, generator=generator), torch.randn(events, 3, generator=generator)
    ids = torch.arange(events)
    subset = ids < 12
    x[subset] += 3.0  # the doubled events differ from the others, so their weight matters
    rows = torch.cat([ids, ids[subset]])

    weighted = _train_vld(x, condition, ids, torch.where(subset, 2.0, 1.0), monkeypatch)
    duplicated = _train_vld(x[rows], condition[rows], rows, None, monkeypatch)
    ignored = _train_vld(x, condition, ids, None, monkeypatch)

    assert weighted[0] == pytest.approx(duplicated[0], rel=1e-5)
    gap = (weighted[1] - duplicated[1]).abs().mean()
    assert gap < 1e-5
    assert ignored[0] != pytest.approx(duplicated[0], rel=1e-3), "ignoring the weights gives other losses"
    assert (ignored[1] - duplicated[1]).abs().mean() > 100 * gap, "ignoring the weights trains another model"


def _copy(source: Path, out: Path, rows: np.ndarray, extra: dict[str, np.ndarray]) -> Path:
    """``source`` with its events in the order ``rows`` (repeats allowed) plus the datasets ``extra``."""
    with h5py.File(source) as old, h5py.File(out, "w") as new:
        n_events = old["INPUTS/Momenta/MASK"].shape[0]
        new.attrs.update(old.attrs)

        def copy(name: str, node) -> None:  # visititems stops at the first non-None return
            if isinstance(node, h5py.Dataset):
                new[name] = node[()][rows] if node.shape and node.shape[0] == n_events else node[()]

        old.visititems(copy)
        for key, value in extra.items():
            new[key] = value
    return out


def test_the_end_of_training_table_is_weighted_like_the_training(semileptonic_files, tmp_path, one_thread):
    """``unfold train recon --weights my/w --test FILE`` prints the table weighted by FILE's my/w:
    equal to the table of FILE with the weight-2 events written twice; a test file without my/w
    falls back to SPANet's WEIGHTS/weight (here absent: unweighted) and says so."""
    run = train_recon(ReconConfig(
        data=semileptonic_files[0], event_file=EVENT_FILE, out=tmp_path / "runs", limit=120,
        encoder={"width": 16, "depth": 1, "heads": 2}, model={"attention_width": 8},
        trainer=TrainerOptions(epochs=1, batch_size=64, accelerator="cpu"), weights=None,
    ))
    test = semileptonic_files[1]
    with h5py.File(test) as file:
        n = file["INPUTS/Momenta/MASK"].shape[0]
    subset = np.arange(n) % 2 == 0
    weighted = _copy(test, tmp_path / "weighted.h5", np.arange(n), {"my/w": np.where(subset, 2.0, 1.0)})
    duplicated = _copy(test, tmp_path / "duplicated.h5", np.concatenate([np.arange(n), np.flatnonzero(subset)]),
                       {"my/w": np.ones(n + subset.sum())})
    weighted_text = training_table(run, weighted, None, "my/w")
    assert weighted_text.endswith("weights: my/w")
    assert weighted_text == training_table(run, duplicated, None, "my/w")
    plain_text = training_table(run, test, None, "my/w")
    assert f"{test} has no 'my/w'; unweighted" in plain_text
    assert plain_text.split("\nnote")[0] != weighted_text.split("\nweights")[0], "the weights change the table"


def test_weighted_standardisation_counts_weight_two_twice_and_survives_signed_weights(rng):
    """Weighted mean and width equal the duplicated rows'; where signed weights make a feature's
    weighted variance negative, that feature takes the |w|-weighted statistics instead."""
    values = torch.from_numpy(rng.normal([3.0, -1.0], [2.0, 0.5], size=(200, 2)))
    weights = torch.where(torch.arange(200) < 50, 2.0, 1.0)
    rows = torch.cat([torch.arange(200), torch.arange(50)])
    weighted, duplicated = fit_standardisation(values, weights), fit_standardisation(values[rows])
    torch.testing.assert_close(weighted.mean, duplicated.mean)
    torch.testing.assert_close(weighted.scale, duplicated.scale)
    assert not torch.allclose(weighted.mean, fit_standardisation(values).mean)
    # Large negative weights on the far rows of feature 0: its signed variance is negative.
    signed = torch.where((values[:, 0] - 3.0).abs() > 2.0, -1.0, 1.0)
    fallback = fit_standardisation(values, signed)
    absolute = fit_standardisation(values, signed.abs())
    torch.testing.assert_close(fallback.scale[0], absolute.scale[0])
    assert torch.isfinite(fallback.scale).all()
    assert (fallback.scale > 0).all()
