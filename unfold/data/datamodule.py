"""The Lightning DataModule of every task: one seeded train/validation split and its loaders."""

from __future__ import annotations

import lightning as L
import torch

from unfold.data.event_tensors import IndexedTensors
from unfold.errors import UnfoldError

__all__ = ["EventDataModule", "split_rows"]


def split_rows(n_events: int, *, validation_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of event indices into training and validation rows."""
    n_val = max(1, int(n_events * validation_fraction))
    if n_events - n_val < 1:
        raise UnfoldError(f"{n_events} events are too few to split into training and validation")
    order = torch.randperm(n_events, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[n_val:], order[:n_val]


class EventDataModule(L.LightningDataModule):
    """Shuffled training and fixed validation batches of an :class:`IndexedTensors`.

    The split depends only on the number of events, ``validation_fraction`` and ``seed``, so
    statistics fitted on :attr:`train_rows` (normalisations, class weights) before training see
    exactly the events the loaders train on, and a resumed run gets the same split.
    """

    def __init__(self, dataset: IndexedTensors, *, batch_size: int, validation_fraction: float, seed: int) -> None:
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.train_rows, self.val_rows = split_rows(len(dataset), validation_fraction=validation_fraction, seed=seed)

    def _loader(self, rows: list[int], shuffle: bool) -> torch.utils.data.DataLoader:
        subset = torch.utils.data.Subset(self.dataset, rows)
        return torch.utils.data.DataLoader(subset, batch_size=self.batch_size, shuffle=shuffle,
                                           collate_fn=self.dataset.collate)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.train_rows, shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader(self.val_rows, shuffle=False)
