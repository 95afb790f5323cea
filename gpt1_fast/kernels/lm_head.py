"""Fused tied LM head + cross-entropy: per-row loss without ever holding the [N, V] logits.

    lm_head_loss(h [N, C], weight [V, C], targets [N], mask [N], rows_bound=0) -> float32 loss [N],
    loss[i] = mask[i] * (logsumexp_v(h[i] . weight[v]) - h[i] . weight[targets[i]])

over every row of the (tied) embedding table, positions and specials included, as the original.

How (Liger-Kernel's fused linear cross-entropy, adapted to a per-row loss):
- No host synchronisation, so a whole training step can be captured in a CUDA graph: which rows
  are kept (mask != 0) is only ever read on the device. By default every row goes through the
  GEMMs and the Triton kernels skip the masked ones (no softmax, zero gradient rows). A caller that
  knows on the host, for free, how many rows at most are kept (the batch was built there) passes
  `rows_bound`: the kept rows are then moved to the front on the device (a stable sort of the
  mask) and only the first `rows_bound` go through the GEMMs (ROCStories keeps ~75 % of its rows).
  A bound below the true count is caught by a device-side assert, never by a silent wrong loss.
- The rows go through in chunks: logits_c = h_c @ weightᵀ (cuBLAS, the compute dtype, fp32
  accumulation), then one Triton program per row streams its logits once, with an online
  log-sum-exp in float32 (`_lse_kernel`). Only the log-sum-exp (4 bytes per row) is saved.
- Backward recomputes each chunk's logits and overwrites them in place with
  dloss[i] * mask[i] * (softmax - onehot) (`_dlogits_kernel`; zeros on masked rows), then
  dh_c = dlogits_c @ weight and dweight += dlogits_cᵀ @ h_c, accumulated across chunks in float32.
  Liger computes the gradients during the forward instead (no recompute) because its loss is a
  scalar mean; here the loss is per row and its weights (per-sequence 1 / mask sum) arrive only
  with dloss, so the logits matmul is done twice: 4 GEMMs of the head instead of 3, for memory that
  does not grow with N x V.
- Peak extra memory: one chunk of logits (CHUNK_BYTES), the compute-dtype copy of weight when it is
  in another dtype (autocast: fp32 parameter, bf16 compute), and the fp32 dweight accumulator.

Dtypes: the compute dtype is h's (float32, float16, bfloat16); weight may be in another dtype (an
fp32 parameter under bf16 autocast) and is cast once per call; dweight comes back in weight's dtype,
dh in h's. Targets outside [0, V) read a 0 logit instead of memory out of bounds.

Registration: `_op.FusedOp` (ops `gpt1_fast::lm_head_loss_fwd` / `_bwd` with fake implementations and
autograd, so the training step compiles with fullgraph=True; an autograd.Function calling the host
functions directly for eager calls). Opaque custom ops even for compiled Triton: the bodies loop
over chunks in Python and launch cuBLAS between the kernels. On fake tensors outside torch.compile
(the memory benchmark) the eager path runs the host code itself, so every buffer the op allocates
is counted.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from . import _op

__all__ = ["lm_head_loss", "lm_head_loss_forward", "lm_head_loss_backward", "row_order", "CHUNK_BYTES", "TUNING"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Logits of one chunk of rows: large enough that the GEMMs run at full rate (768 bf16 rows at V=40990),
# small next to anything else the step holds.
CHUNK_BYTES = 64 << 20


# ------------------------------------------------------------------------------------- kernels
@triton.jit
def _lse_kernel(Logits, Rows, Targets, Mask, Lse, Loss, V, stride, BLOCK_V: tl.constexpr):
    """Row j of the chunk is global row Rows[j]: Lse[r] = logsumexp(logits_j), Loss[r] = mask[r] *
    (Lse[r] - logits_j[targets[r]]); a masked row (mask 0) is left as it is (zeros). Scalar running
    max/sum: the first block of a row always holds a valid column, so exp(m_old - m_new) never sees
    -inf - -inf."""
    j = tl.program_id(0)
    r = tl.load(Rows + j)
    w = tl.load(Mask + r).to(tl.float32)
    if w == 0.0:
        return
    base = Logits + j.to(tl.int64) * stride
    m = -float("inf")
    s = 0.0
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        x = tl.load(base + cols, mask=cols < V, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(s)
    t = tl.load(Targets + r)
    xt = tl.load(base + t, mask=(t >= 0) & (t < V), other=0.0).to(tl.float32)
    tl.store(Lse + r, lse)
    tl.store(Loss + r, w * (lse - xt))


@triton.jit
def _dlogits_kernel(Logits, Rows, Targets, Mask, Lse, DLoss, V, stride, BLOCK_V: tl.constexpr):
    """In place: logits_j <- dloss[r] * mask[r] * (softmax(logits_j) - onehot(targets[r])); zeros on a
    masked row (its lse was never computed), so the GEMMs that follow add nothing for it."""
    j = tl.program_id(0)
    r = tl.load(Rows + j)
    base = Logits + j.to(tl.int64) * stride
    w = tl.load(Mask + r).to(tl.float32)
    if w == 0.0:
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            tl.store(base + cols, tl.zeros([BLOCK_V], dtype=Logits.dtype.element_ty), mask=cols < V)
    else:
        lse = tl.load(Lse + r)
        g = tl.load(DLoss + r).to(tl.float32) * w
        t = tl.load(Targets + r)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            cmask = cols < V
            x = tl.load(base + cols, mask=cmask, other=0.0).to(tl.float32)
            p = tl.exp(x - lse)
            d = g * tl.where(cols == t, p - 1.0, p)
            tl.store(base + cols, d.to(Logits.dtype.element_ty), mask=cmask)


# --------------------------------------------------------------------------- launch configuration
def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def row_kernel_config(V: int) -> dict:
    """Both kernels: one program per row, BLOCK_V columns per step (4096 = two 16-byte bf16 loads per
    thread at 8 warps)."""
    return {"BLOCK_V": min(4096, _next_pow2(V)), "num_warps": 8}


# Both kernels: `TUNING.choose("rows", (V, arch))`; tests and sweeps use `with TUNING.override(rows={...}):`.
TUNING = _op.Tuning("lm_head", table=lambda what, key, deterministic: row_kernel_config(key[0]))


def chunk_rows_for(V: int, elem: int) -> int:
    """Rows per chunk: CHUNK_BYTES of logits, a multiple of 128 rows (GEMM tiles), at least 128."""
    return max(128, CHUNK_BYTES // (V * elem) // 128 * 128)


def _launch(kernel, logits: torch.Tensor, *args) -> None:
    # Fake tensors (the memory benchmark, tracing) have no data: the buffers are what counts.
    if logits.shape[0] == 0 or is_fake(logits):
        return
    V = logits.shape[1]
    c = TUNING.choose("rows", (V, _op.arch(logits)))
    _op.launcher(kernel)[(logits.shape[0],)](logits, *args, V, logits.stride(0), BLOCK_V=c["BLOCK_V"],
                                             num_warps=c["num_warps"])


# ------------------------------------------------------------------------------------ host code
def row_order(mask: torch.Tensor, rows_bound: int = 0) -> torch.Tensor | None:
    """The rows that go through the GEMMs, chosen on the device (no host sync). None: all N rows in
    their own order (rows_bound 0 or >= N). Else the kept rows (mask != 0) moved to the front by a
    stable sort, the first rows_bound of them; a device-side assert fires if more rows are kept."""
    N = mask.shape[0]
    if rows_bound <= 0 or rows_bound >= N:
        return None
    masked = mask == 0
    if not is_fake(mask):
        torch._assert_async(masked.logical_not().sum() <= rows_bound,
                            "lm_head_loss: more rows have mask != 0 than rows_bound")
    return torch.argsort(masked.to(torch.uint8), stable=True)[:rows_bound]


def _chunk(h: torch.Tensor, ids: torch.Tensor, order: torch.Tensor | None, s: int, step: int):
    """(row ids, h rows) of the chunk of positions s .. s + step: a view of h in its own order."""
    if order is None:
        return ids[s:s + step], h[s:s + step]
    r = order[s:s + step]
    return r, h.index_select(0, r)


@functools.lru_cache(maxsize=None)
def _cuda_has_f32_out_mm() -> bool:
    try:
        a = torch.zeros(2, 2, device="cuda", dtype=torch.bfloat16)
        torch.addmm(torch.zeros(2, 2, device="cuda"), a, a, out_dtype=torch.float32)
        return True
    except (RuntimeError, TypeError):
        return False


def _f32_out_mm(a: torch.Tensor) -> bool:
    # cuBLAS writes a half-precision product straight into float32 (addmm with out_dtype); the CPU has
    # no such kernel (there: float32 copies of the chunk). Fake tensors model the GPU step.
    return a.dtype != torch.float32 and (is_fake(a) or (a.is_cuda and _cuda_has_f32_out_mm()))


def _accumulate_f32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b in float32, acc float32."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    elif _f32_out_mm(a):
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        acc.addmm_(a.float(), b.float())


def _chunks(n: int, V: int, elem: int, chunk_rows: int):
    step = chunk_rows if chunk_rows > 0 else chunk_rows_for(V, elem)
    return range(0, n, step), step


def lm_head_loss_forward(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                         chunk_rows: int = 0, rows_bound: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss [N] float32, lse [N] float32; both 0 on masked rows). chunk_rows 0: chunk_rows_for();
    rows_bound: see row_order."""
    N, V = h.shape[0], weight.shape[0]
    loss = torch.zeros(N, device=h.device, dtype=torch.float32)
    lse = torch.zeros(N, device=h.device, dtype=torch.float32)
    order = row_order(mask, rows_bound)
    n = N if order is None else order.numel()
    ids = torch.arange(N, device=h.device)
    w = weight.to(h.dtype)
    starts, step = _chunks(n, V, h.element_size(), chunk_rows)
    for s in starts:
        r, hc = _chunk(h, ids, order, s, step)
        logits = hc @ w.t()
        _launch(_lse_kernel, logits, r, targets, mask, lse, loss)
        del logits, hc
    return loss, lse


