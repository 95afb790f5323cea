"""Every kind of model the project meets reads as a model with its shapes taken from it: folders
transformers wrote (another width), the original release's folder, the resume checkpoints of real
pretraining and fine-tuning runs, old best_params.pt files and estimator folders, run folders; the
conversion command; and `init_from`, fine-tuning's start from any of them."""
import json
import shutil

import numpy as np
import pytest
import torch
from folder_helpers import CFG, LAYOUT, batch, make, randomize, save_legacy_best_params, write_vocab

from gpt1_fast.errors import CheckpointError, UsageError
from gpt1_fast.fileio import sha256_file
from gpt1_fast.folder import cli, export_hf, init_from, load_pretrained, read_config, save_pretrained
from gpt1_fast.layout import PAPER_SPECIALS, EmbeddingLayout
from gpt1_fast.model import DoubleHeadModel, LMModel


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return write_vocab(tmp_path_factory.mktemp("vocab"))


# ------------------------------------------------------------------------------------ transformers
@pytest.mark.parametrize("arch,serialization,afn", [
    ("OpenAIGPTModel", True, "relu"), ("OpenAIGPTLMHeadModel", True, "gelu"), ("OpenAIGPTDoubleHeadsModel", True, "silu"),
    ("OpenAIGPTLMHeadModel", False, "swish")])
def test_a_folder_transformers_wrote_of_another_width(tmp_path, arch, serialization, afn):
    transformers = pytest.importorskip("transformers")
    config = transformers.OpenAIGPTConfig(vocab_size=50, n_positions=20, n_embd=48, n_layer=3, n_head=6, afn=afn)
    torch.manual_seed(0)
    hf = randomize(getattr(transformers, arch)(config)).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=serialization)
    model, info = load_pretrained(tmp_path / "hf", backend="torch")
    assert type(model) is LMModel and info.kind == "hf" and info.head is None
    assert (info.cfg.n_embd, info.cfg.n_head, info.cfg.n_layer, info.cfg.afn) == (48, 6, 3, afn.replace("silu", "swish"))
    assert info.layout == EmbeddingLayout(50, (), 20)
    ids = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = hf if arch == "OpenAIGPTModel" else hf.transformer
        torch.testing.assert_close(model.transformer(input_ids=ids), base(input_ids=ids).last_hidden_state,
                                   atol=1e-5, rtol=0)
    with pytest.raises(UsageError, match=r"argument --n_embd: 768 contradicts .*hf/config\.json, whose model has "
                                         r"n_embd 48"):
        load_pretrained(tmp_path / "hf", n_embd=768)


# ----------------------------------------------------------------------------------------- release
def test_the_original_release_folder(tmp_path):
    from test_weights import small_shapes, write_release

    arrays = write_release(tmp_path / "model", small_shapes())  # n_embd 16, 50 tokens, 20 positions, 2 blocks
    with pytest.raises(UsageError, match=r"argument --n_head: 12 \(GPT-1's, assumed: .*params_shapes\.json does not "
                                         r"state it\) does not divide n_embd 16"):
        load_pretrained(tmp_path / "model")
    with pytest.raises(UsageError, match=r"argument --n_layer: 12 contradicts .*params_shapes\.json, whose model has "
                                         r"n_layer 2"):
        load_pretrained(tmp_path / "model", n_layer=12, n_head=2)
    model, info = load_pretrained(tmp_path / "model", n_head=2)
    assert info.kind == "release" and info.stated == ("n_embd", "n_layer", "n_ctx") and info.vocab is None
    w = model.transformer.embed.weight.detach().numpy()
    np.testing.assert_array_equal(w[:50], arrays[1])
    np.testing.assert_array_equal(w[50:], arrays[0])
    np.testing.assert_array_equal(model.transformer.h[1].mlp.c_fc.w.detach().numpy(), arrays[2 + 12 + 6][0])


