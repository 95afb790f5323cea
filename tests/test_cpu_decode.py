"""The `cpu` backend's bf16 decoding (gpt1_fast.cpu_decode): its lean forward over the cache (the C++
blocks, gpt1_fast::cpu_decode_blocks, and the Python ones) against the model's own, its fused
activations against the reference ones, the weights packed once per generation, and when it is used."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from gpt1_fast import _ext, cpu_decode, reference
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import LMModel

pytestmark = pytest.mark.skipif(not cpu_decode.onednn_available(), reason="this PyTorch has no oneDNN packed linear")

N_VOCAB, N_CTX = 50, 16
NO_CPP = _ext.unavailable_reason("cpu", "cpu_decode_blocks")
needs_cpp = pytest.mark.skipif(NO_CPP is not None, reason=f"no C++ decoding step: {NO_CPP}")
NATIVE = [pytest.param(False, id="python"), pytest.param(True, id="cpp", marks=needs_cpp)]
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12], [13], [20, 21, 22, 23, 24]]


def lm(afn="gelu", backend="cpu", seed=2):
    torch.manual_seed(seed)
    cfg = GPTConfig(n_embd=32, n_head=4, n_layer=2, embd_pdrop=0, attn_pdrop=0, resid_pdrop=0, afn=afn,
                    backend=backend)
    m = LMModel(cfg, vocab=N_VOCAB + 3 + N_CTX, n_ctx=N_CTX).eval()
    with torch.no_grad():  # a livelier model than the N(0, 0.02) init
        for name, p in m.named_parameters():
            p.add_(torch.randn_like(p) * (0.7 if name.endswith(".w") else 0.2))
    return m


def left_padded(rows):
    L = max(map(len, rows))
    ids = torch.tensor([[0] * (L - len(r)) + r for r in rows])
    real = torch.tensor([[False] * (L - len(r)) + [True] * len(r) for r in rows])
    return ids, real


def relative_error(a, b, where):
    return ((a.float() - b.float())[where].abs().max() / b[where].abs().max()).item()


@pytest.mark.parametrize("native", NATIVE)
@pytest.mark.parametrize("afn", sorted(cpu_decode.POST_OPS))
def test_forward_over_the_cache_follows_the_models_own(afn, native):
    """Prefill of left-padded prompts, then steps: the hidden states, the cache's keys and values, its
    mask and length, against the model's forward in float32; no further from it than the model's own
    forward under bf16 autocast (this lively model's bf16 errors reach a few %; a wrong position, mask or
    residual moves the states by their whole scale)."""
    tr = lm(afn).transformer
    ids, real = left_padded(PROMPTS)
    dec = cpu_decode.PackedDecoder(tr, len(PROMPTS), native=native)
    mine, f32, amp = (tr.new_kv_cache(len(PROMPTS), dtype=d) for d in (torch.bfloat16, None, torch.bfloat16))
    steps = torch.randint(0, N_VOCAB, (4, len(PROMPTS), 1), generator=torch.Generator().manual_seed(0))
    err, err_amp = [], []
    with torch.no_grad():
        for x, mask in [(ids, real)] + [(s, None) for s in steps]:
            h = dec.forward(x, mine, mask)
            h32 = tr(input_ids=x, attention_mask=mask, kv_cache=f32)[0]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h16 = tr(input_ids=x, attention_mask=mask, kv_cache=amp)[0]
            seen = real if mask is not None else torch.ones(x.shape, dtype=torch.bool)
            assert h.dtype == torch.float32 and h.shape == h32.shape
            err.append(relative_error(h, h32, seen))
            err_amp.append(relative_error(h16, h32, seen))
    assert max(err) < 0.06 and max(err) <= 1.25 * max(err_amp), (err, err_amp)  # observed: 0.016-0.038
    assert mine.length == f32.length == ids.size(1) + len(steps)
    assert torch.equal(mine.mask, f32.mask)
    H = tr.h[0].attn.n_head
    cols = mine.mask[:, None, :mine.length, None].expand(-1, H, -1, tr.n_embd // H)
    for a, b in zip(mine.k + mine.v, f32.k + f32.v):
        assert a.dtype == torch.bfloat16
        assert relative_error(a[:, :, :mine.length], b[:, :, :mine.length], cols) < 0.06


@pytest.mark.parametrize("afn", sorted(cpu_decode.POST_OPS))
def test_the_fused_activation_is_the_models(afn):
    """x @ w + b and the activation, fused in one oneDNN product, against the reference formulas in
    float64 on the same bf16 values: one rounding to bf16 apart. The inputs reach the negative tail, where
    GELU's tanh form and its exact (erf) form differ by up to ~10 %."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, generator=g).bfloat16()
    w = (torch.randn(64, 96, generator=g) * 0.4).bfloat16()  # [in, out], as the model stores it
    b = torch.randn(96, generator=g).bfloat16()
    pre = x.double() @ w.double() + b.double()
    assert (pre < -2.5).sum() > 50
    got = cpu_decode._linear(x, cpu_decode._pack(w.t(), 8), b, cpu_decode.POST_OPS[afn])
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), reference.ACT_FNS[afn](pre), rtol=2 ** -8, atol=1e-5)


