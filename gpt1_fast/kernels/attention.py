"""Fused causal (masked) self-attention with attention dropout: Triton forward and backward.

Math (SPEC §3, per head): w = q·kᵀ·scale, masked as `w*b + -1e9*(1-b)` with b lower-triangular,
softmax, dropout on the probabilities, ·v. Flash-style: the T×T matrix is never stored.

- Forward: one program per (BLOCK_M query rows, batch·head); online softmax over key blocks in fp32,
  stores O and the base-2 log-sum-exp per row for the backward.
- Masking: the original adds -1e9 to masked scores; since the diagonal is always unmasked the row
  maximum is finite and exp(-1e9 - max) is exactly 0 in fp32, the same as exp(-inf). So key blocks
  wholly above the diagonal are skipped (exact), and only diagonal blocks apply a mask.
- Backward (Triton tutorial 06 structure): delta = rowsum(dO∘O), then one launch whose program i
  computes dK, dV of key block i (loop over query blocks, transposed tiles) and dQ of query block i
  (loop over key blocks). For T <= 128 delta is computed in that kernel (no preprocess launch: host
  time dominates there), and a second kind is offered: one program per (batch, head) holds the whole
  sequence and writes dQ, dK, dV in one pass. For T > 128 with dropout, a third kind (FlashAttention-2's)
  adds dQ by fp32 atomics from the dK/dV loop, so P, dP and the dropout mask are computed once instead
  of twice. The first eager call on a GPU times the kinds and keeps the fastest.
- Launch configurations: small per-shape candidate lists (`fwd_configs`, `bwd_configs`), autotuned
  by `triton.autotune` on first use; every candidate is compiled for sm_80/sm_90 without spills and
  checked for correctness by tests/test_attention.py.
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

Registration (why two ways): compiled Triton -> `torch.library.triton_op` + `wrap_triton`, so
torch.compile/Inductor sees the kernels themselves. Under TRITON_INTERPRET=1 (CPU CI) `wrap_triton`
returns the raw interpreted kernel and triton_op's fake implementation (the op body run on
FakeTensors) then dereferences fake data pointers, so torch.compile fails; there the same bodies are
registered as `torch.library.custom_op`s with explicit fake implementations. Autograd is
`register_autograd` in both cases. Outside tracing (plain eager calls) an `autograd.Function` calls
the same op bodies directly: the custom-op dispatcher's Python costs as much as the kernels at T=77.
"""
from __future__ import annotations

import functools
import math
import os
import threading

import torch
import triton
import triton.language as tl
from torch.utils._python_dispatch import _get_current_dispatch_mode

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Philox rounds. Random123 (Salmon et al. 2011) finds Philox4x32-7 already passes BigCrush; 10 is the
# default safety margin. RNG is the main cost of dropout here, so 7 rounds.
PHILOX_ROUNDS = 7
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)


