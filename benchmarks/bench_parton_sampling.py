"""Speed-fidelity table of parton-level sampling: unfoldings/s and posterior Wasserstein-1 per sampler.

The synthetic problem has a known posterior: truth x ~ N(0, 1) in each of F features, detector
y = x + N(0, s^2) with s = 0.5, so x | y ~ N(y / (1 + s^2), s^2 / (1 + s^2)) per feature. A
latent VLD and the plain (non-latent) diffusion baseline are trained briefly on it (training
events/s is reported), then each sampler draws n unfoldings for E detector events at 10, 25, 50
and 100 steps. Fidelity: the draws are standardised by the analytic posterior of their event
(u = (x - mean(y)) / std), pooled, and compared with N(0, 1) by the Wasserstein-1 distance, in
units of the posterior width (0 is perfect; finite n leaves a floor of about 0.01).

    python benchmarks/bench_parton_sampling.py [--features 2] [--events 256] [--draws 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import numpy as np
import torch
from scipy.stats import norm, wasserstein_distance

from unfold.models.diffusion import SAMPLER_NAMES
from unfold.models.parton import VariationalLatentDiffusion

SMEARING = 0.5
STEPS = (10, 25, 50, 100)
BATCH = 512
ITERATIONS = {True: 800, False: 1500}


class Row(NamedTuple):
    device: str
    model: str
    sampler: str
    steps: int
    unfoldings_per_second: float
    wasserstein: float


def synthetic_batch(
    events: int, features: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Truth (E, F) and detector-level condition (E, F)."""
    x = torch.randn(events, features, generator=generator)
    return x, x + SMEARING * torch.randn(events, features, generator=generator)


def train(
    latent: bool, features: int, device: torch.device
) -> tuple[VariationalLatentDiffusion, float]:
    """A briefly trained model and its training throughput in events/s."""
    torch.manual_seed(0)
    model = VariationalLatentDiffusion(
        features=features,
        condition_width=features,
        latent=latent,
        latent_width=4,
        width=64,
        depth=2,
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, ITERATIONS[latent])
    generator = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for _ in range(ITERATIONS[latent]):
        x, y = (tensor.to(device) for tensor in synthetic_batch(BATCH, features, generator))
        loss = model(x, y).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    synchronise(device)
    return model.eval(), ITERATIONS[latent] * BATCH / (time.perf_counter() - start)


def posterior_wasserstein(draws: torch.Tensor, condition: torch.Tensor) -> float:
    """W1 between the pooled posterior-standardised draws (E, n, F) and N(0, 1)."""
    mean = condition / (1 + SMEARING**2)
    std = (SMEARING**2 / (1 + SMEARING**2)) ** 0.5
    pulls = ((draws - mean[:, None, :]) / std).flatten().double().cpu().numpy()
    reference = norm.ppf((np.arange(pulls.size) + 0.5) / pulls.size)
    return float(wasserstein_distance(pulls, reference))


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    model: VariationalLatentDiffusion, name: str, events: int, draws: int, device: torch.device
) -> list[Row]:
    _, condition = synthetic_batch(events, model.features, torch.Generator().manual_seed(2))
    condition = condition.to(device)
    rows = []
    for sampler in SAMPLER_NAMES:
        for steps in STEPS:
            generator = torch.Generator(device).manual_seed(3)
            model.sample(condition[:2], 1, sampler=sampler, steps=steps, generator=generator)
            synchronise(device)
            start = time.perf_counter()
            sampled = model.sample(
                condition, draws, sampler=sampler, steps=steps, generator=generator
            )
            synchronise(device)
            rate = events * draws / (time.perf_counter() - start)
            rows.append(
                Row(
                    device.type,
                    name,
                    sampler,
                    steps,
                    rate,
                    posterior_wasserstein(sampled, condition),
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=2, help="features F per event")
    parser.add_argument("--events", type=int, default=256, help="detector events E per setting")
    parser.add_argument("--draws", type=int, default=32, help="unfoldings n per event")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows: list[Row] = []
    for device in devices:
        for latent, name in ((True, "latent VLD"), (False, "plain diffusion")):
            model, training_rate = train(latent, args.features, device)
            print(f"{device.type:>4}  {name:<16} training: {training_rate:9.0f} events/s")
            rows += measure(model, name, args.events, args.draws, device)
    print(
        f"\n{'device':<6} {'model':<16} {'sampler':<10} {'steps':>5} {'unfoldings/s':>13} {'W1 / posterior std':>19}"
    )
    for row in rows:
        print(
            f"{row.device:<6} {row.model:<16} {row.sampler:<10} {row.steps:>5} "
            f"{row.unfoldings_per_second:>13.0f} {row.wasserstein:>19.3f}"
        )


if __name__ == "__main__":
    main()
