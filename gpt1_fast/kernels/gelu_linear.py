"""linear(gelu(z + bias), w, b): the MLP's activation and second GEMM, with the activation recomputed
in backward instead of kept.

Saved for backward: z (the first GEMM's output, which the GELU backward needs anyway), the two
biases and w; not gelu(z + bias), which would be 4 x n_embd values per token (as much as z). The
backward runs the bias + GELU forward kernel once more (one read of z, one write: memory-bound, a
small fraction of the two GEMMs it sits between), then the GEMMs and the fused GELU backward of
gpt1_fast/kernels/layernorm_gelu.py.

Autocast: the GEMMs compute in the autocast dtype with explicit casts (as autocast's own addmm
would), gradients come back in each input's dtype; the activation stays in z's dtype.
"""
from __future__ import annotations

import torch

from .layernorm_gelu import bias_gelu

__all__ = ["gelu_linear"]


def _compute_dtype(z: torch.Tensor) -> torch.dtype:
    dev = z.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else z.dtype


class _GeluLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, bias, w, b):
        cdt = _compute_dtype(z)
        with torch.autocast(z.device.type, enabled=False):
            g = bias_gelu(z, bias).to(cdt)
            y = torch.addmm(b.to(cdt), g.reshape(-1, g.shape[-1]), w.to(cdt))
        ctx.save_for_backward(z, bias, w, b)
        ctx.cdt = cdt
        return y.view(*z.shape[:-1], w.shape[1])

    @staticmethod
    def backward(ctx, dy):
        z, bias, w, b = ctx.saved_tensors
        cdt = ctx.cdt
        with torch.autocast(z.device.type, enabled=False):
            g = bias_gelu(z, bias).to(cdt)  # recomputed
            g2 = g.reshape(-1, g.shape[-1])
            dy2 = dy.reshape(-1, dy.shape[-1]).to(cdt)
            dg = (dy2 @ w.to(cdt).t()).view(z.shape).to(z.dtype)
            dw = (g2.t() @ dy2).to(w.dtype)
            db = dy2.sum(0).to(b.dtype)
            dz, dbias = torch.ops.gpt1_fast.bias_gelu_bwd(dg, z, bias)
        return dz, dbias, dw, db


def gelu_linear(z: torch.Tensor, bias: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gelu(z + bias) @ w + b, w stored [in, out] (the original's Conv1D); z [..., in]."""
    if z.shape[-1] != w.shape[0] or b.shape != (w.shape[1],):
        raise ValueError(f"z [..., {w.shape[0]}], w [in, out] and b [out] expected; got {tuple(z.shape)}, "
                         f"{tuple(w.shape)}, {tuple(b.shape)}")
    return _GeluLinear.apply(z, bias, w, b)
