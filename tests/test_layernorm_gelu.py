"""Fused LayerNorm (+ residual) and bias + GELU (gpt1_fast/kernels/layernorm_gelu.py).

On CPU the kernels run in the Triton interpreter (TRITON_INTERPRET=1); bf16 is checked on the GPU
(tests/test_gpu.py, `pytest -m cuda`). The AOT test compiles the configurations the wrappers
launch for sm_80 and sm_90 in a subprocess without the interpreter and checks for register spills
and 16-byte loads.
"""
import os
import sys

if __name__ != "__main__":  # the AOT subprocess (python this_file aot) must not use the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import copy  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpt1_fast import reference  # noqa: E402
from gpt1_fast.kernels import layernorm_gelu as K  # noqa: E402
from gpt1_fast.kernels import layernorm_gelu_configs as C  # noqa: E402
from gpt1_fast.kernels import layernorm_gelu_kernels as KK  # noqa: E402
from gpt1_fast.kernels.layernorm_gelu import bias_gelu, layer_norm  # noqa: E402
from gpt1_fast.kernels.aot import compiling_env  # noqa: E402
from gpt1_fast.testing import rel_err  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def ref_layer_norm(x, g, b, eps=1e-5, residual=None):
    return reference.layer_norm(x, g, b, eps, residual)


def ref_bias_gelu(x, b):
    return reference.bias_act(x, b, "gelu")


def rel(a, b):
    assert torch.isfinite(a).all(), "non-finite values"
    return rel_err(a, b)


def check_against_ref(fn, ref_fn, inputs, tols):
    """Forward and every input's gradient vs float64 on upcast copies of the same inputs.
    inputs: list of tensors (requires_grad); tols: relative tolerance per input (and output first)."""
    y = fn(*inputs)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, dy)
    ref_in = [t.detach().double().requires_grad_() for t in inputs]
    y_ref = ref_fn(*ref_in)
    ref_grads = torch.autograd.grad(y_ref, ref_in, dy.double())
    assert y.shape == y_ref.shape
    assert rel(y, y_ref) < tols[0], ("out", rel(y, y_ref))
    for i, (g, gr, t) in enumerate(zip(grads, ref_grads, inputs)):
        assert g.dtype == t.dtype and g.shape == t.shape
        assert rel(g, gr) < tols[i + 1], (i, rel(g, gr))
    return y, grads


# shape, activation dtype, param dtype, with residual
LN_CASES = [
    ((1, 100), torch.float32, torch.float32, False),  # single row, odd width
    ((3, 5, 100), torch.float32, torch.float32, True),
    ((2, 3, 4, 1000), torch.float32, torch.float32, True),  # three leading axes
    ((9, 33), torch.float16, torch.float32, False),
    ((7, 768), torch.float16, torch.float32, True),  # fp32 params, fp16 activations (autocast)
    ((6, 768), torch.float16, torch.float16, True),
    ((5, 3072), torch.float32, torch.float32, True),
    ((2, 4096), torch.float16, torch.float32, True),
]


