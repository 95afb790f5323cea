"""The model folder: save -> load is bitwise for every head family, transformers loads the same
folder with the same task and LM logits, every damaged or contradicting input is one CheckpointError
(or UsageError) line, and a save that fails half-way never leaves a folder a reader accepts."""
import json
from pathlib import Path

import pytest
import torch
from folder_helpers import CFG, FAMILIES, LAYOUT, batch, choices, hf_inputs, make, write_vocab

from gpt1_fast import folder_save
from gpt1_fast.errors import CheckpointError, UsageError
from gpt1_fast.folder import check_flags, config_for, export_hf, load_pretrained, read_config, save_pretrained
from gpt1_fast.hf_head import HF_HEAD
from gpt1_fast.model import DoubleHeadModel, LMModel


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return write_vocab(tmp_path_factory.mktemp("vocab"))


def save(model, path, vocab, family, **kw):
    return save_pretrained(model, path, layout=LAYOUT, vocab_paths=vocab, task=f"task-{family}",
                           head_type=FAMILIES[family][0], label_names=FAMILIES[family][1],
                           options={"lr": 6.25e-5, "n_iter": 3}, **kw)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, vocab):
    """family -> (model, folder)."""
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for i, family in enumerate(FAMILIES):
        model = make(family, seed=i).eval()
        out[family] = model, save(model, root / family, vocab, family, extra={"score": 71.5})
    return out


# ------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_is_bitwise_and_says_what_the_model_is(saved, family):
    model, path = saved[family]
    loaded, info = load_pretrained(path, backend="torch")
    assert type(loaded) is type(model) and type(getattr(loaded, "task_head", None)) is \
        type(getattr(model, "task_head", None))
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert not loaded.training and getattr(loaded, "regression", None) == getattr(model, "regression", None)
    assert (info.kind, info.task, info.label_names, info.layout) == ("folder", f"task-{family}",
                                                                     FAMILIES[family][1], LAYOUT)
    clf_pdrop = CFG.clf_pdrop if family != "lm" else 0.1  # a language model has no classifier (the default)
    assert info.cfg == CFG.replace(backend="auto", clf_pdrop=clf_pdrop)
    assert info.options == {"lr": 6.25e-5, "n_iter": 3}
    assert info.extra == {"score": 71.5}
    if FAMILIES[family][0] is not None:
        assert (info.head.head_type, info.head.clf_token, info.head.lm_coef) == (
            tuple(FAMILIES[family][0]) if isinstance(FAMILIES[family][0], tuple) else FAMILIES[family][0], LAYOUT.clf,
            0.25)
        x = batch(family)
        assert torch.equal(loaded.task_logits(x), model.task_logits(x))  # the classify token, the head


def test_the_files(saved, vocab):
    from safetensors import safe_open

    model, path = saved["similarity"]
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    assert (path / "vocab.json").read_bytes() == vocab[0].read_bytes()
    assert (path / "merges.txt").read_bytes() == vocab[1].read_bytes()
    d = json.loads((path / "config.json").read_text())
    assert (d["vocab_size"], d["n_positions"], d["n_embd"], d["n_layer"], d["n_head"], d["afn"]) == (
        LAYOUT.pos_offset, LAYOUT.n_ctx, 32, 2, 4, "gelu")
    assert (d["embd_pdrop"], d["attn_pdrop"], d["resid_pdrop"], d["summary_first_dropout"]) == (0.1, 0.05, 0.15, 0.2)
    assert d["architectures"] == ["OpenAIGPTDoubleHeadsModel"] and d["summary_proj_to_labels"] is False
    sec = d["gpt1_fast"]
    assert sec["head"] == {"type": ["similarity", 2], "clf_token": LAYOUT.clf, "lm_coef": 0.25}
    assert sorted(sec) == ["extra", "files", "format", "head", "label_names", "layout", "model", "options", "task",
                           "version"]
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert not [n for n in names if "lm_head" in n or n.endswith((".attn.bias", ".attn.b"))]  # tied, constant
    assert {f"{HF_HEAD}.weight", f"{HF_HEAD}.bias", "transformer.tokens_embed.weight",
            "transformer.positions_embed.weight"} <= names
    assert len(names) == 4 + 2 * 12


