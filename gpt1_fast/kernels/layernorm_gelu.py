"""Fused LayerNorm (+ residual add) and bias + tanh-GELU, forward and backward: host side and API.

    layer_norm(x, weight, bias, eps=1e-5, residual=None) = LN(x + residual)   (SPEC §3: biased
        variance, eps inside the sqrt), one pass over the rows; the post-LN block's residual add
        is fused into it so x + residual is never written to memory.
    bias_gelu(x, bias) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))),  z = x + bias.

Both take any leading shape, last dim up to MAX_WIDTH, float32/float16/bfloat16 activations with
float32 math inside, and parameters in their own dtype (fp32 params with bf16 activations under
autocast). Outputs are in the activation dtype (for layer_norm, the promoted dtype of x and
residual, as `x + residual` would give); gradients come back in each input's own dtype.

Memory traffic (what the kernels move, N = width, M = rows):
- layer_norm forward: read x (+ residual), write y and mean/rstd (8 bytes per row).
- layer_norm backward: read dy, x (+ residual), mean/rstd; write d(x + residual) once (the same
  tensor is the gradient of x and of residual). x + residual is recomputed rather than saved by the
  forward: saving it would cost one write in the forward and one read in the backward, re-reading
  costs one extra read in the backward, so the pair moves the same bytes and the forward stays lean.
  dweight/dbias: per-program fp32 partial rows summed by a second kernel (no atomics).
- bias_gelu backward recomputes gelu'(x + bias) from the saved input, not from the output.

Kernels: layernorm_gelu_kernels.py; launch choices: layernorm_gelu_configs.py through `TUNING`;
registration and the eager path: _op.py.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from . import _op
from . import layernorm_gelu_configs as configs
from . import layernorm_gelu_kernels as K
from ._op import cdiv
from .layernorm_gelu_configs import MAX_WIDTH

__all__ = ["layer_norm", "bias_gelu", "MAX_WIDTH", "TUNING"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Launch choices: `TUNING.choose("ln_bwd", (N, element size, arch))`; benchmarks and sweeps use
# `with TUNING.override(ln_bwd={...}):`.
TUNING = _op.Tuning("layernorm_gelu", configs.table, configs.candidates)


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda" and not _op.INTERPRET:
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # interpreter: a couple of programs, so the multi-program partial sums are exercised


def _row_split(M: int, rows: int, target_progs: int) -> tuple[int, int]:
    """(programs, rows per program) for the persistent-style backward grid; rows per program is a
    multiple of `rows` so every program's loop covers whole blocks."""
    blocks = cdiv(M, rows)
    progs = max(1, min(blocks, target_progs))
    rows_per_prog = cdiv(blocks, progs) * rows
    return cdiv(M, rows_per_prog), rows_per_prog


def _sum_partials(p1: torch.Tensor, p2: Optional[torch.Tensor], dtype1, dtype2):
    G, N = p1.shape
    o1 = torch.empty(N, device=p1.device, dtype=dtype1)
    o2 = torch.empty(N, device=p1.device, dtype=dtype2) if p2 is not None else o1
    c = configs.SUM_CONFIG
    _op.launcher(K.sum_partials_kernel)[(cdiv(N, c["BLOCK_C"]),)](
        p1, p2 if p2 is not None else p1, o1, o2, G, N, TWO=p2 is not None,
        BLOCK_G=c["BLOCK_G"], BLOCK_C=c["BLOCK_C"], num_warps=c["num_warps"])
    return o1, o2


def _key(x: torch.Tensor) -> tuple:
    return x.shape[-1], x.element_size(), _op.arch(x)


def _rows(t: torch.Tensor, N: int) -> torch.Tensor:
    # contiguous: autograd may hand over an expanded (stride-0) gradient, and inputs may be views
    return t.contiguous().view(-1, N)


