"""Fused causal attention (gpt1_fast/kernels/attention.py): parity with a float64 reference of SPEC §3
through the Triton interpreter, dropout-mask consistency, packed layout, torch.compile tracing,
model-level backend equality, and AOT compilation (sm_80, sm_90) of the launched configs without spills."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from gpt1_fast import reference  # noqa: E402
from gpt1_fast.kernels import attention as A  # noqa: E402
from gpt1_fast.kernels import attention_configs as AC  # noqa: E402
from gpt1_fast.kernels.attention import (  # noqa: E402
    attention_dropout_mask, causal_attention, causal_attention_packed, draw_dropout_seed)
from gpt1_fast.testing import rel_err  # noqa: E402

TOL = {torch.float32: 2e-5, torch.float16: 3e-3}


def ref_attention(q, k, v, keep=None, p=0.0, scale=None):
    """SPEC §3 literally (gpt1_fast.reference), in float64, with the given dropout mask."""
    q, k, v = (t.double() for t in (q, k, v))
    return reference.attention(q, k, v, p, keep=keep, scale=scale)


def run_both(q, k, v, fn, keep=None, p=0.0):
    """Kernel vs reference: output and grads of q, k, v for one random upstream gradient."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    do = torch.randn_like(out)
    out.backward(do)
    qr, kr, vr = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = ref_attention(qr, kr, vr, keep, p)
    ref.backward(do.double())
    return (out, q.grad, k.grad, v.grad), (ref, qr.grad, kr.grad, vr.grad)


def assert_close(ours, refs, tol):
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, refs):
        assert torch.isfinite(a).all(), name
        if b.norm() < 1e-9:  # T == 1: dq, dk are exactly zero
            assert a.abs().max().item() < 1e-6, name
        else:
            assert rel_err(a, b) < tol, (name, rel_err(a, b))


# (B, H, T, D, dtype): T covers 1, 2, the small-T path (<= 128), the tiled path (130, 256, ragged).
PARITY = [
    (1, 1, 1, 64, torch.float32), (3, 2, 1, 32, torch.float16),
    (2, 3, 2, 64, torch.float16),
    (2, 2, 77, 64, torch.float32), (2, 2, 77, 64, torch.float16), (1, 3, 77, 32, torch.float16),
    (1, 1, 77, 128, torch.float32), (2, 1, 50, 16, torch.float32),
    (1, 2, 130, 64, torch.float32), (1, 2, 130, 64, torch.float16), (1, 1, 130, 128, torch.float16),
    (1, 1, 256, 64, torch.float16), (1, 1, 256, 32, torch.float32),
]


@pytest.mark.parametrize("B,H,T,D,dtype", PARITY)
def test_parity(B, H, T, D, dtype):
    q, k, v = (torch.randn(B, H, T, D, dtype=dtype) for _ in range(3))
    ours, refs = run_both(q, k, v, lambda q, k, v: causal_attention(q, k, v))
    assert ours[0].dtype == dtype
    assert_close(ours, refs, TOL[dtype])


@pytest.mark.parametrize("T", [48, 77, 130])
def test_every_candidate(T):
    """Each candidate config a GPU may run (sm_90 lists, which contain sm_80's; the atomic kind too)
    computes the same function: forward and grads against the reference with the kernel's own
    dropout mask. Forward and backward choices are forced through the tuning object's override."""
    B, H, D, p, dtype = 1, 1, 64, 0.25, torch.float16
    q, k, v = (torch.randn(B, H, T, D, dtype=dtype) for _ in range(3))
    keep = attention_dropout_mask(5, B, H, T, p)
    key = (T, D, torch.bfloat16, True, 1, 90)
    fwd_all = AC.candidates("fwd", key)
    bwd_all = AC.candidates("bwd", key, deterministic=False)
    assert len(fwd_all) > 1 and len(bwd_all) > 1
    assert {kind for kind, _ in bwd_all} == ({"small", "tiled"} if T <= 128 else {"tiled", "atomic"})
    for i in range(max(len(fwd_all), len(bwd_all))):
        with A.TUNING.override(fwd=fwd_all[i % len(fwd_all)], bwd=bwd_all[i % len(bwd_all)]):
            ours, refs = run_both(q, k, v, lambda q, k, v: causal_attention(q, k, v, p, seed=5), keep=keep, p=p)
        assert_close(ours, refs, TOL[dtype])


def test_noncontiguous_inputs_and_scale():
    # q, k, v as transposed views of [B, T, H, D] buffers; an explicit scale.
    q, k, v = (torch.randn(2, 77, 3, 32).transpose(1, 2) for _ in range(3))
    out = causal_attention(q, k, v, scale=0.3)
    assert rel_err(out, ref_attention(q, k, v, scale=0.3)) < TOL[torch.float32]


