"""set_attention against torch's fused scaled dot-product attention: masks, biases, key blocks, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from encoders.attention import set_attention

BATCH, HEADS, QUERIES, WIDTH = 5, 2, 7, 8


def _blocks(*lengths: int) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(sum(lengths))
    query = torch.randn(BATCH, HEADS, QUERIES, WIDTH, generator=generator)
    keys = [torch.randn(BATCH, HEADS, n, WIDTH, generator=generator) for n in lengths]
    values = [torch.randn(BATCH, HEADS, n, WIDTH + 3, generator=generator) for n in lengths]
    return query, keys, values


@pytest.mark.parametrize("lengths", [(9,), (7, 4), (3, 5, 2)])
def test_bool_mask_matches_fused_kernel_on_concatenated_blocks(lengths: tuple[int, ...]) -> None:
    query, keys, values = _blocks(*lengths)
    mask = torch.rand(BATCH, 1, 1, sum(lengths), generator=torch.Generator().manual_seed(1)) > 0.4
    mask[..., 0] = True
    expected = F.scaled_dot_product_attention(query, torch.cat(keys, 2), torch.cat(values, 2), attn_mask=mask)
    torch.testing.assert_close(set_attention(query, keys, values, mask), expected)


def test_additive_bias_matches_fused_kernel() -> None:
    query, keys, values = _blocks(9)
    bias = torch.randn(BATCH, HEADS, QUERIES, 9, generator=torch.Generator().manual_seed(2))
    bias[..., 3] = float("-inf")
    expected = F.scaled_dot_product_attention(query, keys[0], values[0], attn_mask=bias)
    torch.testing.assert_close(set_attention(query, keys, values, bias), expected)


def test_masked_keys_have_no_influence_and_gradients_match() -> None:
    query, keys, values = _blocks(6, 3)
    mask = torch.ones(1, 1, 1, 9, dtype=torch.bool)
    mask[..., 7] = False
    changed = [key.clone() for key in keys], [value.clone() for value in values]
    changed[0][1][..., 1, :] += 100.0  # key 7 is the second key of the second block
    changed[1][1][..., 1, :] -= 100.0
    torch.testing.assert_close(set_attention(query, *changed, mask), set_attention(query, keys, values, mask))

    leaves = [tensor.requires_grad_() for tensor in (query, *keys, *values)]
    set_attention(query, keys, values, mask).square().sum().backward()
    ours = [leaf.grad.clone() for leaf in leaves]
    for leaf in leaves:
        leaf.grad = None
    F.scaled_dot_product_attention(query, torch.cat(keys, 2), torch.cat(values, 2), attn_mask=mask).square().sum().backward()
    for mine, fused in zip(ours, (leaf.grad for leaf in leaves), strict=True):
        torch.testing.assert_close(mine, fused)


def test_bfloat16_autocast_keeps_float32_softmax() -> None:
    """Under bfloat16 autocast the result is bfloat16 and within bfloat16 rounding of float32."""
    query, keys, values = _blocks(9)
    mask = torch.ones(1, 1, 1, 9, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = set_attention(query, keys, values, mask)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), set_attention(query, keys, values, mask), atol=0.05, rtol=0.02)
