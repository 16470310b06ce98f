"""Particle-level unfoldings per second vs denoising steps, per sampler (arXiv 2404.14332 model).

An untrained :class:`~unfold.models.particle.SetLatentDiffusion` of the default CPU size samples n
draws for E random detector conditions; one unfolding is one sampled particle-level event. Runs
on the GPU when there is one, else on CPU with one thread (the figure per core).

    python benchmarks/bench_particle_sampling.py [--events 16] [--draws 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from unfold.models.diffusion.sampler import SAMPLER_NAMES
from unfold.models.particle import SetLatentDiffusion

STEPS = (10, 25, 100)


def measure(
    model: SetLatentDiffusion,
    condition: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    draws: int,
    sampler: str,
    steps: int,
) -> float:
    """Unfoldings per second of one ``sample`` call (after one warm-up call)."""
    device = condition[0].device
    generator = torch.Generator(device).manual_seed(0)
    model.sample(*condition, draws, sampler=sampler, steps=2, generator=generator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.sample(*condition, draws, sampler=sampler, steps=steps, generator=generator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return condition[0].shape[0] * draws / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=16, help="detector events E")
    parser.add_argument("--draws", type=int, default=4, help="unfoldings per event n")
    parser.add_argument("--objects", type=int, default=10, help="detector objects N per event")
    parser.add_argument("--width", type=int, default=64, help="encoder width D")
    parser.add_argument("--json", type=Path, help="also write the table here as JSON")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SetLatentDiffusion(condition_width=args.width).to(device).eval()
    objects = torch.randn(args.events, args.objects, args.width, device=device)
    object_mask = torch.rand(args.events, args.objects, device=device) < 0.8
    event = torch.randn(args.events, args.width, device=device)

    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU, 1 thread"
    print(f"device: {name}; E={args.events} events x n={args.draws} draws, M_max=16")
    print(f"{'sampler':<12}" + "".join(f"{f'{steps} steps':>14}" for steps in STEPS))
    results: dict[str, dict[int, float]] = {}
    for sampler in SAMPLER_NAMES:
        results[sampler] = {
            steps: measure(model, (objects, object_mask, event), args.draws, sampler, steps)
            for steps in STEPS
        }
        print(f"{sampler:<12}" + "".join(f"{results[sampler][s]:>14.1f}" for s in STEPS))
    print("(unfoldings per second)")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "unfoldings_per_s": results}, indent=2))


if __name__ == "__main__":
    main()
