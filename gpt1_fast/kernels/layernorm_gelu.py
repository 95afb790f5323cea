"""Fused LayerNorm (+ residual add) and bias + tanh-GELU: Triton kernels, forward and backward.

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
  dweight/dbias: each program of a persistent-style grid sums a contiguous block of rows in
  registers, writes one fp32 partial row, and a small second kernel sums the partials (no atomics).
- bias_gelu backward recomputes gelu'(x + bias) from the saved input, not from the output.

Registration: the two ops are `torch.library.custom_op`s with fake (meta) implementations and
autograd through `register_autograd`, so torch.compile traces them without a graph break and
AOTAutograd sees the backward op. `torch.library.triton_op` + `wrap_triton` would be the first
choice, but under TRITON_INTERPRET=1 (how CI runs these kernels on CPU) `wrap_triton` returns the
raw interpreted kernel and triton_op's fake implementation (the op body itself, run on FakeTensors)
then tries to read fake data pointers and fails (torch 2.13); opaque custom ops with explicit fake
implementations work the same on CPU under the interpreter and on CUDA, on torch 2.11 and 2.13.
The cost is that Inductor cannot inline these kernels into its own code: it calls them as they are.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import triton
import triton.language as tl

__all__ = ["layer_norm", "bias_gelu", "MAX_WIDTH"]

MAX_WIDTH = 8192  # a LayerNorm row lives in registers: 8192 fp32 per row over 16 warps is 16 per thread

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Launch configurations, overridable for tuning sweeps (benchmarks/gpu_check_layernorm_gelu.py):
# CONFIG_OVERRIDES["ln_fwd"] (every width), [("ln_fwd", 768)] (one width) or [("ln_fwd", 768, 2)]
# (one width, 2-byte activations) = {"ROWS": 2, "num_warps": 4}; keys as returned by *_config().
CONFIG_OVERRIDES: dict[str, dict] = {}


# ------------------------------------------------------------------------------------- kernels
@triton.jit
def _row_tile(rows, row_end, cols, cmask, N):
    """Mask and int64 element offsets of the [ROWS, BLOCK_N] tile of whole rows `rows` (those below
    row_end) of a row-major [., N] matrix."""
    mask = (rows < row_end)[:, None] & cmask[None, :]
    return mask, rows.to(tl.int64)[:, None] * N + cols[None, :]


@triton.jit
def _ln_fwd_kernel(X, R, W, B, Y, Mean, Rstd, M, N, eps,
                   HAS_RES: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    # ROWS whole rows per program: narrow rows (768) get enough bytes in flight per program and
    # load weight/bias once for several rows.
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    mask, offs = _row_tile(rows, M, cols, cmask, N)
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        x += tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / N
    xc = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / N  # biased variance, as the original
    rstd = 1.0 / tl.sqrt_rn(var + eps)
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + rows, mean, mask=rmask)
    tl.store(Rstd + rows, rstd, mask=rmask)


@triton.jit
def _ln_bwd_kernel(DY, X, R, W, Mean, Rstd, DS, DWp, DBp, M, N, rows_per_prog,
                   HAS_RES: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    # Persistent-style: each program owns rows [pid * rows_per_prog, ...), ROWS at a time, and
    # dweight/dbias accumulate in registers, leaving as one fp32 partial row per program.
    # The loads of the next ROWS are issued before the current ones are reduced (kept raw, in
    # the input dtype, and converted only when used), so every program has two blocks in flight
    # instead of stalling on DRAM latency once per iteration.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    cmask = cols < N
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    row0 = pid * rows_per_prog
    row_end = tl.minimum(row0 + rows_per_prog, M)
    rows = row0 + tl.arange(0, ROWS)
    mask, offs = _row_tile(rows, row_end, cols, cmask, N)
    x = tl.load(X + offs, mask=mask, other=0.0)
    r = x
    if HAS_RES:
        r = tl.load(R + offs, mask=mask, other=0.0)
    dy = tl.load(DY + offs, mask=mask, other=0.0)
    mean = tl.load(Mean + rows, mask=rows < row_end, other=0.0)
    rstd = tl.load(Rstd + rows, mask=rows < row_end, other=0.0)
    for _ in range(row0, row_end, ROWS):
        # prefetch the next block (fully masked past the end of this program's rows)
        n_rows = rows + ROWS
        n_rmask = n_rows < row_end
        n_mask, n_offs = _row_tile(n_rows, row_end, cols, cmask, N)
        n_x = tl.load(X + n_offs, mask=n_mask, other=0.0)
        n_r = n_x
        if HAS_RES:
            n_r = tl.load(R + n_offs, mask=n_mask, other=0.0)
        n_dy = tl.load(DY + n_offs, mask=n_mask, other=0.0)
        n_mean = tl.load(Mean + n_rows, mask=n_rmask, other=0.0)
        n_rstd = tl.load(Rstd + n_rows, mask=n_rmask, other=0.0)
        # current block
        xf = x.to(tl.float32)
        if HAS_RES:
            xf += r.to(tl.float32)
        dyf = dy.to(tl.float32)
        xhat = tl.where(mask, (xf - mean[:, None]) * rstd[:, None], 0.0)
        wdy = w[None, :] * dyf
        c1 = tl.sum(xhat * wdy, axis=1) / N
        c2 = tl.sum(wdy, axis=1) / N
        ds = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        tl.store(DS + offs, ds.to(DS.dtype.element_ty), mask=mask)
        dw_acc += dyf * xhat
        db_acc += dyf
        rows, mask, offs, x, r, dy, mean, rstd = n_rows, n_mask, n_offs, n_x, n_r, n_dy, n_mean, n_rstd
    tl.store(DWp + pid * N + cols, tl.sum(dw_acc, axis=0), mask=cmask)
    tl.store(DBp + pid * N + cols, tl.sum(db_acc, axis=0), mask=cmask)


@triton.jit
def _sum_partials_kernel(P1, P2, O1, O2, G, N,
                         TWO: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr):
    # O[c] = sum_g P[g, c] for the [G, N] fp32 partials of the backward kernels; one column block
    # per program. P2/O2 are only touched when TWO (LayerNorm: dweight and dbias together).
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < N
    acc1 = tl.zeros([BLOCK_G, BLOCK_C], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_G, BLOCK_C], dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        mask = (g < G)[:, None] & cmask[None, :]
        offs = g[:, None] * N + cols[None, :]
        acc1 += tl.load(P1 + offs, mask=mask, other=0.0)
        if TWO:
            acc2 += tl.load(P2 + offs, mask=mask, other=0.0)
    tl.store(O1 + cols, tl.sum(acc1, axis=0).to(O1.dtype.element_ty), mask=cmask)
    if TWO:
        tl.store(O2 + cols, tl.sum(acc2, axis=0).to(O2.dtype.element_ty), mask=cmask)


@triton.jit
def _tanh(u):
    # tanh(|u|) = (1 - e) / (1 + e) with e = exp(-2|u|) in (0, 1]: no overflow, saturates to +-1.
    # Written out because tl has no tanh on every Triton version we support (3.6 and 3.9) nor in
    # the interpreter.
    e = tl.exp(-2.0 * tl.abs(u))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u < 0, -t, t)


@triton.jit
def _bias_gelu_fwd_kernel(X, B, Y, M, N, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    mask, offs = _row_tile(rows, M, cols, cmask, N)
    b = tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)
    z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) + b[None, :]
    t = _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))
    tl.store(Y + offs, (0.5 * z * (1.0 + t)).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd_kernel(DY, X, B, DX, DBp, M, N, rows_per_prog,
                          ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    # Grid (row groups, column blocks): gelu'(x + bias) is recomputed from the saved input;
    # dbias partials and the one-block-ahead prefetch as in the LayerNorm backward.
    pid = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    b = tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)
    db_acc = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    row0 = pid * rows_per_prog
    row_end = tl.minimum(row0 + rows_per_prog, M)
    rows = row0 + tl.arange(0, ROWS)
    mask, offs = _row_tile(rows, row_end, cols, cmask, N)
    x = tl.load(X + offs, mask=mask, other=0.0)
    dy = tl.load(DY + offs, mask=mask, other=0.0)
    for _ in range(row0, row_end, ROWS):
        n_rows = rows + ROWS
        n_mask, n_offs = _row_tile(n_rows, row_end, cols, cmask, N)
        n_x = tl.load(X + n_offs, mask=n_mask, other=0.0)
        n_dy = tl.load(DY + n_offs, mask=n_mask, other=0.0)
        z = x.to(tl.float32) + b[None, :]
        z2 = z * z
        t = _tanh(0.7978845608028654 * z * (1.0 + 0.044715 * z2))
        # d/dz 0.5 z (1 + t) = 0.5 (1 + t) + 0.5 z (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 z^2)
        dgelu = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * z2)
        dx = dy.to(tl.float32) * dgelu
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        db_acc += tl.where(mask, dx, 0.0)
        rows, mask, offs, x, dy = n_rows, n_mask, n_offs, n_x, n_dy
    tl.store(DBp + pid * N + cols, tl.sum(db_acc, axis=0), mask=cmask)


# --------------------------------------------------------------------------- launch configuration
# Host-side helpers in plain Python: triton.cdiv is a jit function in Triton 3.9 and calling it
# from Python costs microseconds per call (it showed in the profile of the ops' host overhead).
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


# Chosen from a sweep on an H100 at 32768 rows (benchmarks/gpu_check_layernorm_gelu.py --sweep and
# benchmarks/NOTES.md). `elem` is the activation element size in bytes.
def _apply_overrides(name: str, N: int, elem: int, cfg: dict) -> dict:
    o = CONFIG_OVERRIDES
    return {**cfg, **o.get(name, {}), **o.get((name, N), {}), **o.get((name, N, elem), {})}


def ln_fwd_config(N: int, elem: int = 2) -> dict:
    block_n = _next_pow2(N)
    # one row per program: several rows per program were no better at 768 over two H100 runs
    # (noisy timings, see NOTES.md), and one row of 768 already gives every thread of a 4-warp
    # program one 16-byte bf16 load per tensor
    num_warps = max(4, min(8, block_n // 512))
    if elem == 4 and block_n >= 4096:
        num_warps = 16  # 8 warps spill on sm_80 with fp32 at 4096
    rows = max(1, 512 // block_n)  # narrow rows (< 512) only: several per program
    return _apply_overrides("ln_fwd", N, elem, {"BLOCK_N": block_n, "ROWS": rows, "num_warps": num_warps})


def ln_bwd_config(N: int, elem: int = 2) -> dict:
    block_n = _next_pow2(N)
    # 8 warps at 768 ran 2x faster than 4 (latency-bound loop: more threads, more loads in flight)
    num_warps = max(8, min(16, block_n // 256))
    # PROGS_PER_SM: programs per SM of the persistent-style grid (interpreter: a few in all)
    cfg = {"BLOCK_N": block_n, "ROWS": max(1, 512 // block_n), "num_warps": num_warps,
           "PROGS_PER_SM": max(2, 2048 // (32 * num_warps) // 2)}
    return _apply_overrides("ln_bwd", N, elem, cfg)


def _gelu_block_n(N: int) -> int:
    # column tiles of 256 divide both GPT-1 widths (768, 3072) exactly: no masked lanes
    return 256 if N >= 256 else _next_pow2(N)


def gelu_fwd_config(N: int, elem: int = 2) -> dict:
    block_n = _gelu_block_n(N)
    cfg = {"BLOCK_N": block_n, "ROWS": max(1, 4096 // block_n), "num_warps": 8}
    return _apply_overrides("gelu_fwd", N, elem, cfg)


def gelu_bwd_config(N: int, elem: int = 2) -> dict:
    block_n = _gelu_block_n(N)
    cfg = {"BLOCK_N": block_n, "ROWS": max(1, 2048 // block_n), "num_warps": 8, "PROGS_PER_SM": 4}
    return _apply_overrides("gelu_bwd", N, elem, cfg)


# [G, N] fp32 partials -> [N]: narrow column blocks so that even N = 768 spreads over 48 programs,
# tall row blocks so that a few hundred partial rows take a few iterations
SUM_CONFIG = {"BLOCK_G": 128, "BLOCK_C": 16, "num_warps": 4}


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # interpreter: a couple of programs, so the multi-program partial sums are exercised


def _row_split(M: int, rows: int, target_progs: int) -> tuple[int, int]:
    """(programs, rows per program) for the persistent-style backward grid; rows per program is a
    multiple of `rows` so every program's loop covers whole blocks."""
    blocks = _cdiv(M, rows)
    progs = max(1, min(blocks, target_progs))
    rows_per_prog = _cdiv(blocks, progs) * rows
    return _cdiv(M, rows_per_prog), rows_per_prog


