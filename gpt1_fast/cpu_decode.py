"""The `cpu` backend's decoding in bf16: a lean forward over the key/value cache, on weights packed once.

A decoding step multiplies a few rows (one token per sequence) by every weight matrix, so it can be
no faster than the weights stream from memory; what else it does must cost little beside that. Two
things stood in the way under plain bf16 autocast through the model's modules:
- oneDNN converts and re-blocks each fp32 weight at every step (about 5 GB/s on a Zen 4 core). Here
  every matrix is converted to bf16 and re-blocked once, when the generation starts
  (`torch.ops.mkldnn._reorder_linear_weight`, as torch.compile's frozen CPU graphs do), and each
  product reads the packed copy (`torch.ops.mkldnn._linear_pointwise`, as fast as a sum reads memory).
- ~80 small ops a block (autocast's casts, the bias and activation apart from their product, the
  attention mask rebuilt in every layer), each costing more dispatch than arithmetic at a few rows.
  Here a block is 13 ops that compute (and a dozen views): the bias and the activation ride in their
  products as oneDNN post-ops, the mask is built once a step, the cache is written in place and read
  in place by PyTorch's SDPA.
- Python's own cost per op (a few microseconds; ~4 ms of a GPT-1 step). Where the C++ extension is
  built, all the blocks of a step are one call (gpt1_fast::cpu_decode_blocks,
  gpt1_fast/csrc/cpu_decode.cpp), which also takes each residual add, its LayerNorm and the bf16 copy
  for the next product in one pass; `_block` below is the same computation, for where it is not.

The arithmetic is the model's under bf16 autocast: bf16 products (float32 accumulation), LayerNorm and
the residual stream in float32, keys and values in a bf16 cache; the activation is applied in float32
to the product plus bias before the one rounding to bf16 (autocast rounds the product first).
Eval mode only (no dropout); the model's own forward serves every other case.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import _ext, ops
from .kv_cache import KVCache, check_length

POST_OPS = {"gelu": ("gelu", "tanh"), "relu": ("relu", ""), "swish": ("swish", "")}  # afn -> oneDNN post-op


def onednn_available() -> bool:
    """Whether this PyTorch has oneDNN (mkldnn) and its packed linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def packable(transformer, dtype: torch.dtype | None) -> bool:
    """Whether a generation in `dtype` runs here: bf16 with the `cpu` backend (auto on a CPU), in eval
    mode, with oneDNN."""
    w = transformer.embed.weight
    return (dtype == torch.bfloat16 and w.device.type == "cpu" and not transformer.training
            and ops.resolve(transformer.backend, w) == "cpu" and onednn_available())


def _pack(w_out_in: torch.Tensor, rows: int) -> torch.Tensor:
    """An [out, in] matrix as bf16 in oneDNN's blocked layout for `rows`-row products. A transposed view
    (a Conv1D weight, stored [in, out]) is made contiguous in bf16 first, by the C++ extension's tiled
    copy where it is built: oneDNN reorders a strided matrix about 1.6x slower."""
    w = w_out_in.detach()
    tiled = w.dtype == torch.float32 and not w.is_contiguous() and w.t().is_contiguous()
    if tiled and _ext.unavailable_reason("cpu", "transpose_to_bf16") is None:
        w16 = torch.ops.gpt1_fast.transpose_to_bf16(w.t())
    else:
        w16 = w.to(torch.bfloat16).contiguous()
    return torch.ops.mkldnn._reorder_linear_weight(w16, rows)


def _bf16(b: torch.Tensor) -> torch.Tensor:
    return b.detach().to(torch.bfloat16)


class _Block(NamedTuple):
    """One block's packed matrices ([out, in] oneDNN layout), bf16 biases, float32 LayerNorm parameters."""
    qkv: torch.Tensor
    qkv_b: torch.Tensor
    proj: torch.Tensor
    proj_b: torch.Tensor
    fc: torch.Tensor
    fc_b: torch.Tensor
    out: torch.Tensor
    out_b: torch.Tensor
    ln_1: tuple
    ln_2: tuple

    @classmethod
    def of(cls, block, rows: int) -> "_Block":
        a, m = block.attn, block.mlp
        ln = lambda n: (n.g.detach(), n.b.detach(), n.e)  # noqa: E731
        return cls(_pack(a.c_attn.w.t(), rows), _bf16(a.c_attn.b), _pack(a.c_proj.w.t(), rows), _bf16(a.c_proj.b),
                   _pack(m.c_fc.w.t(), rows), _bf16(m.c_fc.b), _pack(m.c_proj.w.t(), rows), _bf16(m.c_proj.b),
                   ln(block.ln_1), ln(block.ln_2))

    def flat(self) -> tuple[list[torch.Tensor], list[float]]:
        """The tensors in gpt1_fast::cpu_decode_blocks's order (12), and the two LayerNorms' eps."""
        return [*self[:8], *self.ln_1[:2], *self.ln_2[:2]], [self.ln_1[2], self.ln_2[2]]


