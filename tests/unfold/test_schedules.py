"""The budget cosine: annealed by the planned steps, or by the wall-clock limit when that ends first."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer

from unfold.training.schedules import budget_cosine_schedule


def _rates(trainer, steps: int, clock=None) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = budget_cosine_schedule(optimizer, trainer)
    rates = [optimizer.param_groups[0]["lr"]]
    for step in range(steps):
        if clock is not None:
            clock(step + 1)
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_without_a_time_limit_it_is_the_step_cosine() -> None:
    rates = _rates(SimpleNamespace(estimated_stepping_batches=100, callbacks=[]), 100)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=100, eta_min=0.05)
    expected = [1.0]
    for _ in range(100):
        reference.step()
        cosine.step()
        expected.append(reference.param_groups[0]["lr"])
    assert rates == pytest.approx(expected, abs=1e-9)
    assert rates[-1] == pytest.approx(0.05)


def test_a_time_limit_that_ends_first_anneals_by_the_clock(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("lightning.pytorch.callbacks.timer.time.monotonic", lambda: now[0])
    timer = Timer(duration={"seconds": 100})
    timer.on_train_start(None, None)

    def clock(step: int) -> None:
        now[0] = 1000.0 + 10.0 * step  # 10 s per step: the 100 s limit comes at step 10 of 1000

    rates = _rates(SimpleNamespace(estimated_stepping_batches=1000, callbacks=[timer]), 10, clock)
    assert rates[5] == pytest.approx(0.05 + 0.95 * 0.5)  # half the time: half way down the cosine
    assert rates[-1] == pytest.approx(0.05)  # the limit: fully annealed, with 990 planned steps left


def test_a_time_limit_that_ends_last_changes_nothing(monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr("lightning.pytorch.callbacks.timer.time.monotonic", lambda: now[0])
    timer = Timer(duration={"hours": 1})
    timer.on_train_start(None, None)
    limited = _rates(SimpleNamespace(estimated_stepping_batches=50, callbacks=[timer]), 50,
                     lambda step: now.__setitem__(0, float(step)))
    assert limited == pytest.approx(_rates(SimpleNamespace(estimated_stepping_batches=50, callbacks=[]), 50))
