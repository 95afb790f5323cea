"""Fused LM head + cross-entropy (gpt1_fast/kernels/lm_head.py) against a float64 full-softmax reference.

On CPU the Triton kernels run in the interpreter (fp32 and fp16; bf16 dots are wrong there). The AOT
test compiles the launched configurations for sm_80 and sm_90 in a subprocess without the
interpreter and checks for register spills.
"""
import os
import sys

if __name__ != "__main__":  # the AOT subprocess (python this_file aot) must not use the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import json  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpt1_fast import ops  # noqa: E402
from gpt1_fast.kernels import lm_head as K  # noqa: E402
from gpt1_fast.kernels.aot import compiling_env  # noqa: E402

# fp16: the gradient of the logits is rounded to fp16 (2^-11) before the dweight GEMM; over seeds of
# dloss the relative error of dweight at 13 rows spreads over 1.4e-3 .. 3.1e-3
TOL = {torch.float32: 1e-5, torch.float16: 5e-3}


def ref_loss(h, w, t, m):
    """float64 full logits, full softmax."""
    logits = h.double() @ w.double().t()
    return F.cross_entropy(logits, t, reduction="none") * m.double()


def rel(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make(N, V, C, dtype, masked=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, C, generator=g) * 2).to(dtype).requires_grad_()
    w = torch.randn(V, C, generator=g).to(dtype).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    m = (torch.rand(N, generator=g) >= masked).float()
    return h, w, t, m


def check(h, w, t, m, chunk_rows, tol, rows_bound=0):
    loss = K.lm_head_loss(h, w, t, m, chunk_rows=chunk_rows, rows_bound=rows_bound)
    assert loss.dtype == torch.float32 and loss.shape == (h.shape[0],)
    dl = torch.rand(h.shape[0], dtype=torch.float32, generator=torch.Generator().manual_seed(0)) + 0.5  # order-free
    dh, dw = torch.autograd.grad(loss, (h, w), dl)
    hr = h.detach().double().requires_grad_()
    wr = w.detach().double().requires_grad_()
    ref = ref_loss(hr, wr, t, m)
    dhr, dwr = torch.autograd.grad(ref, (hr, wr), dl.double())
    assert dh.dtype == h.dtype and dw.dtype == w.dtype
    assert rel(loss, ref) < tol, "loss"
    assert rel(dh, dhr) < tol, "dh"
    assert rel(dw, dwr) < tol, "dw"
    assert (loss[m == 0] == 0).all() and (dh[m == 0] == 0).all()
    return loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("N,V,C,chunk", [(13, 300, 32, 4), (1, 77, 16, 0), (9, 130, 24, 0)])
def test_parity(N, V, C, chunk, dtype):
    # V = 300, 77, 130: none a multiple of the column block (a power of two); chunk 4: four chunks
    # of kept rows, so dweight accumulates across chunks and the last chunk is partial
    args = make(N, V, C, dtype, masked=0.0 if N == 1 else 0.3)
    check(*args, chunk, TOL[dtype])
    check(*args, chunk, TOL[dtype], rows_bound=max(1, int(args[3].sum())))  # only the kept rows multiplied


def test_column_blocks_and_peaked_softmax():
    """Several column blocks per row (online log-sum-exp across blocks) and logits large enough that a
    naive exp overflows."""
    h, w, t, m = make(6, 200, 16, torch.float32, masked=0.0)
    with torch.no_grad():
        h.mul_(40)  # logits of a few hundred
    with K.TUNING.override(rows={"BLOCK_V": 64, "num_warps": 4}):
        check(h, w, t, m, 0, 5e-5)  # fp32 logits of a few hundred: ~300 x 2^-24 relative in the softmax