def _linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, post=("none", "")) -> torch.Tensor:
    """bf16 x @ wᵀ + bias, then the post-op (in float32, before rounding to bf16)."""
    return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed, bias, post[0], [], post[1])


def _layer_norm(x: torch.Tensor, params: tuple) -> torch.Tensor:
    g, b, e = params
    return F.layer_norm(x, g.shape, g, b, e)


class PackedDecoder:
    """`forward(ids, cache)` as the transformer's cached forward, `logits(h)` as the tied LM head, on
    bf16 copies of the weights packed for `rows`-row products (a hint: any row count works).

    The blocks run in one call of the C++ op gpt1_fast::cpu_decode_blocks (gpt1_fast/csrc/cpu_decode.cpp:
    the ops of `_block`, in order, without Python's cost per op) where the extension is built; else, or
    with native=False, through `_block` here. The two agree to float32 rounding (the C++ LayerNorm sums in
    another order), which can move a bf16 rounding of the next product's input by one unit."""

    def __init__(self, transformer, rows: int, native: bool | None = None):
        self.blocks = [_Block.of(b, rows) for b in transformer.h]
        reason = None if native is False else _ext.unavailable_reason("cpu", "cpu_decode_blocks")  # no build asked
        if native and reason:
            raise RuntimeError(f"the C++ decoding step is unavailable: {reason}")
        self.native = reason is None if native is None else native
        flat = [blk.flat() for blk in self.blocks]
        self.params = [t for tensors, _ in flat for t in tensors]
        self.eps = [e for _, eps in flat for e in eps]
        self.n_head = transformer.h[0].attn.n_head
        self.n_ctx, self.pos_offset = transformer.n_ctx, transformer.pos_offset
        self.embed = transformer.embed.weight.detach()
        self.table = _pack(self.embed, rows)
        self.post = POST_OPS[transformer.h[0].mlp.afn]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """[B, C] hidden states -> [B, vocab] bf16 logits h @ tableᵀ."""
        return _linear(h, self.table, None)

    def forward(self, ids: torch.Tensor, cache: KVCache, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B, T] (attention_mask [B, T]: 0 at padding) -> float32 hidden states [B, T, C]; the
        cache advanced by T."""
        B, T = ids.shape
        start = cache.length
        check_length(start + T, self.n_ctx, cache)
        positions = cache.admit(T, attention_mask)
        x = F.embedding(ids, self.embed) + F.embedding(positions + self.pos_offset, self.embed)
        scores_mask = self._scores_mask(cache.mask[:, :start + T], T)
        x = x.view(B * T, -1)
        if self.native:
            x = torch.ops.gpt1_fast.cpu_decode_blocks(x, self.params, cache.k, cache.v, start, scores_mask,
                                                      self.n_head, self.eps, *self.post)
        else:
            for blk, k, v in zip(self.blocks, cache.k, cache.v):
                x = self._block(x, blk, k, v, start, T, scores_mask)
        cache.length += T
        return x.view(B, T, -1)

    @staticmethod
    def _scores_mask(key_mask: torch.Tensor, T: int) -> torch.Tensor | None:
        """The attention's additive mask [B, 1, T, L] (0 or -inf) for the T newest of the L columns of
        key_mask [B, L] (False: padding), built once for every block; None when T is 1 and no column is
        padding: the one new query sees them all, and SDPA then reads no mask."""
        if T == 1 and bool(key_mask.all()):
            return None
        allowed = ops.step_mask(T, key_mask.size(1), key_mask, key_mask.device)
        scores = torch.zeros(allowed.shape, dtype=torch.bfloat16, device=key_mask.device)
        return scores.masked_fill_(~allowed, float("-inf"))

    def _block(self, x, blk: _Block, k_cache, v_cache, start: int, T: int, scores_mask) -> torch.Tensor:
        """One block on x [B*T, C] float32: the new keys and values written to cache columns start..start+T;
        scores_mask: the attention's additive mask [B, 1, T, start + T] (0 or -inf), or None."""
        BT, C = x.shape
        B, H = BT // T, self.n_head
        q, k, v = _linear(x, blk.qkv, blk.qkv_b).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)  # [B, H, T, D] each
        k_cache.narrow(2, start, T).copy_(k)
        v_cache.narrow(2, start, T).copy_(v)
        a = F.scaled_dot_product_attention(q, k_cache.narrow(2, 0, start + T), v_cache.narrow(2, 0, start + T),
                                           attn_mask=scores_mask)
        n = _layer_norm(x + _linear(a.transpose(1, 2).reshape(BT, C), blk.proj, blk.proj_b), blk.ln_1)
        m = _linear(_linear(n, blk.fc, blk.fc_b, self.post), blk.out, blk.out_b)
        return _layer_norm(n + m, blk.ln_2)
