"""The op boundary: every compute op of the model goes through here.

Backends:
- "torch":  the literal reference math of SPEC §3 (what the original computes, op for op).
- "triton": the fused kernels of gpt1_fast.kernels (LayerNorm+residual, bias+GELU, causal attention).
- "cpu":    the reference math, with the LM head + loss of gpt1_fast.cpu_lm_head (the kept rows only,
            logits kept in the compute dtype); outside torch.compile, LayerNorm, GELU and causal
            attention are PyTorch's fused CPU kernels (one pass each instead of a chain of element-wise
            ops); under torch.compile the reference formulas, which Inductor fuses itself (and faster:
            benchmarks/NOTES.md), with dropout masks from gpt1_fast.cpu_dropout. CPU tensors only.
- "auto":   "triton" for CUDA tensors when Triton is importable, "cpu" for CPU tensors, "torch" otherwise.

Choosing a backend is one argument (or `GPTConfig.backend`); nothing else in the model changes.
"""
from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F

from . import cpu_dropout, reference

BACKENDS = ("torch", "triton", "cpu", "auto")


# Looked up once at import (a cached function would be re-traced by torch.compile on every resolve).
_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_AVAILABLE


def _aten_fused(backend: str, x: torch.Tensor) -> bool:
    """Whether an op runs PyTorch's fused CPU kernel: backend "cpu", eagerly."""
    return resolve(backend, x) == "cpu" and not torch.compiler.is_compiling()


def resolve(backend: str, x: torch.Tensor) -> str:
    """The concrete backend ("torch", "triton" or "cpu") for an op on tensor `x`."""
    if backend == "auto":
        if x.is_cuda and triton_available():
            return "triton"
        return "cpu" if x.device.type == "cpu" else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "cpu" and x.device.type != "cpu":
        raise ValueError(f"backend 'cpu' runs on CPU tensors, got a {x.device.type} tensor")
    return backend


# ----------------------------------------------------------------------------------------- linear
def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """y = x @ w + b with w stored [in, out] (the original's Conv1D, width 1). cuBLAS already fuses
    the bias into the GEMM epilogue (addmm), so every backend shares this."""
    return reference.linear(x, w, b)


# ------------------------------------------------------------------------------------ layer norm
def layer_norm(x, g, b, eps: float = 1e-5, residual: torch.Tensor | None = None, backend: str = "auto"):
    """LN(x + residual) (post-LN blocks add the sublayer output before normalising)."""
    if resolve(backend, x) == "triton":
        from .kernels.layernorm_gelu import layer_norm as tl_layer_norm

        return tl_layer_norm(x, g, b, eps, residual=residual)
    if _aten_fused(backend, x):
        return F.layer_norm(x if residual is None else x + residual, g.shape, g, b, eps)
    return reference.layer_norm(x, g, b, eps, residual)


# ------------------------------------------------------------------------------------ activations
gelu, swish, ACT_FNS = reference.gelu, reference.swish, reference.ACT_FNS


def bias_act(x, bias, afn: str = "gelu", backend: str = "auto"):
    """act(x + bias): the MLP's first GEMM runs without bias, so add + activation are one pass."""
    if afn not in ACT_FNS:
        raise ValueError(f"unknown activation {afn!r}; expected one of {sorted(ACT_FNS)}")
    if afn == "gelu" and resolve(backend, x) == "triton":
        from .kernels.layernorm_gelu import bias_gelu

        return bias_gelu(x, bias)
    if afn == "gelu" and _aten_fused(backend, x):
        return F.gelu(x + bias, approximate="tanh")  # the tanh form, as reference.gelu
    return reference.bias_act(x, bias, afn)


def act_linear(x, bias, w, b, afn: str = "gelu", backend: str = "auto"):
    """linear(act(x + bias), w, b): the MLP after its bias-free first GEMM. With Triton and GELU the
    activation is recomputed in backward instead of kept (gpt1_fast/kernels/gelu_linear.py)."""
    if afn == "gelu" and resolve(backend, x) == "triton":
        from .kernels.gelu_linear import gelu_linear

        return gelu_linear(x, bias, w, b)
    return linear(bias_act(x, bias, afn, backend), w, b)


# ---------------------------------------------------------------------------------------- dropout
def _hashed_dropout(backend: str, x: torch.Tensor, p: float, training: bool) -> bool:
    """Whether dropout draws its mask from gpt1_fast.cpu_dropout: backend "cpu", under torch.compile."""
    return training and p > 0 and resolve(backend, x) == "cpu" and torch.compiler.is_compiling()


def dropout(x: torch.Tensor, p: float, training: bool, backend: str = "auto") -> torch.Tensor:
    """Dropout: F.dropout, or for backend "cpu" under torch.compile the same distribution from
    gpt1_fast.cpu_dropout's hashed masks (Inductor vectorises them; its own draws are scalar Philox)."""
    if _hashed_dropout(backend, x, p, training):
        return cpu_dropout.dropout(x, p)
    return F.dropout(x, p, training)


# -------------------------------------------------------------------------------------- attention
causal_mask = reference.causal_mask


