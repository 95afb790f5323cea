"""The registration/launch layer (gpt1_fast/kernels/_op.py) and its promises, for every Triton op:
same seed and inputs give bitwise the same outputs and gradients (ops and the model); the eager path
(autograd.Function) and the compiled path (the registered ops under torch.compile) agree bitwise; the
choice table answers deterministically (measured choices on sm_90, no atomics by default) and timing
happens only when asked; overrides are scoped."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from gpt1_fast.kernels import _op  # noqa: E402
from gpt1_fast.kernels import attention as A  # noqa: E402
from gpt1_fast.kernels import attention_configs as AC  # noqa: E402
from gpt1_fast.kernels import layernorm_gelu as L  # noqa: E402


def _inputs(name):
    """(fn(*tensors), tensors requiring grad) for each public op, dropout on for attention."""
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return torch.randn(*s, generator=g).requires_grad_()

    if name == "layer_norm":
        return (lambda x, res, w, b: L.layer_norm(x, w, b, 1e-5, residual=res)), [r(3, 5, 48), r(3, 5, 48),
                                                                                   r(48), r(48)]
    if name == "bias_gelu":
        return L.bias_gelu, [r(4, 7, 96), r(96)]
    if name == "attention":
        return (lambda q, k, v: A.causal_attention(q, k, v, 0.2)), [r(1, 2, 20, 32) for _ in range(3)]
    return (lambda qkv: A.causal_attention_packed(qkv, 2, 0.2)), [r(1, 20, 3 * 64)]


OPS = ["layer_norm", "bias_gelu", "attention", "attention_packed"]


def _fwd_bwd(fn, xs, seed=None):
    if seed is not None:
        torch.manual_seed(seed)
    y = fn(*xs)
    grads = torch.autograd.grad(y, xs, torch.linspace(-1, 1, y.numel()).view_as(y))
    return [y.detach()] + list(grads)


@pytest.mark.parametrize("name", OPS)
def test_same_seed_bitwise_same(name):
    fn, xs = _inputs(name)
    a, b = _fwd_bwd(fn, xs, seed=11), _fwd_bwd(fn, xs, seed=11)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    if name.startswith("attention"):  # and the seed matters: another one drops other entries
        torch.manual_seed(12)
        assert not torch.equal(a[0], fn(*xs))


def _graph_ops(fn):
    """torch.compile(fn, fullgraph) with a backend that records the ops in the graph and runs it
    through AOTAutograd (the registered forward and backward ops, as Inductor would see them)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    seen = set()

    def record(gm, example_inputs):
        seen.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return make_boxed_func(gm.forward)

    return torch.compile(fn, fullgraph=True, backend=aot_autograd(fw_compiler=record, bw_compiler=record)), seen


@pytest.mark.parametrize("name", OPS)
def test_eager_path_equals_compiled_path(name):
    fn, xs = _inputs(name)
    if name == "attention":
        fn = lambda q, k, v: A.causal_attention(q, k, v, 0.2, seed=torch.tensor([5]))  # noqa: E731
    elif name == "attention_packed":
        fn = lambda qkv: A.causal_attention_packed(qkv, 2, 0.2, seed=torch.tensor([5]))  # noqa: E731
    torch._dynamo.reset()
    compiled, seen = _graph_ops(fn)
    eager = _fwd_bwd(fn, xs)
    comp = _fwd_bwd(compiled, xs)
    op = {"layer_norm": "layer_norm", "bias_gelu": "bias_gelu", "attention": "attn",
          "attention_packed": "attn_packed"}[name]
    assert f"gpt1_fast.{op}_fwd.default" in seen and f"gpt1_fast.{op}_bwd.default" in seen, seen
    for x, y in zip(eager, comp):
        assert torch.equal(x, y)


def test_eager_path_skips_the_dispatcher():
    # Outside tracing the autograd.Function runs: its node, not the custom op's, is the grad_fn.
    x, b = torch.randn(2, 8, requires_grad=True), torch.randn(8, requires_grad=True)
    assert type(L.bias_gelu(x, b).grad_fn).__name__ == "bias_gelu_eagerBackward"
    assert not _op.is_tracing(x)


def test_model_same_seed_bitwise_same():
    from gpt1_fast.config import GPTConfig
    from gpt1_fast.model import TransformerModel

    torch.manual_seed(0)
    cfg = GPTConfig(n_embd=64, n_head=2, n_layer=1, backend="triton")  # dropouts at their 0.1 defaults
    model = TransformerModel(cfg, vocab=60, n_ctx=12).train()
    ids = torch.randint(0, 40, (2, 12))

    def run(seed):
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        h = model(input_ids=ids)
        h.square().mean().backward()
        return [h.detach()] + [p.grad.clone() for p in model.parameters()]

    a, b = run(3), run(3)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    torch.manual_seed(4)
    assert not torch.equal(a[0], model(input_ids=ids))


# ------------------------------------------------------------------------------------- the table
def _key(T, dropout, arch, dtype=torch.bfloat16, D=64):
    return (T, D, dtype, dropout, 1024, arch)