def decode(tr, native, steps=4):
    """Prefill PROMPTS, then `steps` steps: the hidden states of each call, and the cache."""
    ids, real = left_padded(PROMPTS)
    dec = cpu_decode.PackedDecoder(tr, len(PROMPTS), native=native)
    cache = tr.new_kv_cache(len(PROMPTS), dtype=torch.bfloat16)
    tokens = torch.randint(0, N_VOCAB, (steps, len(PROMPTS), 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return [dec.forward(x, cache, mask) for x, mask in [(ids, real)] + [(t, None) for t in tokens]], cache


@needs_cpp
@pytest.mark.parametrize("afn", sorted(cpu_decode.POST_OPS))
def test_the_cpp_blocks_compute_the_python_blocks(afn):
    """The C++ op against `_block`, on a model whose LayerNorms each have their own eps (a parameter
    of one handed to another, or misplaced in the list, moves the states by ~10 %). They differ only
    in the order of the LayerNorm's sums (observed: ~1e-7 relative)."""
    tr = lm(afn).transformer
    for i, block in enumerate(tr.h):
        block.ln_1.e, block.ln_2.e = 0.5 + i, 2.0 + i
    (cpp, cpp_cache), (py, py_cache) = decode(tr, True), decode(tr, False)
    real = left_padded(PROMPTS)[1]
    for i, (a, b) in enumerate(zip(cpp, py)):
        assert relative_error(a, b, real if i == 0 else torch.ones(a.shape[:2], dtype=torch.bool)) < 5e-3
    assert cpp_cache.length == py_cache.length and torch.equal(cpp_cache.mask, py_cache.mask)
    for a, b in zip(cpp_cache.k + cpp_cache.v, py_cache.k + py_cache.v):
        torch.testing.assert_close(a[:, :, :py_cache.length], b[:, :, :py_cache.length], rtol=2 ** -7, atol=1e-2)


@needs_cpp
def test_the_cpp_op_refuses_inconsistent_arguments():
    tr = lm().transformer
    dec = cpu_decode.PackedDecoder(tr, 1, native=True)
    cache = tr.new_kv_cache(1, dtype=torch.bfloat16)
    x, mask = torch.zeros(1, tr.n_embd), torch.zeros(1, 1, 1, 1, dtype=torch.bfloat16)
    op = torch.ops.gpt1_fast.cpu_decode_blocks
    with pytest.raises(RuntimeError, match="2 cache layers need 24 params and 4 eps, got 23"):
        op(x, dec.params[:-1], cache.k, cache.v, 0, mask, 4, dec.eps, "gelu", "tanh")
    with pytest.raises(RuntimeError, match=r"scores_mask \[1, 1, 1, 1\], start 3, 1 cache rows and n_head 4 disagree"):
        op(x, dec.params, cache.k, cache.v, 3, mask, 4, dec.eps, "gelu", "tanh")
    with pytest.raises(RuntimeError, match="x must be float32"):
        op(x.double(), dec.params, cache.k, cache.v, 0, mask, 4, dec.eps, "gelu", "tanh")


@pytest.mark.parametrize("native", NATIVE)
def test_a_step_without_padding_reads_no_mask(native):
    """One new column a row and no padding: no mask (SDPA's unmasked path), the same states as with an
    all-zero one. With padding, or several new columns, a mask (the forward test fails without it)."""
    tr = lm().transformer
    keys = torch.ones(2, 5, dtype=torch.bool)
    assert cpu_decode.PackedDecoder._scores_mask(keys, 1) is None
    assert cpu_decode.PackedDecoder._scores_mask(keys, 2).shape == (2, 1, 2, 5)
    keys[1, 0] = False
    assert cpu_decode.PackedDecoder._scores_mask(keys, 1)[1, 0, 0].isinf().tolist() == [True] + [False] * 4
    dec = cpu_decode.PackedDecoder(tr, 2, native=native)
    caches = [tr.new_kv_cache(2, dtype=torch.bfloat16) for _ in range(2)]
    ids = torch.randint(0, N_VOCAB, (2, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = []
        for cache, zeros in zip(caches, (False, True)):
            dec.forward(ids, cache)
            if zeros:  # the same step through an all-zero mask
                dec._scores_mask = lambda key_mask, T: torch.zeros(2, 1, T, key_mask.size(1), dtype=torch.bfloat16)
            out.append(dec.forward(ids[:, :1], cache))
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-6)


def test_without_the_extension_the_python_blocks_run(monkeypatch):
    asked = []
    monkeypatch.setattr(_ext, "unavailable_reason", lambda *a: asked.append(a) or "no compiler here")
    assert not cpu_decode.PackedDecoder(lm().transformer, 1, native=False).native
    assert ("cpu", "cpu_decode_blocks") not in asked  # native=False: no load (nor build) of the extension asked
    assert not cpu_decode.PackedDecoder(lm().transformer, 1).native
    with pytest.raises(RuntimeError, match="C\\+\\+ decoding step is unavailable: no compiler here"):
        cpu_decode.PackedDecoder(lm().transformer, 1, native=True)


@pytest.mark.parametrize("native", NATIVE)
def test_generation_packs_each_matrix_once_and_runs_every_product_on_it(monkeypatch, native):
    """Whichever blocks run (the C++ ones by default where the extension is built), every product is
    oneDNN's on a matrix packed once per generation."""
    m = lm()
    n_layer = len(m.transformer.h)
    if not native:
        monkeypatch.setattr(_ext, "unavailable_reason", lambda *a: "not built")
    packs, pack = [], cpu_decode._pack
    monkeypatch.setattr(cpu_decode, "_pack", lambda *a: packs.append(1) or pack(*a))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        g = m.generate(PROMPTS, 6, greedy=True, n_vocab=N_VOCAB, dtype=torch.bfloat16)
    ran = {e.key: e.count for e in prof.key_averages()}
    assert [len(t) for t in g.tokens] == [6] * len(PROMPTS)
    assert len(packs) == 4 * n_layer + 1  # the blocks' four matrices, the LM head's table
    # the prefill and 5 steps, 4 products a block; 6 LM heads
    assert ran["mkldnn::_linear_pointwise"] == 6 * (4 * n_layer + 1)
    assert ran.get("gpt1_fast::cpu_decode_blocks", 0) == (6 if native else 0)


def test_used_for_bf16_with_the_cpu_backend_in_eval_mode_only():
    assert cpu_decode.packable(lm("gelu", "cpu").transformer, torch.bfloat16)
    assert cpu_decode.packable(lm("gelu", "auto").transformer, torch.bfloat16)  # auto is cpu on a CPU
    assert not cpu_decode.packable(lm("gelu", "torch").transformer, torch.bfloat16)  # the reference ops
    assert not cpu_decode.packable(lm().transformer, torch.float32)
    assert not cpu_decode.packable(lm().transformer, None)
    m = lm().train()  # dropout: the model's own forward
    assert not cpu_decode.packable(m.transformer, torch.bfloat16)
    assert len(m.generate(PROMPTS, 3, greedy=True, dtype=torch.bfloat16).tokens[0]) == 3


def test_forward_past_the_context_is_refused():
    tr = lm().transformer
    dec = cpu_decode.PackedDecoder(tr, 1)
    cache = tr.new_kv_cache(1, dtype=torch.bfloat16)
    dec.forward(torch.zeros(1, N_CTX - 1, dtype=torch.long), cache)
    dec.forward(torch.zeros(1, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=f"exceeds n_ctx {N_CTX}"):
        dec.forward(torch.zeros(1, 1, dtype=torch.long), cache)
    assert cache.length == N_CTX


@needs_cpp
def test_a_library_built_from_older_sources_is_named():
    reason = _ext.unavailable_reason("cpu", "an_op_of_a_later_version")
    assert "no cpu kernel for gpt1_fast::an_op_of_a_later_version: it was built from older sources" in reason
    assert "rebuild it" in reason


@needs_cpp
@pytest.mark.parametrize("shape", [(1, 9), (7, 5), (130, 70), (64, 128)])
def test_transpose_to_bf16_is_the_cast_of_the_transpose(shape):
    """The C++ tiled copy the packing uses for the Conv1D weights: the bits of w.t().to(bfloat16), over
    tile edges, infinities and ties (rounded to even); NaN stays NaN."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3
    nans = torch.tensor([0x7F800001, 0x7FFFFFFF], dtype=torch.int32).view(torch.float32)  # would round to inf, -0
    ties = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8)]  # halfway between two bf16 values
    special = torch.cat([torch.tensor(ties + [float("inf"), -float("inf")]), nans])
    w.view(-1)[:len(special)] = special[:w.numel()]
    got, want = torch.ops.gpt1_fast.transpose_to_bf16(w), w.t().to(torch.bfloat16)
    assert got.is_contiguous() and got.shape == want.shape
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    assert torch.equal(got[~nan].view(torch.int16), want[~nan].view(torch.int16))
    with pytest.raises(RuntimeError, match="expected a contiguous float32 matrix"):
        torch.ops.gpt1_fast.transpose_to_bf16(torch.ones(4, 6)[:, ::2])