def test_all_rows_masked_and_empty():
    h, w, t, _ = make(5, 50, 8, torch.float32)
    loss = K.lm_head_loss(h, w, t, torch.zeros(5))
    assert (loss == 0).all()
    dh, dw = torch.autograd.grad(loss.sum(), (h, w))
    assert (dh == 0).all() and (dw == 0).all()
    h0 = torch.zeros(0, 8, requires_grad=True)
    assert K.lm_head_loss(h0, w, t[:0], torch.zeros(0)).shape == (0,)


def test_non_contiguous_h_and_bool_mask_and_weighted_mask():
    h, w, t, m = make(8, 90, 20, torch.float32)
    big = torch.randn(20, 16).requires_grad_()
    hnc = big.t()[::2]  # [8, 20], strides (2, 16)
    assert not hnc.is_contiguous()
    check(hnc, w, t, m, 3, 1e-5)
    check(h, w, t, m.bool(), 3, 1e-5)
    check(h, w, t, m * torch.linspace(0.5, 2, 8), 3, 1e-5)  # a non-binary mask scales loss and grads


def test_mixed_dtypes_weight_fp32_h_fp16():
    """fp32 parameter, fp16 compute (autocast's situation): dweight in fp32, dh in fp16."""
    h, w, t, m = make(7, 100, 16, torch.float32)
    h16 = h.detach().half().requires_grad_()
    check(h16, w, t, m, 2, TOL[torch.float16])


def _rows_multiplied(monkeypatch, m, **kw):
    """(rows per launch of each kernel), running forward + backward with chunks of 3 rows."""
    seen = []
    real = K._launch

    def spy(kernel, logits, *args):
        seen.append((kernel.fn.__name__ if hasattr(kernel, "fn") else str(kernel), logits.shape[0]))
        return real(kernel, logits, *args)

    monkeypatch.setattr(K, "_launch", spy)
    h, w, t, _ = make(10, 40, 8, torch.float32)
    check(h, w, t, m, 3, 1e-5, **kw)
    return seen


def test_rows_bound_multiplies_only_the_kept_rows(monkeypatch):
    """Without a bound every row reaches the GEMMs (the kernels skip the masked ones); with
    rows_bound = the kept count only the kept rows do, in chunks of 3; same loss and gradients."""
    m = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 0.0])
    assert sum(n for _, n in _rows_multiplied(monkeypatch, m)) == 2 * 10
    seen = _rows_multiplied(monkeypatch, m, rows_bound=5)
    assert [n for _, n in seen] == [3, 2, 3, 2]  # forward then backward chunks of the 5 kept rows
    seen = _rows_multiplied(monkeypatch, m, rows_bound=7)  # a loose bound: 2 masked rows ride along
    assert sum(n for _, n in seen) == 2 * 7


def test_row_order_puts_kept_rows_first_in_order():
    m = torch.tensor([0, 2.0, 0, 1, 1, 0])
    assert K.row_order(m, 0) is None and K.row_order(m, 6) is None  # no bound: h's own order
    assert K.row_order(m, 3).tolist() == [1, 3, 4]
    assert K.row_order(m, 4).tolist() == [1, 3, 4, 0]  # then the masked rows, in order
    with pytest.raises(RuntimeError, match="rows_bound"):  # more kept rows than the bound
        K.row_order(m, 2)


def test_rows_bound_below_the_kept_count_is_refused():
    h, w, t, m = make(6, 30, 8, torch.float32, masked=0.0)
    with pytest.raises(RuntimeError, match="rows_bound"):
        K.lm_head_loss(h, w, t, m, rows_bound=5)
    with pytest.raises(ValueError, match="rows_bound"):
        K.lm_head_loss(h, w, t, m, rows_bound=-1)


def test_bad_inputs():
    h, w, t, m = make(4, 10, 8, torch.float32)
    with pytest.raises(ValueError):
        K.lm_head_loss(h, w[:, :4], t, m)
    with pytest.raises(ValueError):
        K.lm_head_loss(h, w, t[:3], m)
    with pytest.raises(TypeError):
        K.lm_head_loss(h, w, t.float(), m)
    with pytest.raises(TypeError):
        K.lm_head_loss(h.double(), w, t, m)