def _sum_partials(p1: torch.Tensor, p2: Optional[torch.Tensor], dtype1, dtype2):
    G, N = p1.shape
    o1 = torch.empty(N, device=p1.device, dtype=dtype1)
    o2 = torch.empty(N, device=p1.device, dtype=dtype2) if p2 is not None else o1
    c = SUM_CONFIG
    _sum_partials_kernel[(_cdiv(N, c["BLOCK_C"]),)](
        p1, p2 if p2 is not None else p1, o1, o2, G, N, TWO=p2 is not None,
        BLOCK_G=c["BLOCK_G"], BLOCK_C=c["BLOCK_C"], num_warps=c["num_warps"])
    return o1, o2


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


# ------------------------------------------------------------------------------ LayerNorm op
@torch.library.custom_op("gpt1_fast::layer_norm_fwd", mutates_args=())
def _layer_norm_fwd(x: torch.Tensor, residual: Optional[torch.Tensor], weight: torch.Tensor,
                    bias: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(LN(x + residual), mean, rstd) with mean/rstd fp32 of shape x.shape[:-1]."""
    N = x.shape[-1]
    out_dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    x2 = x.contiguous().view(-1, N)
    r2 = residual.contiguous().view(-1, N) if residual is not None else x2
    M = x2.shape[0]
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    mean = torch.empty(x.shape[:-1], device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if M > 0:
        c = ln_fwd_config(N, x.element_size())
        _ln_fwd_kernel[(_cdiv(M, c["ROWS"]),)](
            x2, r2, weight.contiguous(), bias.contiguous(), y, mean, rstd, M, N, eps,
            HAS_RES=residual is not None, ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"], num_warps=c["num_warps"])
    return y, mean, rstd


@_layer_norm_fwd.register_fake
def _(x, residual, weight, bias, eps):
    out_dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    mean = x.new_empty(x.shape[:-1], dtype=torch.float32)
    return x.new_empty(x.shape, dtype=out_dtype), mean, torch.empty_like(mean)


@torch.library.custom_op("gpt1_fast::layer_norm_bwd", mutates_args=())
def _layer_norm_bwd(dy: torch.Tensor, x: torch.Tensor, residual: Optional[torch.Tensor], weight: torch.Tensor,
                    mean: torch.Tensor, rstd: torch.Tensor,
                    bias_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d(x + residual) in dy's dtype, dweight in weight's dtype, dbias in bias_dtype)."""
    N = x.shape[-1]
    x2 = x.contiguous().view(-1, N)
    r2 = residual.contiguous().view(-1, N) if residual is not None else x2
    dy2 = dy.contiguous().view(-1, N)  # autograd may hand over an expanded (stride-0) gradient
    M = x2.shape[0]
    ds = torch.empty(x.shape, device=x.device, dtype=dy.dtype)
    if M == 0:
        return ds, torch.zeros_like(weight), torch.zeros(N, device=x.device, dtype=bias_dtype)
    c = ln_bwd_config(N, x.element_size())
    progs, rows_per_prog = _row_split(M, c["ROWS"], _num_sms(x.device) * c["PROGS_PER_SM"])
    dw_part = torch.empty(progs, N, device=x.device, dtype=torch.float32)
    db_part = torch.empty_like(dw_part)
    _ln_bwd_kernel[(progs,)](
        dy2, x2, r2, weight.contiguous(), mean, rstd, ds, dw_part, db_part, M, N, rows_per_prog,
        HAS_RES=residual is not None, ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"], num_warps=c["num_warps"])
    dw, db = _sum_partials(dw_part, db_part, weight.dtype, bias_dtype)
    return ds, dw, db


@_layer_norm_bwd.register_fake
def _(dy, x, residual, weight, mean, rstd, bias_dtype):
    return (x.new_empty(x.shape, dtype=dy.dtype), torch.empty_like(weight),
            weight.new_empty(weight.shape, dtype=bias_dtype))


def _ln_setup_context(ctx, inputs, output):
    x, residual, weight, bias, eps = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, residual, weight, mean, rstd)
    ctx.bias_dtype = bias.dtype
    ctx.mark_non_differentiable(mean, rstd)


def _ln_backward(ctx, dy, _dmean, _drstd):
    x, residual, weight, mean, rstd = ctx.saved_tensors
    ds, dw, db = torch.ops.gpt1_fast.layer_norm_bwd(dy, x, residual, weight, mean, rstd, ctx.bias_dtype)
    # y = LN(x + residual): both summands get d(x + residual), cast to their own dtype (no copy
    # when the dtypes agree, so it is one tensor for both, as autograd's add would give).
    dr = ds.to(residual.dtype) if residual is not None else None
    return ds.to(x.dtype), dr, dw, db, None


_layer_norm_fwd.register_autograd(_ln_backward, setup_context=_ln_setup_context)


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
    y, _, _ = torch.ops.gpt1_fast.layer_norm_fwd(x, residual, weight, bias, float(eps))
    return y


# ------------------------------------------------------------------------------ bias + GELU op
@torch.library.custom_op("gpt1_fast::bias_gelu_fwd", mutates_args=())
def _bias_gelu_fwd(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    N = x.shape[-1]
    x2 = x.contiguous().view(-1, N)
    M = x2.shape[0]
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    if M > 0:
        c = gelu_fwd_config(N, x.element_size())
        grid = (_cdiv(M, c["ROWS"]), _cdiv(N, c["BLOCK_N"]))
        _bias_gelu_fwd_kernel[grid](x2, bias.contiguous(), y, M, N, ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"],
                                    num_warps=c["num_warps"])
    return y


@_bias_gelu_fwd.register_fake
def _(x, bias):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("gpt1_fast::bias_gelu_bwd", mutates_args=())
def _bias_gelu_bwd(dy: torch.Tensor, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    N = x.shape[-1]
    x2 = x.contiguous().view(-1, N)
    dy2 = dy.contiguous().view(-1, N)
    M = x2.shape[0]
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    if M == 0:
        return dx, torch.zeros_like(bias)
    c = gelu_bwd_config(N, x.element_size())
    col_blocks = _cdiv(N, c["BLOCK_N"])
    target = max(1, _num_sms(x.device) * c["PROGS_PER_SM"] // col_blocks)
    progs, rows_per_prog = _row_split(M, c["ROWS"], target)
    db_part = torch.empty(progs, N, device=x.device, dtype=torch.float32)
    _bias_gelu_bwd_kernel[(progs, col_blocks)](
        dy2, x2, bias.contiguous(), dx, db_part, M, N, rows_per_prog,
        ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"], num_warps=c["num_warps"])
    db, _ = _sum_partials(db_part, None, bias.dtype, None)
    return dx, db


@_bias_gelu_bwd.register_fake
def _(dy, x, bias):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(bias)


def _gelu_setup_context(ctx, inputs, output):
    x, bias = inputs
    ctx.save_for_backward(x, bias)


def _gelu_backward(ctx, dy):
    x, bias = ctx.saved_tensors
    return torch.ops.gpt1_fast.bias_gelu_bwd(dy, x, bias)


_bias_gelu_fwd.register_autograd(_gelu_backward, setup_context=_gelu_setup_context)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """tanh-GELU of x + bias (bias broadcast over the last dim), output in x's dtype."""
    N = _check_input("x", x)
    _check_param("bias", bias, N, x)
    return torch.ops.gpt1_fast.bias_gelu_fwd(x, bias)
