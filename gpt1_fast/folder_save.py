"""Writing a model folder: the one format every model of this project is saved in.

A folder is a Hugging Face `openai-gpt` folder that transformers loads as it is, plus this project's
facts under config.json's "gpt1_fast" key:

    config.json        transformers' keys (vocab_size = tokens + specials, n_positions = n_ctx, ...,
                       architectures: OpenAIGPTDoubleHeadsModel with a task head, else
                       OpenAIGPTLMHeadModel) and "gpt1_fast": {format, version, model (GPTConfig's
                       shapes and dropouts), layout (EmbeddingLayout), head (type, clf_token,
                       lm_coef; null without), task, label_names, files (SHA-256 of every other file),
                       options (the training options), extra (anything else the caller keeps)}
    model.safetensors  the transformer under transformers' names, the task head as
                       `multiple_choice_head.summary.*` (see hf_head.py for each family); the tied
                       LM head and the constant attention masks are not stored
    vocab.json         the BPE vocabulary, byte-identical copies of the files the model was
    merges.txt         trained with (the release's encoder_bpe_40000.json / vocab_40000.bpe)

Everything is checked and serialised before the first write; then the vocabulary, the weights and
config.json LAST are each written atomically (gpt1_fast.fileio). config.json holds the SHA-256 of
the other files, so a folder caught between two saves (new weights, old config.json: a kill in the
milliseconds between the last two renames) is refused by the reader, never read half-old/half-new.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .config import GPTConfig
from .fileio import atomic_write_bytes, atomic_write_text, interrupts_deferred, remove_stale_temporaries, sha256_file
from .hf_head import HeadSpec, hf_config, to_file
from .hf_io import TransformerWeights, safetensors_bytes, transformer_to_hf
from .layout import EmbeddingLayout

FORMAT = "gpt1_fast-model-folder"
VERSION = 1
CONFIG, WEIGHTS = "config.json", "model.safetensors"
VOCAB = ("vocab.json", "merges.txt")  # the encoder json and the merges file, under transformers' names
RUNTIME = ("backend", "activation_checkpointing")  # GPTConfig fields that are run choices, not the model's


def model_config(model) -> GPTConfig:
    """The GPTConfig a model was built with, read from its modules (backend left at its default)."""
    tr = model.transformer if hasattr(model, "transformer") else model
    if not len(tr.h):
        raise ValueError("a model without blocks cannot be saved")
    blk, inner = tr.h[0], getattr(model, "task_head", None)
    return GPTConfig(n_embd=tr.n_embd, n_head=blk.attn.n_head, n_layer=len(tr.h), embd_pdrop=tr.drop.p,
                     attn_pdrop=blk.attn.attn_dropout.p, resid_pdrop=blk.attn.resid_dropout.p, afn=blk.mlp.afn,
                     clf_pdrop=inner.dropout.p if inner is not None else GPTConfig.clf_pdrop)


def head_spec(model, head_type=None) -> HeadSpec | None:
    """The model's task head as a HeadSpec (None without one). `head_type` (as DoubleHeadModel takes it)
    names it, e.g. 'inference'; by default it is read from the head's class and size."""
    inner = getattr(model, "task_head", None)
    if inner is None:
        if head_type is not None:
            raise ValueError(f"head_type {head_type!r} given, but the model has no task head")
        return None
    n = inner.linear.out_features
    kind = type(inner).__name__
    soft = getattr(model, "soft_labels", None)  # STS-B's n classes 0..n-1, read as a score
    found = {"MultipleChoiceHead": "multiple_choice", "ClfHead": ("classification", n), "ScoreHead": "regression",
             "SimilarityHead": "similarity" if n == 1 and getattr(model, "regression", False) else
             ("similarity_soft_labels", n) if soft else ("similarity", n)}
    if kind not in found:
        raise ValueError(f"unknown task head {kind}: expected MultipleChoiceHead, ClfHead, ScoreHead or SimilarityHead")
    spec = HeadSpec(found[kind], int(inner.clf_token), float(getattr(model, "lm_coef", 0.5)))
    if head_type is not None:
        given = HeadSpec(head_type, spec.clf_token, spec.lm_coef)
        if (given.family, given.n_outputs, given.regression) != (spec.family, spec.n_outputs, spec.regression):
            raise ValueError(f"head_type {head_type!r} does not match the model's head ({kind} with {n} output(s), "
                             f"i.e. {spec.head_type!r})")
        spec = given
    return spec