def test_registered_ops_match_eager_and_opcheck():
    h, w, t, m = make(9, 70, 16, torch.float32)
    eager = K.lm_head_loss(h, w, t, m, chunk_rows=4)
    g_eager = torch.autograd.grad(eager.sum(), (h, w))
    op = torch.ops.gpt1_fast.lm_head_loss_fwd(h, w, t, m, 4, 0)[0]
    g_op = torch.autograd.grad(op.sum(), (h, w))
    assert torch.equal(eager, op)
    for a, b in zip(g_eager, g_op):
        assert torch.equal(a, b)
    kept = int(m.sum())
    assert kept < 9  # so the bound takes the compacting path
    torch.library.opcheck(torch.ops.gpt1_fast.lm_head_loss_fwd, (h, w, t, m, 4, kept),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


# ------------------------------------------------------------------------------------ op boundary
def test_ops_backends_agree():
    h, w, t, m = make(11, 60, 16, torch.float32)
    a = ops.lm_head_loss(h, w, t, m, backend="torch")
    ga = torch.autograd.grad(a.sum(), (h, w))
    for backend in ("triton", "cpu"):
        b = ops.lm_head_loss(h, w, t, m, backend=backend)
        assert rel(b, a) < 1e-5
        gb = torch.autograd.grad(b.sum(), (h, w))
        for x, y in zip(gb, ga):
            assert rel(x, y) < 1e-5
    assert ops.resolve("auto", h) == "cpu"  # CPU tensors: the CPU head (gpt1_fast/cpu_lm_head.py)


# ------------------------------------------------------------------------------- AOT compile
def _aot_cases():
    """(kernel, signature, constexprs, num_warps) of what the wrappers launch at GPT-1's V for each
    logits dtype."""
    c = K.row_kernel_config(40990)
    cases = []
    for dt in ("fp32", "fp16", "bf16"):
        a = "*" + dt
        cases.append((K._lse_kernel, dict(Logits=a, Rows="*i64", Targets="*i64", Mask="*fp32", Lse="*fp32",
                                          Loss="*fp32", V="i32", stride="i32"), {"BLOCK_V": c["BLOCK_V"]},
                      c["num_warps"]))
        cases.append((K._dlogits_kernel, dict(Logits=a, Rows="*i64", Targets="*i64", Mask="*fp32", Lse="*fp32",
                                              DLoss="*fp32", V="i32", stride="i32"), {"BLOCK_V": c["BLOCK_V"]},
                      c["num_warps"]))
    return cases


def _aot_main():
    from gpt1_fast.kernels.aot import compile_stats

    bad = 0
    for cap in (80, 90):
        for fn, sig, const, nw in _aot_cases():
            st = compile_stats(fn, sig, const, cap, num_warps=nw)
            regs, n_spills = st["regs"], st["spills"]
            ok = n_spills == 0
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} sm_{cap} {fn.__name__} {sig['Logits']} {const} warps={nw} "
                  f"regs={regs} spill_bytes={n_spills}")
    sys.exit(1 if bad else 0)


