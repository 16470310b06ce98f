"""The DataModule owns one seeded split: disjoint, complete, the same for the same seed."""

from __future__ import annotations

import pytest
import torch

from unfold.data.datamodule import EventDataModule, split_rows
from unfold.data.event_tensors import IndexedTensors
from unfold.errors import UnfoldError


def test_split_is_disjoint_complete_and_seeded():
    dataset = IndexedTensors((torch.arange(100.0),), 100)
    module = EventDataModule(dataset, batch_size=16, validation_fraction=0.2, seed=3)
    assert len(module.val_rows) == 20
    assert sorted(module.train_rows + module.val_rows) == list(range(100))
    assert (module.train_rows, module.val_rows) == split_rows(100, validation_fraction=0.2, seed=3)
    assert module.train_rows != EventDataModule(dataset, batch_size=16, validation_fraction=0.2, seed=4).train_rows


def test_loaders_give_exactly_their_rows():
    dataset = IndexedTensors((torch.arange(50.0),), 50)
    module = EventDataModule(dataset, batch_size=8, validation_fraction=0.3, seed=0)
    seen_train = torch.cat([batch[0] for batch in module.train_dataloader()]).long().tolist()
    seen_val = torch.cat([batch[0] for batch in module.val_dataloader()]).long().tolist()
    assert sorted(seen_train) == sorted(module.train_rows)
    assert seen_val == module.val_rows


def test_too_few_events_are_refused():
    with pytest.raises(UnfoldError, match="too few"):
        split_rows(1, validation_fraction=0.5, seed=0)
