"""The reference model: parity with Hugging Face's OpenAIGPTDoubleHeadsModel, input forms, dropout."""
import pytest
import torch

from gpt1_fast.config import DEFAULT_CONFIG, GPTConfig
from gpt1_fast.model import (DoubleHeadModel, LMModel, MultipleChoiceHead, TransformerModel, set_backend)
from gpt1_fast.testing import rel_err as rel
from gpt1_fast.weights import export_hf

N_VOCAB, N_SPECIAL, N_CTX = 60, 3, 12
CLF = N_VOCAB + 2
VOCAB = N_VOCAB + N_SPECIAL + N_CTX


def cfg(**kw):
    base = dict(n_embd=48, n_head=4, n_layer=3, embd_pdrop=0.1, attn_pdrop=0.1, resid_pdrop=0.1, clf_pdrop=0.1,
                backend="torch")
    base.update(kw)
    return GPTConfig(**base)


def rocstories_batch(B=3, n_choices=2, gen=None):
    gen = gen or torch.Generator().manual_seed(0)
    X = torch.zeros(B, n_choices, N_CTX, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, N_VOCAB, (B, n_choices, N_CTX), generator=gen)
    X[..., 1] = torch.arange(N_VOCAB + N_SPECIAL, VOCAB)
    lengths = torch.randint(4, N_CTX, (B, n_choices), generator=gen)
    for b in range(B):
        for c in range(n_choices):
            X[b, c, lengths[b, c], 0] = CLF
    return X, lengths


def test_default_config_is_gpt1():
    c = DEFAULT_CONFIG
    assert (c.n_embd, c.n_head, c.n_layer, c.afn) == (768, 12, 12, "gelu")
    assert c.embd_pdrop == c.attn_pdrop == c.resid_pdrop == c.clf_pdrop == 0.1


def test_seed_parameter_names():
    m = DoubleHeadModel(cfg(n_layer=1), CLF, "multiple_choice", vocab=VOCAB, n_ctx=N_CTX)
    names = set(m.state_dict())
    for n in ["transformer.embed.weight", "transformer.h.0.attn.b", "transformer.h.0.attn.c_attn.w",
              "transformer.h.0.attn.c_attn.b", "transformer.h.0.attn.c_proj.w", "transformer.h.0.ln_1.g",
              "transformer.h.0.ln_1.b", "transformer.h.0.mlp.c_fc.w", "transformer.h.0.mlp.c_proj.b",
              "transformer.h.0.ln_2.g", "lm_head.decoder.weight", "task_head.linear.weight", "task_head.linear.bias"]:
        assert n in names, n
    assert m.transformer.h[0].attn.c_attn.w.shape == (48, 144)  # [in, out]
    assert m.lm_head.decoder.weight is m.transformer.embed.weight  # tied


