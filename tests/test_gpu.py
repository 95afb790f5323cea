"""Correctness on a CUDA GPU with the compiled Triton kernels (what the interpreter cannot check: bf16
dots, the sm_90 table's choices, Inductor): `TRITON_INTERPRET=0 pytest -m cuda tests` (benchmarks/
gpu_suite.sh runs it before the benchmarks). Every test here is marked `cuda` and skipped without one.
"""
import os

import pytest
import torch

from gpt1_fast import reference
from gpt1_fast.testing import rel_err

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                 reason="compiled Triton needed: run with TRITON_INTERPRET=0")]

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def _grads_vs_reference(fn, ref, ins, dy=None):
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
LN_SHAPES = [(1, 768), (9856, 768), (4, 77, 3072), (257, 1000), (64, 4096), (2, 3, 4, 33)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", LN_SHAPES, ids=str)
@pytest.mark.parametrize("param_fp32", [True, False])
def test_layernorm_gelu_parity(dtype, shape, param_fp32):
    from gpt1_fast.kernels.layernorm_gelu import bias_gelu, layer_norm

    torch.manual_seed(0)
    N, pdtype = shape[-1], torch.float32 if param_fp32 else dtype
    x = (torch.randn(shape, device="cuda") * 2 + 0.5).to(dtype).requires_grad_()
    r = torch.randn(shape, device="cuda").to(dtype).requires_grad_()
    w = (torch.rand(N, device="cuda") + 0.5).to(pdtype).requires_grad_()
    b = torch.randn(N, device="cuda").to(pdtype).requires_grad_()
    # poison the caching allocator: an output element left unwritten would surface as NaN
    torch.empty(4 * x.numel() * 4, device="cuda").fill_(float("nan"))
    for fn, ref, ins in ((lambda x, r, w, b: layer_norm(x, w, b, 1e-5, residual=r),
                          lambda x, r, w, b: reference.layer_norm(x, w, b, 1e-5, r), [x, r, w, b]),
                         (bias_gelu, lambda x, b: reference.bias_act(x, b, "gelu"), [x, b])):
        errs = _grads_vs_reference(fn, ref, ins)
        tols = [TOL[dtype]] + [TOL[t.dtype] for t in ins]
        assert all(e < t for e, t in zip(errs, tols)), errs


def test_layernorm_noncontiguous_and_expanded_grad():
    from gpt1_fast.kernels.layernorm_gelu import layer_norm

    x = torch.randn(768, 512, device="cuda", dtype=torch.bfloat16).t().requires_grad_()
    r = torch.randn(512, 768, device="cuda", dtype=torch.bfloat16).requires_grad_()
    w = torch.rand(768, device="cuda").requires_grad_()
    b = torch.randn(768, device="cuda").requires_grad_()
    gs = torch.autograd.grad(layer_norm(x, w, b, residual=r).sum(), (x, r, w, b))
    rin = [t.detach().double().requires_grad_() for t in (x, r, w, b)]
    grs = torch.autograd.grad(reference.layer_norm(rin[0], rin[2], rin[3], 1e-5, rin[1]).sum(), rin)
    errs = [rel_err(g, gr) for g, gr in zip(gs, grs)]
    assert all(e < 2e-2 for e in errs[:2]) and all(e < 1e-4 for e in errs[2:]), errs  # sum(): dx is tiny


# ----------------------------------------------------------------------------- attention
def _ref32(q, k, v, keep=None, p=0.0):
    return reference.attention(q.float(), k.float(), v.float(), p, keep=keep)


def _attention_errs(B, H, T, D, p, seed=7):
    from gpt1_fast.kernels.attention import attention_dropout_mask, causal_attention

    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    out = causal_attention(q, k, v, p, seed=seed)
    do = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), do)
    keep = attention_dropout_mask(seed, B, H, T, p, "cuda") if p > 0 else None
    qr, kr, vr = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = _ref32(qr, kr, vr, keep, p)
    refs = torch.autograd.grad(ref, (qr, kr, vr), do.float())
    return [rel_err(out, ref)] + ([rel_err(a, b) for a, b in zip(grads, refs)] if T > 1 else []), keep