# ------------------------------------------------------------------------------ LayerNorm op
def _ln_fwd_launch(c, x2, r2, w, b, y, mean, rstd, eps, has_res):
    M, N = x2.shape
    _op.launcher(K.ln_fwd_kernel)[(cdiv(M, c["ROWS"]),)](
        x2, r2, w, b, y, mean, rstd, M, N, eps,
        HAS_RES=has_res, ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"], num_warps=c["num_warps"])


def _layer_norm_fwd(x: torch.Tensor, residual: Optional[torch.Tensor], weight: torch.Tensor,
                    bias: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(LN(x + residual), mean, rstd) with mean/rstd fp32 of shape x.shape[:-1]."""
    N = x.shape[-1]
    out_dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    x2 = _rows(x, N)
    r2 = _rows(residual, N) if residual is not None else x2
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    mean = torch.empty(x.shape[:-1], device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if x2.shape[0] > 0:
        TUNING.launch("ln_fwd", _key(x), _ln_fwd_launch, x2, r2, weight.contiguous(), bias.contiguous(), y, mean,
                      rstd, eps, residual is not None)
    return y, mean, rstd


def _layer_norm_fwd_fake(x, residual, weight, bias, eps):
    out_dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    mean = x.new_empty(x.shape[:-1], dtype=torch.float32)
    return x.new_empty(x.shape, dtype=out_dtype), mean, torch.empty_like(mean)


def _ln_bwd_launch(c, dy2, x2, r2, w, mean, rstd, ds, has_res):
    M, N = x2.shape
    progs, rows_per_prog = _row_split(M, c["ROWS"], _num_sms(x2.device) * c["PROGS_PER_SM"])
    dw_part = torch.empty(progs, N, device=x2.device, dtype=torch.float32)
    db_part = torch.empty_like(dw_part)
    _op.launcher(K.ln_bwd_kernel)[(progs,)](
        dy2, x2, r2, w, mean, rstd, ds, dw_part, db_part, M, N, rows_per_prog,
        HAS_RES=has_res, ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"], num_warps=c["num_warps"])
    return dw_part, db_part


def _layer_norm_bwd(dy: torch.Tensor, x: torch.Tensor, residual: Optional[torch.Tensor], weight: torch.Tensor,
                    mean: torch.Tensor, rstd: torch.Tensor,
                    bias_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d(x + residual) in dy's dtype, dweight in weight's dtype, dbias in bias_dtype)."""
    N = x.shape[-1]
    x2 = _rows(x, N)
    r2 = _rows(residual, N) if residual is not None else x2
    ds = torch.empty(x.shape, device=x.device, dtype=dy.dtype)
    if x2.shape[0] == 0:
        return ds, torch.zeros_like(weight), torch.zeros(N, device=x.device, dtype=bias_dtype)
    dw_part, db_part = TUNING.launch("ln_bwd", _key(x), _ln_bwd_launch, _rows(dy, N), x2, r2, weight.contiguous(),
                                     mean, rstd, ds, residual is not None)
    dw, db = _sum_partials(dw_part, db_part, weight.dtype, bias_dtype)
    return ds, dw, db


def _layer_norm_bwd_fake(dy, x, residual, weight, mean, rstd, bias_dtype):
    return (x.new_empty(x.shape, dtype=dy.dtype), torch.empty_like(weight),
            weight.new_empty(weight.shape, dtype=bias_dtype))


def _ln_setup_context(ctx, inputs, output):
    x, residual, weight, bias, eps = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, residual, weight, mean, rstd)
    ctx.bias_dtype = bias.dtype
    ctx.mark_non_differentiable(mean, rstd)


def _ln_grads(ctx, backward, dy, _dmean, _drstd):
    x, residual, weight, mean, rstd = ctx.saved_tensors
    ds, dw, db = backward(dy, x, residual, weight, mean, rstd, ctx.bias_dtype)
    # y = LN(x + residual): both summands get d(x + residual), cast to their own dtype (no copy
    # when the dtypes agree, so it is one tensor for both, as autograd's add would give).
    dr = ds.to(residual.dtype) if residual is not None else None
    return ds.to(x.dtype), dr, dw, db, None


LAYER_NORM = _op.FusedOp("layer_norm", _layer_norm_fwd, _layer_norm_bwd, forward_fake=_layer_norm_fwd_fake,
                         backward_fake=_layer_norm_bwd_fake, setup_context=_ln_setup_context, grads=_ln_grads)


# ------------------------------------------------------------------------------ bias + GELU op
def _gelu_fwd_launch(c, x2, b, y):
    M, N = x2.shape
    _op.launcher(K.bias_gelu_fwd_kernel)[(cdiv(M, c["ROWS"]), cdiv(N, c["BLOCK_N"]))](
        x2, b, y, M, N, ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"], num_warps=c["num_warps"])


def _bias_gelu_fwd(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    x2 = _rows(x, x.shape[-1])
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    if x2.shape[0] > 0:
        TUNING.launch("gelu_fwd", _key(x), _gelu_fwd_launch, x2, bias.contiguous(), y)
    return y


def _bias_gelu_fwd_fake(x, bias):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _gelu_bwd_launch(c, dy2, x2, b, dx):
    M, N = x2.shape
    col_blocks = cdiv(N, c["BLOCK_N"])
    target = max(1, _num_sms(x2.device) * c["PROGS_PER_SM"] // col_blocks)
    progs, rows_per_prog = _row_split(M, c["ROWS"], target)
    db_part = torch.empty(progs, N, device=x2.device, dtype=torch.float32)
    _op.launcher(K.bias_gelu_bwd_kernel)[(progs, col_blocks)](
        dy2, x2, b, dx, db_part, M, N, rows_per_prog, ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"], num_warps=c["num_warps"])
    return db_part


def _bias_gelu_bwd(dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    N = x.shape[-1]
    x2 = _rows(x, N)
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    if x2.shape[0] == 0:
        return dx, torch.zeros_like(bias)
    db_part = TUNING.launch("gelu_bwd", _key(x), _gelu_bwd_launch, _rows(dy, N), x2, bias.contiguous(), dx)
    db, _ = _sum_partials(db_part, None, bias.dtype, None)
    return dx, db


def _bias_gelu_bwd_fake(dy, x, bias):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(bias)


def _gelu_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _gelu_grads(ctx, backward, dy):
    return backward(dy, *ctx.saved_tensors)


BIAS_GELU = _op.FusedOp("bias_gelu", _bias_gelu_fwd, _bias_gelu_bwd, forward_fake=_bias_gelu_fwd_fake,
                        backward_fake=_bias_gelu_bwd_fake, setup_context=_gelu_setup_context, grads=_gelu_grads)


# ------------------------------------------------------------------------------ public API
def _check_param(name: str, p: torch.Tensor, N: int, x: torch.Tensor) -> None:
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(p).__name__}")
    if p.shape != (N,):
        raise ValueError(f"{name} must have shape ({N},) to match the last dim of x, got {tuple(p.shape)}")
    if p.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} dtype must be one of {_FLOAT_DTYPES}, got {p.dtype}")
    if p.device != x.device:
        raise ValueError(f"{name} is on {p.device} but x is on {x.device}")


def _check_input(name: str, x: torch.Tensor) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have at least one dimension")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} dtype must be one of {_FLOAT_DTYPES}, got {x.dtype}")
    N = x.shape[-1]
    if not 1 <= N <= MAX_WIDTH:
        raise ValueError(f"last dim of {name} must be in [1, {MAX_WIDTH}], got {N}")
    return N


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5,
               residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """LN(x + residual) over the last dim (LN(x) when residual is None), SPEC §3 semantics."""
    N = _check_input("x", x)
    if residual is not None:
        _check_input("residual", residual)
        if residual.shape != x.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} must equal x shape {tuple(x.shape)}")
        if residual.device != x.device:
            raise ValueError(f"residual is on {residual.device} but x is on {x.device}")
    _check_param("weight", weight, N, x)
    _check_param("bias", bias, N, x)
    return LAYER_NORM(x, residual, weight, bias, float(eps))[0]


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """tanh-GELU of x + bias (bias broadcast over the last dim), output in x's dtype."""
    N = _check_input("x", x)
    _check_param("bias", bias, N, x)
    return BIAS_GELU(x, bias)