def attention(qkv: torch.Tensor, n_head: int, dropout_p: float = 0.0, training: bool = False,
              mask_b: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Causal multi-head attention on c_attn's packed output.

    qkv: [B, T, 3C] (q | k | v, heads contiguous inside each) -> [B, T, C] with heads merged.
    mask_b: the [1, 1, >=T, >=T] lower-triangular buffer (the original's `attn.b`), torch backend only.
    """
    p = dropout_p if training else 0.0
    if resolve(backend, qkv) == "triton":
        from .kernels.attention import causal_attention_packed

        return causal_attention_packed(qkv, n_head, p)
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (t.reshape(B, T, n_head, C // n_head).transpose(1, 2) for t in qkv.split(C, dim=2))
    if _aten_fused(backend, qkv):  # masked scores are exp(-1e9 - max) = 0 in the reference: the same softmax
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
    else:
        keep = None
        if _hashed_dropout(backend, qkv, p, training):
            keep = cpu_dropout.keep_mask((B, n_head, T, T), p, cpu_dropout.draw_key(qkv.device))
        a = reference.attention(q, k, v, p, training, mask_b=mask_b, keep=keep)
    return a.transpose(1, 2).reshape(B, T, C)


# ---------------------------------------------------------------------------------- cross-entropy
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Per-row cross-entropy (reduction 'none'), computed in float32 whatever the logits' dtype.
    Every backend uses PyTorch's here; `backend` keeps the op boundary's signature uniform."""
    return reference.cross_entropy(logits, targets)


# ------------------------------------------------------------------------------ LM head + loss
def lm_head_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                 backend: str = "auto", rows_bound: int = 0) -> torch.Tensor:
    """Per-row LM cross-entropy through the tied head, float32 [N]: CE(h @ weight.T, targets) * mask.

    h [N, C] hidden states, weight [V, C] (the embedding table), targets [N] int64, mask [N] (0/1):
    a row with mask 0 gives exactly 0. Callers pass hidden states, not logits, so that a fused
    backend can avoid materialising the [N, V] logits; this reference does materialise them.
    "triton": the fused kernel (gpt1_fast/kernels/lm_head.py) that never holds the [N, V] logits and
    makes no host sync (positions and specials stay in the softmax); rows_bound > 0 (at most that
    many rows have mask != 0, known to the caller without a sync) lets it multiply only the kept
    rows; under autocast it computes in the autocast dtype, as the reference's matmul does.
    "cpu": gpt1_fast/cpu_lm_head.py, the kept rows only (found on the host), logits in the compute dtype."""
    concrete = resolve(backend, h)
    if concrete == "cpu":
        from .cpu_lm_head import lm_head_loss as cpu_fused

        return cpu_fused(h, weight, targets, mask)
    if concrete == "triton":
        from .kernels.lm_head import lm_head_loss as fused

        dev = h.device.type
        if torch.is_autocast_enabled(dev):
            h = h.to(torch.get_autocast_dtype(dev))
        return fused(h, weight, targets, mask, rows_bound=rows_bound)
    logits = torch.nn.functional.linear(h, weight)  # h @ weight.T, as the LM head computes it (same kernels, same bits)
    return reference.cross_entropy(logits, targets) * mask


# ------------------------------------------------------------------------------- cached attention
def step_mask(T: int, L: int, key_mask: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """[B or 1, 1, T, L] bool: which of L cached keys each of the T newest queries sees (attention_step)."""
    col = torch.arange(L, device=device)
    row = torch.arange(L - T, L, device=device)[:, None]
    allowed = (col <= row)[None, None]  # [1, 1, T, L] causal
    if key_mask is not None:
        allowed = allowed & (key_mask[:, None, None, :] | (col == row))
    return allowed


def attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0, training: bool = False, backend: str = "auto") -> torch.Tensor:
    """Attention of T new queries over the L >= T cached keys of incremental decoding.

    q: [B, H, T, D], the queries of cache columns L-T .. L-1; k, v: [B, H, L, D] (the cache's filled
    columns, new ones included); key_mask: [B, L] bool, False for padding columns. Query i sees
    columns <= L-T+i that are not padding, and always its own column (so a padding query has one key,
    not none: no NaN, and its output is never read). -> [B, H, T, D].
    torch: the reference formula (w*b + -1e9*(1-b)), so it equals the full recomputation;
    triton (CUDA): PyTorch's SDPA with the boolean mask (the fused kernel has no key mask); cpu (eagerly):
    the same SDPA, whose CPU kernel reads the cache's strided columns in place (the reference's
    matmuls copy them, the whole cache at every layer of every step).
    """
    allowed = step_mask(q.size(-2), k.size(-2), key_mask, q.device)
    p = dropout_p if training else 0.0
    if resolve(backend, q) == "triton" or _aten_fused(backend, q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
    # reference.attention's formula, op for op, with a rectangular [T, L] mask (its mask_b is square)
    b = allowed.to(q.dtype)
    w = torch.matmul(q, k.transpose(-1, -2)) * (1 / math.sqrt(q.size(-1)))
    w = torch.softmax(w * b + -1e9 * (1 - b), dim=-1)
    return torch.matmul(torch.nn.functional.dropout(w, p, training), v)
