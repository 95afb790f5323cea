"""The reference math of SPEC §3, op for op, as the original computes it.

The "torch" backend of gpt1_fast.ops runs these, the kernel tests compare the Triton ops with them
(in float64), and the GPU checks likewise. Every function works in the dtype it is given.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """y = x @ w + b with w stored [in, out] (the original's Conv1D of width 1)."""
    shape = x.shape[:-1] + (w.shape[-1],)
    x2 = x.reshape(-1, x.shape[-1])
    y = x2 @ w if b is None else torch.addmm(b, x2, w)
    return y.view(shape)


def layer_norm(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, eps: float = 1e-5,
               residual: torch.Tensor | None = None) -> torch.Tensor:
    """g * (s - mean) / sqrt(var + eps) + b over the last dim, s = x (+ residual): biased variance,
    eps inside the sqrt."""
    if residual is not None:
        x = x + residual
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    return g * ((x - u) / torch.sqrt(s + eps)) + b


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The tanh form of the original: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


ACT_FNS = {"relu": F.relu, "swish": swish, "gelu": gelu}


def bias_act(x: torch.Tensor, bias: torch.Tensor, afn: str = "gelu") -> torch.Tensor:
    """act(x + bias)."""
    return ACT_FNS[afn](x + bias)


def causal_mask(T: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The original's `b`: [1, 1, T, T] lower-triangular ones."""
    return torch.tril(torch.ones(T, T, device=device, dtype=dtype)).view(1, 1, T, T)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0, training: bool = False,
              *, mask_b: torch.Tensor | None = None, keep: torch.Tensor | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Per head, [B, H, T, D]: w = q·kᵀ·scale (default 1/sqrt(D)), `w*b + -1e9*(1-b)`, softmax,
    dropout on the probabilities, ·v. `keep` (bool/0-1 [B, H, T, T]) is an explicit dropout mask
    (kept entries scaled by 1/(1 - dropout_p)), e.g. the kernels' own from `attention_dropout_mask`;
    without it, F.dropout draws one when training. `mask_b`: a [1, 1, >=T, >=T] causal buffer."""
    T, D = q.shape[-2], q.shape[-1]
    w = torch.matmul(q, k.transpose(-1, -2)) * (1 / math.sqrt(D) if scale is None else scale)
    b = causal_mask(T, q.device, q.dtype) if mask_b is None else mask_b[:, :, :T, :T].to(q.dtype)
    w = torch.softmax(w * b + -1e9 * (1 - b), dim=-1)
    if keep is not None:
        w = w * keep.to(w.dtype) / (1 - dropout_p)
    else:
        w = F.dropout(w, dropout_p, training)
    return torch.matmul(w, v)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy (reduction 'none'), in float32 whatever the logits' dtype."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def soft_labels(y: torch.Tensor, n_class: int) -> torch.Tensor:
    """Scores y in [0, n_class - 1] -> [..., n_class] distributions over the classes 0..n_class-1 (Tai,
    Socher & Manning 2015; the TF release's `stsb_label_encoding`, its STS-B targets): mass
    y - floor(y) on class floor(y) + 1 and floor(y) - y + 1 on class floor(y); the top score all on
    the last class."""
    lo = y.floor().clamp(0, n_class - 1)
    frac = (y - lo).unsqueeze(-1)
    out = torch.zeros(*y.shape, n_class, dtype=y.dtype, device=y.device)
    out.scatter_(-1, lo.long().unsqueeze(-1), 1 - frac)
    return out.scatter_add(-1, (lo.long() + 1).clamp(max=n_class - 1).unsqueeze(-1), frac)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy against a target distribution, -sum_k target_k log softmax(logits)_k, in
    float32 whatever the logits' dtype."""
    return -(target.float() * torch.log_softmax(logits.float(), dim=-1)).sum(-1)