# ----------------------------------------------------------------------------------------- kernels
@triton.jit
def _dropout_keep(seed, bh, offs_i, start_j, BLOCK_J: tl.constexpr, thr, N_ROUNDS: tl.constexpr):
    """Keep-mask tile [len(offs_i), BLOCK_J] for keys start_j.. (start_j % 8 == 0, BLOCK_J % 8 == 0)."""
    c0 = (start_j // 8 + tl.arange(0, BLOCK_J // 8)).to(tl.uint32)
    zero = tl.zeros([offs_i.shape[0], BLOCK_J // 8], dtype=tl.uint32)
    c0 = zero + c0[None, :]
    c1 = zero + offs_i[:, None].to(tl.uint32)
    c2 = zero + bh.to(tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, zero, N_ROUNDS)
    # 16-bit halves h_{2k} = low(r_k), h_{2k+1} = high(r_k); [..., c, x, y, z] = h_{4x+2y+z}, and the
    # row-major reshape puts it at key 8c + 4x + 2y + z.
    lo = 0xFFFF
    u = tl.join(tl.join(tl.join(r0 & lo, r0 >> 16), tl.join(r1 & lo, r1 >> 16)),
                tl.join(tl.join(r2 & lo, r2 >> 16), tl.join(r3 & lo, r3 >> 16)))
    u = tl.reshape(u, [offs_i.shape[0], BLOCK_J])
    return u.to(tl.int32) >= thr


@triton.jit
def _load_kv(k_base, v_base, offs_kn, stride_kt, stride_vt, T, MASK: tl.constexpr):
    # One block of K and V rows; bounds-checked only for the block that may run past T.
    if MASK:
        k = tl.load(k_base + offs_kn[:, None] * stride_kt, mask=offs_kn[:, None] < T, other=0.0)
        v = tl.load(v_base + offs_kn[:, None] * stride_vt, mask=offs_kn[:, None] < T, other=0.0)
    else:
        k = tl.load(k_base + offs_kn[:, None] * stride_kt)
        v = tl.load(v_base + offs_kn[:, None] * stride_vt)
    return k, v


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, lo, hi, T, qk_scale, seed, bh, thr,
               BLOCK_N: tl.constexpr, MASK: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
               N_ROUNDS: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_kn = start_n + tl.arange(0, BLOCK_N)
        k, v = _load_kv(k_base, v_base, offs_kn, stride_kt, stride_vt, T, MASK)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if MASK:
            s = tl.where(offs_m[:, None] >= offs_kn[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)  # the softmax normaliser counts dropped entries too
        acc = acc * alpha[:, None]
        if DROPOUT:
            p = tl.where(_dropout_keep(seed, bh, offs_m, start_n, BLOCK_N, thr, N_ROUNDS), p, 0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, SEED,
              stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
              stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
              H, T, sm_scale, thr, keep_scale,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              DROPOUT: tl.constexpr, PRECISION: tl.constexpr, N_ROUNDS: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    off_b = (bh // H).to(tl.int64)
    off_h = (bh % H).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    k_base = K + off_b * stride_kb + off_h * stride_kh + offs_d[None, :]
    v_base = V + off_b * stride_vb + off_h * stride_vh + offs_d[None, :]
    # Inductor passes Python floats as fp64 scalars: pin them to fp32 so no tile is promoted.
    sm_scale = tl.cast(sm_scale, tl.float32)
    keep_scale = tl.cast(keep_scale, tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # exp(x) = exp2(x·log2 e)
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    # Key blocks left of this query block: no mask, all keys < T. Key blocks on the diagonal: causal
    # mask (which also hides keys >= T from every valid row). Blocks right of it are skipped.
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, 0, start_m, T,
                               qk_scale, seed, bh, thr, BLOCK_N, False, DROPOUT, PRECISION, N_ROUNDS)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, start_m,
                               tl.minimum(start_m + BLOCK_M, T), T, qk_scale, seed, bh, thr, BLOCK_N, True,
                               DROPOUT, PRECISION, N_ROUNDS)
    out = acc * (keep_scale / l_i)[:, None]
    tl.store(O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + bh.to(tl.int64) * T + offs_m, m_i + tl.log2(l_i), mask=row_ok)


@triton.jit
def _bwd_p_ds(q, k, v, do, lse, delta, offs_m, start_n, offs_kn, qk_scale, seed, bh, thr, keep_scale,
              BLOCK_N: tl.constexpr, MASK: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
              N_ROUNDS: tl.constexpr):
    """For one [M, N] tile: the dropped, rescaled probabilities (for dV) and dS (unscaled)."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    p = tl.exp2(s - lse[:, None])
    if MASK:
        p = tl.where(offs_m[:, None] >= offs_kn[None, :], p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    if DROPOUT:
        keep = _dropout_keep(seed, bh, offs_m, start_n, BLOCK_N, thr, N_ROUNDS)
        pd = tl.where(keep, p * keep_scale, 0.0)
        dp = tl.where(keep, dp * keep_scale, 0.0)
    else:
        pd = p
    ds = p * (dp - delta[:, None])
    return pd, ds


@triton.jit
def _bwd_dkdv_inner(dk, dv, k, v, qT_base, do_base, o_base, lse_base, delta_base, dq_base, stride_qt, stride_dot,
                    stride_ot, stride_dqt, start_n, offs_kn, lo, hi, T, qk_scale, seed, bh, thr, keep_scale,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr, DROPOUT: tl.constexpr,
                    PRECISION: tl.constexpr, N_ROUNDS: tl.constexpr, FUSED_DELTA: tl.constexpr,
                    ATOMIC_DQ: tl.constexpr):
    """Transposed tiles [keys, queries] (tutorial 06): Pᵀ and dSᵀ feed the dV, dK dots without a
    register transpose; q is loaded as qᵀ straight from memory. FUSED_DELTA: delta = rowsum(dO∘O)
    from an O tile here instead of the preprocess kernel's buffer. ATOMIC_DQ: dQ += dS·K of this tile is
    added (fp32 atomics) into dq_base too (FlashAttention-2's backward: P, dP and the dropout mask are
    computed once, not again in a dQ pass)."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < T
        qT = tl.load(qT_base + offs_m[None, :] * stride_qt, mask=row_ok[None, :], other=0.0)
        do = tl.load(do_base + offs_m[:, None] * stride_dot, mask=row_ok[:, None], other=0.0)
        lse = tl.load(lse_base + offs_m, mask=row_ok, other=0.0)
        if FUSED_DELTA:
            o = tl.load(o_base + offs_m[:, None] * stride_ot, mask=row_ok[:, None], other=0.0)
            delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        else:
            delta = tl.load(delta_base + offs_m, mask=row_ok, other=0.0)
        pT = tl.exp2(tl.dot(k, qT, input_precision=PRECISION) * qk_scale - lse[None, :])
        if MASK:
            pT = tl.where(offs_m[None, :] >= offs_kn[:, None], pT, 0.0)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        if DROPOUT:
            keepT = tl.trans(_dropout_keep(seed, bh, offs_m, start_n, BLOCK_N, thr, N_ROUNDS))
            pdT = tl.where(keepT, pT * keep_scale, 0.0)
            dpT = tl.where(keepT, dpT * keep_scale, 0.0)
        else:
            pdT = pT
        dv = tl.dot(pdT.to(do.dtype), do, dv, input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=PRECISION)
        if ATOMIC_DQ:
            dq = tl.dot(tl.trans(dsT.to(k.dtype)), k, input_precision=PRECISION)
            tl.atomic_add(dq_base + offs_m[:, None] * stride_dqt, dq, mask=row_ok[:, None], sem="relaxed")
    return dk, dv


@triton.jit
def _bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, lo, hi, T, qk_scale, seed,
                  bh, thr, keep_scale, BLOCK_N: tl.constexpr, MASK: tl.constexpr, DROPOUT: tl.constexpr,
                  PRECISION: tl.constexpr, N_ROUNDS: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_kn = start_n + tl.arange(0, BLOCK_N)
        k, v = _load_kv(k_base, v_base, offs_kn, stride_kt, stride_vt, T, MASK)
        pd, ds = _bwd_p_ds(q, k, v, do, lse, delta, offs_m, start_n, offs_kn, qk_scale, seed, bh, thr,
                           keep_scale, BLOCK_N, MASK, DROPOUT, PRECISION, N_ROUNDS)
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def _attn_bwd_preprocess(O, DO, DELTA, stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
                         H, T, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    off_b = (bh // H).to(tl.int64)
    off_h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m[:, None] < T
    o = tl.load(O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                mask=row_ok, other=0.0).to(tl.float32)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=row_ok, other=0.0).to(tl.float32)
    tl.store(DELTA + bh.to(tl.int64) * T + offs_m, tl.sum(o * do, 1), mask=offs_m < T)


@triton.jit
def _attn_dq_store(DQACC, DQKV, stride_gb, stride_gh, stride_gt, dq_off, H, T, sm_scale,
                   HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """dQ = sm_scale · DQACC (fp32 [B·H, T, D], from the atomic backward) into DQKV at dq_off."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    off_b = (bh // H).to(tl.int64)
    off_h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m[:, None] < T
    dq = tl.load(DQACC + bh.to(tl.int64) * T * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
                 mask=row_ok, other=0.0)
    sm_scale = tl.cast(sm_scale, tl.float32)
    tl.store(DQKV + dq_off + off_b * stride_gb + off_h * stride_gh + offs_m[:, None] * stride_gt + offs_d[None, :],
             (dq * sm_scale).to(DQKV.dtype.element_ty), mask=row_ok)


@triton.jit
def _attn_bwd(Q, K, V, O, DO, DQKV, LSE, DELTA, SEED, DQACC,
              stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
              stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
              stride_gb, stride_gh, stride_gt, dq_off, dk_off, dv_off,
              H, T, sm_scale, thr, keep_scale,
              HEAD_DIM: tl.constexpr, BLOCK_M1: tl.constexpr, BLOCK_N1: tl.constexpr,
              BLOCK_M2: tl.constexpr, BLOCK_N2: tl.constexpr,
              DROPOUT: tl.constexpr, PRECISION: tl.constexpr, N_ROUNDS: tl.constexpr, FUSED_DELTA: tl.constexpr,
              ATOMIC_DQ: tl.constexpr):
    """Program i: dK, dV of keys [i·BLOCK_N1, +BLOCK_N1) and dQ of queries [i·BLOCK_M2, +BLOCK_M2).
    dQ, dK, dV are written into one buffer DQKV at element offsets dq_off, dk_off, dv_off, with the
    same (b, h, t) strides: the packed layout [B, T, 3C] or a stacked [3, B, H, T, D]. ATOMIC_DQ: no dQ
    pass; the dK/dV loop adds unscaled dQ into the fp32 [B·H, T, D] buffer DQACC (zeroed by the caller),
    which `_attn_dq_store` scales and writes into DQKV."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    off_b = (bh // H).to(tl.int64)
    off_h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    q_base = Q + off_b * stride_qb + off_h * stride_qh + offs_d[None, :]
    qT_base = Q + off_b * stride_qb + off_h * stride_qh + offs_d[:, None]
    k_base = K + off_b * stride_kb + off_h * stride_kh + offs_d[None, :]
    v_base = V + off_b * stride_vb + off_h * stride_vh + offs_d[None, :]
    do_base = DO + off_b * stride_dob + off_h * stride_doh + offs_d[None, :]
    o_base = O + off_b * stride_ob + off_h * stride_oh + offs_d[None, :]
    g_base = DQKV + off_b * stride_gb + off_h * stride_gh + offs_d[None, :]
    stat_base = bh.to(tl.int64) * T
    dq_base = DQACC + stat_base * HEAD_DIM + offs_d[None, :]
    sm_scale = tl.cast(sm_scale, tl.float32)
    keep_scale = tl.cast(keep_scale, tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)

    # ---- dK, dV: keys fixed, loop over the query blocks at or below the diagonal.
    start_n = pid * BLOCK_N1
    offs_kn = start_n + tl.arange(0, BLOCK_N1)
    kv_ok = offs_kn[:, None] < T
    k = tl.load(k_base + offs_kn[:, None] * stride_kt, mask=kv_ok, other=0.0)
    v = tl.load(v_base + offs_kn[:, None] * stride_vt, mask=kv_ok, other=0.0)
    dk = tl.zeros([BLOCK_N1, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N1, HEAD_DIM], dtype=tl.float32)
    # Rows past T load q = dO = 0 (and lse = delta = 0): their P is finite and their terms vanish.
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, qT_base, do_base, o_base, LSE + stat_base, DELTA + stat_base, dq_base,
                             stride_qt, stride_dot, stride_ot, HEAD_DIM, start_n, offs_kn, start_n,
                             tl.minimum(start_n + BLOCK_N1, T), T, qk_scale, seed, bh, thr, keep_scale, BLOCK_M1,
                             BLOCK_N1, True, DROPOUT, PRECISION, N_ROUNDS, FUSED_DELTA, ATOMIC_DQ)
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, qT_base, do_base, o_base, LSE + stat_base, DELTA + stat_base, dq_base,
                             stride_qt, stride_dot, stride_ot, HEAD_DIM, start_n, offs_kn, start_n + BLOCK_N1, T, T,
                             qk_scale, seed, bh, thr, keep_scale, BLOCK_M1, BLOCK_N1, False, DROPOUT, PRECISION,
                             N_ROUNDS, FUSED_DELTA, ATOMIC_DQ)
    out_ty = DQKV.dtype.element_ty
    tl.store(g_base + dk_off + offs_kn[:, None] * stride_gt, (dk * sm_scale).to(out_ty), mask=kv_ok)
    tl.store(g_base + dv_off + offs_kn[:, None] * stride_gt, dv.to(out_ty), mask=kv_ok)

    if ATOMIC_DQ:
        return
    # ---- dQ: queries fixed, loop over the key blocks at or left of the diagonal.
    start_m = pid * BLOCK_M2
    offs_m = start_m + tl.arange(0, BLOCK_M2)
    row_ok = offs_m < T
    q = tl.load(q_base + offs_m[:, None] * stride_qt, mask=row_ok[:, None], other=0.0)
    do = tl.load(do_base + offs_m[:, None] * stride_dot, mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + stat_base + offs_m, mask=row_ok, other=0.0)
    if FUSED_DELTA:
        o = tl.load(o_base + offs_m[:, None] * stride_ot, mask=row_ok[:, None], other=0.0)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    else:
        delta = tl.load(DELTA + stat_base + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M2, HEAD_DIM], dtype=tl.float32)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, 0, start_m, T,
                       qk_scale, seed, bh, thr, keep_scale, BLOCK_N2, False, DROPOUT, PRECISION, N_ROUNDS)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, start_m,
                       tl.minimum(start_m + BLOCK_M2, T), T, qk_scale, seed, bh, thr, keep_scale, BLOCK_N2, True,
                       DROPOUT, PRECISION, N_ROUNDS)
    tl.store(g_base + dq_off + offs_m[:, None] * stride_gt, (dq * sm_scale).to(out_ty), mask=row_ok[:, None])


@triton.jit
def _attn_bwd_small(Q, K, V, O, DO, DQKV, LSE, SEED,
                    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
                    stride_dob, stride_doh, stride_dot,
                    stride_gb, stride_gh, stride_gt, dq_off, dk_off, dv_off,
                    H, T, sm_scale, thr, keep_scale,
                    HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
                    DROPOUT: tl.constexpr, PRECISION: tl.constexpr, N_ROUNDS: tl.constexpr):
    """T <= BLOCK_T: one program per (batch, head) holds every query row; dK, dV of each key block
    are complete after one pass over it, dQ accumulates in registers. delta computed in-program."""
    bh = tl.program_id(0)
    off_b = (bh // H).to(tl.int64)
    off_h = (bh % H).to(tl.int64)
    offs_m = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    o = tl.load(O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    lse = tl.load(LSE + bh.to(tl.int64) * T + offs_m, mask=row_ok, other=0.0)
    k_base = K + off_b * stride_kb + off_h * stride_kh + offs_d[None, :]
    v_base = V + off_b * stride_vb + off_h * stride_vh + offs_d[None, :]
    g_base = DQKV + off_b * stride_gb + off_h * stride_gh + offs_d[None, :]
    out_ty = DQKV.dtype.element_ty
    sm_scale = tl.cast(sm_scale, tl.float32)
    keep_scale = tl.cast(keep_scale, tl.float32)
    qk_scale = sm_scale * 1.4426950408889634
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)
    dq = tl.zeros([BLOCK_T, HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, T, BLOCK_N):
        offs_kn = start_n + tl.arange(0, BLOCK_N)
        kv_ok = offs_kn[:, None] < T
        k = tl.load(k_base + offs_kn[:, None] * stride_kt, mask=kv_ok, other=0.0)
        v = tl.load(v_base + offs_kn[:, None] * stride_vt, mask=kv_ok, other=0.0)
        pd, ds = _bwd_p_ds(q, k, v, do, lse, delta, offs_m, start_n, offs_kn, qk_scale, seed, bh, thr,
                           keep_scale, BLOCK_N, True, DROPOUT, PRECISION, N_ROUNDS)
        dv = tl.dot(tl.trans(pd.to(do.dtype)), do, input_precision=PRECISION)
        dk = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
        tl.store(g_base + dk_off + offs_kn[:, None] * stride_gt, (dk * sm_scale).to(out_ty), mask=kv_ok)
        tl.store(g_base + dv_off + offs_kn[:, None] * stride_gt, dv.to(out_ty), mask=kv_ok)
    tl.store(g_base + dq_off + offs_m[:, None] * stride_gt, (dq * sm_scale).to(out_ty), mask=row_ok[:, None])


@triton.jit
def _dropout_mask_kernel(OUT, SEED, H, T, thr, BLOCK: tl.constexpr, N_ROUNDS: tl.constexpr):
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    start_j = tl.program_id(1) * BLOCK
    offs_j = start_j + tl.arange(0, BLOCK)
    bh = tl.program_id(2)
    keep = _dropout_keep(tl.load(SEED), bh, offs_i, start_j, BLOCK, thr, N_ROUNDS)
    ok = (offs_i[:, None] < T) & (offs_j[None, :] < T)
    tl.store(OUT + bh.to(tl.int64) * T * T + offs_i[:, None] * T + offs_j[None, :], keep.to(tl.int8), mask=ok)


# ----------------------------------------------------------------------------------------- configs
# Candidate launch configurations. Where a list holds several, `triton.autotune` (keyed on T, head dim,
# dropout on/off and dtypes) times them on first use and keeps the fastest; the first is the default
# (the interpreter's, and Inductor's until it autotunes). Every candidate compiles without register
# spills for the architectures it is offered on (sm_80, sm_90 at D=64; tests/test_attention.py compiles
# each one with Triton's launch-time specialisation): e.g. tutorial 06's 32/128/128/32 backward
# spills with 4 warps (this kernel's masking and dropout state), and with 8 warps a little on sm_80 only.
SMALL_T = 128  # T <= SMALL_T: the whole-sequence backward program is a candidate


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(n: int) -> int:
    # triton.next_power_of_2 / cdiv are constexpr functions in recent Triton: microseconds per call.
    return 1 << (n - 1).bit_length() if n > 1 else 1


def _cfg(num_warps, num_stages, **blocks):
    return dict(blocks, num_warps=num_warps, num_stages=num_stages)


@functools.lru_cache(maxsize=None)
def fwd_configs(T: int, D: int, dtype: torch.dtype, arch: int = 0) -> list[dict]:
    """Forward candidates; `arch` = compute capability x10 (0: CPU / interpreter)."""
    if dtype == torch.float32:  # exact fp32 dots run on the FMA units: small tiles
        return [_cfg(4, 2, BLOCK_M=32, BLOCK_N=32)]
    if T <= 64:
        return [_cfg(4, 2, BLOCK_M=max(16, _next_pow2(T)), BLOCK_N=16 if T <= 16 else 32)]
    if D >= 128:
        return [_cfg(4, 2, BLOCK_M=64, BLOCK_N=32)]
    # 128x64 tiles with 8 warps spill 8 bytes on sm_80 when dropout is on (16-bit RNG lanes).
    sm80 = 0 < arch < 90
    if T <= SMALL_T:
        cands = [_cfg(4, 2, BLOCK_M=64, BLOCK_N=32), _cfg(8, 2, BLOCK_M=128, BLOCK_N=32),
                 _cfg(4, 2, BLOCK_M=32, BLOCK_N=32), _cfg(8, 2, BLOCK_M=128, BLOCK_N=64),
                 _cfg(4, 2, BLOCK_M=128, BLOCK_N=32)]
    else:
        cands = [_cfg(8, 3, BLOCK_M=128, BLOCK_N=64), _cfg(8, 4, BLOCK_M=128, BLOCK_N=64),
                 _cfg(8, 3, BLOCK_M=64, BLOCK_N=64), _cfg(8, 3, BLOCK_M=128, BLOCK_N=32),
                 _cfg(4, 3, BLOCK_M=64, BLOCK_N=32)]
    return [c for c in cands if not (sm80 and c["BLOCK_M"] == 128 and c["BLOCK_N"] == 64)]


# Backward candidates per architecture (sm_80's register allocation differs: several sm_90 choices
# spill a few bytes there). arch 0 (CPU / interpreter) uses the sm_90 lists' first entries.
_TILED = {
    90: [_cfg(8, 3, BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=32),
         _cfg(8, 3, BLOCK_M1=16, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=16),
         _cfg(4, 3, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16),
         _cfg(8, 3, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32),  # tutorial 06's blocks
         _cfg(8, 4, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32)],
    80: [_cfg(8, 3, BLOCK_M1=16, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=16),
         _cfg(4, 3, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)],
}
# Atomic-dQ backward (T > 128): dK/dV programs only, so BLOCK_M2/BLOCK_N2 are unused (kept equal).
_ATOMIC = {
    90: [_cfg(8, 3, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=32, BLOCK_N2=128),
         _cfg(8, 3, BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=32, BLOCK_N2=64),
         _cfg(4, 3, BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=32, BLOCK_N2=64),
         _cfg(8, 4, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=32, BLOCK_N2=128)],  # 64x128 spills
    80: [_cfg(8, 3, BLOCK_M1=16, BLOCK_N1=64, BLOCK_M2=16, BLOCK_N2=64),
         _cfg(4, 3, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=16, BLOCK_N2=32)],
}
# Extra tiled candidates for T <= 128: 32-wide blocks skip more of the masked triangle and give more
# programs per (batch, head) (occupancy at small T).
_TILED_SHORT = [_cfg(4, 2, BLOCK_M1=32, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=32),
                _cfg(2, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)]
_TILED_FP32 = {90: _cfg(8, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16),
               80: _cfg(4, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)}
_TILED_D128 = _cfg(4, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)
# The whole-sequence program at BLOCK_T=128 spills on sm_80 in every configuration tried.
_SMALL_128 = {90: [_cfg(8, 1, BLOCK_T=128, BLOCK_N=32), _cfg(8, 2, BLOCK_T=128, BLOCK_N=32)], 80: []}


@functools.lru_cache(maxsize=None)
def bwd_configs(T: int, D: int, dtype: torch.dtype, arch: int = 0) -> dict[str, list[dict]]:
    """Backward candidates per kernel kind ("small": one program per (batch, head); "tiled":
    tutorial-06 kernel, after the delta preprocess for T > 128; "atomic": dK/dV loop with dQ by fp32
    atomics, T > 128, used with dropout only); with several kinds, the first eager call times them
    and keeps the fastest (`_launch_bwd`)."""
    family = 80 if 0 < arch < 90 else 90
    # Exact fp32 dots need many more registers: the whole-sequence program spills even at 8 warps.
    if dtype == torch.float32:
        return {"tiled": [_TILED_FP32[family]]}
    if T <= SMALL_T:
        block_t = max(16, _next_pow2(T))
        if block_t <= 64 and D <= 64:
            return {"small": [_cfg(4, 2, BLOCK_T=block_t, BLOCK_N=32 if block_t >= 32 else 16)]}
        if D >= 128:
            return {"small": [_cfg(8, 1, BLOCK_T=block_t, BLOCK_N=32)]}
        kinds = {"small": _SMALL_128[family], "tiled": _TILED[family] + _TILED_SHORT}
        return {k: v for k, v in kinds.items() if v}
    if D >= 128:
        return {"tiled": [_TILED_D128]}
    return {"tiled": _TILED[family], "atomic": _ATOMIC[family]}


@functools.lru_cache(maxsize=None)
def _arch_of(device_type: str, index) -> int:
    if device_type != "cuda":
        return 0
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def _arch(t: torch.Tensor) -> int:
    return _arch_of(t.device.type, t.device.index)


# ----------------------------------------------------------------------------------------- launchers
_direct = threading.local()


def _eager(fn, *args):
    """fn(*args) launching kernels straight away (the eager autograd.Function path, see `_use_ops`)."""
    prev = getattr(_direct, "on", False)
    _direct.on = True
    try:
        return fn(*args)
    finally:
        _direct.on = prev


def _wrap(kernel):
    # wrap_triton makes the launch traceable inside a triton_op; the interpreter and the eager
    # autograd.Function path launch directly.
    if _INTERPRET or getattr(_direct, "on", False):
        return kernel
    return torch.library.wrap_triton(kernel)


_AUTOTUNERS: dict = {}
_AUTOTUNE_KEY = ["T", "HEAD_DIM", "DROPOUT"]  # triton adds the tensor arguments' dtypes


def _autotuned(kernel, configs: list[dict], bh_bucket: int = 0, reset: tuple = ()):
    # One autotuner per batch·heads bucket too: the best tile size depends on how many programs fill
    # the GPU, which Triton's key (kernel arguments only) cannot see.
    key = (kernel.__name__, tuple(tuple(sorted(c.items())) for c in configs), bh_bucket, reset)
    if key not in _AUTOTUNERS:
        tconfigs = [triton.Config({k: v for k, v in c.items() if k.isupper()}, num_warps=c["num_warps"],
                                  num_stages=c["num_stages"]) for c in configs]
        _AUTOTUNERS[key] = triton.autotune(configs=tconfigs, key=_AUTOTUNE_KEY, reset_to_zero=list(reset) or None)(kernel)
    return _AUTOTUNERS[key]


_BEST: dict = {}  # eager path: autotuner's pick per (kernel, T, D, dtype, dropout, B·H bucket, candidates)


def _launch(kernel, configs: list[dict], grid, args: tuple, consts: dict, T: int, dtype: torch.dtype, bh: int,
            reset: tuple = ()) -> bool:
    """Launch `kernel` with `configs[0]`, or autotuned over `configs`. grid(meta) -> launch grid.
    The eager path asks the autotuner once per key, then launches its pick directly (the Autotuner's
    per-call Python costs microseconds that matter at T=77). `reset`: outputs the kernel accumulates
    into (zeroed between the autotuner's trial runs). Returns True when this call ran the autotuner
    eagerly (its trial runs also wrote the outputs)."""
    if _INTERPRET or len(configs) == 1:
        cfg = configs[0]
        _wrap(kernel)[grid(cfg)](*args, **consts, **cfg)
    elif getattr(_direct, "on", False):
        bucket = _next_pow2(bh)
        name = kernel.__name__ + (" atomic-dQ" if consts.get("ATOMIC_DQ") else "")
        key = (name, T, consts["HEAD_DIM"], dtype, consts["DROPOUT"], bucket, id(configs))
        cfg = _BEST.get(key)
        if cfg is not None:
            _wrap(kernel)[grid(cfg)](*args, **consts, **cfg)
            return False
        tuner = _autotuned(kernel, configs, bucket, reset)
        _wrap(tuner)[grid](*args, **consts)
        best = getattr(tuner, "best_config", None)
        if best is not None:
            _BEST[key] = dict(best.kwargs, num_warps=best.num_warps, num_stages=best.num_stages)
        return True
    else:
        _wrap(_autotuned(kernel, configs, _next_pow2(bh), reset))[grid](*args, **consts)
    return False


def tuning_report() -> dict:
    """What the autotuners and the backward-kind choice picked so far (for benchmark notes)."""
    out = {f"{k[0]} T={k[1]} D={k[2]} {str(k[3]).replace('torch.', '')} dropout={k[4]} B*H<={k[5]}": str(v)
           for k, v in _BEST.items()}
    for key, kind in _BWD_KIND.items():
        out[f"backward kind T={key[0]} D={key[1]} {str(key[2]).replace('torch.', '')} dropout={key[3]} "
            f"B*H<={key[4]}"] = kind
    return out


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _dropout_args(p: float) -> tuple[int, float]:
    return int(round(p * (1 << 16))), 1.0 / (1.0 - p)


def _bht(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride()[:3]


def _launch_fwd(q4, k4, v4, o, o_strides, lse, seed, p: float, scale: float):
    B, H, T, D = q4.shape
    thr, keep_scale = _dropout_args(p)
    _launch(_attn_fwd, fwd_configs(T, D, q4.dtype, _arch(q4)), lambda meta: (_cdiv(T, meta["BLOCK_M"]), B * H),
            (q4, k4, v4, o, lse, seed, *_bht(q4), *_bht(k4), *_bht(v4), *o_strides, H, T, scale, thr, keep_scale),
            dict(HEAD_DIM=D, DROPOUT=p > 0, PRECISION=_precision(q4.dtype), N_ROUNDS=PHILOX_ROUNDS), T, q4.dtype,
            B * H)


def _can_time(t: torch.Tensor) -> bool:
    """Timing alternatives is possible only for eager launches on a GPU."""
    return t.is_cuda and not _INTERPRET and getattr(_direct, "on", False)


_BWD_KIND: dict = {}  # (T, D, dtype, dropout on, B·H bucket, device) -> fastest backward kind (first use)
_FORCED_KIND = None  # see forced_backward_kind


def forced_backward_kind(kind: str | None):
    """Context manager (checks, benchmarks): backward calls whose shape offers `kind` ("small",
    "tiled", "atomic") use it instead of the timed choice."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        global _FORCED_KIND
        prev, _FORCED_KIND = _FORCED_KIND, kind
        try:
            yield
        finally:
            _FORCED_KIND = prev
    return ctx()


def _launch_bwd(do4, q4, k4, v4, o4, lse, seed, g, g_strides, g_offs, p: float, scale: float):
    B, H, T, D = q4.shape
    thr, keep_scale = _dropout_args(p)
    consts = dict(HEAD_DIM=D, DROPOUT=p > 0, PRECISION=_precision(q4.dtype), N_ROUNDS=PHILOX_ROUNDS)

    def small(configs):
        _launch(_attn_bwd_small, configs, lambda meta: (B * H,),
                (q4, k4, v4, o4, do4, g, lse, seed, *_bht(q4), *_bht(k4), *_bht(v4), *_bht(o4), *_bht(do4),
                 *g_strides, *g_offs, H, T, scale, thr, keep_scale), consts, T, q4.dtype, B * H)

    def tiled(configs, atomic=False):
        # Short sequences: each query row is revisited by only a few key blocks, so computing delta
        # in the kernel costs less than the preprocess launch (host time dominates at T=77).
        fused = T <= SMALL_T and not atomic
        if fused:
            delta = lse  # not read
        else:
            delta = torch.empty((B, H, T), device=q4.device, dtype=torch.float32)
            _wrap(_attn_bwd_preprocess)[(_cdiv(T, 64), B * H)](
                o4, do4, delta, *_bht(o4), *_bht(do4), H, T, HEAD_DIM=D, BLOCK_M=64)
        dq_acc = torch.zeros((B, H, T, D), device=q4.device, dtype=torch.float32) if atomic else lse  # lse: unused
        args = (q4, k4, v4, o4, do4, g, lse, delta, seed, dq_acc, *_bht(q4), *_bht(k4), *_bht(v4), *_bht(o4),
                *_bht(do4), *g_strides, *g_offs, H, T, scale, thr, keep_scale)
        kconsts = dict(consts, FUSED_DELTA=fused, ATOMIC_DQ=atomic)
        grid = lambda meta: (_cdiv(T, meta["BLOCK_N1"]), B * H)  # noqa: E731
        if _launch(_attn_bwd, configs, grid, args, kconsts, T, q4.dtype, B * H, reset=("DQACC",) if atomic else ()):
            if atomic:  # that call autotuned (ran every candidate into dq_acc): run the pick on zeros
                dq_acc.zero_()
                _launch(_attn_bwd, configs, grid, args, kconsts, T, q4.dtype, B * H, reset=("DQACC",))
        if atomic:
            _wrap(_attn_dq_store)[(_cdiv(T, 64), B * H)](dq_acc, g, *g_strides, g_offs[0], H, T, scale, HEAD_DIM=D,
                                                         BLOCK_M=64)

    run = {"small": small, "tiled": tiled, "atomic": lambda configs: tiled(configs, atomic=True)}
    kinds = bwd_configs(T, D, q4.dtype, _arch(q4))
    if p == 0 and "atomic" in kinds and len(kinds) > 1 and _FORCED_KIND != "atomic":
        # Without dropout the atomic kind saved no GPU time on an H100 (LM shape: 0.556 vs 0.560 ms
        # fwd+bwd) but costs two more launches (zeroing, dQ store) of host time, which the kind timing
        # (do_bench, L2 flushed between calls) does not see.
        kinds = {k: v for k, v in kinds.items() if k != "atomic"}
    key = (T, D, q4.dtype, p > 0, _next_pow2(B * H), str(q4.device))
    kind = _FORCED_KIND if _FORCED_KIND in kinds else _BWD_KIND.get(key)
    if kind is None and len(kinds) > 1 and _can_time(q4):
        # Eager, first call for this key: time each kind (each autotunes its own configs first).
        from triton.testing import do_bench

        times, error = {}, None
        for name, configs in kinds.items():
            try:
                run[name](configs)
                times[name] = do_bench(lambda: run[name](configs), warmup=5, rep=20)
            except Exception as e:  # noqa: BLE001 - e.g. no candidate fits this GPU: the other kind runs
                error = e
        if not times:
            raise RuntimeError(f"no backward kernel could run for {key}") from error
        kind = _BWD_KIND[key] = min(times, key=times.get)
    kind = kind or next(iter(kinds))
    run[kind](kinds[kind])


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
def _register(name: str, fake):
    def deco(fn):
        if _INTERPRET:
            op = torch.library.custom_op(name, mutates_args=())(fn)
            op.register_fake(fake)
            return op
        return torch.library.triton_op(name, fn, mutates_args=())
    return deco


def _fwd_fake(q, k, v, seed, dropout_p, scale):
    B, H, T, D = q.shape
    return q.new_empty((B, H, T, D)), q.new_empty((B, H, T), dtype=torch.float32)


def _attn_fwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seed: torch.Tensor, dropout_p: float,
                 scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, T, D = q.shape
    q, k, v = _lastdim_contig(q), _lastdim_contig(k), _lastdim_contig(v)
    o = torch.empty((B, H, T, D), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, T), device=q.device, dtype=torch.float32)
    _launch_fwd(q, k, v, o, _bht(o), lse, seed, dropout_p, scale)
    return o, lse


def _bwd_fake(do, q, k, v, o, lse, seed, dropout_p, scale):
    return q.new_empty((3,) + tuple(q.shape))


def _attn_bwd_impl(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                 lse: torch.Tensor, seed: torch.Tensor, dropout_p: float, scale: float) -> torch.Tensor:
    """Returns dq, dk, dv stacked as one [3, B, H, T, D] buffer (one output, written by both kernels)."""
    B, H, T, D = q.shape
    q, k, v, do = (_lastdim_contig(t) for t in (q, k, v, do))
    g = torch.empty((3, B, H, T, D), device=q.device, dtype=q.dtype)
    n = B * H * T * D
    _launch_bwd(do, q, k, v, o, lse, seed, g, _bht(g[0]), (0, n, 2 * n), dropout_p, scale)
    return g


_attn_fwd_op = _register("gpt1_fast::attn_fwd", _fwd_fake)(_attn_fwd_impl)
_attn_bwd_op = _register("gpt1_fast::attn_bwd", _bwd_fake)(_attn_bwd_impl)


def _attn_setup(ctx, inputs, output):
    q, k, v, seed, dropout_p, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, seed)
    ctx.dropout_p, ctx.scale = dropout_p, scale


def _attn_backward(ctx, do, _dlse):
    q, k, v, o, lse, seed = ctx.saved_tensors
    g = _attn_bwd_op(do, q, k, v, o, lse, seed, ctx.dropout_p, ctx.scale)
    return g[0], g[1], g[2], None, None, None


_attn_fwd_op.register_autograd(_attn_backward, setup_context=_attn_setup)


def _packed_fwd_fake(qkv, n_head, seed, dropout_p, scale):
    B, T, C3 = qkv.shape
    return qkv.new_empty((B, T, C3 // 3)), qkv.new_empty((B, n_head, T), dtype=torch.float32)


def _attn_packed_fwd_impl(qkv: torch.Tensor, n_head: int, seed: torch.Tensor, dropout_p: float,
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


def _packed_bwd_fake(do, qkv, o, lse, seed, n_head, dropout_p, scale):
    return torch.empty_like(qkv)


def _attn_packed_bwd_impl(do: torch.Tensor, qkv: torch.Tensor, o: torch.Tensor, lse: torch.Tensor, seed: torch.Tensor,
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


_attn_packed_fwd_op = _register("gpt1_fast::attn_packed_fwd", _packed_fwd_fake)(_attn_packed_fwd_impl)
_attn_packed_bwd_op = _register("gpt1_fast::attn_packed_bwd", _packed_bwd_fake)(_attn_packed_bwd_impl)


def _packed_setup(ctx, inputs, output):
    qkv, n_head, seed, dropout_p, scale = inputs
    o, lse = output
    ctx.save_for_backward(qkv, o, lse, seed)
    ctx.n_head, ctx.dropout_p, ctx.scale = n_head, dropout_p, scale


def _packed_backward(ctx, do, _dlse):
    qkv, o, lse, seed = ctx.saved_tensors
    return _attn_packed_bwd_op(do, qkv, o, lse, seed, ctx.n_head, ctx.dropout_p, ctx.scale), None, None, None, None


_attn_packed_fwd_op.register_autograd(_packed_backward, setup_context=_packed_setup)


# Eager path. The custom-op dispatcher and its autograd wrapper cost tens of microseconds of Python per
# call, as much as the kernels themselves at T=77; outside tracing, a plain autograd.Function calls
# the same bodies and launches directly. Under torch.compile / tracing the registered ops are used.
class _EagerAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, seed, dropout_p, scale):
        o, lse = _eager(_attn_fwd_impl, q, k, v, seed, dropout_p, scale)
        ctx.save_for_backward(q, k, v, o, lse, seed)
        ctx.dropout_p, ctx.scale = dropout_p, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, seed = ctx.saved_tensors
        g = _eager(_attn_bwd_impl, do, q, k, v, o, lse, seed, ctx.dropout_p, ctx.scale)
        return g[0], g[1], g[2], None, None, None


class _EagerPackedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, n_head, seed, dropout_p, scale):
        o, lse = _eager(_attn_packed_fwd_impl, qkv, n_head, seed, dropout_p, scale)
        ctx.save_for_backward(qkv, o, lse, seed)
        ctx.n_head, ctx.dropout_p, ctx.scale = n_head, dropout_p, scale
        return o

    @staticmethod
    def backward(ctx, do):
        qkv, o, lse, seed = ctx.saved_tensors
        g = _eager(_attn_packed_bwd_impl, do, qkv, o, lse, seed, ctx.n_head, ctx.dropout_p, ctx.scale)
        return g, None, None, None, None


def _use_ops(t: torch.Tensor) -> bool:
    """True when tracing (torch.compile, fake/functional tensors, a dispatch mode): use the ops."""
    return (torch.compiler.is_compiling() or type(t) not in (torch.Tensor, torch.nn.Parameter)
            or _get_current_dispatch_mode() is not None)


# ----------------------------------------------------------------------------------------- public API
def draw_dropout_seed(device) -> torch.Tensor:
    """The 64-bit Philox seed of one dropout call, from PyTorch's generator of `device`."""
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device)


_NO_SEED: dict = {}  # eager path, dropout_p == 0: one placeholder seed per device (never read)


def _seed_tensor(seed, dropout_p: float, device, eager: bool = False) -> torch.Tensor:
    if dropout_p == 0.0:
        if eager:
            t = _NO_SEED.get(device)
            if t is None:
                t = _NO_SEED[device] = torch.zeros((1,), dtype=torch.int64, device=device)
            return t
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
    if _use_ops(q):
        return _attn_fwd_op(q, k, v, _seed_tensor(seed, dropout_p, q.device), dropout_p, scale)[0]
    return _EagerAttention.apply(q, k, v, _seed_tensor(seed, dropout_p, q.device, True), dropout_p, scale)


def causal_attention_packed(qkv: torch.Tensor, n_head: int, dropout_p: float = 0.0, scale: float | None = None,
                            *, seed: int | torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention on c_attn's packed output: qkv [B, T, 3C] (q | k | v, head h = columns h·D..)
    -> [B, T, C] with heads merged, read and written by stride (no split/permute/merge copies)."""
    if qkv.dim() != 3 or qkv.shape[-1] % (3 * n_head):
        raise ValueError(f"qkv must be [B, T, 3C] with C divisible by n_head={n_head}; got {tuple(qkv.shape)}")
    dropout_p, scale = _check(qkv, "qkv", qkv.shape[-1] // 3 // n_head, qkv.shape[1], dropout_p, scale)
    if _use_ops(qkv):
        return _attn_packed_fwd_op(qkv, int(n_head), _seed_tensor(seed, dropout_p, qkv.device), dropout_p, scale)[0]
    return _EagerPackedAttention.apply(qkv, int(n_head), _seed_tensor(seed, dropout_p, qkv.device, True),
                                       dropout_p, scale)


def attention_dropout_mask(seed: int | torch.Tensor, B: int, H: int, T: int, p: float, device=None, *,
                           block: int = 16) -> torch.Tensor:
    """The exact keep-mask [B, H, T, T] (bool; entries above the diagonal unused) that a call with
    this seed and dropout_p=p applies, generated on its own square tiling (`block`, a power of two
    >= 16): equality with the kernels' outputs also shows the mask does not depend on tiling."""
    device = torch.device(device) if device is not None else (seed.device if isinstance(seed, torch.Tensor) else "cpu")
    seed_t = _seed_tensor(seed, max(p, 1e-9), device)
    out = torch.empty((B, H, T, T), dtype=torch.int8, device=device)
    grid = (_cdiv(T, block), _cdiv(T, block), B * H)
    _dropout_mask_kernel[grid](out, seed_t, H, T, _dropout_args(p)[0], BLOCK=block, N_ROUNDS=PHILOX_ROUNDS)
    return out.bool()