@pytest.mark.parametrize("shape,dtype,pdtype,res", LN_CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_layer_norm_parity(shape, dtype, pdtype, res):
    torch.manual_seed(hash(shape) % 1000)
    N = shape[-1]
    x = (torch.randn(shape) * 3 + 1).to(dtype).requires_grad_()
    w = (torch.rand(N) + 0.5).to(pdtype).requires_grad_()
    b = torch.randn(N).to(pdtype).requires_grad_()
    tol, ptol = TOL[dtype], TOL[pdtype]
    if res:
        r = torch.randn(shape).to(dtype).requires_grad_()
        (_, grads) = check_against_ref(lambda x, r, w, b: layer_norm(x, w, b, 1e-5, residual=r),
                                       lambda x, r, w, b: ref_layer_norm(x, w, b, 1e-5, r),
                                       [x, r, w, b], [tol, tol, tol, ptol, ptol])
        assert torch.equal(grads[0], grads[1])  # d(x + r) is shared
    else:
        check_against_ref(lambda x, w, b: layer_norm(x, w, b), lambda x, w, b: ref_layer_norm(x, w, b),
                          [x, w, b], [tol, tol, ptol, ptol])


BG_CASES = [
    ((1, 100), torch.float32, torch.float32),
    ((3, 5, 100), torch.float16, torch.float32),
    ((2, 2, 3, 1000), torch.float32, torch.float32),
    ((9, 768), torch.float16, torch.float16),
    ((5, 3072), torch.float32, torch.float32),
    ((3, 4096), torch.float16, torch.float32),
]


@pytest.mark.parametrize("shape,dtype,pdtype", BG_CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_bias_gelu_parity(shape, dtype, pdtype):
    torch.manual_seed(hash(shape) % 1000)
    N = shape[-1]
    x = (torch.randn(shape) * 3).to(dtype).requires_grad_()  # both tails of the tanh
    b = torch.randn(N).to(pdtype).requires_grad_()
    tol = TOL[dtype]
    check_against_ref(bias_gelu, ref_bias_gelu, [x, b], [tol, tol, TOL[pdtype]])


def test_bias_gelu_saturates():
    # |x| large: tanh -> +-1 exactly, no inf/nan from the exponential (1e10 ** 3 is still finite)
    x = torch.tensor([[-1e4, -30.0, -5.0, 0.0, 5.0, 30.0, 1e4, 1e10]]).requires_grad_()
    b = torch.zeros(8, requires_grad=True)
    y = bias_gelu(x, b)
    gx, _ = torch.autograd.grad(y, (x, b), torch.ones_like(y))
    assert torch.isfinite(y).all() and torch.isfinite(gx).all()
    assert y[0, 0] == 0 and y[0, 6] == 1e4 and y[0, 3] == 0
    assert gx[0, 0] == 0 and gx[0, 6] == 1


def test_non_contiguous_inputs():
    torch.manual_seed(1)
    base = torch.randn(6, 40, 3)
    x = base.transpose(0, 1)[..., 1].t().requires_grad_()  # [6, 40], strided
    r = torch.randn(40, 6).t().requires_grad_()
    w = torch.randn(80)[::2].requires_grad_()  # stride 2
    b = torch.randn(80)[1::2].requires_grad_()
    assert not (x.is_contiguous() or r.is_contiguous() or w.is_contiguous())
    check_against_ref(lambda x, r, w, b: layer_norm(x, w, b, residual=r),
                      lambda x, r, w, b: ref_layer_norm(x, w, b, 1e-5, r), [x, r, w, b], [1e-5] * 5)
    check_against_ref(bias_gelu, ref_bias_gelu, [x, b], [1e-5] * 3)
    # an expanded (stride-0) upstream gradient, as y.sum() gives
    y = layer_norm(x, w, b, residual=r)
    gx, = torch.autograd.grad(y.sum(), (x,))
    xs = [t.detach().double().requires_grad_() for t in (x, r, w, b)]
    gx_ref, = torch.autograd.grad(ref_layer_norm(xs[0], xs[2], xs[3], 1e-5, xs[1]).sum(), (xs[0],))
    assert rel(gx, gx_ref) < 1e-4
    gx, = torch.autograd.grad(bias_gelu(x, b).sum(), (x,))
    gx_ref, = torch.autograd.grad(ref_bias_gelu(xs[0], xs[3]).sum(), (xs[0],))
    assert rel(gx, gx_ref) < 1e-5


def test_mixed_residual_dtype():
    # first block under autocast: fp32 embeddings + bf16/fp16 attention output
    torch.manual_seed(2)
    x = torch.randn(4, 64, requires_grad=True)
    r = torch.randn(4, 64).half().requires_grad_()
    w = torch.randn(64, requires_grad=True)
    b = torch.randn(64, requires_grad=True)
    y = layer_norm(x, w, b, residual=r)
    assert y.dtype == torch.float32  # as x + r promotes
    check_against_ref(lambda x, r, w, b: layer_norm(x, w, b, residual=r),
                      lambda x, r, w, b: ref_layer_norm(x, w, b, 1e-5, r), [x, r, w, b],
                      [1e-5, 1e-5, 2e-3, 1e-5, 1e-5])


def test_empty_rows():
    x = torch.randn(0, 3, 16, requires_grad=True)
    w = torch.randn(16, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    y = layer_norm(x, w, b, residual=torch.randn(0, 3, 16))
    gw, gb = torch.autograd.grad(y.sum() + bias_gelu(x, b).sum(), (w, b))
    assert y.shape == (0, 3, 16) and gw.abs().sum() == 0 and gb.abs().sum() == 0


def test_bad_inputs():
    x = torch.randn(2, 8)
    w = torch.ones(8)
    with pytest.raises(ValueError, match="shape"):
        layer_norm(x, torch.ones(7), w)
    with pytest.raises(ValueError, match="residual shape"):
        layer_norm(x, w, w, residual=torch.randn(2, 9))
    with pytest.raises(TypeError, match="dtype"):
        layer_norm(x.long(), w, w)
    with pytest.raises(ValueError, match="last dim"):
        bias_gelu(torch.randn(1, K.MAX_WIDTH + 1), torch.zeros(K.MAX_WIDTH + 1))
    with pytest.raises(ValueError, match="shape"):
        bias_gelu(x, torch.zeros(2, 8))


@pytest.mark.parametrize("op,args", [
    ("layer_norm_fwd", lambda: (torch.randn(3, 8, requires_grad=True), torch.randn(3, 8, requires_grad=True),
                                torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True), 1e-5)),
    ("layer_norm_fwd", lambda: (torch.randn(3, 8, requires_grad=True), None,
                                torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True), 1e-5)),
    ("bias_gelu_fwd", lambda: (torch.randn(3, 8, requires_grad=True), torch.randn(8, requires_grad=True))),
])
def test_opcheck(op, args):
    # schema, fake (meta) implementation, autograd registration, AOT dispatch
    torch.library.opcheck(getattr(torch.ops.gpt1_fast, op), args())


def post_ln_block(x, wa, g1, b1, wfc, bfc, wproj, g2, b2):
    # a = attn(x) stands in as a matmul; n = ln_1(x + a); m = mlp(n); h = ln_2(n + m)
    n = layer_norm(x, g1, b1, 1e-5, residual=x @ wa)
    m = bias_gelu(n @ wfc, bfc) @ wproj
    return layer_norm(n, g2, b2, 1e-5, residual=m)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_dynamo_fullgraph(backend):
    torch.manual_seed(3)
    C = 32
    shapes = [(2, 5, C), (C, C), (C,), (C,), (C, 4 * C), (4 * C,), (4 * C, C), (C,), (C,)]
    args = [(torch.randn(s) / math.sqrt(s[0] if len(s) == 2 else 1)).requires_grad_() for s in shapes]
    y0 = post_ln_block(*args)
    g0 = torch.autograd.grad(y0.square().sum(), args)
    torch._dynamo.reset()
    f = torch.compile(post_ln_block, backend=backend, fullgraph=True)  # fullgraph: any break raises
    y = f(*args)
    g = torch.autograd.grad(y.square().sum(), args)
    assert rel(y, y0) < 1e-6
    for a, b in zip(g, g0):
        assert rel(a, b) < 1e-5


def test_model_triton_backend_matches_torch():
    pytest.importorskip("gpt1_fast.model")
    from gpt1_fast.config import GPTConfig
    from gpt1_fast.model import Attention, TransformerModel, set_backend

    torch.manual_seed(4)
    cfg = GPTConfig(n_embd=64, n_head=4, n_layer=2, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0,
                    clf_pdrop=0.0, backend="torch")
    ref = TransformerModel(cfg, vocab=100 + 16, n_ctx=16)
    with torch.no_grad():  # non-trivial LayerNorm parameters and biases
        for name, p in ref.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    ours = set_backend(copy.deepcopy(ref), "triton")
    for m in ours.modules():  # attention's Triton kernel is tested in its own file
        if isinstance(m, Attention):
            m.backend = "torch"
    ids = torch.randint(0, 100, (2, 12))
    h_ref, h = ref(input_ids=ids), ours(input_ids=ids)
    assert rel(h, h_ref) < 1e-5
    dh = torch.randn_like(h)
    g_ref = torch.autograd.grad(h_ref, list(ref.parameters()), dh)
    g = torch.autograd.grad(h, list(ours.parameters()), dh)
    for (name, _), a, b in zip(ref.named_parameters(), g, g_ref):
        assert rel(a, b) < 1e-4, name


# ------------------------------------------------------------------------------- AOT compile
def _aot_cases():
    """(kernel, signature, constexprs, num_warps) for every configuration the wrappers launch at
    widths 768 and 3072, for each activation dtype, with fp32 parameters (the model's)."""
    cases = []
    for N in (768, 3072):
        for dt in ("fp32", "fp16", "bf16"):
            a, elem = "*" + dt, 4 if dt == "fp32" else 2
            c = C.ln_fwd_config(N, elem)
            cases.append((KK.ln_fwd_kernel, dict(X=a, R=a, W="*fp32", B="*fp32", Y=a, Mean="*fp32", Rstd="*fp32",
                                                 M="i32", N="i32", eps="fp32"),
                          dict(HAS_RES=True, ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"]), c["num_warps"]))
            c = C.ln_bwd_config(N, elem)
            cases.append((KK.ln_bwd_kernel, dict(DY=a, X=a, R=a, W="*fp32", Mean="*fp32", Rstd="*fp32", DS=a,
                                                 DWp="*fp32", DBp="*fp32", M="i32", N="i32", rows_per_prog="i32"),
                          dict(HAS_RES=True, ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"]), c["num_warps"]))
            c = C.gelu_fwd_config(N, elem)
            cases.append((KK.bias_gelu_fwd_kernel, dict(X=a, B="*fp32", Y=a, M="i32", N="i32"),
                          dict(ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"]), c["num_warps"]))
            c = C.gelu_bwd_config(N, elem)
            cases.append((KK.bias_gelu_bwd_kernel, dict(DY=a, X=a, B="*fp32", DX=a, DBp="*fp32", M="i32", N="i32",
                                                        rows_per_prog="i32"),
                          dict(ROWS=c["ROWS"], BLOCK_N=c["BLOCK_N"]), c["num_warps"]))
    s = C.SUM_CONFIG
    for two in (True, False):
        cases.append((KK.sum_partials_kernel, dict(P1="*fp32", P2="*fp32", O1="*fp32", O2="*fp32", G="i32", N="i32"),
                      dict(TWO=two, BLOCK_G=s["BLOCK_G"], BLOCK_C=s["BLOCK_C"]), s["num_warps"]))
    return cases


def _aot_main():
    """Compile every case for sm_80 and sm_90; print one line per case; exit 1 on a spill."""
    from gpt1_fast.kernels.aot import compile_stats

    bad = 0
    for cap in (80, 90):
        for fn, sig, const, nw in _aot_cases():
            st = compile_stats(fn, sig, const, cap, num_warps=nw)
            vec = bool(re.search(r"ld\.global(\.\w+)*\.v4", st["ptx"]))
            main_kernel = fn is not KK.sum_partials_kernel
            ok = st["spills"] == 0 and (vec or not main_kernel)
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} sm_{cap} {fn.__name__} {sig.get('X', '')} {const} warps={nw} "
                  f"regs={st['regs']} spill_bytes={st['spills']} v4_loads={vec}")
    sys.exit(1 if bad else 0)


def test_aot_compile_no_spills():
    env = compiling_env()
    out = subprocess.run([sys.executable, __file__, "aot"], capture_output=True, text=True, env=env, timeout=600)
    print(out.stdout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("ok ") == 2 * len(_aot_cases())


def test_aot_occupancy_tool():
    """benchmarks/aot_occupancy.py (the occupancy table in NOTES.md; run as a script, not imported)
    compiles every config it lists for sm_80, without spills, and reports a residency consistent with
    the register count."""
    env = compiling_env()
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "aot_occupancy.py"), "--arch", "80"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    cells = [line.split("|")[1:-1] for line in out.stdout.splitlines()]
    rows = [c for c in cells if c and c[0].strip().endswith("_kernel")]
    assert len(rows) >= 10
    for kernel, _, _, warps, regs, spills, progs, _ in rows:
        warps, regs, progs = int(warps), int(regs), int(progs)
        assert int(spills) == 0, kernel
        assert progs >= 1 and progs * warps <= 64 and progs * warps * 32 * regs <= 65536, (kernel, regs, progs)


if __name__ == "__main__" and sys.argv[1:] == ["aot"]:
    _aot_main()
