"""Attention over short sets: ``encoders.attention.set_attention`` against torch's fused
``scaled_dot_product_attention`` (the baseline, timed in the same run), at the shapes the suite runs.

Rows: the shared encoder at batch 256 (4 heads of 16, 14 tokens, additive pair bias), the particle set
denoiser in sampling (4 heads of 32, 1 + 8 generated tokens over themselves and 12 detector tokens,
1,024 draws per call), each in float32 and under bfloat16 autocast, on 1 and 2 threads. The fused
kernel gets the key blocks concatenated, as the set denoiser did before.

    python benchmarks/bench_attention.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from encoders.attention import set_attention


def fused(query: Tensor, keys: tuple[Tensor, ...], values: tuple[Tensor, ...], mask: Tensor) -> Tensor:
    """The baseline: torch's fused kernel on the concatenated key and value blocks."""
    if mask.is_floating_point():
        mask = mask.to(query.dtype)
    return F.scaled_dot_product_attention(query, torch.cat(keys, dim=2), torch.cat(values, dim=2), attn_mask=mask)


def encoder_case(generator: torch.Generator) -> tuple:
    """Batch 256, 4 heads of 16, 14 tokens, an additive pair bias with two padded keys per event."""
    query, key, value = (torch.randn(256, 4, 14, 16, generator=generator) for _ in range(3))
    bias = torch.randn(256, 4, 14, 14, generator=generator)
    bias[..., -2:] = float("-inf")
    return query, (key,), (value,), bias


def denoiser_case(generator: torch.Generator) -> tuple:
    """1,024 draws, 4 heads of 32: 9 generated tokens over themselves and 12 detector tokens."""
    query, key, value = (torch.randn(1024, 4, 9, 32, generator=generator) for _ in range(3))
    detector_keys, detector_values = (torch.randn(1024, 4, 12, 32, generator=generator) for _ in range(2))
    mask = torch.rand(1024, 1, 1, 21, generator=generator) > 0.1
    mask[..., 0] = True
    return query, (key, detector_keys), (value, detector_values), mask


def best_seconds(function: Callable[[], Tensor], repeat: int) -> float:
    function()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per row (best counts)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    cases = {"encoder, batch 256": encoder_case(generator), "set denoiser, 1,024 draws": denoiser_case(generator)}
    print("| case | precision | threads | fused ms | set_attention ms | speed-up | max difference |")
    print("|---|---|---|---|---|---|---|")
    for name, arguments in cases.items():
        for precision in ("float32", "bfloat16"):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bfloat16"):
                    baseline = best_seconds(lambda: fused(*arguments), args.repeat)
                    ours = best_seconds(lambda: set_attention(*arguments), args.repeat)
                    difference = (fused(*arguments).float() - set_attention(*arguments).float()).abs().max()
                print(f"| {name} | {precision} | {threads} | {baseline * 1e3:.2f} | {ours * 1e3:.2f} | "
                      f"{baseline / ours:.2f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
