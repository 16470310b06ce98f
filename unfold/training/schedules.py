"""The learning-rate schedule every task trains with: a cosine that ends with the training budget."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Timer
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["budget_cosine_schedule"]


def budget_cosine_schedule(optimizer: Optimizer, trainer: L.Trainer, *, floor: float = 0.05) -> LambdaLR:
    """Cosine annealing of every learning rate down to ``floor`` times its start, stepped per batch.

    The cosine runs over whichever budget ends first: the planned steps (epochs x batches) or the
    wall-clock limit (``--max-time``, Lightning's Timer). A run stopped by its time limit therefore
    ends annealed instead of at a high rate part-way down a cosine planned for more epochs (a
    12-minute parton run stopped at epoch 44 of 60 still had a fifth of its starting rate). With a
    time limit the rate follows the clock, so a run is only reproducible when its step budget ends
    first.
    """
    steps = max(int(trainer.estimated_stepping_batches), 1)
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)

    def factor(step: int) -> float:
        progress = step / steps
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is not None:
            elapsed = timer.time_elapsed()
            progress = max(progress, elapsed / max(elapsed + remaining, 1e-9))
        progress = min(progress, 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