def _check_layout(tr, layout: EmbeddingLayout, spec: HeadSpec | None) -> None:
    if (tr.embed.weight.shape[0], tr.n_ctx) != (layout.size, layout.n_ctx):
        raise ValueError(f"the layout ({layout.n_vocab} tokens + {layout.n_special} specials + {layout.n_ctx} "
                         f"positions = {layout.size} rows) does not fit the model's embedding table "
                         f"({tr.embed.weight.shape[0]} rows, n_ctx {tr.n_ctx})")
    if spec is not None and ("_classify_" in layout.specials and spec.clf_token != layout.clf
                             or not 0 <= spec.clf_token < layout.pos_offset):
        raise ValueError(f"the task head's classify token {spec.clf_token} is not the layout's "
                         f"_classify_ row ({layout.clf if '_classify_' in layout.specials else 'none'})")


def _json_default(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (tuple, set, frozenset, np.ndarray)):
        return list(v)
    raise TypeError(f"{type(v).__name__} {v!r} cannot be written to config.json (JSON values only)")


def _vocab_bytes(vocab_paths, layout: EmbeddingLayout) -> dict[str, bytes]:
    enc, bpe = (Path(p) for p in vocab_paths)
    for p in (enc, bpe):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: vocabulary file not found")
    data = {VOCAB[0]: enc.read_bytes(), VOCAB[1]: bpe.read_bytes()}
    try:
        n = len(json.loads(data[VOCAB[0]]))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{enc}: not a BPE vocabulary json ({e})") from None
    if n != layout.n_vocab:
        raise ValueError(f"{enc}: {n} tokens, but the layout has n_vocab {layout.n_vocab}")
    return data


def _config(model, layout, spec, section: dict) -> dict:
    tr = model.transformer if hasattr(model, "transformer") else model
    cfg = GPTConfig(**section["model"])
    double = spec is not None and spec.expressible(cfg.n_embd)
    return {"architectures": ["OpenAIGPTDoubleHeadsModel" if double else "OpenAIGPTLMHeadModel"],
            "model_type": "openai-gpt", "vocab_size": layout.pos_offset, "n_positions": layout.n_ctx,
            "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "afn": cfg.afn,
            "resid_pdrop": cfg.resid_pdrop, "embd_pdrop": cfg.embd_pdrop, "attn_pdrop": cfg.attn_pdrop,
            "layer_norm_epsilon": tr.h[0].ln_1.e, "initializer_range": 0.02,
            **hf_config(spec, cfg.n_embd, cfg.clf_pdrop), "torch_dtype": "float32", "gpt1_fast": section}


def _tensors(model, spec: HeadSpec | None) -> dict[str, torch.Tensor]:
    tr = model.transformer if hasattr(model, "transformer") else model
    sd = {k: v.detach() for k, v in tr.state_dict().items()}
    out = transformer_to_hf(TransformerWeights.from_state_dict(sd, tr.pos_offset))
    if spec is not None:
        out.update(to_file(spec, model.task_head.linear.weight, model.task_head.linear.bias))
    return out


