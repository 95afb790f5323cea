"""The compiled Triton kernels on a CUDA GPU against float64 (what the interpreter cannot check: bf16
dots, the sm_90 table's choices, every candidate autotuning may pick): `TRITON_INTERPRET=0 pytest -m
cuda tests` (benchmarks/gpu_suite.py runs the `priority` ones first). Skipped without a GPU.

Every tolerance is predicted from the dtype and the reduction length (tests/tolerances.py, which
says how); each test's docstring counts the roundings on its result's path.
"""
import os

import pytest
import torch

from gpt1_fast import reference
from gpt1_fast.testing import rel_err
from tolerances import lm_head_loss_bound, tolerance, unit_roundoff

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                 reason="compiled Triton needed: run with TRITON_INTERPRET=0")]
BF16, F16, F32 = torch.bfloat16, torch.float16, torch.float32


def _fp32_tol(ops: int, K: int = 0) -> float:
    """A float32 kernel: `ops` roundings per element (the approximate exp2 and division count a few
    each) and a length-K float32 reduction."""
    return tolerance({F32: ops}, K=K)


def _grads_vs_float64(fn, ref, ins, dy=None):
    """Relative errors of fn's output and input grads against `ref` in float64 on the same inputs."""
    y = fn(*ins)
    dy = torch.randn_like(y) if dy is None else dy
    gs = torch.autograd.grad(y, ins, dy)
    rin = [t.detach().double().requires_grad_() for t in ins]
    yr = ref(*rin)
    grs = torch.autograd.grad(yr, rin, dy.double())
    for g, t in zip(gs, ins):
        assert g.dtype == t.dtype
    return [rel_err(y, yr)] + [rel_err(g, gr) for g, gr in zip(gs, grs)]


# ----------------------------------------------------------------------------- LayerNorm / GELU
def _ln_gelu_errs(shape, dtype, pdtype, seed=0):
    from gpt1_fast.kernels.layernorm_gelu import bias_gelu, layer_norm

    torch.manual_seed(seed)
    N = shape[-1]
    x = (torch.randn(shape, device="cuda") * 2 + 0.5).to(dtype).requires_grad_()
    r = torch.randn(shape, device="cuda").to(dtype).requires_grad_()
    w = (torch.rand(N, device="cuda") + 0.5).to(pdtype).requires_grad_()
    b = torch.randn(N, device="cuda").to(pdtype).requires_grad_()
    # poison the caching allocator: an output element left unwritten would surface as NaN
    torch.empty(4 * x.numel() * 4, device="cuda").fill_(float("nan"))
    ln = _grads_vs_float64(lambda x, r, w, b: layer_norm(x, w, b, 1e-5, residual=r),
                           lambda x, r, w, b: reference.layer_norm(x, w, b, 1e-5, r), [x, r, w, b])
    gelu = _grads_vs_float64(bias_gelu, lambda x, b: reference.bias_act(x, b, "gelu"), [x, b])
    return ln, gelu, x.numel() // N


def _ln_gelu_tols(dtype, pdtype, rows):
    """Half-precision outputs and activation grads: the float32 result rounded once. Parameter grads
    are float32 sums over the rows (K = rows) of a few float32 roundings each, or rounded once to a
    half-precision parameter dtype. Float32 kernels: ~16 roundings per element (exp2.approx is 2 ulp)."""
    act = tolerance({dtype: 1}) if dtype != F32 else _fp32_tol(16, K=4096)
    par = tolerance({pdtype: 1}, K=rows) if pdtype != F32 else _fp32_tol(16, K=rows)
    return [act, act, act, par, par], [act, act, par]


LN_SHAPES = [(9856, 768), (4, 77, 3072), (1, 768), (257, 1000), (64, 4096), (2, 3, 4, 33)]


@pytest.mark.priority
@pytest.mark.parametrize("shape", LN_SHAPES[:2], ids=str)
def test_layernorm_gelu_parity_model_shapes(shape):
    """The model's case: bf16 activations, float32 parameters, GPT-1's widths."""
    ln, gelu, rows = _ln_gelu_errs(shape, BF16, F32)
    tl, tg = _ln_gelu_tols(BF16, F32, rows)
    assert all(e < t for e, t in zip(ln, tl)) and all(e < t for e, t in zip(gelu, tg)), (ln, gelu, tl, tg)


@pytest.mark.parametrize("dtype", [BF16, F16, F32], ids=str)
@pytest.mark.parametrize("shape", LN_SHAPES, ids=str)
@pytest.mark.parametrize("param_fp32", [True, False])
def test_layernorm_gelu_parity_full_matrix(dtype, shape, param_fp32):
    ln, gelu, rows = _ln_gelu_errs(shape, dtype, F32 if param_fp32 else dtype)
    tl, tg = _ln_gelu_tols(dtype, F32 if param_fp32 else dtype, rows)
    assert all(e < t for e, t in zip(ln, tl)) and all(e < t for e, t in zip(gelu, tg)), (ln, gelu, tl, tg)