def lm_head_loss_backward(dloss: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          mask: torch.Tensor, lse: torch.Tensor, chunk_rows: int = 0,
                          rows_bound: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(dh in h's dtype, dweight in weight's dtype, accumulated over chunks in float32)."""
    N, V = h.shape[0], weight.shape[0]
    order = row_order(mask, rows_bound)
    # in h's own order every row of dh is written (zeros where masked); compacted, only the kept ones
    dh = torch.empty_like(h, memory_format=torch.contiguous_format) if order is None else \
        torch.zeros_like(h, memory_format=torch.contiguous_format)
    dw = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32)
    dloss = dloss.contiguous()  # autograd may hand over an expanded (stride-0) gradient
    ids = torch.arange(N, device=h.device)
    w = weight.to(h.dtype)
    starts, step = _chunks(N if order is None else order.numel(), V, h.element_size(), chunk_rows)
    for s in starts:
        r, hc = _chunk(h, ids, order, s, step)
        dlogits = hc @ w.t()
        _launch(_dlogits_kernel, dlogits, r, targets, mask, lse, dloss)
        if order is None:
            torch.mm(dlogits, w, out=dh[s:s + step])
        else:
            dh.index_copy_(0, r, dlogits @ w)
        _accumulate_f32(dw, dlogits.t(), hc)
        del dlogits, hc
    return dh, dw.to(weight.dtype)


# ------------------------------------------------------------------------------- registration
def _fwd_fake(h, weight, targets, mask, chunk_rows, rows_bound):
    return h.new_empty(h.shape[:1], dtype=torch.float32), h.new_empty(h.shape[:1], dtype=torch.float32)


def _bwd_fake(dloss, h, weight, targets, mask, lse, chunk_rows, rows_bound):
    return torch.empty_like(h, memory_format=torch.contiguous_format), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    h, weight, targets, mask, chunk_rows, rows_bound = inputs
    ctx.save_for_backward(h, weight, targets, mask, output[1])
    ctx.chunk_rows, ctx.rows_bound = chunk_rows, rows_bound
    ctx.mark_non_differentiable(output[1])


def _grads(ctx, backward, dloss, _dlse):
    h, weight, targets, mask, lse = ctx.saved_tensors
    dh, dw = backward(dloss, h, weight, targets, mask, lse, ctx.chunk_rows, ctx.rows_bound)
    return dh, dw, None, None, None, None


def _forward_body(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                  chunk_rows: int, rows_bound: int) -> tuple[torch.Tensor, torch.Tensor]:
    return lm_head_loss_forward(h, weight, targets, mask, chunk_rows, rows_bound)


def _backward_body(dloss: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                   mask: torch.Tensor, lse: torch.Tensor, chunk_rows: int,
                   rows_bound: int) -> tuple[torch.Tensor, torch.Tensor]:
    return lm_head_loss_backward(dloss, h, weight, targets, mask, lse, chunk_rows, rows_bound)


# opaque: Python loops over chunks with cuBLAS GEMMs between the launches (Inductor calls the op as it is)
LM_HEAD_LOSS = _op.FusedOp("lm_head_loss", _forward_body, _backward_body, forward_fake=_fwd_fake,
                           backward_fake=_bwd_fake, setup_context=_setup_context, grads=_grads, opaque=True)


def _check(h, weight, targets, mask, rows_bound) -> None:
    if h.dim() != 2 or weight.dim() != 2 or h.shape[1] != weight.shape[1]:
        raise ValueError(f"h must be [N, C] and weight [V, C]; got {tuple(h.shape)} and {tuple(weight.shape)}")
    if h.dtype not in _FLOAT_DTYPES or weight.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"h and weight must be float32/float16/bfloat16, got {h.dtype} and {weight.dtype}")
    if targets.shape != h.shape[:1] or mask.shape != h.shape[:1]:
        raise ValueError(f"targets and mask must be [{h.shape[0]}], got {tuple(targets.shape)} and {tuple(mask.shape)}")
    if targets.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"targets must be int32 or int64, got {targets.dtype}")
    if not (h.device == weight.device == targets.device == mask.device):
        raise ValueError("h, weight, targets and mask must be on one device")
    if not isinstance(rows_bound, int) or rows_bound < 0:
        raise ValueError(f"rows_bound must be an int >= 0 (0: no bound), got {rows_bound!r}")


def lm_head_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                 chunk_rows: int = 0, rows_bound: int = 0) -> torch.Tensor:
    """Per-row float32 loss mask * cross_entropy(h @ weightᵀ, targets) (module docstring); differentiable
    in h and weight. chunk_rows: rows per chunk (0: CHUNK_BYTES of logits; tests use small chunks).
    rows_bound: at most this many rows have mask != 0 (0: no bound, every row goes through the
    GEMMs); only the kept rows, moved to the front on the device, are multiplied. A static value
    (e.g. the padded batch's size) keeps the op graph-capturable; a value that changes per call
    makes torch.compile specialise on it."""
    _check(h, weight, targets, mask, rows_bound)
    targets, mask = targets.contiguous(), mask.contiguous()
    if mask.dtype == torch.bool:
        mask = mask.to(h.dtype)
    if not torch.compiler.is_compiling() and is_fake(h):
        # fake tensors outside compile (the memory benchmark): the host code runs on them, so every
        # buffer the op allocates is counted
        return LM_HEAD_LOSS.eager.apply(h, weight, targets, mask, int(chunk_rows), int(rows_bound))[0]
    return LM_HEAD_LOSS(h, weight, targets, mask, int(chunk_rows), int(rows_bound))[0]