@pytest.mark.parametrize("T", [77, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_dropout_matches_reference_with_kernel_mask(T, dtype):
    B, H, D, p = (2, 2, 64, 0.2) if T <= 128 else (1, 2, 64, 0.2)
    q, k, v = (torch.randn(B, H, T, D, dtype=dtype) for _ in range(3))
    torch.manual_seed(1234)
    ours_fn = lambda q, k, v: causal_attention(q, k, v, dropout_p=p)  # noqa: E731
    q_, k_, v_ = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = ours_fn(q_, k_, v_)
    torch.manual_seed(1234)
    keep = attention_dropout_mask(draw_dropout_seed("cpu"), B, H, T, p)
    torch.manual_seed(1234)
    ours, refs = run_both(q, k, v, ours_fn, keep=keep, p=p)
    assert torch.equal(ours[0], out)  # manual_seed reproduces the call
    assert_close(ours, refs, TOL[dtype])
    # the mask actually dropped something on the causal part
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    assert (~keep & causal).any()


def test_dropout_keep_rate_and_structure():
    B, H, T = 2, 3, 200
    for p in (0.1, 0.5):
        keep = attention_dropout_mask(123456789, B, H, T, p, block=64)
        n = keep.numel()
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(keep.sum().item() - n * (1 - p)) < 5 * sigma, p
        # each of the eight 16-bit lanes of a Philox call (key j % 8) keeps at the same rate
        for lane in range(8):
            sub = keep[..., lane::8]
            s = math.sqrt(sub.numel() * p * (1 - p))
            assert abs(sub.sum().item() - sub.numel() * (1 - p)) < 5 * s, (p, lane)
    # heads, rows and columns get different masks
    keep = attention_dropout_mask(7, 1, 2, 64, 0.5)
    assert not torch.equal(keep[0, 0], keep[0, 1])
    assert not torch.equal(keep[0, 0, 10], keep[0, 0, 11])
    assert not torch.equal(keep[0, 0, :, 8], keep[0, 0, :, 9])


def test_dropout_mask_independent_of_block_size():
    for T in (5, 77, 130):
        masks = [attention_dropout_mask(99, 1, 2, T, 0.3, block=blk) for blk in (16, 32, 64)]
        assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])


def test_dropout_seed_reproducibility():
    B, H, T, D, p = 1, 2, 40, 32, 0.3
    q, k, v = (torch.randn(B, H, T, D, requires_grad=True) for _ in range(3))

    def run(seed):
        torch.manual_seed(seed)
        for t in (q, k, v):
            t.grad = None
        out = causal_attention(q, k, v, dropout_p=p)
        out.backward(torch.ones_like(out))
        return out.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone()

    a, b, c = run(0), run(0), run(1)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    torch.manual_seed(0)
    s0 = draw_dropout_seed("cpu")
    torch.manual_seed(1)
    s1 = draw_dropout_seed("cpu")
    assert not torch.equal(attention_dropout_mask(s0, B, H, T, p), attention_dropout_mask(s1, B, H, T, p))