# ------------------------------------------------------------------------------------- transformers
def _hf_task_logits(out, family, n):
    """Our task logits from transformers' mc_logits, as hf_head.py documents per family."""
    mc = out.mc_logits
    if choices(family) == 2:  # similarity: both orders summed
        mc = mc.sum(1)
    return mc[..., :n] if FAMILIES[family][0] != "multiple_choice" and mc.dim() > 1 else mc.view(-1, n).squeeze(-1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_transformers_gives_the_same_logits(saved, family):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    model, path = saved[family]
    head = FAMILIES[family][0] is not None and family != "wide"
    cls = transformers.OpenAIGPTDoubleHeadsModel if head else transformers.OpenAIGPTLMHeadModel
    hf, loading = cls.from_pretrained(path, output_loading_info=True)
    hf.eval()
    if family != "wide":
        assert not any(loading.values()), loading  # nothing missing, unexpected, mismatched or left random
    x = batch("lm" if family == "lm" else family)
    with torch.no_grad():
        if family == "lm":
            ours, theirs = model(input_ids=x[..., 0]), hf(input_ids=x[..., 0]).logits
            torch.testing.assert_close(theirs, ours[..., :LAYOUT.pos_offset], atol=1e-5, rtol=0)
            return
        lm, task = model(x)
        out = hf(**hf_inputs(x, LAYOUT.clf)) if head else hf(input_ids=x[..., 0])
        theirs = out.logits[..., :-1, :].reshape(-1, LAYOUT.pos_offset)
        torch.testing.assert_close(theirs, lm[:, :LAYOUT.pos_offset], atol=1e-5, rtol=0)
        if head:
            n = task.shape[-1] if task.dim() > 1 else 1
            torch.testing.assert_close(_hf_task_logits(out, family, n).reshape(task.shape), task, atol=1e-5, rtol=0)
            if n > 1 and family != "multiple_choice":  # padded: the extra columns change no softmax or argmax
                probs = out.mc_logits.float().softmax(-1)
                assert float(probs[..., n:].max()) == 0.0


def test_a_folder_transformers_saved_again_reads_with_its_new_weights(saved, tmp_path):
    transformers = pytest.importorskip("transformers")
    model, path = saved["similarity"]
    hf = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(path)
    with torch.no_grad():
        hf.transformer.h[1].ln_2.bias += 1.0  # "fine-tuned further" in transformers
    hf.save_pretrained(tmp_path / "again")
    for f in ("vocab.json", "merges.txt"):
        (tmp_path / "again" / f).write_bytes((path / f).read_bytes())
    loaded, info = load_pretrained(tmp_path / "again")
    assert (info.kind, info.head, info.label_names, info.vocab is not None) == (
        "folder", read_config(path).head, FAMILIES["similarity"][1], True)
    assert torch.equal(loaded.transformer.h[1].ln_2.b, model.transformer.h[1].ln_2.b + 1.0)
    assert torch.equal(loaded.task_head.linear.bias, model.task_head.linear.bias)


def test_export_hf_without_layout_or_vocabulary(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = make("multiple_choice").eval()
    export_hf(model, tmp_path / "hf")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]
    hf = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(tmp_path / "hf").eval()
    x = batch("multiple_choice")
    with torch.no_grad():
        torch.testing.assert_close(hf(**hf_inputs(x, LAYOUT.clf)).mc_logits, model.task_logits(x), atol=1e-5, rtol=0)
    info = read_config(tmp_path / "hf")
    assert info.layout.n_vocab == LAYOUT.pos_offset and info.vocab is None  # every token row counts as vocabulary
    with pytest.raises(CheckpointError, match="no vocabulary beside this model"):
        info.require_vocab()


# ------------------------------------------------------------------------------------------ writing
def test_save_refuses_a_layout_or_head_that_does_not_fit_before_writing(tmp_path, vocab):
    model = make("classification")
    with pytest.raises(ValueError, match=r"does not fit the model's embedding table"):
        save_pretrained(model, tmp_path / "a", layout=LAYOUT.with_n_ctx(8), vocab_paths=vocab)
    with pytest.raises(ValueError, match=r"head_type 'multiple_choice' does not match the model's head"):
        save_pretrained(model, tmp_path / "a", layout=LAYOUT, vocab_paths=vocab, head_type="multiple_choice")
    with pytest.raises(ValueError, match=r"2 label names for a head with 3 outputs"):
        save_pretrained(model, tmp_path / "a", layout=LAYOUT, vocab_paths=vocab, label_names=["a", "b"])
    with pytest.raises(ValueError, match=r"41 tokens, but the layout has n_vocab 40"):
        save_pretrained(model, tmp_path / "a", layout=LAYOUT, vocab_paths=write_vocab(tmp_path / "v41", 41))
    with pytest.raises(TypeError, match=r"object .* cannot be written to config.json"):
        save_pretrained(model, tmp_path / "a", layout=LAYOUT, vocab_paths=vocab, options={"f": object()})
    wrong_clf = DoubleHeadModel(CFG, LAYOUT.start, ("classification", 3), LAYOUT.size, LAYOUT.n_ctx)
    with pytest.raises(ValueError, match=r"classify token 40 is not the layout's _classify_ row \(42\)"):
        save_pretrained(wrong_clf, tmp_path / "a", layout=LAYOUT, vocab_paths=vocab)
    assert not (tmp_path / "a").exists()


def _boom(name):
    def fail(path, *a, **kw):
        if Path(path).name == name:
            raise OSError(f"disk full writing {name}")
        return REAL[name](path, *a, **kw)
    return fail


REAL = {"config.json": folder_save.atomic_write_text, "model.safetensors": folder_save.atomic_write_bytes,
        "merges.txt": folder_save.atomic_write_bytes}


@pytest.mark.parametrize("fails", ["merges.txt", "model.safetensors", "config.json"])
def test_a_save_failing_half_way_leaves_no_folder_a_reader_accepts(tmp_path, vocab, monkeypatch, fails):
    """Re-saving over a folder fails at each write in turn: the reader then loads the OLD model
    exactly, or refuses the folder in one line; never new weights under the old config."""
    old, new = make("classification", seed=1).eval(), make("classification", seed=2).eval()
    path = save(old, tmp_path / "m", vocab, "classification")
    other_vocab = write_vocab(tmp_path / "v2")  # another vocabulary's bytes: the copy is rewritten
    other_vocab[1].write_text("#version: 0.2\nx y\n")
    writer = "atomic_write_text" if fails == "config.json" else "atomic_write_bytes"
    monkeypatch.setattr(folder_save, writer, _boom(fails))
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(new, path, layout=LAYOUT, vocab_paths=other_vocab)
    monkeypatch.undo()
    try:
        loaded, info = load_pretrained(path)
    except CheckpointError as e:
        assert "\n" not in str(e) and "SHA-256 differs" in str(e) and fails == "config.json"
    else:
        assert fails != "config.json"
        assert all(torch.equal(v, old.state_dict()[k]) for k, v in loaded.state_dict().items())
        if fails == "model.safetensors":  # the vocabulary was replaced before: refused as not the model's
            with pytest.raises(CheckpointError, match=r"merges\.txt: changed since the model was saved"):
                info.require_vocab()
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]


