"""The op boundary: every compute op of the model goes through here.

Backends:
- "torch":  the literal reference math of SPEC §3 (what the original computes, op for op).
- "triton": the fused kernels of gpt1_fast.kernels (LayerNorm+residual, bias+GELU, causal attention).
- "auto":   "triton" for CUDA tensors when Triton is importable, "torch" otherwise.

Choosing a backend is one argument (or `GPTConfig.backend`); nothing else in the model changes.
"""
from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F

BACKENDS = ("torch", "triton", "auto")


# Looked up once at import (a cached function would be re-traced by torch.compile on every resolve).
_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_AVAILABLE


def resolve(backend: str, x: torch.Tensor) -> str:
    """The concrete backend ("torch" or "triton") for an op on tensor `x`."""
    if backend == "auto":
        return "triton" if (x.is_cuda and triton_available()) else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return backend


# ----------------------------------------------------------------------------------------- linear
def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """y = x @ w + b with w stored [in, out] (the original's Conv1D, width 1). cuBLAS already fuses
    the bias into the GEMM epilogue (addmm), so every backend shares this."""
    shape = x.shape[:-1] + (w.shape[-1],)
    x2 = x.reshape(-1, x.shape[-1])
    y = x2 @ w if b is None else torch.addmm(b, x2, w)
    return y.view(shape)


# ------------------------------------------------------------------------------------ layer norm
def _ref_layer_norm(x, g, b, eps):
    # SPEC §3: biased variance, eps inside the sqrt, computed as the original does.
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    x = (x - u) / torch.sqrt(s + eps)
    return g * x + b


def layer_norm(x, g, b, eps: float = 1e-5, residual: torch.Tensor | None = None, backend: str = "auto"):
    """LN(x + residual) (post-LN blocks add the sublayer output before normalising)."""
    if resolve(backend, x) == "triton":
        from .kernels.layernorm_gelu import layer_norm as tl_layer_norm

        return tl_layer_norm(x, g, b, eps, residual=residual)
    if residual is not None:
        x = x + residual
    return _ref_layer_norm(x, g, b, eps)


# ------------------------------------------------------------------------------------ activations
def gelu(x):
    # The tanh form of the original (exactly: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))).
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def swish(x):
    return x * torch.sigmoid(x)


ACT_FNS = {"relu": F.relu, "swish": swish, "gelu": gelu}


def bias_act(x, bias, afn: str = "gelu", backend: str = "auto"):
    """act(x + bias): the MLP's first GEMM runs without bias, so add + activation are one pass."""
    if afn not in ACT_FNS:
        raise ValueError(f"unknown activation {afn!r}; expected one of {sorted(ACT_FNS)}")
    if afn == "gelu" and resolve(backend, x) == "triton":
        from .kernels.layernorm_gelu import bias_gelu

        return bias_gelu(x, bias)
    return ACT_FNS[afn](x + bias)


# -------------------------------------------------------------------------------------- attention
def _ref_attention(q, k, v, mask_b, attn_dropout_p: float, training: bool):
    # SPEC §3 literally: scores, w*b + -1e9*(1-b), softmax, dropout, @v.
    w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(v.size(-1))
    w = w * mask_b + -1e9 * (1 - mask_b)
    w = torch.softmax(w, dim=-1)
    w = F.dropout(w, attn_dropout_p, training)
    return torch.matmul(w, v)


def causal_mask(T: int, device, dtype=torch.float32) -> torch.Tensor:
    return torch.tril(torch.ones(T, T, device=device, dtype=dtype)).view(1, 1, T, T)


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
    q, k, v = qkv.split(C, dim=2)
    q, k, v = (t.reshape(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
    if mask_b is None:
        mask_b = causal_mask(T, qkv.device, qkv.dtype)
    a = _ref_attention(q, k, v, mask_b[:, :, :T, :T].to(qkv.dtype), p, training)
    return a.transpose(1, 2).reshape(B, T, C)


# ---------------------------------------------------------------------------------- cross-entropy
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Per-row cross-entropy (reduction 'none'), computed in float32 whatever the logits' dtype.
    Every backend uses PyTorch's here (no fused LM-head + cross-entropy kernel yet); `backend` keeps
    the op boundary's signature uniform for when one exists."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


# ------------------------------------------------------------------------------- cached attention
def attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0, training: bool = False, backend: str = "auto") -> torch.Tensor:
    """Attention of T new queries over the L >= T cached keys of incremental decoding.

    q: [B, H, T, D], the queries of cache columns L-T .. L-1; k, v: [B, H, L, D] (the cache's filled
    columns, new ones included); key_mask: [B, L] bool, False for padding columns. Query i sees
    columns <= L-T+i that are not padding, and always its own column (so a padding query has one key,
    not none: no NaN, and its output is never read). -> [B, H, T, D].
    torch: the reference formula (w*b + -1e9*(1-b)), so it equals the full recomputation;
    triton (CUDA): PyTorch's SDPA with the boolean mask (the fused kernel has no key mask).
    """
    T, L = q.size(-2), k.size(-2)
    col = torch.arange(L, device=q.device)
    row = torch.arange(L - T, L, device=q.device)[:, None]
    allowed = (col <= row)[None, None]  # [1, 1, T, L] causal
    if key_mask is not None:
        allowed = allowed & (key_mask[:, None, None, :] | (col == row))
    p = dropout_p if training else 0.0
    if resolve(backend, q) == "triton":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
    return _ref_attention(q, k, v, allowed.to(q.dtype), p, training)
