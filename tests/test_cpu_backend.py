"""Backend "cpu" (what "auto" picks on a CPU) against the reference ("torch"): the LM head + loss
(gpt1_fast/cpu_lm_head.py) against cross_entropy(h @ weightᵀ) * mask, loss and both gradients, fp32
and bf16 autocast, masked rows, chunk boundaries, torch.compile, the model's objective through it;
and the eager fused LayerNorm, GELU and attention against the reference formulas."""
import pytest
import torch

from gpt1_fast import cpu_lm_head, ops
from gpt1_fast.cli import UsageError, check_backend
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel, set_backend


def make(N=300, V=500, C=32, masked=0.35, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, C, generator=g) * 2).requires_grad_()
    w = torch.randn(V, C, generator=g).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    m = (torch.rand(N, generator=g) >= masked).float()
    dloss = torch.rand(N, generator=g)  # per-row weights, as the objective's 1 / mask sum
    return h, w, t, m, dloss


def run(backend, h, w, t, m, dloss, bf16=False, fn=None):
    h.grad = w.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = (fn or ops.lm_head_loss)(h, w, t, m, backend=backend)
    (loss * dloss).sum().backward()
    return loss.detach(), h.grad.clone(), w.grad.clone()


def close(a, b, tol):
    err = ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()
    assert err < tol, err


@pytest.mark.parametrize("masked", [0.0, 0.35, 1.0])
def test_loss_and_gradients_equal_the_reference_in_fp32(masked):
    h, w, t, m, dloss = make(masked=masked)
    if masked == 1.0:  # every row masked: zeros, and no NaN from an empty product
        m.zero_()
    ours, ref = run("cpu", h, w, t, m, dloss), run("torch", h, w, t, m, dloss)
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype
        if masked == 1.0:
            assert (a == 0).all() and (b == 0).all()
        else:
            close(a, b, 1e-6)


def test_a_fractional_mask_weighs_the_row_as_the_reference():
    h, w, t, m, dloss = make()
    m[::3] *= 0.25
    for a, b in zip(run("cpu", h, w, t, m, dloss), run("torch", h, w, t, m, dloss)):
        close(a, b, 1e-6)


def test_masked_rows_give_exactly_zero_loss_and_gradient():
    h, w, t, m, dloss = make()
    loss, dh, _ = run("cpu", h, w, t, m, dloss)
    assert (loss[m == 0] == 0).all() and (dh[m == 0] == 0).all()
    assert (loss[m == 1] > 0).all() and (dh[m == 1].abs().sum(1) > 0).all()


def test_bf16_autocast_computes_as_the_reference_does_under_autocast():
    h, w, t, m, dloss = make()
    ours, ref = run("cpu", h, w, t, m, dloss, bf16=True), run("torch", h, w, t, m, dloss, bf16=True)
    assert ours[0].dtype == torch.float32 and ours[1].dtype == ours[2].dtype == torch.float32
    close(ours[0], ref[0], 1e-6)  # the same bf16 logits, the same float32 softmax
    close(ours[1], ref[1], 2e-3)
    close(ours[2], ref[2], 2e-3)
    fp32 = run("torch", h, w, t, m, dloss)
    close(ours[0], fp32[0], 2e-2)  # and bf16 is bf16: near fp32, not equal to it
    assert not torch.equal(ours[0], fp32[0])


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_any_chunking_gives_the_same_numbers(monkeypatch, chunk):
    h, w, t, m, dloss = make(N=131)
    ref = run("torch", h, w, t, m, dloss)
    monkeypatch.setattr(cpu_lm_head, "CHUNK_ROWS", chunk)
    for a, b in zip(run("cpu", h, w, t, m, dloss), ref):
        close(a, b, 1e-6)


def test_compiled_fullgraph_gives_the_eager_numbers():
    h, w, t, m, dloss = make(N=64, V=200)
    eager = run("cpu", h, w, t, m, dloss)
    compiled = torch.compile(ops.lm_head_loss, fullgraph=True, backend="aot_eager")
    for a, b in zip(run("cpu", h, w, t, m, dloss, fn=compiled), eager):
        close(a, b, 1e-7)


def test_auto_is_the_cpu_op_on_a_cpu_and_cpu_is_refused_elsewhere():
    x = torch.zeros(2, 2)
    assert ops.resolve("auto", x) == "cpu" and ops.resolve("torch", x) == "torch"
    assert ops.resolve("auto", x.to("meta")) == "torch"
    with pytest.raises(ValueError, match="CPU tensors"):
        ops.resolve("cpu", x.to("meta"))
    with pytest.raises(UsageError, match="'cpu' runs on the CPU"):
        check_backend("cpu", torch.device("cuda"))
    check_backend("cpu", torch.device("cpu"))


def test_a_mixed_dtype_call_outside_autocast_is_refused():
    h, w, t, m, _ = make()
    with pytest.raises(ValueError, match="same dtype"):
        cpu_lm_head.lm_head_loss(h.bfloat16(), w, t, m)