# ------------------------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    pytest.importorskip("spacy")
    import pretrain_helpers as h

    from gpt1_fast import pretrain

    d = tmp_path_factory.mktemp("pretrain")
    corpus = h.write_corpus(d / "corpus", n_docs=60)
    enc, bpe = h.learn_vocab(corpus, d / "vocab")
    pretrain.main(["--data", str(corpus / "texts"), str(corpus / "more.jsonl"), "--out", str(d / "run"),
                   "--encoder_path", enc, "--bpe_path", bpe, "--val_fraction", "0.1", "--workers", "1", *h.TINY,
                   "--max_steps", "4", "--save_every", "2"])
    return d / "run", (enc, bpe)


def test_a_pretraining_checkpoint_reads_as_its_model(pretrained_run, tmp_path):
    run, (enc, bpe) = pretrained_run
    ckpts = sorted((run / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in ckpts] == ["step_000000002.pt", "step_000000004.pt"]
    info = read_config(ckpts[0])
    n_vocab = len(json.loads(open(enc).read()))
    assert (info.kind, info.layout, info.head, info.extra["step"]) == ("checkpoint", EmbeddingLayout(n_vocab, (), 16),
                                                                       None, 2)
    assert (info.cfg.n_embd, info.cfg.n_head, info.cfg.n_layer) == (32, 2, 1)
    assert info.vocab is not None and sha256_file(info.vocab[0]) == sha256_file(enc)
    at2, _ = load_pretrained(ckpts[0])
    saved = torch.load(ckpts[0], weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in at2.state_dict().items())
    last, _ = load_pretrained(ckpts[1])
    final, final_info = load_pretrained(run)  # the folder the run wrote at its end: the last checkpoint's model
    assert same_weights(last, final) and not same_weights(at2, final) and final_info.extra["steps"] == 4


def test_a_pretraining_checkpoint_finds_its_vocabulary_by_digest(pretrained_run, tmp_path):
    run, (enc, bpe) = pretrained_run
    copy = shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("vocab.json", "merges.txt", "data"))
    ckpt = copy / "checkpoints" / "step_000000002.pt"
    assert read_config(ckpt).vocab == (enc, bpe)  # the checkpoint's own description names it
    blob = torch.load(ckpt, weights_only=True)
    del blob["model_config"]  # a checkpoint of an earlier version: the run's log and fingerprint tell
    torch.save(blob, ckpt)
    info = read_config(ckpt)
    assert info.vocab == (enc, bpe)  # where the log's arguments point
    other = write_vocab(tmp_path / "other")
    log = (copy / "log.jsonl").read_text().splitlines()
    head = json.loads(log[0])
    head["args"].update(encoder_path=str(other[0]), bpe_path=str(other[1]))
    (copy / "log.jsonl").write_text("\n".join([json.dumps(head), *log[1:]]) + "\n")
    info = read_config(copy / "checkpoints" / "step_000000002.pt")
    assert info.vocab is None
    with pytest.raises(CheckpointError, match=r"step_000000002\.pt: the vocabulary it was trained with was not "
                                              r"found \(tried: .*encoder\.json \+ .*merges\.bpe \(other contents\)\)"):
        info.require_vocab()


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory):
    pytest.importorskip("spacy")
    from fixtures_tasks import story_cloze_with_vocab
    from gpt1_fast import train

    d = tmp_path_factory.mktemp("finetune")
    story_cloze_with_vocab(d, n=60, n_test=10, seed=7, merges=200)
    train.main(["--data_dir", str(d / "data"), "--from_scratch", "--encoder_path", str(d / "enc.json"), "--bpe_path",
                str(d / "merges.bpe"), "--cache_dir", "none", "--n_valid", "20", "--runs_dir", str(d / "runs"),
                "--desc", "ft", "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--device", "cpu", "--backend",
                "torch", "--n_batch", "8", "--n_iter", "1", "--save_every", "2"])
    return d / "runs" / "ft"