def test_aot_compile_no_spills():
    env = compiling_env()
    out = subprocess.run([sys.executable, __file__, "aot"], capture_output=True, text=True, env=env, timeout=600)
    print(out.stdout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("ok ") == 2 * len(_aot_cases())


if __name__ == "__main__" and sys.argv[1:] == ["aot"]:
    _aot_main()


# ------------------------------------------------------------------------------------ model level
def _small_pair():
    """A small DoubleHeadModel on the torch backend and a copy on triton (attention kept on torch: its
    kernel is tested in its own file and is slow in the interpreter)."""
    import copy

    from gpt1_fast.config import GPTConfig
    from gpt1_fast.model import Attention, DoubleHeadModel, set_backend

    torch.manual_seed(0)
    cfg = GPTConfig(n_embd=32, n_head=2, n_layer=2, embd_pdrop=0, attn_pdrop=0, resid_pdrop=0, clf_pdrop=0)
    n_vocab, T = 50, 9
    ref = DoubleHeadModel(cfg.replace(backend="torch"), n_vocab + 2, "multiple_choice", n_vocab + 3 + T, T)
    ours = set_backend(copy.deepcopy(ref), "triton")
    for m in ours.modules():
        if isinstance(m, Attention):
            m.backend = "torch"
    g = torch.Generator().manual_seed(1)
    X = torch.zeros(3, 2, T, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, n_vocab, (3, 2, T), generator=g)
    X[..., 1] = torch.arange(n_vocab + 3, n_vocab + 3 + T)
    M = (torch.arange(T) <= torch.randint(3, T, (3, 2, 1), generator=g)).float()
    return ref, ours, X, M


def _loss(model, X, M):
    """The training objective (DoubleHeadModel: clf + 0.5 LM, LM through LMHead.loss -> ops.lm_head_loss)."""
    return model(X, M, torch.tensor([0, 1, 1]))["loss"]


def test_model_triton_and_torch_same_loss_and_grads():
    ref, ours, X, M = _small_pair()
    loss_ref, loss = _loss(ref, X, M), _loss(ours, X, M)
    assert rel(loss, loss_ref) < 1e-6
    g_ref = torch.autograd.grad(loss_ref, list(ref.parameters()))
    g = torch.autograd.grad(loss, list(ours.parameters()))
    for (name, _), a, b in zip(ref.named_parameters(), g, g_ref):
        # the choice head's bias gets exactly 0 (a shared shift of both choices): absolute tolerance
        assert rel(a, b) < 1e-5 or (a - b).abs().max() < 1e-7, name


def test_training_forward_makes_no_logits(monkeypatch):
    """With mask and labels the model never calls the LM head's forward (no [N, V] logits)."""
    from gpt1_fast.model import LMHead

    _, ours, X, M = _small_pair()
    monkeypatch.setattr(LMHead, "forward", lambda self, h: pytest.fail("LM logits computed in training"))
    _loss(ours, X, M).backward()


@pytest.mark.parametrize("compiler", ["eager", "aot_eager"])
def test_compile_fullgraph_training_step(compiler):
    """torch.compile(fullgraph=True) of the forward + fused LM loss (+ recomputed GELU), then backward:
    same loss and gradients as eager."""
    torch._dynamo.reset()
    _, ours, X, M = _small_pair()
    loss_eager = _loss(ours, X, M)
    g_eager = torch.autograd.grad(loss_eager, list(ours.parameters()), allow_unused=True)
    step = torch.compile(lambda X, M: _loss(ours, X, M), fullgraph=True, backend=compiler)
    loss = step(X, M)
    g = torch.autograd.grad(loss, list(ours.parameters()), allow_unused=True)
    assert rel(loss, loss_eager) < 1e-6
    for a, b in zip(g, g_eager):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel(a, b) < 1e-5


def test_quick_benchmark_runs(tmp_path):
    """python -m benchmarks lm_head --quick on the CPU (ours through the interpreter), run as the user
    runs it; every implementation's loss agrees with float64."""
    env = dict(os.environ, TRITON_INTERPRET="1", GPT1_FAST_RESULTS_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    out = subprocess.run([sys.executable, "-m", "benchmarks", "lm_head", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    res = json.loads(next(tmp_path.glob("lm_head-*.json")).read_text())
    rows = {r["impl"]: r for r in res["rows"]}
    assert {"ours: fused", "cuBLAS + F.cross_entropy", "ours: fused (75 % kept, bound)"} <= set(rows)
    assert all(r["loss_ok"] for r in rows.values()), rows
    assert res["environment"]["torch"] == torch.__version__