@pytest.mark.parametrize("shape", [(4, 12, 77, 64), (2, 12, 512, 64), (2, 3, 1, 64)], ids=str)
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_bf16_parity(shape, p):
    errs, keep = _attention_errs(*shape, p)
    assert all(e < 2e-2 for e in errs), errs
    if keep is not None and shape[2] > 64:
        assert abs(keep.float().mean().item() - (1 - p)) < 2e-3


@pytest.mark.parametrize("T", [77, 512])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_every_candidate_on_this_gpu(T, p):
    """Every candidate the table or autotuning may pick on this GPU, forced through the override."""
    from gpt1_fast.kernels import _op
    from gpt1_fast.kernels import attention_configs as AC
    from gpt1_fast.kernels.attention import TUNING

    arch = _op.arch(torch.empty(1, device="cuda"))
    key = (T, 64, torch.bfloat16, p > 0, 32, arch)
    for bwd in AC.candidates("bwd", key, deterministic=False):
        for fwd in AC.candidates("fwd", key)[:2]:
            with TUNING.override(fwd=fwd, bwd=bwd):
                errs, _ = _attention_errs(2, 12, T, 64, p, seed=5)
            assert all(e < 2e-2 for e in errs), (fwd, bwd, errs)


def test_attention_deterministic_by_default():
    from gpt1_fast.kernels.attention import causal_attention_packed

    qkv = torch.randn(8, 512, 3 * 768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn(8, 512, 768, device="cuda", dtype=torch.bfloat16)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        out = causal_attention_packed(qkv, 12, 0.1)
        runs.append((out, torch.autograd.grad(out, qkv, do)[0]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_attention_packed_equals_split_and_compile():
    from gpt1_fast.kernels.attention import causal_attention, causal_attention_packed

    B, H, T, D = 8, 12, 77, 64
    qkv = torch.randn(B, T, 3 * H * D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn(B, T, H * D, device="cuda", dtype=torch.bfloat16)
    out_p = causal_attention_packed(qkv, H, 0.1, seed=11)
    g_p, = torch.autograd.grad(out_p, qkv, do)
    q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2))
    out_s = causal_attention(q, k, v, 0.1, seed=11).transpose(1, 2).reshape(B, T, H * D)
    g_s, = torch.autograd.grad(out_s, qkv, do)
    assert torch.equal(out_p, out_s) and torch.equal(g_p, g_s)
    # Inductor, fullgraph, the seed given: the same kernels, so close to eager (Inductor may fuse
    # the surrounding casts differently)
    seed = torch.tensor([3], device="cuda")
    fc = torch.compile(lambda x: causal_attention_packed(x, H, 0.1, seed=seed), fullgraph=True)
    out_c = fc(qkv)
    g_c, = torch.autograd.grad(out_c, qkv, do)
    out_e = causal_attention_packed(qkv, H, 0.1, seed=seed)
    g_e, = torch.autograd.grad(out_e, qkv, do)
    assert rel_err(out_c, out_e) < 1e-2 and rel_err(g_c, g_e) < 1e-2


# ----------------------------------------------------------------------------- the whole model
def test_model_triton_backend_vs_reference():
    """GPT-1 size: the triton backend against the torch reference, fp32 and bf16 autocast, forward and
    every gradient; then torch.compile(fullgraph=True) of the triton model (no graph breaks)."""
    from gpt1_fast.config import GPTConfig
    from gpt1_fast.model import DoubleHeadModel, set_backend

    n_vocab, n_special, T, B = 40478, 3, 77, 8
    vocab = n_vocab + n_special + T
    torch.manual_seed(0)
    cfg = GPTConfig(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0, backend="torch")
    model = DoubleHeadModel(cfg, n_vocab + 2, "multiple_choice", vocab, T).cuda()
    X = torch.zeros(B, 2, T, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, n_vocab, (B, 2, T))
    X[..., 1] = torch.arange(n_vocab + n_special, vocab)
    X[:, :, T // 2 + 5, 0] = n_vocab + 2
    X = X.cuda()

    def run(m, amp):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            lm, clf = m(X)
        (lm.float().logsumexp(-1).mean() + clf.float().pow(2).sum()).backward()
        return lm.detach().float(), clf.detach().float(), {n: p.grad.clone() for n, p in model.named_parameters()}

    ref = run(model, False)
    for backend, amp, tol in [("triton", False, 2e-3), ("triton", True, 5e-2)]:
        set_backend(model, backend)
        lm, clf, grads = run(model, amp)
        assert rel_err(lm, ref[0]) < tol and rel_err(clf, ref[1]) < tol, (backend, amp)
        worst = max(rel_err(g, ref[2][n]) for n, g in grads.items())
        assert worst < 5 * tol, (backend, amp, worst)
    set_backend(model, "triton")
    lm, clf, _ = run(torch.compile(model, fullgraph=True), True)
    assert rel_err(lm, ref[0]) < 5e-2 and rel_err(clf, ref[1]) < 5e-2


# ----------------------------------------------------------------------------- fused LM head + loss
@pytest.mark.parametrize("dtype,wdtype,N,keep", [
    (torch.bfloat16, torch.bfloat16, 4096, 1.0), (torch.float16, torch.float16, 4096, 1.0),
    (torch.float32, torch.float32, 4096, 1.0), (torch.bfloat16, torch.float32, 3000, 0.75),
    (torch.bfloat16, torch.bfloat16, 1, 1.0)], ids=str)
def test_lm_head_loss_parity_at_gpt1_size(dtype, wdtype, N, keep):
    """ops.lm_head_loss "triton" vs a float64 full softmax at V 40,990, C 768: loss, dh, dweight
    (an fp32 weight with bf16 h is what autocast feeds it), 25 % rows masked in one case."""
    import torch.nn.functional as F

    from gpt1_fast import ops

    V, C = 40990, 768
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(N, C, device="cuda", generator=g).to(dtype).requires_grad_()
    w = (torch.randn(V, C, device="cuda", generator=g) * 0.05).to(wdtype).requires_grad_()
    t = torch.randint(0, V, (N,), device="cuda", generator=g)
    m = (torch.rand(N, device="cuda", generator=g) < keep).float()
    dl = torch.rand(N, device="cuda", generator=g) + 0.5
    loss = ops.lm_head_loss(h, w, t, m, backend="triton")
    dh, dw = torch.autograd.grad(loss, (h, w), dl)
    hr, wr = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = F.cross_entropy(hr @ wr.t(), t, reduction="none") * m.double()
    dhr, dwr = torch.autograd.grad(ref, (hr, wr), dl.double())
    tol = 2e-2 if torch.bfloat16 in (dtype, wdtype) else TOL[dtype] * 1.5
    assert dh.dtype == dtype and dw.dtype == wdtype
    assert rel_err(loss, ref) < tol and rel_err(dh, dhr) < tol and rel_err(dw, dwr) < tol


def test_lm_head_training_step_compiled_equals_eager():
    """The ROCStories step with the fused LM head under Inductor: the same loss as eager."""
    from gpt1_fast.config import GPTConfig
    from gpt1_fast.model import DoubleHeadModel

    n_vocab, T, B = 40478, 77, 8
    torch.manual_seed(0)
    cfg = GPTConfig(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0, backend="triton")
    model = DoubleHeadModel(cfg, n_vocab + 2, "multiple_choice", n_vocab + 3 + T, T).cuda()
    X = torch.zeros(B, 2, T, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, n_vocab, (B, 2, T))
    X[..., 1] = torch.arange(n_vocab + 3, n_vocab + 3 + T)
    X[:, :, T - 1, 0] = n_vocab + 2
    M = torch.ones(B, 2, T)
    M[:, :, T - 10:T - 1] = 0  # padding rows the fused op must skip
    Y = torch.randint(0, 2, (B,))
    X, M, Y = X.cuda(), M.cuda(), Y.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model(X, M, Y)["loss"].float().item()
        compiled = torch.compile(model)(X, M, Y)["loss"].float().item()
    assert abs(eager - compiled) <= 1e-2 * abs(eager)