def test_a_fine_tuning_checkpoint_reads_with_its_run_config(finetune_run, tmp_path):
    ckpt = sorted((finetune_run / "checkpoints").glob("step_*.pt"))[-1]
    info = read_config(ckpt)
    assert (info.kind, info.task, info.source) == ("checkpoint", "rocstories", ckpt)  # its own description
    assert info.head.head_type == "multiple_choice" and info.head.clf_token == info.layout.clf
    assert info.layout.specials == PAPER_SPECIALS and info.vocab is not None
    model, _ = load_pretrained(ckpt)
    saved = torch.load(ckpt, weights_only=True)["model"]
    assert type(model) is DoubleHeadModel and all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    best = read_config(finetune_run)  # the run folder: the best model it keeps
    assert best.kind in ("folder", "best_params") and best.head == info.head and best.layout == info.layout
    bare = shutil.copytree(finetune_run, tmp_path / "bare", ignore=shutil.ignore_patterns("model", "best_params.pt"))
    with pytest.raises(CheckpointError, match=rf"bare: no model here \(a run without its model yet\? its newest "
                                              rf"checkpoint is .*{ckpt.name}\)"):
        read_config(bare)
    lone = tmp_path / "elsewhere" / "checkpoints"
    lone.mkdir(parents=True)
    shutil.copy(ckpt, lone)
    assert read_config(lone / ckpt.name).head == info.head  # a checkpoint describes its model itself
    blob = torch.load(lone / ckpt.name, weights_only=True)
    del blob["model_config"]  # one of an earlier version needs its run's config.json
    torch.save(blob, lone / ckpt.name)
    with pytest.raises(CheckpointError, match=r"a fine-tuning checkpoint; its run's config\.json \(expected at .*"
                                              r"elsewhere/config\.json\) holds the layout and the head, and is missing"):
        read_config(lone / ckpt.name)


