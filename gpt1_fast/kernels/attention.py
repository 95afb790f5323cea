"""Fused causal (masked) self-attention with attention dropout, forward and backward: host side and API.

Math (SPEC §3, per head): w = q·kᵀ·scale, masked as `w*b + -1e9*(1-b)` with b lower-triangular,
softmax, dropout on the probabilities, ·v. Flash-style: the T×T matrix is never stored.
Kernels: attention_kernels.py; launch choices: attention_configs.py through `TUNING`; registration
and the eager path: _op.py.

- Backward kinds: "tiled" (Triton tutorial 06; for T <= 128 delta is computed in the kernel, saving
  the preprocess launch, since host time dominates there), "small" (T <= 128: one program per
  (batch, head) writes dQ, dK, dV in one pass) and "atomic" (T > 128 with dropout, FlashAttention-2's
  dQ by fp32 atomics). Which kind and tiles run comes from the committed table (attention_configs:
  measured on an H100, a safe default elsewhere), not from timing: deterministic. "atomic" sums in
  scheduling order, so it runs only where the table has it and non-determinism is allowed
  (`with TUNING.override(deterministic=False)` or GPT1_FAST_DETERMINISTIC=0). Timing the candidates
  instead: GPT1_FAST_AUTOTUNE=1 or `TUNING.override(autotune=True)` (eager calls on a GPU only).
- Dropout: no stored mask. keep(b, h, i, j) is Philox4x32 keyed by a 64-bit seed with counter
  (j // 8, i, b·H + h, 0); its 4 32-bit outputs split into 8 16-bit uniforms serving keys j = 8c..8c+7
  (one Philox call per 8 elements: the RNG is the main cost of dropout here; FlashAttention uses 8-bit
  uniforms, 16 per call, which biases the drop rate by up to 2⁻⁹). It depends only on (seed, b, h, i, j),
  not on block sizes, so the backward and `attention_dropout_mask` regenerate exactly the forward's
  mask. keep ⟺ u16 >= round(p·2¹⁶): P(keep) = 1 - p to 2⁻¹⁷. The seed is a 1-element int64 tensor
  drawn from PyTorch's generator of the input's device (`draw_dropout_seed`), so `torch.manual_seed`
  reproduces a run, and it is an explicit op input (the ops stay functional for torch.compile).
  Output = softmax·keep/(1-p) @ v.
- fp32/fp16/bf16 inputs, fp32 accumulation. fp32 inputs use exact fp32 dots ("ieee"), not tf32, to
  match torch's default fp32 matmul.
"""
from __future__ import annotations

import math

import torch

from . import _op
from . import attention_configs as configs
from . import attention_kernels as K
from ._op import cdiv
from .attention_configs import SMALL_T, SUPPORTED_HEAD_DIMS, bwd_configs, fwd_configs  # noqa: F401
from .attention_kernels import PHILOX_ROUNDS

__all__ = ["causal_attention", "causal_attention_packed", "attention_dropout_mask", "draw_dropout_seed",
           "TUNING", "SUPPORTED_HEAD_DIMS"]

# Launch choices: TUNING.choose("fwd" | "bwd", (T, D, dtype, dropout on, B·H bucket, arch)). Benchmarks
# and tests: `with TUNING.override(bwd=("tiled", cfg), deterministic=False, autotune=True): ...`.
TUNING = _op.Tuning("attention", configs.table, configs.candidates)


# ----------------------------------------------------------------------------------------- launchers
def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _dropout_args(p: float) -> tuple[int, float]:
    return int(round(p * (1 << 16))), 1.0 / (1.0 - p)


