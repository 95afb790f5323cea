"""Triton kernels of the fused causal attention (host side, math and dropout scheme: attention.py;
launch configurations: attention_configs.py).

- `attn_fwd`: one program per (BLOCK_M query rows, batch·head); online softmax over key blocks in
  fp32; stores O and the base-2 log-sum-exp per row for the backward. Key blocks wholly above the
  diagonal are skipped (exact: the original's -1e9 underflows to 0 like -inf), only diagonal blocks
  apply the mask.
- `attn_bwd`: Triton tutorial 06's structure: program i computes dK, dV of key block i (loop over
  query blocks, transposed tiles) and dQ of query block i (loop over key blocks). FUSED_DELTA: delta
  = rowsum(dO∘O) in the kernel instead of `attn_bwd_preprocess`. ATOMIC_DQ: FlashAttention-2's
  backward, dQ added by fp32 atomics from the dK/dV loop (P, dP and the dropout mask computed once;
  the sum order, hence the rounding, depends on scheduling: not deterministic), then `attn_dq_store`.
- `attn_bwd_small`: T <= BLOCK_T, one program per (batch, head) holds every query row and writes
  dQ, dK, dV in one pass.
- `dropout_keep`: the keep mask, Philox4x32 keyed by the seed with counter (j // 8, i, b·H + h, 0),
  8 16-bit uniforms per call; it depends only on (seed, b, h, i, j), so every kernel and tiling
  regenerates the same mask (`dropout_mask_kernel` writes it out for tests).
"""
import triton
import triton.language as tl

# Philox rounds. Random123 (Salmon et al. 2011) finds Philox4x32-7 already passes BigCrush; 10 is the
# default safety margin. RNG is the main cost of dropout here, so 7 rounds.
PHILOX_ROUNDS = 7


@triton.jit
def dropout_keep(seed, bh, offs_i, start_j, BLOCK_J: tl.constexpr, thr, N_ROUNDS: tl.constexpr):
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
def load_kv(k_base, v_base, offs_kn, stride_kt, stride_vt, T, MASK: tl.constexpr):
    # One block of K and V rows; bounds-checked only for the block that may run past T.
    if MASK:
        k = tl.load(k_base + offs_kn[:, None] * stride_kt, mask=offs_kn[:, None] < T, other=0.0)
        v = tl.load(v_base + offs_kn[:, None] * stride_vt, mask=offs_kn[:, None] < T, other=0.0)
    else:
        k = tl.load(k_base + offs_kn[:, None] * stride_kt)
        v = tl.load(v_base + offs_kn[:, None] * stride_vt)
    return k, v