# ------------------------------------------------------------------------------------ old formats
def test_an_old_best_params_loads_and_converts(tmp_path, vocab, capsys):
    model = make("classification").eval()
    meta = dict(cfg=CFG.to_dict(), layout=LAYOUT.to_dict(), task="sst-2", head_type=("classification", 3),
                label_names=("a", "b", "c"), encoder_path=str(vocab[0]), bpe_path=str(vocab[1]), n_updates=7,
                score=80.5)
    (tmp_path / "run").mkdir()
    save_legacy_best_params(tmp_path / "run" / "best_params.pt", model.state_dict(), meta)
    loaded, info = load_pretrained(tmp_path / "run")  # a run folder: its best_params.pt
    assert info.kind == "best_params" and same_weights(loaded, model)
    assert (info.task, info.label_names, info.extra) == ("sst-2", ["a", "b", "c"], {"n_updates": 7, "score": 80.5})
    cli([str(tmp_path / "run" / "best_params.pt"), str(tmp_path / "model")])
    capsys.readouterr()
    converted, cinfo = load_pretrained(tmp_path / "model")
    assert cinfo.kind == "folder" and same_weights(converted, model) and cinfo.label_names == ["a", "b", "c"]
    with pytest.raises(SystemExit) as e:  # the folder holds a model now
        cli([str(tmp_path / "run" / "best_params.pt"), str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "already holds a model (config.json): pass --overwrite" in err
    with pytest.raises(SystemExit) as e:
        cli([str(tmp_path / "nope.pt"), str(tmp_path / "m2")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and err.startswith("error: ") and "nope.pt: not found" in err
    assert not (tmp_path / "m2").exists()
    lm_only = dict(meta, head_type=None)  # written without a head type: its language model
    save_legacy_best_params(tmp_path / "lm.pt", model.state_dict(), lm_only)
    lm, _ = load_pretrained(tmp_path / "lm.pt")
    assert type(lm) is LMModel and torch.equal(lm.transformer.embed.weight, model.transformer.embed.weight)


@pytest.mark.parametrize("first", [True, False])  # the first estimator folders, or those of the option schema
@pytest.mark.parametrize("estimator,family,classes", [("Classifier", "classification", ["a", "b", "c"]),
                                                      ("Regressor", "regression", None)])
def test_an_estimator_folder_of_the_format_before(tmp_path, vocab, estimator, family, classes, first):
    from safetensors.torch import save_file

    model = make(family).eval()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()
          if k != "lm_head.decoder.weight" and not k.endswith(".attn.b")}
    params = {"lm_coef": 0.25, "n_iter": 2}
    if first:  # the model's config on its own; the regressor's head inside a wrapper
        sd = {k.replace("task_head.", "task_head.head.") if estimator == "Regressor" else k: v for k, v in sd.items()}
        extra = {"cfg": CFG.to_dict()}
    else:  # the shapes among the keywords
        params.update({k: v for k, v in CFG.to_dict().items() if k not in ("backend", "activation_checkpointing")})
        extra = {}
    (tmp_path / "est").mkdir()
    save_file(sd, str(tmp_path / "est" / "model.safetensors"))
    meta = {"format": "gpt1_fast-estimator-v1", "estimator": estimator, "params": params, "layout": LAYOUT.to_dict(),
            "classes": classes, "pairs": False if classes is None else None, **extra,
            "vocabulary": {"encoder_path": str(vocab[0]), "bpe_path": str(vocab[1]),
                           "sha256": [sha256_file(p) for p in vocab]}}
    (tmp_path / "est" / "config.json").write_text(json.dumps(meta))
    loaded, info = load_pretrained(tmp_path / "est", backend="torch")  # the backend CFG runs: equal bits
    assert info.kind == "estimator" and same_weights(loaded, model) and info.vocab == tuple(map(str, vocab))
    assert info.head.head_type == ("regression" if estimator == "Regressor" else ("classification", 3))
    assert info.options["n_iter"] == 2 and info.label_names == classes
    x = batch(family)
    assert torch.equal(loaded.task_logits(x), model.task_logits(x))


def test_a_run_folder_and_an_old_pretraining_folder(tmp_path, vocab):
    model = make("lm")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"cfg": {}, "layout": {}, "args": {}}))
    save_pretrained(model, tmp_path / "run" / "model", layout=LAYOUT, vocab_paths=vocab)
    assert read_config(tmp_path / "run").path == tmp_path / "run" / "model"
    export_hf(model, tmp_path / "old", layout=LAYOUT, vocab_paths=vocab)  # then the section pretraining wrote
    d = json.loads((tmp_path / "old" / "config.json").read_text())
    d["gpt1_fast"] = {"cfg": CFG.to_dict(), "layout": LAYOUT.to_dict(), "vocab": ["vocab.json", "merges.txt"],
                      "steps": 30}
    (tmp_path / "old" / "config.json").write_text(json.dumps(d))
    loaded, info = load_pretrained(tmp_path / "old")
    assert (info.kind, info.extra) == ("hf", {"steps": 30}) and same_weights(loaded, model)


# ---------------------------------------------------------------------------------------- init_from
def test_init_from_takes_tokens_named_specials_first_positions_and_blocks(tmp_path, vocab):
    plain = EmbeddingLayout(LAYOUT.n_vocab, (), 16)  # a pretrained model: no specials
    src = make("lm", seed=3, layout=plain)
    save_pretrained(src, tmp_path / "lm", layout=plain, vocab_paths=vocab)
    short = EmbeddingLayout(LAYOUT.n_vocab, PAPER_SPECIALS, 8)
    target = DoubleHeadModel(CFG, short.clf, "multiple_choice", short.size, short.n_ctx)
    np.random.seed(4)
    init_from(target, tmp_path / "lm", layout=short)
    np.random.seed(4)
    drawn = torch.from_numpy((np.random.randn(3, 32) * 0.02).astype(np.float32))
    w, s = target.transformer.embed.weight, src.transformer.embed.weight
    assert torch.equal(w[:40], s[:40]) and torch.equal(w[40:43], drawn) and torch.equal(w[43:], s[40:48])
    assert torch.equal(target.transformer.h[1].mlp.c_proj.w, src.transformer.h[1].mlp.c_proj.w)
    tuned = make("classification", seed=5)  # a fine-tuned model: its specials are copied by name
    save_pretrained(tuned, tmp_path / "ft", layout=LAYOUT, vocab_paths=vocab)
    swapped = EmbeddingLayout(LAYOUT.n_vocab, ("_classify_", "_start_", "_new_"), 8)
    fresh = LMModel(CFG, swapped.size, swapped.n_ctx)
    before = fresh.transformer.h[1].ln_1.g.clone()
    init_from(fresh, tmp_path / "ft", layout=swapped, n_transfer=1)
    t = tuned.transformer.embed.weight
    assert torch.equal(fresh.transformer.embed.weight[40], t[LAYOUT.clf])
    assert torch.equal(fresh.transformer.embed.weight[41], t[LAYOUT.start])
    assert torch.equal(fresh.transformer.h[1].ln_1.g, before)  # n_transfer=1: the second block untouched