@pytest.mark.parametrize("bf16", [False, True])
def test_the_fine_tuning_objective_is_the_reference_one(bf16):
    """The model's LM term (shift, mask, per-sequence mean) through backend cpu equals backend torch's."""
    cfg = GPTConfig(n_embd=32, n_head=2, n_layer=2, embd_pdrop=0, attn_pdrop=0, resid_pdrop=0, clf_pdrop=0)
    torch.manual_seed(0)
    model = DoubleHeadModel(cfg.replace(backend="torch"), 3, "multiple_choice", 60, 12)
    x = torch.stack([torch.randint(0, 48, (4, 2, 12)), torch.arange(48, 60).expand(4, 2, 12)], -1)
    mask = (torch.arange(12) < torch.tensor([12, 9, 5, 3])[:, None, None]).float().expand(4, 2, 12)
    labels = torch.tensor([0, 1, 1, 0])
    out = []
    for backend in ("torch", "cpu"):
        set_backend(model, backend)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            lm = model(x, mask, labels)["lm_losses"]
        lm.sum().backward()
        out.append((lm.detach(), model.transformer.embed.weight.grad.clone()))
    close(out[1][0], out[0][0], 1e-4 if bf16 else 1e-6)  # bf16: SDPA's bf16 attention, not the reference's
    close(out[1][1], out[0][1], 2e-3 if bf16 else 1e-5)


# ------------------------------------------------------------------ eager LayerNorm, GELU, attention
def _grads(fn, *xs):
    xs = [x.detach().clone().requires_grad_() for x in xs]
    y = fn(*xs)
    y.backward(torch.linspace(-1, 1, y.numel()).view_as(y).to(y.dtype))
    return [y.detach()] + [x.grad for x in xs]


@pytest.mark.parametrize("op", ["layer_norm", "bias_act", "attention"])
def test_eager_fused_ops_equal_the_reference(op):
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(3, 10, 48, generator=g), torch.randn(3, 10, 48, generator=g)
    gamma, beta = torch.rand(48, generator=g) + 0.5, torch.randn(48, generator=g)
    qkv = torch.randn(3, 10, 144, generator=g)
    calls = {"layer_norm": (lambda b: lambda x, r, gm, bt: ops.layer_norm(x, gm, bt, residual=r, backend=b),
                            (x, r, gamma, beta)),
             "bias_act": (lambda b: lambda x, bias: ops.bias_act(x, bias, "gelu", backend=b), (x, beta)),
             "attention": (lambda b: lambda qkv: ops.attention(qkv, 4, backend=b), (qkv,))}
    make_fn, xs = calls[op]
    for a, b in zip(_grads(make_fn("cpu"), *xs), _grads(make_fn("torch"), *xs)):
        close(a, b, 2e-6)


def test_eager_attention_drops_out_only_when_training():
    qkv = torch.randn(2, 12, 96)
    ref = ops.attention(qkv, 2, backend="torch")
    close(ops.attention(qkv, 2, 0.5, training=False, backend="cpu"), ref, 2e-6)
    torch.manual_seed(0)
    dropped = ops.attention(qkv, 2, 0.5, training=True, backend="cpu")
    assert not torch.allclose(dropped, ref, atol=1e-3)


def test_under_compile_the_cpu_backend_runs_the_reference_formulas(monkeypatch):
    """Inductor fuses the reference's chain itself (faster than the ATen kernels there); eagerly the
    fused kernels run. Seen through which functions are called."""
    import torch.nn.functional as F
    calls = []
    monkeypatch.setattr(F, "layer_norm", lambda *a, **k: calls.append("aten") or torch.zeros_like(a[0]))
    x, g, b = torch.randn(4, 8), torch.ones(8), torch.zeros(8)
    ops.layer_norm(x, g, b, backend="cpu")
    assert calls == ["aten"]
    calls.clear()
    out = torch.compile(lambda x: ops.layer_norm(x, g, b, backend="cpu"), backend="eager", fullgraph=True)(x)
    assert calls == [] and out.abs().max() > 0


@pytest.mark.parametrize("T", [1, 3])
def test_cached_attention_reads_the_cache_in_place_and_equals_the_reference(T):
    """Decoding's attention over a strided cache view (a prefix of a longer buffer), padding columns
    masked: SDPA eagerly equals the reference formula; a padding query still sees its own column."""
    g = torch.Generator().manual_seed(0)
    B, H, L, D = 2, 3, 9, 16
    cache = torch.randn(2, B, H, 32, D, generator=g)
    k, v = cache[0, :, :, :L], cache[1, :, :, :L]  # not contiguous: the cache's filled columns
    q = torch.randn(B, H, T, D, generator=g)
    key_mask = torch.ones(B, L, dtype=torch.bool)
    key_mask[0, :3] = False  # left padding of the first sequence
    key_mask[1, L - 1] = False  # a padding query (its own column only)
    ours = ops.attention_step(q, k, v, key_mask, backend="cpu")
    ref = ops.attention_step(q, k, v, key_mask, backend="torch")
    close(ours, ref, 2e-6)
    assert ours.isfinite().all()