def _bht(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride()[:3]


def _key(q4: torch.Tensor, p: float) -> tuple:
    B, H, T, D = q4.shape
    return T, D, q4.dtype, p > 0, _op.next_pow2(B * H), _op.arch(q4)


def _consts(q4: torch.Tensor, p: float) -> dict:
    return dict(HEAD_DIM=q4.shape[3], DROPOUT=p > 0, PRECISION=_precision(q4.dtype), N_ROUNDS=PHILOX_ROUNDS)


def _run_fwd(cfg, q4, k4, v4, o, o_strides, lse, seed, p, scale):
    B, H, T, D = q4.shape
    thr, keep_scale = _dropout_args(p)
    _op.launcher(K.attn_fwd)[(cdiv(T, cfg["BLOCK_M"]), B * H)](
        q4, k4, v4, o, lse, seed, *_bht(q4), *_bht(k4), *_bht(v4), *o_strides, H, T, scale, thr, keep_scale,
        **_consts(q4, p), **cfg)


def _launch_fwd(q4, k4, v4, o, o_strides, lse, seed, p: float, scale: float):
    TUNING.launch("fwd", _key(q4, p), _run_fwd, q4, k4, v4, o, o_strides, lse, seed, p, scale)


def _run_bwd(choice, do4, q4, k4, v4, o4, lse, seed, g, g_strides, g_offs, p, scale):
    """One backward of kind `choice[0]` with config `choice[1]`: dQ, dK, dV into g at g_offs."""
    kind, cfg = choice
    B, H, T, D = q4.shape
    thr, keep_scale = _dropout_args(p)
    common = (*_bht(q4), *_bht(k4), *_bht(v4), *_bht(o4), *_bht(do4), *g_strides, *g_offs, H, T, scale, thr,
              keep_scale)
    if kind == "small":
        _op.launcher(K.attn_bwd_small)[(B * H,)](q4, k4, v4, o4, do4, g, lse, seed, *common, **_consts(q4, p),
                                                 **cfg)
        return
    atomic = kind == "atomic"
    fused = T <= SMALL_T and not atomic
    if fused:
        delta = lse  # not read
    else:
        delta = torch.empty((B, H, T), device=q4.device, dtype=torch.float32)
        _op.launcher(K.attn_bwd_preprocess)[(cdiv(T, 64), B * H)](
            o4, do4, delta, *_bht(o4), *_bht(do4), H, T, HEAD_DIM=D, BLOCK_M=64)
    dq_acc = torch.zeros((B, H, T, D), device=q4.device, dtype=torch.float32) if atomic else lse  # lse: unused
    _op.launcher(K.attn_bwd)[(cdiv(T, cfg["BLOCK_N1"]), B * H)](
        q4, k4, v4, o4, do4, g, lse, delta, seed, dq_acc, *common, **_consts(q4, p), FUSED_DELTA=fused,
        ATOMIC_DQ=atomic, **cfg)
    if atomic:
        _op.launcher(K.attn_dq_store)[(cdiv(T, 64), B * H)](dq_acc, g, *g_strides, g_offs[0], H, T, scale,
                                                            HEAD_DIM=D, BLOCK_M=64)


def _launch_bwd(do4, q4, k4, v4, o4, lse, seed, g, g_strides, g_offs, p: float, scale: float):
    TUNING.launch("bwd", _key(q4, p), _run_bwd, do4, q4, k4, v4, o4, lse, seed, g, g_strides, g_offs, p, scale)


def _heads(t: torch.Tensor, part: int, n_head: int) -> torch.Tensor:
    """[B, T, 3C] (last dim contiguous) -> part (0 q, 1 k, 2 v) as a [B, H, T, D] strided view: no copy."""
    B, T, C3 = t.shape
    D = C3 // 3 // n_head
    return t.as_strided((B, n_head, T, D), (t.stride(0), D, t.stride(1), 1),
                        t.storage_offset() + part * (C3 // 3))


def _merged_view(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """[B, T, C] (last dim contiguous) -> [B, H, T, D] view (heads merged layout)."""
    B, T, C = t.shape
    D = C // n_head
    return t.as_strided((B, n_head, T, D), (t.stride(0), D, t.stride(1), 1), t.storage_offset())


def _lastdim_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


# ----------------------------------------------------------------------------------------- ops
def _attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seed: torch.Tensor, dropout_p: float,
              scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, T, D = q.shape
    q, k, v = _lastdim_contig(q), _lastdim_contig(k), _lastdim_contig(v)
    o = torch.empty((B, H, T, D), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, T), device=q.device, dtype=torch.float32)
    _launch_fwd(q, k, v, o, _bht(o), lse, seed, dropout_p, scale)
    return o, lse


def _attn_fwd_fake(q, k, v, seed, dropout_p, scale):
    B, H, T, D = q.shape
    return q.new_empty((B, H, T, D)), q.new_empty((B, H, T), dtype=torch.float32)


def _attn_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
              lse: torch.Tensor, seed: torch.Tensor, dropout_p: float, scale: float) -> torch.Tensor:
    """Returns dq, dk, dv stacked as one [3, B, H, T, D] buffer (one output, written by both kernels)."""
    B, H, T, D = q.shape
    q, k, v, do = (_lastdim_contig(t) for t in (q, k, v, do))
    g = torch.empty((3, B, H, T, D), device=q.device, dtype=q.dtype)
    n = B * H * T * D
    _launch_bwd(do, q, k, v, o, lse, seed, g, _bht(g[0]), (0, n, 2 * n), dropout_p, scale)
    return g


def _attn_bwd_fake(do, q, k, v, o, lse, seed, dropout_p, scale):
    return q.new_empty((3,) + tuple(q.shape))


def _attn_setup(ctx, inputs, output):
    q, k, v, seed, dropout_p, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, seed)
    ctx.dropout_p, ctx.scale = dropout_p, scale
    ctx.mark_non_differentiable(lse)


def _attn_grads(ctx, backward, do, _dlse):
    q, k, v, o, lse, seed = ctx.saved_tensors
    g = backward(do, q, k, v, o, lse, seed, ctx.dropout_p, ctx.scale)
    return g[0], g[1], g[2], None, None, None


ATTN = _op.FusedOp("attn", _attn_fwd, _attn_bwd, forward_fake=_attn_fwd_fake, backward_fake=_attn_bwd_fake,
                   setup_context=_attn_setup, grads=_attn_grads)


def _attn_packed_fwd(qkv: torch.Tensor, n_head: int, seed: torch.Tensor, dropout_p: float,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, C3 = qkv.shape
    qkv = _lastdim_contig(qkv)
    o = torch.empty((B, T, C3 // 3), device=qkv.device, dtype=qkv.dtype)
    lse = torch.empty((B, n_head, T), device=qkv.device, dtype=torch.float32)
    D = C3 // 3 // n_head
    # The output is passed whole with the strides of its [B, H, T, D] view (T·C, D, C): the kernel
    # writes the merged-heads layout directly.
    _launch_fwd(_heads(qkv, 0, n_head), _heads(qkv, 1, n_head), _heads(qkv, 2, n_head), o,
                (T * n_head * D, D, n_head * D), lse, seed, dropout_p, scale)
    return o, lse


def _attn_packed_fwd_fake(qkv, n_head, seed, dropout_p, scale):
    B, T, C3 = qkv.shape
    return qkv.new_empty((B, T, C3 // 3)), qkv.new_empty((B, n_head, T), dtype=torch.float32)


def _attn_packed_bwd(do: torch.Tensor, qkv: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, seed: torch.Tensor,
                     n_head: int, dropout_p: float, scale: float) -> torch.Tensor:
    """dqkv [B, T, 3C] written directly (dq, dk, dv at column offsets 0, C, 2C)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    qkv, do, o = _lastdim_contig(qkv), _lastdim_contig(do), _lastdim_contig(o)
    g = torch.empty((B, T, C3), device=qkv.device, dtype=qkv.dtype)
    _launch_bwd(_merged_view(do, n_head), _heads(qkv, 0, n_head), _heads(qkv, 1, n_head),
                _heads(qkv, 2, n_head), _merged_view(o, n_head), lse, seed, g, (T * C3, C // n_head, C3),
                (0, C, 2 * C), dropout_p, scale)
    return g


def _attn_packed_bwd_fake(do, qkv, o, lse, seed, n_head, dropout_p, scale):
    return torch.empty_like(qkv)


def _packed_setup(ctx, inputs, output):
    qkv, n_head, seed, dropout_p, scale = inputs
    o, lse = output
    ctx.save_for_backward(qkv, o, lse, seed)
    ctx.n_head, ctx.dropout_p, ctx.scale = n_head, dropout_p, scale
    ctx.mark_non_differentiable(lse)


def _packed_grads(ctx, backward, do, _dlse):
    qkv, o, lse, seed = ctx.saved_tensors
    return backward(do, qkv, o, lse, seed, ctx.n_head, ctx.dropout_p, ctx.scale), None, None, None, None


ATTN_PACKED = _op.FusedOp("attn_packed", _attn_packed_fwd, _attn_packed_bwd, forward_fake=_attn_packed_fwd_fake,
                          backward_fake=_attn_packed_bwd_fake, setup_context=_packed_setup, grads=_packed_grads)


# ----------------------------------------------------------------------------------------- public API
def draw_dropout_seed(device) -> torch.Tensor:
    """The 64-bit Philox seed of one dropout call, from PyTorch's generator of `device`."""
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device)


def _seed_tensor(seed, dropout_p: float, device) -> torch.Tensor:
    if dropout_p == 0.0:
        return torch.empty((1,), dtype=torch.int64, device=device)  # never read
    if seed is None:
        return draw_dropout_seed(device)
    if isinstance(seed, torch.Tensor):
        return seed.to(device=device, dtype=torch.int64).reshape(1)
    return torch.tensor([int(seed)], dtype=torch.int64, device=device)


def _check(t: torch.Tensor, name: str, D: int, T: int, dropout_p, scale) -> tuple[float, float]:
    """Validates what both entry points share; returns (dropout_p, scale) as floats, scale defaulted."""
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{name}: dtype {t.dtype} not supported (float32, float16, bfloat16)")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if D not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head dim {D} not supported; expected one of {SUPPORTED_HEAD_DIMS}")
    if T < 1:
        raise ValueError("T must be >= 1")
    return float(dropout_p), 1.0 / math.sqrt(D) if scale is None else float(scale)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                     scale: float | None = None, *, seed: int | torch.Tensor | None = None) -> torch.Tensor:
    """softmax(causal(q·kᵀ·scale)) with dropout on the probabilities, times v. q, k, v: [B, H, T, D].

    `seed` (tests/debugging) fixes the dropout seed; by default one is drawn from PyTorch's generator.
    """
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must all be [B, H, T, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise TypeError("q, k, v must share dtype and device")
    dropout_p, scale = _check(q, "q", q.shape[3], q.shape[2], dropout_p, scale)
    return ATTN(q, k, v, _seed_tensor(seed, dropout_p, q.device), dropout_p, scale)[0]


def causal_attention_packed(qkv: torch.Tensor, n_head: int, dropout_p: float = 0.0, scale: float | None = None,
                            *, seed: int | torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention on c_attn's packed output: qkv [B, T, 3C] (q | k | v, head h = columns h·D..)
    -> [B, T, C] with heads merged, read and written by stride (no split/permute/merge copies)."""
    if qkv.dim() != 3 or qkv.shape[-1] % (3 * n_head):
        raise ValueError(f"qkv must be [B, T, 3C] with C divisible by n_head={n_head}; got {tuple(qkv.shape)}")
    dropout_p, scale = _check(qkv, "qkv", qkv.shape[-1] // 3 // n_head, qkv.shape[1], dropout_p, scale)
    return ATTN_PACKED(qkv, int(n_head), _seed_tensor(seed, dropout_p, qkv.device), dropout_p, scale)[0]


def attention_dropout_mask(seed: int | torch.Tensor, B: int, H: int, T: int, p: float, device=None, *,
                           block: int = 16) -> torch.Tensor:
    """The exact keep-mask [B, H, T, T] (bool; entries above the diagonal unused) that a call with
    this seed and dropout_p=p applies, generated on its own square tiling (`block`, a power of two
    >= 16): equality with the kernels' outputs also shows the mask does not depend on tiling."""
    device = torch.device(device) if device is not None else (seed.device if isinstance(seed, torch.Tensor) else "cpu")
    seed_t = _seed_tensor(seed, max(p, 1e-9), device)
    out = torch.empty((B, H, T, T), dtype=torch.int8, device=device)
    grid = (cdiv(T, block), cdiv(T, block), B * H)
    K.dropout_mask_kernel[grid](out, seed_t, H, T, _dropout_args(p)[0], BLOCK=block, N_ROUNDS=PHILOX_ROUNDS)
    return out.bool()