def _section(model, layout, task, head_type, label_names, options, extra) -> tuple[dict, HeadSpec | None]:
    tr = model.transformer if hasattr(model, "transformer") else model
    spec = head_spec(model, head_type)
    _check_layout(tr, layout, spec)
    if label_names is not None and spec is not None and spec.family != "multiple_choice" and not spec.regression \
            and len(label_names) != spec.n_outputs:
        raise ValueError(f"{len(label_names)} label names for a head with {spec.n_outputs} outputs")
    cfg = model_config(model)
    return {"format": FORMAT, "version": VERSION,
            "model": {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME}, "layout": layout.to_dict(),
            "head": spec.to_dict() if spec else None, "task": task,
            "label_names": None if label_names is None else list(label_names),
            "options": dict(options or {}), "extra": dict(extra or {})}, spec


def model_section(model, *, layout: EmbeddingLayout, vocab_paths, task: str | None = None, head_type=None,
                  label_names=None, options: dict | None = None, extra: dict | None = None) -> dict:
    """The "gpt1_fast" section save_pretrained would write, with the vocabulary's absolute paths
    (`vocab_paths`) instead of the files' digests: what a resume checkpoint stores as its
    "model_config" so that it reads as a model on its own (checked JSON-serialisable)."""
    section, _ = _section(model, layout, task, head_type, label_names, options, extra)
    section["vocab_paths"] = [str(Path(p).resolve()) for p in vocab_paths]
    return json.loads(json.dumps(section, default=_json_default))


def _write(model, folder, layout, vocab_paths, task, head_type, label_names, options, extra) -> Path:
    tr = model.transformer if hasattr(model, "transformer") else model
    layout = layout or EmbeddingLayout(tr.pos_offset, (), tr.n_ctx)
    section, spec = _section(model, layout, task, head_type, label_names, options, extra)
    vocab = _vocab_bytes(vocab_paths, layout) if vocab_paths is not None else {}
    blob = safetensors_bytes(_tensors(model, spec), {"format": "pt"})
    files = {WEIGHTS: hashlib.sha256(blob).hexdigest(), **{n: hashlib.sha256(b).hexdigest() for n, b in vocab.items()}}
    section["files"] = files
    text = json.dumps(_config(model, layout, spec, section), indent=2, default=_json_default) + "\n"
    # ---- everything checked and serialised: write, config.json last, Ctrl-C held until all is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    with interrupts_deferred():
        for name, data in vocab.items():
            if not ((folder / name).is_file() and sha256_file(folder / name) == files[name]):
                atomic_write_bytes(folder / name, data)
        atomic_write_bytes(folder / WEIGHTS, blob)
        atomic_write_text(folder / CONFIG, text)
    return folder


def save_pretrained(model, folder, *, layout: EmbeddingLayout, vocab_paths, task: str | None = None,
                    head_type=None, label_names=None, options: dict | None = None, extra: dict | None = None) -> Path:
    """Write `model` (an LMModel, a TransformerModel or a DoubleHeadModel) as a model folder.

    layout: the model's EmbeddingLayout (its rows and special tokens); vocab_paths: (encoder json,
    merges file) it was trained with, copied in as vocab.json / merges.txt; task: the dataset's name;
    head_type: the head as DoubleHeadModel takes it (default: read from the head); label_names: class
    names, index = class id (JSON values); options: the training options; extra: anything else
    (JSON). The folder may exist: the model's files are replaced, other files are left alone.
    """
    return _write(model, folder, layout, vocab_paths, task, head_type, label_names, options, extra)


def export_hf(model, folder, *, layout: EmbeddingLayout | None = None, vocab_paths=None, task: str | None = None,
              head_type=None, label_names=None, options: dict | None = None, extra: dict | None = None) -> Path:
    """A folder that transformers loads with the task head (`OpenAIGPTDoubleHeadsModel`, see
    gpt1_fast.hf_head for how each family reads its logits there) and the vocabulary. It is the
    same format as save_pretrained, which it is with everything given; without a layout every token
    row counts as vocabulary, without vocab_paths no vocabulary is written."""
    return _write(model, folder, layout, vocab_paths, task, head_type, label_names, options, extra)