def test_init_from_equals_the_seed_loader_on_the_release(tmp_path):
    from test_weights import small_cfg, small_shapes, write_release

    from gpt1_fast.weights import load_openai_pretrained_model

    write_release(tmp_path / "model", small_shapes())
    layout = EmbeddingLayout(50, PAPER_SPECIALS, 8)
    a, b = (DoubleHeadModel(small_cfg(), layout.clf, "multiple_choice", layout.size, layout.n_ctx) for _ in range(2))
    np.random.seed(9)
    load_openai_pretrained_model(a.transformer, n_ctx=8, n_special=3, n_embd=16, path=tmp_path / "model")
    np.random.seed(9)
    init_from(b, tmp_path / "model", layout=layout)
    assert all(torch.equal(v, b.transformer.state_dict()[k]) for k, v in a.transformer.state_dict().items())


@pytest.mark.parametrize("layout,cfg,match", [
    (EmbeddingLayout(41, PAPER_SPECIALS, 8), CFG, r"a vocabulary of 40 tokens; the model's layout has 41"),
    (EmbeddingLayout(40, PAPER_SPECIALS, 17), CFG, r"16 positions; the model needs n_ctx 17"),
    (EmbeddingLayout(40, PAPER_SPECIALS, 8), CFG.replace(n_embd=64), r"n_embd 32, the model being initialised has 64"),
    (EmbeddingLayout(40, PAPER_SPECIALS, 8), CFG.replace(afn="relu"), r"afn gelu, the model being initialised has relu"),
])
def test_init_from_refuses_what_does_not_fit_and_copies_nothing(tmp_path, vocab, layout, cfg, match):
    save_pretrained(make("lm"), tmp_path / "lm", layout=LAYOUT, vocab_paths=vocab)
    target = LMModel(cfg, layout.size, layout.n_ctx)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=match):
        init_from(target, tmp_path / "lm", layout=layout)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_a_checkpoint_that_carries_its_model_section(tmp_path, vocab):
    """What a run stores in its resume checkpoints (folder.model_section) makes one readable alone."""
    from gpt1_fast.corpus import vocab_digest
    from gpt1_fast.folder import model_section
    from gpt1_fast.resume import CheckpointDir

    model = make("similarity", seed=6)
    section = model_section(model, layout=LAYOUT, vocab_paths=vocab, task="qqp", label_names=["0", "1"],
                            options={"lr": 1e-4})
    path = CheckpointDir(tmp_path / "anywhere").save(3, {"model": model.state_dict(), "model_config": section},
                                                     {"vocab_digest": vocab_digest(*vocab), "lr": 1e-4})
    loaded, info = load_pretrained(path)
    assert (info.kind, info.task, info.label_names, info.head.head_type) == ("checkpoint", "qqp", ["0", "1"],
                                                                             ("similarity", 2))
    assert same_weights(loaded, model) and info.vocab == tuple(str(p.resolve()) for p in vocab)
