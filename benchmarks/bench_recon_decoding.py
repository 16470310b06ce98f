"""Speed of the greedy assignment decoding alone: events/s on random log-probabilities of a
semi-leptonic-like output (one 2-tuple and one 3-tuple head), N objects per event, 75 % real.

    python benchmarks/bench_recon_decoding.py [--events 10000] [--objects 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from recon import AssignmentOutput, allowed_tuples, decode_assignments, masked_log_softmax


def random_output(events: int, objects: int, seed: int = 5) -> AssignmentOutput:
    """Random but valid head outputs: masked log-softmax over allowed 2- and 3-object tuples."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(events, objects, generator=generator) < 0.75
    log_probs = tuple(
        masked_log_softmax(
            torch.randn((events,) + (objects,) * k, generator=generator), allowed_tuples(mask, k)
        )
        for k in (2, 3)
    )
    return AssignmentOutput(
        log_probs, torch.zeros(events, 2), torch.zeros(events, 0), torch.zeros(events, 0), (), mask
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    output = random_output(args.events, args.objects)
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        decode_assignments(output)
        best = min(best, time.perf_counter() - start)
    print(f"decoded {args.events} events of {args.objects} objects in {best:.2f} s "
          f"({args.events / best:,.0f} events/s, best of {args.repeats})")


if __name__ == "__main__":
    main()