@pytest.mark.parametrize("what", ["ln_fwd", "ln_bwd", "gelu_fwd", "gelu_bwd"])
@pytest.mark.parametrize("N", [768, 3072])
def test_layernorm_gelu_every_candidate(what, N):
    """Every config autotuning may pick for this kernel and width, forced, at bf16 / fp32 params."""
    from gpt1_fast.kernels import _op
    from gpt1_fast.kernels import layernorm_gelu_configs as C
    from gpt1_fast.kernels.layernorm_gelu import TUNING

    cands = C.candidates(what, (N, 2, _op.arch(torch.empty(1, device="cuda"))))
    assert len(cands) > 1
    for cfg in cands:
        with TUNING.override(**{what: cfg}):
            ln, gelu, rows = _ln_gelu_errs((4096, N), BF16, F32, seed=3)
        tl, tg = _ln_gelu_tols(BF16, F32, rows)
        assert all(e < t for e, t in zip(ln, tl)) and all(e < t for e, t in zip(gelu, tg)), (cfg, ln, gelu)


# ----------------------------------------------------------------------------- attention
# bf16 roundings on the path: out = P V / l with P rounded to bf16 for the PV dot, out rounded: 2.
# dV = Pᵀ dO: P and dV rounded: 2. dQ, dK: dS rounded for its dots, the output rounded, and the
# row term D = rowsum(dO * O) read from the bf16 output: 3. The float32 reductions (T, D <= 512)
# are far below one bf16 rounding.
ATT_TOL = {"out": tolerance({BF16: 2}), "dq": tolerance({BF16: 3}), "dk": tolerance({BF16: 3}),
           "dv": tolerance({BF16: 2})}


def _attention_errs(B, H, T, D, p, seed=7):
    from gpt1_fast.kernels.attention import attention_dropout_mask, causal_attention

    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=BF16, requires_grad=True) for _ in range(3))
    out = causal_attention(q, k, v, p, seed=seed)
    do = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), do)
    keep = attention_dropout_mask(seed, B, H, T, p, "cuda") if p > 0 else None
    qr, kr, vr = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference.attention(qr, kr, vr, p, keep=keep)
    refs = torch.autograd.grad(ref, (qr, kr, vr), do.double())
    return dict(zip(("out", "dq", "dk", "dv"), [rel_err(out, ref)] + [rel_err(a, b) for a, b in zip(grads, refs)]))


def _assert_attention_close(errs, what=""):
    assert all(errs[k] < ATT_TOL[k] for k in errs), (what, errs, ATT_TOL)


@pytest.mark.priority
@pytest.mark.parametrize("shape", [(4, 12, 77, 64), (2, 12, 512, 64), (8, 12, 48, 64), (4, 12, 200, 64)], ids=str)
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_bf16_parity(shape, p):
    errs = _attention_errs(*shape, p)
    _assert_attention_close(errs, shape)


@pytest.mark.priority
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_t1_gradients(p):
    """T = 1: one key, softmax = 1, so out = v·keep/(1-p), dV = dO·keep/(1-p), and dQ = dK = 0 up
    to the cancellation of two equal float32 dot products of length D (2 D u32 |dO| |v| |k| scale)."""
    from gpt1_fast.kernels.attention import attention_dropout_mask, causal_attention

    B, H, D = 64, 12, 64
    q, k, v = (torch.randn(B, H, 1, D, device="cuda", dtype=BF16, requires_grad=True) for _ in range(3))
    out = causal_attention(q, k, v, p, seed=3)
    do = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), do)
    keep = attention_dropout_mask(3, B, H, 1, p, "cuda").double() / (1 - p) if p > 0 else 1.0
    if p == 0:
        assert torch.equal(out, v) and torch.equal(dv, do)
    else:
        assert rel_err(out, v.double() * keep) < ATT_TOL["out"] and rel_err(dv, do.double() * keep) < ATT_TOL["dv"]
    cancel = 2 * D * unit_roundoff(F32) * do.abs().max() * v.abs().max() * k.abs().max() * D ** -0.5
    assert dq.abs().max() <= cancel and dk.abs().max() <= cancel * q.abs().max() / k.abs().max()


@pytest.mark.parametrize("T", [16, 32, 48, 64, 77, 128, 200, 512])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_every_candidate(T, p):
    """Every forward and backward candidate the table or autotuning may pick on this GPU (the atomic
    kind too), forced through the override, paired round-robin so each runs at least once."""
    from gpt1_fast.kernels import _op
    from gpt1_fast.kernels import attention_configs as AC
    from gpt1_fast.kernels.attention import TUNING

    arch = _op.arch(torch.empty(1, device="cuda"))
    key = (T, 64, BF16, p > 0, 32, arch)
    fwd, bwd = AC.candidates("fwd", key), AC.candidates("bwd", key, deterministic=False)
    for i in range(max(len(fwd), len(bwd))):
        with TUNING.override(fwd=fwd[i % len(fwd)], bwd=bwd[i % len(bwd)]):
            errs = _attention_errs(2, 12, T, 64, p, seed=5)
        _assert_attention_close(errs, (fwd[i % len(fwd)], bwd[i % len(bwd)]))


