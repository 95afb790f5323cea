"""Incremental decoding and sampling: the KV cache against full recomputation, the samplers on a model
whose distribution is known, stop rules, streaming, the CLI, decoding back to text."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from gpt1_fast import ops
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import KVCache, LMModel
from gpt1_fast.sampling import generate, next_tokens

N_VOCAB, N_SPECIAL, N_CTX = 50, 3, 16
VOCAB = N_VOCAB + N_SPECIAL + N_CTX
SHARED = Path(__file__).resolve().parents[2] / "shared" / "openai-gpt"


def lm(n_ctx=N_CTX, seed=2, backend="torch"):
    torch.manual_seed(seed)
    cfg = GPTConfig(n_embd=32, n_head=4, n_layer=2, embd_pdrop=0, attn_pdrop=0, resid_pdrop=0, backend=backend)
    m = LMModel(cfg, vocab=N_VOCAB + N_SPECIAL + n_ctx, n_ctx=n_ctx).eval()
    with torch.no_grad():  # a livelier model than the N(0, 0.02) init: greedy paths that vary
        for name, p in m.named_parameters():
            p.add_(torch.randn_like(p) * (0.7 if name.endswith(".w") else 0.2))
    return m


def reference_greedy(m, prompt, n_new, n_vocab=N_VOCAB):
    """One row alone, the whole prefix recomputed for every token: (tokens, last-position logits)."""
    ids, out, logits = list(prompt), [], []
    for _ in range(n_new):
        if len(ids) >= m.transformer.n_ctx:
            break
        lg = m(input_ids=torch.tensor([ids]))[0, -1].clone()
        lg[n_vocab:] += -1e12
        logits.append(lg)
        out.append(int(lg.argmax()))
        ids.append(out[-1])
    return out, logits


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12], [13], [20, 21, 22, 23, 24]]


@pytest.mark.parametrize("use_cache", [True, False])
def test_cached_greedy_equals_full_recomputation_up_to_n_ctx(use_cache):
    m = lm()
    g = m.generate(PROMPTS, 40, greedy=True, n_vocab=N_VOCAB, output_scores=True, use_cache=use_cache)
    assert g.finish_reasons == ["n_ctx"] * len(PROMPTS)
    for i, p in enumerate(PROMPTS):
        assert len(p) + len(g.tokens[i]) == N_CTX  # every row reaches the limit, padding or not
        ref, ref_logits = reference_greedy(m, p, 40)
        assert g.tokens[i] == ref, i
        ref_logits = torch.stack(ref_logits)
        # within 1e-5 of the logits' scale: the batched rows run other BLAS blockings than one row alone
        scale = ref_logits[:, :N_VOCAB].abs().max().item()
        torch.testing.assert_close(g.scores[i], ref_logits, rtol=0, atol=1e-5 * max(scale, 1.0))
    assert len({t for row in g.tokens for t in row}) > 5  # a real test: the paths vary


def test_prefix_then_token_by_token_equals_one_forward():
    m = lm()
    tr = m.transformer
    x = torch.randint(0, N_VOCAB, (2, 11))
    full = tr(input_ids=x)
    cache = tr.new_kv_cache(2)
    h, cache = tr(input_ids=x[:, :4], kv_cache=cache)
    steps = [h]
    for t in range(4, 11):
        h, cache = tr(input_ids=x[:, t:t + 1], kv_cache=cache)
        steps.append(h)
    assert cache.length == 11 and isinstance(cache, KVCache)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=5e-5)
    with pytest.raises(ValueError, match="exceeds n_ctx 16"):
        tr(input_ids=x[:, :6], kv_cache=cache)


def test_left_padding_shifts_nothing():
    """A padded row (attention mask 0 on the left) gives the hidden states of the row alone, with the
    positions counted per row; explicit position_ids give the same."""
    m = lm()
    tr = m.transformer
    a, b = torch.randint(0, N_VOCAB, (1, 9)), torch.randint(0, N_VOCAB, (1, 5))
    ids = torch.cat([a, torch.cat([torch.full((1, 4), 7), b], 1)])
    mask = torch.tensor([[1] * 9, [0] * 4 + [1] * 5])
    h = tr(input_ids=ids, attention_mask=mask)
    # hidden states of a lively model, O(1): fp32 rounding of differently shaped GEMMs stays below 5e-5
    torch.testing.assert_close(h[0], tr(input_ids=a)[0], rtol=0, atol=5e-5)
    torch.testing.assert_close(h[1, 4:], tr(input_ids=b)[0], rtol=0, atol=5e-5)
    pos = torch.tensor([list(range(9)), [0] * 4 + list(range(5))])
    torch.testing.assert_close(tr(input_ids=ids, attention_mask=mask, position_ids=pos), h, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"position ids must lie in \[0, 16\)"):
        tr(input_ids=ids, position_ids=pos + 12)
    with pytest.raises(TypeError, match="go with input_ids"):
        tr(torch.zeros(1, 4, 2, dtype=torch.long), kv_cache=tr.new_kv_cache(1))


def test_attention_step_sdpa_branch_equals_reference():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 10, 8), torch.randn(2, 3, 10, 8)
    key_mask = torch.ones(2, 10, dtype=torch.bool)
    key_mask[1, :3] = False
    ref = ops.attention_step(q, k, v, key_mask, backend="torch")
    torch.testing.assert_close(ops.attention_step(q, k, v, key_mask, backend="triton"), ref, rtol=0, atol=1e-5)
    # Query i of the last 4 columns sees columns <= 6 + i and not the padding: recompute by hand.
    for b in range(2):
        for i in range(4):
            keep = torch.arange(10) <= 6 + i
            keep &= key_mask[b]
            w = (q[b, :, i, None] @ k[b, :, keep].transpose(-1, -2) / 8 ** 0.5).softmax(-1)
            torch.testing.assert_close(ref[b, :, i], (w @ v[b, :, keep])[:, 0], rtol=0, atol=1e-5)


def test_sliding_window_continues_past_n_ctx():
    m = lm()
    g = m.generate([PROMPTS[0], PROMPTS[1]], 30, greedy=True, n_vocab=N_VOCAB, sliding=True)
    assert g.finish_reasons == ["length", "length"] and [len(t) for t in g.tokens] == [30, 30]
    for i, p in enumerate([PROMPTS[0], PROMPTS[1]]):  # the rule by hand: at n_ctx keep the last n_ctx // 2
        ids, out = list(p), []
        while len(out) < 30:
            if len(ids) >= N_CTX:
                ids = ids[-(N_CTX // 2):]
            lg = m(input_ids=torch.tensor([ids]))[0, -1]
            lg[N_VOCAB:] += -1e12
            out.append(int(lg.argmax()))
            ids.append(out[-1])
        assert g.tokens[i] == out
    with pytest.raises(ValueError, match="more than n_ctx 16"):
        m.generate([list(range(17))], 2)


def test_sampling_is_reproducible_with_a_generator():
    m = lm()
    run = lambda s: m.generate(PROMPTS, 8, top_k=10, generator=torch.Generator().manual_seed(s)).tokens  # noqa: E731
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_stop_sequences_eos_and_streaming():
    m = lm()
    ref = m.generate(PROMPTS[:2], 8, greedy=True, n_vocab=N_VOCAB).tokens
    streamed = {0: [], 1: []}
    stop = ref[0][3:5]
    g = m.generate(PROMPTS[:2], 8, greedy=True, n_vocab=N_VOCAB, stop=[stop],
                   on_tokens=lambda row, ids: streamed[row].extend(ids))
    first = next(j for j in range(len(ref[0]) - 1) if ref[0][j:j + 2] == stop)
    assert g.tokens[0] == ref[0][:first] and g.finish_reasons[0] == "stop"
    for row in (0, 1):  # the stream is the result: the held-back stop sequence was never shown
        assert streamed[row] == g.tokens[row]
    eos = ref[1][2]
    g = m.generate(PROMPTS[:2], 8, greedy=True, n_vocab=N_VOCAB, eos_token_id=eos)
    assert g.tokens[1] == ref[1][:ref[1].index(eos)] and g.finish_reasons[1] == "eos"


def test_bad_prompts():
    m = lm()
    with pytest.raises(ValueError, match="prompt 2 has no tokens"):
        m.generate([[1], []], 2)
    with pytest.raises(ValueError, match="temperature"):
        m.generate([[1]], 2, temperature=0)


# --------------------------------------------------------------------- samplers on a known distribution
class KnownLogits(nn.Module):
    """A stand-in transformer whose LM logits are `logits` at every step (tied table = identity)."""

    def __init__(self, logits, n_ctx=8):
        super().__init__()
        self.vocab, self.n_ctx = logits.numel(), n_ctx
        self.embed = nn.Embedding(self.vocab, self.vocab)
        self.embed.weight.data = torch.eye(self.vocab)
        self.logits = logits

    @property
    def pos_offset(self):
        return self.vocab - self.n_ctx

    def new_kv_cache(self, batch, dtype=None, capacity=None):
        return KVCache(0, batch, 1, capacity or self.n_ctx, 1)

    def forward(self, input_ids, attention_mask=None, kv_cache=None):
        kv_cache.length += input_ids.size(1)
        return self.logits.expand(*input_ids.shape, -1), kv_cache


def known(n_vocab=8):
    """Token probabilities 1/2, 1/4, 1/8, ..., 1/128, 1/128 over ids 0..7; the specials and position
    rows get the largest logits, so masking them is what keeps them out."""
    p = torch.tensor([2.0 ** -(i + 1) for i in range(n_vocab - 1)] + [2.0 ** -(n_vocab - 1)])
    logits = torch.cat([p.log(), torch.full((2 + 8,), 5.0)])  # 2 specials, n_ctx 8 positions
    return KnownLogits(logits), p


def draws(tr, n=4000, **kw):
    g = generate(tr, [[0]] * n, 1, n_vocab=8, generator=torch.Generator().manual_seed(0), **kw)
    return torch.tensor([t[0] for t in g.tokens])


def test_top_k_emits_only_the_k_most_likely():
    tr, p = known()
    got = draws(tr, top_k=3)
    assert set(got.tolist()) == {0, 1, 2}
    freq = torch.bincount(got, minlength=3).float() / len(got)
    torch.testing.assert_close(freq, p[:3] / p[:3].sum(), rtol=0, atol=0.03)


@pytest.mark.parametrize("top_p,allowed", [(0.74, {0, 1}), (0.76, {0, 1, 2}), (0.4, {0}), (0.6, {0, 1}),
                                           (1e-6, {0}), (1.0, set(range(8)))])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, allowed):
    tr, _ = known()
    got = set(draws(tr, top_p=top_p, temperature=1.0).tolist())
    assert got == allowed  # 1/2 + 1/4 = 0.75 < 0.76: the third token is in at 0.76, out at 0.74


def test_positions_and_specials_are_never_emitted_without_n_vocab_only_positions():
    tr, _ = known()
    g = generate(tr, [[0]] * 2000, 1, generator=torch.Generator().manual_seed(0))
    got = {t[0] for t in g.tokens}
    assert got <= set(range(10)) and got & {8, 9}  # specials allowed without n_vocab, positions never
    assert set(draws(tr, n=2000).tolist()) <= set(range(8))
    assert generate(tr, [[0]], 1, greedy=True, n_vocab=8).tokens == [[0]]


# ------------------------------------------------------------------------------------------ decoding
@pytest.mark.skipif(not (SHARED / "encoder_bpe_40000.json").exists(), reason="../shared/openai-gpt not present")
def test_decode_encode_round_trips_real_sentences():
    pytest.importorskip("spacy")
    from gpt1_fast.text import TextEncoder

    te = TextEncoder(SHARED / "encoder_bpe_40000.json", SHARED / "vocab_40000.bpe")
    texts = ["Karen was assigned a roommate her first year of college.",
             "Their relationship was fairly good, but she didn't like him—at all!",
             "\"What's the matter?\" asked Tom (quietly), and left at 5 p.m. for the 10km run…"]
    for text in texts:
        ids = te.encode([text])[0]
        assert 0 not in ids
        assert te.decode(ids) == " ".join(te.pretokenize(text))  # lower-cased, standardised, spaCy-split


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    pytest.importorskip("spacy")
    from gpt1_fast.text import learn_bpe

    d = tmp_path_factory.mktemp("vocab")
    texts = ["The dog ran to the park.", "A cat sat on the mat!", "Anna wanted a new bike."] * 4
    learn_bpe(texts, 30, d / "enc.json", d / "merges.bpe")
    return d


def cli_args(vocab, *extra):
    return ["--from_scratch", "--encoder_path", str(vocab / "enc.json"), "--bpe_path", str(vocab / "merges.bpe"),
            "--n_ctx", "24", "--n_embd", "16", "--n_head", "2", "--n_layer", "1", "--device", "cpu",
            "--backend", "torch", *extra]


def test_cli_several_prompts_samples_and_streaming(vocab, capsys, tmp_path):
    from gpt1_fast import generate as cli

    pf = tmp_path / "prompts.txt"
    pf.write_text("A cat sat\n\nThe dog ran to the park .\n")
    outs = cli.main(cli_args(vocab, "--prompt", "Anna wanted", "--prompt_file", str(pf), "--num_samples", "2",
                             "--max_new_tokens", "30", "--seed", "3"))
    assert len(outs) == 6 and all("</w>" not in o for o in outs)
    printed, status = capsys.readouterr()
    for o in outs:
        assert o in printed
    assert status.count("[stopped: context full, n_ctx 24]") == 6  # 30 new tokens never fit in 24
    assert "[stopped" not in printed  # status lines on standard error, the texts alone on standard output
    again = cli.main(cli_args(vocab, "--prompt", "Anna wanted", "--prompt_file", str(pf), "--num_samples", "2",
                              "--max_new_tokens", "30", "--seed", "3"))
    assert again == outs


def test_cli_bad_input_is_one_line(vocab, tmp_path, capsys):
    from gpt1_fast import generate as cli

    (tmp_path / "latin1.txt").write_bytes(b"a cat\ncaf\xe9\n")
    (tmp_path / "blank.txt").write_text("\n  \n")
    for extra, code, want in [
            (("--prompt", "a cat", "--prompt", "   "), 2, "error: argument --prompt: prompt 2 encodes to no tokens"),
            (("--prompt_file", str(tmp_path / "nope.txt")), 1, "error: --prompt_file "),
            (("--prompt_file", str(tmp_path / "latin1.txt")), 1, "latin1.txt:2: expected UTF-8 text, found byte b'\\xe9'"),
            (("--prompt_file", str(tmp_path / "blank.txt")), 1, "blank.txt: no prompt in it"),
            (("--prompt", "a cat", "--top_p", "1.5"), 2, "error: argument --top_p: expected a number in (0, 1]"),
            (("--prompt", "a cat", "--stop", ""), 2, "error: argument --stop: expected a non-empty stop string"),
            (("--prompt", "a cat", "--stop", " "), 2, "error: argument --stop: ' ' encodes to no tokens"),
            (("--prompt", "cat " * 30), 2, "error: argument --prompt: prompt 1 has 30 tokens, the model's context 24: "
                                           "no room for a new token; shorten it, or pass --sliding"),
            (("--prompt", "a cat", "--n_head", "3"), 2, "error: argument --n_head: 3 does not divide --n_embd 16")]:
        with pytest.raises(SystemExit) as e:
            cli.cli(cli_args(vocab, *extra))
        err = capsys.readouterr().err
        assert e.value.code == code and want in err and err.count("\n") == 1, (extra, err)


@pytest.mark.parametrize("kind", ["model_folder", "legacy_best_params"])
def test_cli_on_a_fine_tuned_model_hides_the_specials(vocab, tmp_path, kind):
    """--model_dir: a fine-tuning run's model folder (the layout with 3 specials), or an old best_params.pt."""
    import json

    from gpt1_fast import generate as cli
    from gpt1_fast.folder import save_pretrained
    from gpt1_fast.layout import EmbeddingLayout
    from gpt1_fast.model import DoubleHeadModel

    n_vocab = len(json.loads((vocab / "enc.json").read_text(encoding="utf-8")))
    layout = EmbeddingLayout(n_vocab, n_ctx=20)
    cfg = GPTConfig(n_embd=16, n_head=2, n_layer=1, backend="torch")
    torch.manual_seed(0)
    model = DoubleHeadModel(cfg, layout.clf, "multiple_choice", layout.size, layout.n_ctx)
    with torch.no_grad():  # the specials as by far the most likely rows: only the mask keeps them out
        u = torch.nn.functional.normalize(torch.randn(16), dim=0)
        model.transformer.h[-1].ln_2.b.copy_(10 * u)
        model.transformer.embed.weight[n_vocab:layout.pos_offset] = 10 * u
    vocab_paths = (str(vocab / "enc.json"), str(vocab / "merges.bpe"))
    if kind == "model_folder":
        path = save_pretrained(model, tmp_path / "model", layout=layout, vocab_paths=vocab_paths,
                               head_type="multiple_choice")
    else:
        from folder_helpers import save_legacy_best_params

        path = save_legacy_best_params(tmp_path / "best_params.pt", model.state_dict(), dict(
            cfg=cfg.to_dict(), layout=layout.to_dict(), head_type="multiple_choice", encoder_path=vocab_paths[0],
            bpe_path=vocab_paths[1]))
    outs = cli.main(["--model_dir", str(path), "--prompt", "the dog", "--greedy",
                     "--max_new_tokens", "5", "--device", "cpu", "--backend", "torch"])
    assert len(outs) == 1 and outs[0] and "<" not in outs[0] and "_start_" not in outs[0]


