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


def act_linear(x, bias, w, b, afn: str = "gelu", backend: str = "auto"):
    """linear(act(x + bias), w, b): the MLP after its bias-free first GEMM. With Triton and GELU the
    activation is recomputed in backward instead of kept (gpt1_fast/kernels/gelu_linear.py)."""
    if afn == "gelu" and resolve(backend, x) == "triton":
        from .kernels.gelu_linear import gelu_linear

        return gelu_linear(x, bias, w, b)
    return linear(bias_act(x, bias, afn, backend), w, b)


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


# ------------------------------------------------------------------------- LM head + cross-entropy
def lm_head_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                 backend: str = "auto") -> torch.Tensor:
    """Per-row float32 LM loss of the tied head: mask * cross_entropy(h @ weightᵀ, targets).

    h [N, C] hidden states, weight [V, C] the whole embedding table (positions and specials stay in
    the softmax, as the original), targets [N], mask [N]. "torch": the literal reference (full
    logits, float32 cross-entropy). "triton": the fused kernel (gpt1_fast/kernels/lm_head.py) that
    never holds the [N, V] logits and skips rows whose mask is 0; under autocast it computes in the
    autocast dtype, as the reference's matmul does."""
    if resolve(backend, h) == "triton":
        from .kernels.lm_head import lm_head_loss as fused

        dev = h.device.type
        if torch.is_autocast_enabled(dev):
            h = h.to(torch.get_autocast_dtype(dev))
        return fused(h, weight, targets, mask)
    logits = F.linear(h, weight)
    return F.cross_entropy(logits.float(), targets, reduction="none") * mask