def test_hf_parity(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = DoubleHeadModel(cfg(), CLF, "multiple_choice", vocab=VOCAB, n_ctx=N_CTX).eval()
    with torch.no_grad():  # non-trivial LayerNorm and biases so every parameter matters
        for n, p in ours.named_parameters():
            if not n.endswith(".w") and "embed" not in n:
                p.add_(torch.randn_like(p) * 0.1)
    export_hf(ours, tmp_path / "hf")
    hf = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(tmp_path / "hf").eval()
    X, lengths = rocstories_batch()
    with torch.no_grad():
        lm, clf = ours(X)
        h = ours.transformer(X)
        out = hf(input_ids=X[..., 0], mc_token_ids=lengths, output_hidden_states=True)
    B, C = X.shape[:2]
    assert rel(h.view(B, C, N_CTX, -1), out.hidden_states[-1]) < 1e-5
    # Our LM logits cover the whole table (tokens, specials, positions); HF's cover tokens + specials.
    ours_lm = lm.view(B, C, N_CTX - 1, VOCAB)[..., :N_VOCAB + N_SPECIAL]
    assert rel(ours_lm, out.logits[:, :, :-1]) < 1e-5
    assert rel(clf, out.mc_logits) < 1e-5


def test_plain_ids_equal_packed_input():
    torch.manual_seed(0)
    m = TransformerModel(cfg(), vocab=VOCAB, n_ctx=N_CTX).eval()
    X, _ = rocstories_batch()
    h_packed = m(X)
    h_ids = m(input_ids=X[..., 0])
    assert torch.equal(h_packed.view_as(h_ids), h_ids)
    h_short = m(input_ids=X[:, 0, :5, 0])  # shorter sequences: positions 0..4, causal => equal prefix
    torch.testing.assert_close(h_short, h_ids.view(3, 2, N_CTX, -1)[:, 0, :5])


def test_bad_inputs_are_explained():
    m = TransformerModel(cfg(), vocab=VOCAB, n_ctx=N_CTX)
    with pytest.raises(ValueError, match=r"packed input must have shape \[..., T, 2\]"):
        m(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        m(input_ids=torch.zeros(1, N_CTX + 1, dtype=torch.long))
    with pytest.raises(TypeError, match="exactly one"):
        m()
    with pytest.raises(ValueError, match="unknown backend"):
        TransformerModel(cfg(backend="cuda"), vocab=VOCAB, n_ctx=N_CTX)
    with pytest.raises(ValueError, match="task_head_type"):
        DoubleHeadModel(cfg(), CLF, "ranking", vocab=VOCAB, n_ctx=N_CTX)


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    torch.manual_seed(0)
    m = DoubleHeadModel(cfg(), CLF, "multiple_choice", vocab=VOCAB, n_ctx=N_CTX)
    X, _ = rocstories_batch()
    m.eval()
    a, b = m(X), m(X)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    m.train()
    a, b = m(X), m(X)
    assert not torch.equal(a[0], b[0])


def test_multiple_choice_dropout_mask_is_shared_across_choices():
    head = MultipleChoiceHead(CLF, cfg(clf_pdrop=0.5, n_embd=64)).train()
    with torch.no_grad():
        head.linear.weight.fill_(1.0)
        head.linear.bias.zero_()
    B, n_choices, T = 200, 4, 5
    X = torch.zeros(B, n_choices, T, 2, dtype=torch.long)
    X[:, :, 2, 0] = CLF
    h = torch.ones(B * n_choices, T, 64)  # identical states => any per-choice mask would show up
    torch.manual_seed(0)
    logits = head(h, X)
    assert logits.shape == (B, n_choices)
    assert torch.equal(logits, logits[:, :1].expand_as(logits))  # one mask per example
    assert logits[:, 0].unique().numel() > 10  # masks differ between examples
    # kept units scaled by 1/(1-p): the mean over many examples stays ~64
    assert abs(logits[:, 0].mean().item() - 64) < 3
    head.eval()
    assert torch.equal(head(h, X), torch.full((B, n_choices), 64.0))


def test_classify_token_first_occurrence():
    torch.manual_seed(0)
    m = DoubleHeadModel(cfg(), CLF, "multiple_choice", vocab=VOCAB, n_ctx=N_CTX).eval()
    X, lengths = rocstories_batch()
    X2 = X.clone()
    X2[:, :, -1, 0] = CLF  # a second classify token later must not change the pooled state
    _, clf = m(X)
    _, clf2 = m(X2)
    torch.testing.assert_close(clf, clf2)


def test_other_heads_and_lm_model():
    torch.manual_seed(0)
    X, _ = rocstories_batch()
    for head, shape in [(("classification", 5), (6, 5)), ("inference", (6, 3)), ("similarity", (3,))]:
        m = DoubleHeadModel(cfg(), CLF, head, vocab=VOCAB, n_ctx=N_CTX).eval()
        assert m(X)[1].shape == shape
    lm = LMModel(cfg(), vocab=VOCAB, n_ctx=N_CTX, return_probs=True).eval()
    probs = lm(input_ids=X[:, 0, :, 0])
    assert probs.shape == (3, N_CTX, VOCAB)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, N_CTX))
    assert probs[..., -N_CTX:].max() == 0  # position columns masked for sampling


def test_set_backend_switches_every_op():
    m = DoubleHeadModel(cfg(), CLF, "multiple_choice", vocab=VOCAB, n_ctx=N_CTX)
    set_backend(m, "triton")
    assert {mod.backend for mod in m.modules() if hasattr(mod, "backend")} == {"triton"}
    with pytest.raises(ValueError):
        set_backend(m, "jax")


def test_gradients_flow_to_every_parameter():
    torch.manual_seed(0)
    m = DoubleHeadModel(cfg(), CLF, "multiple_choice", vocab=VOCAB, n_ctx=N_CTX).train()
    X, _ = rocstories_batch()
    lm, clf = m(X)
    (lm.logsumexp(-1).mean() + clf.sum()).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