def split_heads(qkv, n_head):
    B, T, C3 = qkv.shape
    C = C3 // 3
    return [t.reshape(B, T, n_head, C // n_head).transpose(1, 2) for t in qkv.split(C, dim=2)]


@pytest.mark.parametrize("T,dtype,p", [(77, torch.float32, 0.0), (77, torch.float16, 0.1),
                                       (130, torch.float32, 0.1), (3, torch.float32, 0.0)])
def test_packed_equals_split(T, dtype, p):
    B, n_head, D = (2, 3, 32) if T <= 128 else (1, 2, 32)
    C = n_head * D
    qkv = torch.randn(B, T, 3 * C, dtype=dtype)
    do = torch.randn(B, T, C, dtype=dtype)
    a = qkv.clone().requires_grad_()
    out_packed = causal_attention_packed(a, n_head, p, seed=42)
    out_packed.backward(do)
    b = qkv.clone().requires_grad_()
    q, k, v = split_heads(b, n_head)
    out_split = causal_attention(q, k, v, p, seed=42).transpose(1, 2).reshape(B, T, C)
    out_split.backward(do)
    assert out_packed.shape == (B, T, C)
    assert torch.equal(out_packed, out_split)
    assert torch.equal(a.grad, b.grad)
    # and the reference (split heads, float64)
    keep = attention_dropout_mask(42, B, n_head, T, p) if p > 0 else None
    ref = ref_attention(*split_heads(qkv, n_head), keep, p).transpose(1, 2).reshape(B, T, C)
    assert rel_err(out_packed, ref) < TOL[dtype]


def test_bad_inputs():
    x = torch.randn(1, 2, 8, 64)
    with pytest.raises(ValueError):
        causal_attention(x, x, x[..., :32])
    with pytest.raises(ValueError):
        causal_attention(x, x, x, dropout_p=1.0)
    with pytest.raises(ValueError):
        causal_attention(*(torch.randn(1, 2, 8, 48) for _ in range(3)))
    with pytest.raises(TypeError):
        causal_attention(*(torch.randn(1, 2, 8, 64, dtype=torch.float64) for _ in range(3)))
    with pytest.raises(ValueError):
        causal_attention_packed(torch.randn(1, 8, 3 * 64), 5)
    # the checks both entry points share
    with pytest.raises(ValueError, match="head dim 48"):
        causal_attention_packed(torch.randn(1, 8, 3 * 96), 2)
    with pytest.raises(ValueError, match="T must be"):
        causal_attention_packed(torch.randn(1, 0, 3 * 64), 1)
    with pytest.raises(ValueError, match="T must be"):
        causal_attention(*(torch.randn(1, 2, 0, 64) for _ in range(3)))
    with pytest.raises(ValueError, match="dropout_p"):
        causal_attention_packed(torch.randn(1, 8, 3 * 64), 1, dropout_p=-0.1)
    with pytest.raises(TypeError, match="qkv"):
        causal_attention_packed(torch.randn(1, 8, 3 * 64, dtype=torch.float64), 1)


def test_opcheck_registered_ops():
    # The eager path is an autograd.Function; these are the ops torch.compile traces.
    ops = torch.ops.gpt1_fast
    qkv = torch.randn(2, 20, 3 * 64, requires_grad=True)
    seed = torch.tensor([3], dtype=torch.int64)
    torch.library.opcheck(ops.attn_packed_fwd.default, (qkv, 2, seed, 0.1, 0.125))
    q, k, v = (torch.randn(1, 2, 20, 32, requires_grad=True) for _ in range(3))
    torch.library.opcheck(ops.attn_fwd.default, (q, k, v, seed, 0.0, 0.2))


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    n_head, p = 2, 0.1

    def f(qkv):
        return causal_attention_packed(qkv, n_head, p).float().square().sum()

    qkv = torch.randn(2, 20, 3 * 64)
    a = qkv.clone().requires_grad_()
    torch.manual_seed(5)
    f(a).backward()
    b = qkv.clone().requires_grad_()
    torch.manual_seed(5)
    torch.compile(f, fullgraph=True, backend=backend)(b).backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_model_triton_backend_equals_torch():
    from gpt1_fast.config import GPTConfig
    from gpt1_fast.model import TransformerModel, set_backend

    torch.manual_seed(0)
    cfg = GPTConfig(n_embd=64, n_head=4, n_layer=2, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0,
                    clf_pdrop=0.0, backend="torch")
    ref = TransformerModel(cfg, vocab=100, n_ctx=40)
    tri = set_backend(TransformerModel(cfg, vocab=100, n_ctx=40), "triton")
    tri.load_state_dict(ref.state_dict())
    ids = torch.randint(0, 60, (3, 33))
    w = torch.randn(3, 33, 64)  # a random projection: sum(h²) of a LayerNorm output is ~constant
    outs = []
    for m in (ref, tri):
        h = m(input_ids=ids)
        (h * w).sum().backward()
        outs.append((h, {n: p.grad for n, p in m.named_parameters()}))
    (h_ref, g_ref), (h_tri, g_tri) = outs
    assert rel_err(h_tri, h_ref) < 1e-5
    for n in g_ref:
        assert rel_err(g_tri[n], g_ref[n]) < 1e-4, n


# ------------------------------------------------------------------------------------------ AOT
# Each case runs the public ops (forward + backward) on CPU tensors with the kernel launches
# recorded instead of executed, then compiles exactly the recorded (kernel, signature, constexprs,
# num_warps, num_stages) for the target: the configs that would be launched on a GPU, the table's
# choices (deterministic or not) and, where asked, every candidate autotuning may pick.
# (dtype, T, dropout p, every candidate or only the table's): all candidates for bf16 with
# dropout (the training configuration); the table's elsewhere, to bound CI time.
AOT_CASES = {
    90: [("bfloat16", 77, 0.1, True), ("bfloat16", 512, 0.1, True), ("bfloat16", 512, 0.0, False),
         ("float16", 512, 0.1, False), ("float32", 512, 0.1, False), ("bfloat16", 48, 0.1, False)],
    80: [("bfloat16", 77, 0.1, True), ("bfloat16", 512, 0.1, True), ("float32", 512, 0.1, False)],
}
# Eager Triton types Python floats as fp32; Inductor (torch.compile of the triton_op) passes them as
# fp64 scalars. Both must compile (a promoted scale once broke tl.dot's accumulator typing).
FLOAT_TYPES = {90: ("fp32", "fp64"), 80: ("fp32",)}


def _recorded_launches(dtype, T, p, every_config, cc):
    """[(JITFunction, args, constexpr/option kwargs, is the table's choice)] that forward + backward
    would launch on a GPU of compute capability cc/10: the table's choices, and with every_config
    every candidate (the atomic kind included) forced through the tuning object."""
    from gpt1_fast.kernels.aot import recording_launches

    key = (T, 64, dtype, p > 0, 1, cc)
    choices = [(AC.table("fwd", key, det), AC.table("bwd", key, det), True) for det in (True, False)]
    if every_config:
        fwd_all, bwd_all = AC.candidates("fwd", key), AC.candidates("bwd", key, deterministic=False)
        choices += [(fwd_all[i % len(fwd_all)], bwd_all[i % len(bwd_all)], False)
                    for i in range(max(len(fwd_all), len(bwd_all)))]
    out = []
    for fwd, bwd, is_table in choices:
        with recording_launches(cc) as calls, A.TUNING.override(fwd=fwd, bwd=bwd):
            qkv = torch.randn(1, T, 3 * 2 * 64, dtype=dtype, requires_grad=True)
            A.causal_attention_packed(qkv, 2, p).sum().backward()
        out += [(kernel, args, kw, is_table) for kernel, args, kw in calls]
    return out


def _aot_main(cc: int) -> None:
    from gpt1_fast.kernels.aot import compile_launch, specialise

    results, seen = [], set()
    for dtype_name, T, p, every_config in AOT_CASES[cc]:
        launches = _recorded_launches(getattr(torch, dtype_name), T, p, every_config, cc)
        assert launches, "no launches recorded"
        float_tys = FLOAT_TYPES[cc] if dtype_name == "bfloat16" else ("fp32",)
        for (kernel, args, kw, is_table), float_ty in [(c, f) for c in launches for f in float_tys]:
            if float_ty != "fp32" and not is_table:
                continue
            sig, constexprs, attrs = specialise(kernel, args, float_ty)
            key = (kernel.__name__, json.dumps(sig, sort_keys=True), json.dumps(constexprs, sort_keys=True),
                   json.dumps(kw, sort_keys=True), str(sorted(attrs)))
            if key in seen:
                continue
            seen.add(key)
            st = compile_launch(kernel, args, kw, cc, float_ty)
            results.append(dict(kernel=kernel.__name__, dtype=dtype_name, T=T, p=p, cc=cc, floats=float_ty,
                                n_regs=st["regs"], n_spills=st["spills"], shared=st["shared"], wgmma=st["wgmma"],
                                table=is_table, **st["constexprs"], num_warps=st["num_warps"],
                                num_stages=st["num_stages"]))
    print(json.dumps(results))


def test_aot_compile_no_spills():
    pytest.importorskip("triton.backends.nvidia")
    from gpt1_fast.kernels.aot import compiling_env

    env = compiling_env()  # compile for real (the module's setdefault keeps "0")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    procs = {cc: subprocess.Popen([sys.executable, __file__, str(cc)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for cc in AOT_CASES}
    rows = []
    for cc, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        rows += json.loads(out.strip().splitlines()[-1])
    kernels = {r["kernel"] for r in rows}
    assert {"attn_fwd", "attn_bwd", "attn_bwd_small", "attn_bwd_preprocess"} <= kernels
    # every autotune candidate was compiled, not only the defaults
    fwd_512 = {(r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"]) for r in rows
               if r["kernel"] == "attn_fwd" and r["T"] == 512 and r["dtype"] == "bfloat16"}
    assert len(fwd_512) == len(A.fwd_configs(512, 64, torch.bfloat16, 90)) > 1, fwd_512
    for kind, atomic in (("tiled", False), ("atomic", True)):
        got = {(r["BLOCK_M1"], r["BLOCK_N1"], r["num_warps"], r["num_stages"]) for r in rows
               if r["kernel"] == "attn_bwd" and r["cc"] == 90 and r["T"] == 512 and r["dtype"] == "bfloat16"
               and r["p"] > 0 and r["ATOMIC_DQ"] == atomic}
        assert len(got) == len(A.bwd_configs(512, 64, torch.bfloat16, 90)[kind]), (kind, got)
    assert "attn_dq_store" in kernels
    spilling = [r for r in rows if r["n_spills"] != 0]
    assert not spilling, spilling
    # the untimed sm_90 choice at 32 < T <= 64 (attention_configs.AOT_SM90) runs its dots on wgmma
    small_t = [r for r in rows if r["cc"] == 90 and r["T"] == 48 and r["kernel"] in ("attn_fwd", "attn_bwd_small")]
    assert len({r["kernel"] for r in small_t}) == 2 and all(r["wgmma"] for r in small_t), small_t


if __name__ == "__main__":
    _aot_main(int(sys.argv[1]))