def test_attention_deterministic_by_default():
    from gpt1_fast.kernels.attention import causal_attention_packed

    qkv = torch.randn(8, 512, 3 * 768, device="cuda", dtype=BF16, requires_grad=True)
    do = torch.randn(8, 512, 768, device="cuda", dtype=BF16)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        out = causal_attention_packed(qkv, 12, 0.1)
        runs.append((out, torch.autograd.grad(out, qkv, do)[0]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_attention_packed_equals_split_and_compile():
    """Packed == split bitwise (the same kernels). Inductor around the op may fuse the casts into
    other kernels: at most one more bf16 rounding on each side of the comparison."""
    from gpt1_fast.kernels.attention import causal_attention, causal_attention_packed

    B, H, T, D = 8, 12, 77, 64
    qkv = torch.randn(B, T, 3 * H * D, device="cuda", dtype=BF16, requires_grad=True)
    do = torch.randn(B, T, H * D, device="cuda", dtype=BF16)
    out_p = causal_attention_packed(qkv, H, 0.1, seed=11)
    g_p, = torch.autograd.grad(out_p, qkv, do)
    q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2))
    out_s = causal_attention(q, k, v, 0.1, seed=11).transpose(1, 2).reshape(B, T, H * D)
    g_s, = torch.autograd.grad(out_s, qkv, do)
    assert torch.equal(out_p, out_s) and torch.equal(g_p, g_s)
    seed = torch.tensor([3], device="cuda")
    fc = torch.compile(lambda x: causal_attention_packed(x, H, 0.1, seed=seed), fullgraph=True)
    out_c = fc(qkv)
    g_c, = torch.autograd.grad(out_c, qkv, do)
    out_e = causal_attention_packed(qkv, H, 0.1, seed=seed)
    g_e, = torch.autograd.grad(out_e, qkv, do)
    assert rel_err(out_c, out_e) < tolerance({BF16: 2}) and rel_err(g_c, g_e) < tolerance({BF16: 2})


# ----------------------------------------------------------------------------- fused LM head + loss
@pytest.mark.priority
@pytest.mark.parametrize("dtype,wdtype,N,keep,bound", [
    (BF16, BF16, 4096, 1.0, False), (F16, F16, 4096, 1.0, False), (F32, F32, 4096, 1.0, False),
    (BF16, F32, 3000, 0.75, False), (BF16, F32, 3000, 0.75, True), (BF16, BF16, 1, 1.0, False)], ids=str)
def test_lm_head_loss_parity_at_gpt1_size(dtype, wdtype, N, keep, bound):
    """ops.lm_head_loss "triton" vs float64 at V 40,990, C 768. The loss, row by row, within the bound
    of bf16 (fp16, fp32) logits: u (|z_t| + E_p |z|), plus the weight's own rounding when an fp32
    weight is cast to the compute dtype (tolerances.lm_head_loss_bound). dh: dlogits and dh rounded
    (2, +1 for a rounded weight), K = V; dweight: dlogits rounded, then rounded to its own dtype
    (+1 if half precision), K = N rows. 25 % rows masked in two cases, one with rows_bound."""
    import torch.nn.functional as F

    from gpt1_fast import ops

    V, C = 40990, 768
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(N, C, device="cuda", generator=g).to(dtype).requires_grad_()
    w = (torch.randn(V, C, device="cuda", generator=g) * 0.05).to(wdtype).requires_grad_()
    t = torch.randint(0, V, (N,), device="cuda", generator=g)
    m = (torch.rand(N, device="cuda", generator=g) < keep).float()
    dl = torch.rand(N, device="cuda", generator=g) + 0.5
    rows_bound = int(m.sum()) if bound else 0  # the host knows it when it built the batch; here a sync
    loss = ops.lm_head_loss(h, w, t, m, backend="triton", rows_bound=rows_bound)
    dh, dw = torch.autograd.grad(loss, (h, w), dl)
    hr, wr = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = F.cross_entropy(hr @ wr.t(), t, reduction="none") * m.double()
    dhr, dwr = torch.autograd.grad(ref, (hr, wr), dl.double())
    assert dh.dtype == dtype and dw.dtype == wdtype
    rounded_w = int(wdtype != dtype)
    dw_roundings = 1 + rounded_w + int(wdtype != F32)  # dlogits, the weight's cast, dweight's own dtype
    bound_rows = lm_head_loss_bound(hr.detach(), wr.detach(), t, dtype, rounded_w) * m.double()
    err = (loss.double() - ref.detach()).abs()
    assert (err <= bound_rows).all(), (err / bound_rows.clamp_min(1e-30)).max()
    assert (loss[m == 0] == 0).all() and (dh[m == 0] == 0).all()
    assert rel_err(dh, dhr) < tolerance({dtype: 2 + rounded_w}, K=V)
    assert rel_err(dw, dwr) < tolerance({dtype: dw_roundings}, K=N)
