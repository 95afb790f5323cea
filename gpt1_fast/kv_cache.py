"""The key/value cache of incremental decoding (gpt1_fast.sampling): every layer's keys and values,
preallocated to n_ctx columns, and which columns are padding."""
from __future__ import annotations

from typing import NamedTuple

import torch


class LayerCache(NamedTuple):
    k: torch.Tensor  # [B, n_head, n_ctx, head_dim]
    v: torch.Tensor
    mask: torch.Tensor  # [B, n_ctx] bool, False at padding columns
    start: int  # first column the new tokens go to


def check_length(end: int, n_ctx: int, cache: "KVCache | None" = None) -> None:
    """A forward reaching column `end` must fit the model's n_ctx and the cache's columns."""
    limit = n_ctx if cache is None else min(n_ctx, cache.n_ctx)
    if end > limit:
        raise ValueError(f"sequence length {end} exceeds n_ctx {limit}")


class KVCache:
    """Keys and values of every layer for incremental decoding, preallocated to n_ctx columns.

    Column j of every row holds the j-th token fed; `length` columns are filled, and `mask[:, j]` is
    False where a row's column j is padding (prompts of different lengths are left-padded). Made by
    `TransformerModel.new_kv_cache(batch)`, filled and advanced by `forward(..., kv_cache=cache)`.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, n_ctx: int, head_dim: int, device=None,
                 dtype=torch.float32):
        shape = (batch, n_head, n_ctx, head_dim)
        # empty, not zeros: only the filled columns (< length) are ever read
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.mask = torch.zeros(batch, n_ctx, dtype=torch.bool, device=device)
        self.length = 0

    @property
    def n_ctx(self) -> int:
        return self.mask.size(1)

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self.k[i], self.v[i], self.mask, self.length)

    def admit(self, T: int, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mark the next T columns as real (or as attention_mask [B, T] says: 0 at padding) -> their
        positions [B, T], the real tokens before each counted per row (left padding shifts nothing).
        `length` is advanced by the caller, once every layer has written those columns."""
        start = self.length
        self.mask[:, start:start + T] = True if attention_mask is None else attention_mask.reshape(-1, T).bool()
        return (self.mask[:, :start + T].cumsum(1)[:, start:] - 1).clamp(min=0)