def test_table_holds_the_h100_measurements():
    tiled_long = ("tiled", dict(BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32, num_warps=8, num_stages=3))
    assert AC.table("bwd", _key(512, False, 90)) == tiled_long
    assert AC.table("bwd", _key(512, True, 90)) == tiled_long  # deterministic: no atomic-dQ
    assert AC.table("bwd", _key(512, True, 90), deterministic=False)[0] == "atomic"
    assert AC.table("bwd", _key(512, False, 90), deterministic=False) == tiled_long  # no dropout: no atomics
    assert AC.table("fwd", _key(512, True, 90)) == dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=3)
    assert AC.table("bwd", _key(77, True, 90)) == ("tiled", dict(BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32,
                                                                 BLOCK_N2=16, num_warps=2, num_stages=2))
    # T <= 64 on sm_90: the AOT statistics' pick (untimed, labelled so); the measured buckets say so too
    assert AC.choice_source("bwd", _key(48, True, 90)) == "aot" and AC.choice_source("fwd", _key(16, False, 90)) == "aot"
    assert AC.choice_source("bwd", _key(77, True, 90)) == "measured"
    assert AC.choice_source("bwd", _key(48, True, 80)) == "default"
    assert AC.table("fwd", _key(48, True, 90)) == dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)
    assert AC.table("bwd", _key(48, True, 90)) == ("small", dict(BLOCK_T=64, BLOCK_N=32, num_warps=4, num_stages=2))
    # elsewhere the first candidate; every answer is one of the candidates
    for arch in (0, 80, 90):
        for T in (1, 50, 77, 130, 512):
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                for p in (False, True):
                    for det in (True, False):
                        k = _key(T, p, arch, dtype)
                        fwd, bwd = AC.table("fwd", k, det), AC.table("bwd", k, det)
                        assert fwd in AC.candidates("fwd", k, det) and bwd in AC.candidates("bwd", k, det)
                        assert det is False or bwd[0] != "atomic"
                        if arch != 90:
                            assert (fwd, bwd) == (AC.candidates("fwd", k)[0], AC.candidates("bwd", k)[0])


def test_choice_comes_from_table_unless_autotuning(monkeypatch):
    timed = []
    t = _op.Tuning("t", table=lambda what, key, det: ("table", det),
                   candidates=lambda what, key, det: ["a", "b"])
    monkeypatch.setattr(_op.Tuning, "_time", staticmethod(lambda cands, run: timed.append(cands) or cands[-1]))
    run = lambda c: None  # noqa: E731
    assert t.choose("fwd", (1,), run) == ("table", True)  # autotune off: a run offered is not timed
    with t.override(autotune=True):
        assert t.choose("fwd", (1,), run) == "b" and t.choose("fwd", (1,), run) == "b"
        assert len(timed) == 1  # timed once per key
        assert t.choose("fwd", (2,)) == ("table", True)  # no run (tracing, interpreter): the table
    assert t.choose("fwd", (1,), run) == ("table", True)  # the setting is scoped
    with t.override(fwd="forced", deterministic=False):
        assert t.choose("fwd", (1,)) == "forced" and t.choose("bwd", (1,)) == ("table", False)
        with t.override(bwd="inner"):
            assert t.choose("bwd", (1,)) == "inner" and t.choose("fwd", (1,)) == "forced"
        assert t.choose("bwd", (1,)) == ("table", False)
    assert t.choose("fwd", (1,)) == ("table", True) and t.deterministic is True
    assert "t fwd (1,)" in t.report()


def test_env_flags(monkeypatch):
    monkeypatch.setenv("GPT1_FAST_AUTOTUNE", "1")
    monkeypatch.setenv("GPT1_FAST_DETERMINISTIC", "0")
    t = _op.Tuning("t", table=lambda *a: None)
    assert t.autotune is True and t.deterministic is False
    monkeypatch.delenv("GPT1_FAST_AUTOTUNE")
    monkeypatch.delenv("GPT1_FAST_DETERMINISTIC")
    t = _op.Tuning("t", table=lambda *a: None)
    assert t.autotune is False and t.deterministic is True


def test_ops_launch_the_table_choice(monkeypatch):
    # what the op launches is what the table says for its key (interpreter: arch 0)
    asked = []
    orig = AC.table

    def spy(what, key, det=True):
        asked.append((what, key, det))
        return orig(what, key, det)

    monkeypatch.setattr(A.TUNING, "table", spy)
    qkv = torch.randn(2, 20, 3 * 64, requires_grad=True)
    A.causal_attention_packed(qkv, 2, 0.1).sum().backward()
    assert [(w, k) for w, k, _ in asked] == [("fwd", (20, 32, torch.float32, True, 4, 0)),
                                            ("bwd", (20, 32, torch.float32, True, 4, 0))]
    assert all(det for *_, det in asked)


# ------------------------------------------------------------------------------------- the template
import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _scale_kernel(X, Y, n, s, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs, mask=offs < n, other=0.0) * s, mask=offs < n)


def test_op_docstring_example_runs():
    """The example in _op's docstring (the template for a new fused op) works eagerly and compiled."""
    doc = _op.__doc__
    code = doc[doc.index("    from . import _op"):doc.index("The forward body returns")]
    code = "\n".join(line[4:] for line in code.splitlines()).replace("from . import _op", "")
    code = code.replace('"scale"', '"doc_example_scale"')  # an op name no other test registers
    ns = {"torch": torch, "_op": _op, "_scale_kernel": _scale_kernel}
    x = torch.randn(3000, requires_grad=True)
    exec(compile(code.replace("y, = scale_op(x, 2.0)", ""), "<_op docstring>", "exec"), ns)
    y, = ns["scale_op"](x, 2.0)
    y.sum().backward()
    assert torch.equal(y, 2 * x) and torch.equal(x.grad, torch.full_like(x, 2.0))
    x.grad = None
    f = torch.compile(lambda x: ns["scale_op"](x, 2.0)[0], backend="aot_eager", fullgraph=True)
    f(x).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))