def test_a_first_save_killed_before_config_json_is_no_model(tmp_path, vocab, monkeypatch):
    monkeypatch.setattr(folder_save, "atomic_write_text", _boom("config.json"))
    with pytest.raises(OSError):
        save(make("lm"), tmp_path / "m", vocab, "lm")
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"model\.safetensors without config\.json \(an interrupted save"):
        read_config(tmp_path / "m")


# ------------------------------------------------------------------------------------------- shapes
def test_flags_that_contradict_the_folder_are_one_error_naming_both(saved):
    info = read_config(saved["lm"][1])
    check_flags(info, n_embd=32, n_head=4, n_layer=2, afn="gelu", n_ctx=16)  # agreeing: fine
    check_flags(info, n_ctx=8)  # fewer positions: fine
    check_flags(info, n_embd=None, n_head=None)  # not given
    for flag, value, said in (("n_embd", 64, "n_embd 32"), ("n_head", 8, "n_head 4"), ("n_layer", 12, "n_layer 2"),
                              ("afn", "relu", "afn gelu")):
        with pytest.raises(UsageError, match=rf"^argument --{flag}: {value} contradicts .*config\.json, whose model "
                                             rf"has {said}; leave it out"):
            check_flags(info, **{flag: value})
        with pytest.raises(UsageError):
            load_pretrained(saved["lm"][1], **{flag: value})
    with pytest.raises(UsageError, match=r"^argument --n_ctx: 17 exceeds the 16 positions of the model in .*config"):
        check_flags(info, n_ctx=17)
    cfg = config_for(info, n_embd=32, embd_pdrop=0.0, backend="torch")  # dropouts, backend: the caller's
    assert (cfg.n_embd, cfg.embd_pdrop, cfg.attn_pdrop, cfg.backend) == (32, 0.0, 0.05, "torch")


def test_a_smaller_n_ctx_keeps_the_first_positions(saved):
    model, path = saved["classification"]
    short, info = load_pretrained(path, n_ctx=10, backend="torch")
    assert info.layout == LAYOUT.with_n_ctx(10) and short.transformer.n_ctx == 10
    full = model.transformer.embed.weight
    assert torch.equal(short.transformer.embed.weight, full[:LAYOUT.pos_offset + 10])
    x = batch("classification", layout=LAYOUT.with_n_ctx(10))
    pad = torch.stack([torch.zeros(4, 6, dtype=torch.long), LAYOUT.pos_offset + torch.arange(10, 16).expand(4, 6)], -1)
    torch.testing.assert_close(short.task_logits(x), model.task_logits(torch.cat([x, pad], 1)), atol=1e-6, rtol=0)


def test_a_language_model_from_a_fine_tuned_folder(saved):
    model, path = saved["multiple_choice"]
    lm, info = load_pretrained(path, head=False)
    assert type(lm) is LMModel and info.head is not None
    assert torch.equal(lm.transformer.embed.weight, model.transformer.embed.weight)