@triton.jit
def fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, lo, hi, T, qk_scale, seed, bh, thr,
              BLOCK_N: tl.constexpr, MASK: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
              N_ROUNDS: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_kn = start_n + tl.arange(0, BLOCK_N)
        k, v = load_kv(k_base, v_base, offs_kn, stride_kt, stride_vt, T, MASK)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if MASK:
            s = tl.where(offs_m[:, None] >= offs_kn[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)  # the softmax normaliser counts dropped entries too
        acc = acc * alpha[:, None]
        if DROPOUT:
            p = tl.where(dropout_keep(seed, bh, offs_m, start_n, BLOCK_N, thr, N_ROUNDS), p, 0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def attn_fwd(Q, K, V, O, LSE, SEED,
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
    acc, l_i, m_i = fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, 0, start_m, T,
                               qk_scale, seed, bh, thr, BLOCK_N, False, DROPOUT, PRECISION, N_ROUNDS)
    acc, l_i, m_i = fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, start_m,
                               tl.minimum(start_m + BLOCK_M, T), T, qk_scale, seed, bh, thr, BLOCK_N, True,
                               DROPOUT, PRECISION, N_ROUNDS)
    out = acc * (keep_scale / l_i)[:, None]
    tl.store(O + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + bh.to(tl.int64) * T + offs_m, m_i + tl.log2(l_i), mask=row_ok)


@triton.jit
def bwd_p_ds(q, k, v, do, lse, delta, offs_m, start_n, offs_kn, qk_scale, seed, bh, thr, keep_scale,
             BLOCK_N: tl.constexpr, MASK: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr,
             N_ROUNDS: tl.constexpr):
    """For one [M, N] tile: the dropped, rescaled probabilities (for dV) and dS (unscaled)."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    p = tl.exp2(s - lse[:, None])
    if MASK:
        p = tl.where(offs_m[:, None] >= offs_kn[None, :], p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    if DROPOUT:
        keep = dropout_keep(seed, bh, offs_m, start_n, BLOCK_N, thr, N_ROUNDS)
        pd = tl.where(keep, p * keep_scale, 0.0)
        dp = tl.where(keep, dp * keep_scale, 0.0)
    else:
        pd = p
    ds = p * (dp - delta[:, None])
    return pd, ds


@triton.jit
def bwd_dkdv_inner(dk, dv, k, v, qT_base, do_base, o_base, lse_base, delta_base, dq_base, stride_qt, stride_dot,
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
            keepT = tl.trans(dropout_keep(seed, bh, offs_m, start_n, BLOCK_N, thr, N_ROUNDS))
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
def bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, lo, hi, T, qk_scale, seed,
                 bh, thr, keep_scale, BLOCK_N: tl.constexpr, MASK: tl.constexpr, DROPOUT: tl.constexpr,
                 PRECISION: tl.constexpr, N_ROUNDS: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_kn = start_n + tl.arange(0, BLOCK_N)
        k, v = load_kv(k_base, v_base, offs_kn, stride_kt, stride_vt, T, MASK)
        pd, ds = bwd_p_ds(q, k, v, do, lse, delta, offs_m, start_n, offs_kn, qk_scale, seed, bh, thr,
                           keep_scale, BLOCK_N, MASK, DROPOUT, PRECISION, N_ROUNDS)
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def attn_bwd_preprocess(O, DO, DELTA, stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
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
def attn_dq_store(DQACC, DQKV, stride_gb, stride_gh, stride_gt, dq_off, H, T, sm_scale,
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
def attn_bwd(Q, K, V, O, DO, DQKV, LSE, DELTA, SEED, DQACC,
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
    which `attn_dq_store` scales and writes into DQKV."""
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
    dk, dv = bwd_dkdv_inner(dk, dv, k, v, qT_base, do_base, o_base, LSE + stat_base, DELTA + stat_base, dq_base,
                             stride_qt, stride_dot, stride_ot, HEAD_DIM, start_n, offs_kn, start_n,
                             tl.minimum(start_n + BLOCK_N1, T), T, qk_scale, seed, bh, thr, keep_scale, BLOCK_M1,
                             BLOCK_N1, True, DROPOUT, PRECISION, N_ROUNDS, FUSED_DELTA, ATOMIC_DQ)
    dk, dv = bwd_dkdv_inner(dk, dv, k, v, qT_base, do_base, o_base, LSE + stat_base, DELTA + stat_base, dq_base,
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
    dq = bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, 0, start_m, T,
                       qk_scale, seed, bh, thr, keep_scale, BLOCK_N2, False, DROPOUT, PRECISION, N_ROUNDS)
    dq = bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, start_m,
                       tl.minimum(start_m + BLOCK_M2, T), T, qk_scale, seed, bh, thr, keep_scale, BLOCK_N2, True,
                       DROPOUT, PRECISION, N_ROUNDS)
    tl.store(g_base + dq_off + offs_m[:, None] * stride_gt, (dq * sm_scale).to(out_ty), mask=row_ok[:, None])


@triton.jit
def attn_bwd_small(Q, K, V, O, DO, DQKV, LSE, SEED,
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
        pd, ds = bwd_p_ds(q, k, v, do, lse, delta, offs_m, start_n, offs_kn, qk_scale, seed, bh, thr,
                           keep_scale, BLOCK_N, True, DROPOUT, PRECISION, N_ROUNDS)
        dv = tl.dot(tl.trans(pd.to(do.dtype)), do, input_precision=PRECISION)
        dk = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
        tl.store(g_base + dk_off + offs_kn[:, None] * stride_gt, (dk * sm_scale).to(out_ty), mask=kv_ok)
        tl.store(g_base + dv_off + offs_kn[:, None] * stride_gt, dv.to(out_ty), mask=kv_ok)
    tl.store(g_base + dq_off + offs_m[:, None] * stride_gt, (dq * sm_scale).to(out_ty), mask=row_ok[:, None])


@triton.jit
def dropout_mask_kernel(OUT, SEED, H, T, thr, BLOCK: tl.constexpr, N_ROUNDS: tl.constexpr):
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    start_j = tl.program_id(1) * BLOCK
    offs_j = start_j + tl.arange(0, BLOCK)
    bh = tl.program_id(2)
    keep = dropout_keep(tl.load(SEED), bh, offs_i, start_j, BLOCK, thr, N_ROUNDS)
    ok = (offs_i[:, None] < T) & (offs_j[None, :] < T)
    tl.store(OUT + bh.to(tl.int64) * T * T + offs_i[:, None] * T + offs_j[None, :], keep.to(tl.int8), mask=ok)
