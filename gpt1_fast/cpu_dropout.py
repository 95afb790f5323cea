"""Dropout for the `cpu` backend under torch.compile: masks from a counter-based integer hash.

Inductor's CPU code draws a dropout mask with one Philox4x32-10 call per element, of which it keeps one
32-bit word of four, in scalar code: ~10 ns an element, ~0.4 s of a GPT-1 fine-tuning step (37 M
elements: embeddings, attention probabilities, two residual branches a block). Here element i of a
call keeps its value when hash(hash(i) ^ key) >= p * 2^32, with `key` a random 32-bit word drawn from
PyTorch's generator once per call (so `torch.manual_seed` decides the masks) and hash the 32-bit
integer mixer x ^= x >> 16; x *= 0x45d9f3b (twice); x ^= x >> 16 (a bijection with full avalanche),
written as int32 tensor ops that Inductor fuses into the consumer and vectorises: ~9x cheaper. The
mask is a pure function of (key, index), so the backward recomputes the forward's mask exactly.

Each element is dropped with probability round(p * 2^32) / 2^32 (p within 2^-33), independently of
its neighbours and of other calls as far as the hash's statistics go (tests/test_cpu_dropout.py);
the kept ones are scaled by 1 / (1 - p), as F.dropout does.
"""
from __future__ import annotations

import math

import torch

_MUL = 0x45D9F3B


def _mix(x: torch.Tensor) -> torch.Tensor:
    """The 32-bit mixer on int32 tensors (products wrap modulo 2^32; `>> 16` made logical by the mask)."""
    x = (((x >> 16) & 0xFFFF) ^ x) * _MUL
    x = (((x >> 16) & 0xFFFF) ^ x) * _MUL
    return ((x >> 16) & 0xFFFF) ^ x


def keep_mask(shape, p: float, key: torch.Tensor) -> torch.Tensor:
    """bool [shape]: True where element i (row-major) is kept, for the int32 scalar tensor `key`."""
    n = math.prod(shape)
    if n >= 1 << 31:
        raise ValueError(f"dropout on {n} elements: at most 2^31 - 1 in one call")
    i = torch.arange(n, dtype=torch.int32, device=key.device).view(shape)
    threshold = round(p * (1 << 32)) - (1 << 31)  # the hash as a signed int32 is uniform on [-2^31, 2^31)
    return _mix(_mix(i) ^ key) >= threshold


def draw_key(device) -> torch.Tensor:
    """A random int32 key from PyTorch's generator of `device`."""
    return torch.randint(-(1 << 31), 1 << 31, (), dtype=torch.int32, device=device)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of x with a fresh key: 0 or x / (1 - p)."""
    if p >= 1:
        return torch.zeros_like(x)
    return torch.where(keep_mask(x.shape, p, draw_key(x.device)), x * (1.0 / (1 - p)), 0.0)
