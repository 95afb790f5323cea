"""Triton kernels of the fused LayerNorm (+ residual) and bias + tanh-GELU ops (host side and math:
layernorm_gelu.py; launch configurations: layernorm_gelu_configs.py).

Row kernels hold whole rows (LayerNorm) or column tiles (GELU) of a row-major [M, N] matrix in
registers, with fp32 math whatever the activation dtype. The backward kernels are persistent-style:
each program owns a contiguous block of rows, accumulates dweight/dbias in registers and writes one
fp32 partial row; `sum_partials_kernel` sums the partials (no atomics: deterministic).
"""
import triton
import triton.language as tl


@triton.jit
def row_tile(rows, row_end, cols, cmask, N):
    """Mask and int64 element offsets of the [ROWS, BLOCK_N] tile of whole rows `rows` (those below
    row_end) of a row-major [., N] matrix."""
    mask = (rows < row_end)[:, None] & cmask[None, :]
    return mask, rows.to(tl.int64)[:, None] * N + cols[None, :]


@triton.jit
def ln_fwd_kernel(X, R, W, B, Y, Mean, Rstd, M, N, eps,
                  HAS_RES: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    # ROWS whole rows per program: narrow rows (768) get enough bytes in flight per program and
    # load weight/bias once for several rows.
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    mask, offs = row_tile(rows, M, cols, cmask, N)
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
def ln_bwd_kernel(DY, X, R, W, Mean, Rstd, DS, DWp, DBp, M, N, rows_per_prog,
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
    mask, offs = row_tile(rows, row_end, cols, cmask, N)
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
        n_mask, n_offs = row_tile(n_rows, row_end, cols, cmask, N)
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
def sum_partials_kernel(P1, P2, O1, O2, G, N,
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
def tanh(u):
    # tanh(|u|) = (1 - e) / (1 + e) with e = exp(-2|u|) in (0, 1]: no overflow, saturates to +-1.
    # Written out because tl has no tanh on every Triton version we support (3.6 and 3.9) nor in
    # the interpreter.
    e = tl.exp(-2.0 * tl.abs(u))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u < 0, -t, t)


@triton.jit
def bias_gelu_fwd_kernel(X, B, Y, M, N, ROWS: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    mask, offs = row_tile(rows, M, cols, cmask, N)
    b = tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)
    z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) + b[None, :]
    t = tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))
    tl.store(Y + offs, (0.5 * z * (1.0 + t)).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def bias_gelu_bwd_kernel(DY, X, B, DX, DBp, M, N, rows_per_prog,
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
    mask, offs = row_tile(rows, row_end, cols, cmask, N)
    x = tl.load(X + offs, mask=mask, other=0.0)
    dy = tl.load(DY + offs, mask=mask, other=0.0)
    for _ in range(row0, row_end, ROWS):
        n_rows = rows + ROWS
        n_mask, n_offs = row_tile(n_rows, row_end, cols, cmask, N)
        n_x = tl.load(X + n_offs, mask=n_mask, other=0.0)
        n_dy = tl.load(DY + n_offs, mask=n_mask, other=0.0)
        z = x.to(tl.float32) + b[None, :]
        z2 = z * z
        t = tanh(0.7978845608028654 * z * (1.0 + 0.044715 * z2))
        # d/dz 0.5 z (1 + t) = 0.5 (1 + t) + 0.5 z (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 z^2)
        dgelu = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * z2)
        dx = dy.to(tl.float32) * dgelu
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        db_acc += tl.where(mask, dx, 0.0)
        rows, mask, offs, x, dy = n_rows, n_mask, n_offs, n_x, n_dy
    tl.store(DBp + pid * N + cols, tl.sum(db_acc, axis=0), mask=cmask)