def test_triton_backend_generation_equals_the_reference():
    """The CUDA path's code (Triton LayerNorm/GELU, SDPA for the cached step), run on the CPU through
    the Triton interpreter in fp32; and generation under bf16 autocast (autocast casts the fp32 cache)."""
    pytest.importorskip("triton")
    ref = lm()
    fast = lm(backend="triton")
    prompts = [PROMPTS[0], PROMPTS[1]]
    g_ref = ref.generate(prompts, 6, greedy=True, n_vocab=N_VOCAB, output_scores=True)
    g = fast.generate(prompts, 6, greedy=True, n_vocab=N_VOCAB, output_scores=True)
    assert g.tokens == g_ref.tokens
    for a, b in zip(g.scores, g_ref.scores):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert [len(t) for t in ref.generate(prompts, 3, greedy=True).tokens] == [3, 3]


@pytest.mark.parametrize("flag,value", [("--top_p", "0"), ("--top_p", "1.5"), ("--temperature", "0"),
                                        ("--num_samples", "0"), ("--max_new_tokens", "-1"), ("--top_k", "-1"),
                                        ("--n_ctx", "0")])
def test_cli_rejects_out_of_range_flags_in_one_line(flag, value, capsys):
    from gpt1_fast import generate as gen_cli

    with pytest.raises(SystemExit) as e:
        gen_cli.build_parser().parse_args([flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: argument {flag}") and value in err[0]


# ------------------------------------------------------------------------------------------ bf16
def greedy_prefix_where_the_margin_allows(g, n_vocab, margin):
    """Each row's tokens up to the first step whose top-two logits are closer than `margin`."""
    out = []
    for toks, s in zip(g.tokens, g.scores):
        top = s[:, :n_vocab].topk(2, -1).values
        close = ((top[:, 0] - top[:, 1]) < margin).nonzero()
        out.append(toks[:int(close[0]) if len(close) else len(toks)])
    return out


@pytest.mark.parametrize("backend", ["torch", "cpu"])  # cpu: gpt1_fast.cpu_decode where oneDNN is there
def test_bf16_greedy_equals_fp32_where_the_margins_allow_and_cached_equals_recomputed(backend):
    m = lm(backend=backend)
    g32 = m.generate(PROMPTS, 40, greedy=True, n_vocab=N_VOCAB, output_scores=True)
    g16 = m.generate(PROMPTS, 40, greedy=True, n_vocab=N_VOCAB, output_scores=True, dtype=torch.bfloat16)
    scale = max(s[:, :N_VOCAB].abs().max().item() for s in g32.scores)
    # bf16 moves these logits by up to ~2 % of their scale: a lead of 3 % of it decides the same token
    sure = greedy_prefix_where_the_margin_allows(g32, N_VOCAB, 0.03 * scale)
    assert sum(map(len, sure)) >= 8, sure  # a real comparison
    assert all(t[:len(s)] == s for t, s in zip(g16.tokens, sure))
    for a, b, s in zip(g16.scores, g32.scores, sure):
        torch.testing.assert_close(a[:len(s), :N_VOCAB], b[:len(s), :N_VOCAB], rtol=0, atol=0.05 * scale)
    full = m.generate(PROMPTS, 40, greedy=True, n_vocab=N_VOCAB, output_scores=True, dtype=torch.bfloat16,
                      use_cache=False)  # the whole prefix recomputed in bf16 every step
    assert full.tokens == g16.tokens
    for a, b in zip(g16.scores, full.scores):
        torch.testing.assert_close(a[:, :N_VOCAB], b[:, :N_VOCAB], rtol=0, atol=1e-2 * scale)


class CastCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the copies to bf16 made of the given tensors (by storage)."""

    def __init__(self, tensors):
        super().__init__()
        self.ptrs, self.casts = {t.data_ptr() for t in tensors}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16 and \
                args[0].data_ptr() in self.ptrs:
            self.casts += 1
        return func(*args, **kwargs)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_bf16_generation_casts_each_weight_once_and_keeps_its_cache_in_bf16(monkeypatch, backend):
    """A decoding step reads bf16 weights (cast once for the whole generation, not at every step) and
    a bf16 cache (not an fp32 one cast at every step)."""
    m = lm(backend=backend)
    tr = m.transformer
    matrices = [p for name, p in m.named_parameters() if p.dim() == 2]  # what the products read
    caches, new_cache = [], tr.new_kv_cache
    monkeypatch.setattr(tr, "new_kv_cache", lambda *a, **kw: caches.append(new_cache(*a, **kw)) or caches[-1])
    with CastCounter(matrices) as counter:
        g = m.generate(PROMPTS, 6, greedy=True, n_vocab=N_VOCAB, dtype=torch.bfloat16)
    assert [len(t) for t in g.tokens] == [6] * 4  # 6 steps (5 of them decoding steps)
    assert 0 < counter.casts <= len(matrices)
    assert caches and all(k.dtype == torch.bfloat16 for c in caches for k in c.k + c.v)
    assert tr.embed.weight.dtype == torch.float32  # the model itself is left as it was


def test_greedy_takes_the_first_of_equal_maxima():
    logits = torch.tensor([[0., 2., 2., 1.], [3., 3., 3., 3.], [-float("inf"), 1., 1., -float("inf")]])
    assert next_tokens(logits, greedy=True).tolist() == [1, 0, 1]
    assert next_tokens(logits.bfloat16(), greedy=True).tolist() == [1, 0, 1]
