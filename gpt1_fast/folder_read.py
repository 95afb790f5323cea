"""Reading every model the project meets as one `FolderInfo` (shapes, layout, head, labels,
vocabulary: `read_config`, cheap) and one state dict under our names (`read_state_dict`).

    kind         what                                                  the shapes come from
    folder       a model folder (folder_save.py)                       its config.json
    hf           a transformers openai-gpt folder (OpenAIGPTModel, -LMHeadModel or -DoubleHeadsModel;
                 a double-heads head is not read: nothing says which token it reads)   its config.json
    release      the original release's model/ (params_shapes.json + params_0..9.npy)
                                                                       params_shapes.json; n_head 12 and
                                                                       afn gelu assumed (not stated)
    checkpoint   a resume checkpoint <run>/checkpoints/step_N.pt       its fingerprint, and its run's
                 of a pretraining or a fine-tuning run                 config.json (fine-tuning)
    best_params  a fine-tuning run's best_params.pt (before model folders)   the file itself
    estimator    an estimator folder saved before model folders        its config.json
A run folder (runs/<desc>/) reads as its model/ folder, or else its best_params.pt. Every problem is
one CheckpointError naming the file and what was expected vs found. The .pt files: folder_pt.py;
the dispatch over all kinds: folder.read_config.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .config import GPTConfig
from .errors import CheckpointError
from .fileio import sha256_file
from .folder_save import CONFIG, FORMAT, RUNTIME, VERSION, VOCAB, WEIGHTS
from .hf_head import HeadSpec, from_file
from .hf_io import TransformerWeights, read_weights_file, transformer_from_hf, weights_file
from .layout import EmbeddingLayout
from .pretrained import VOCAB_FILES
from .weights import LAYER_PARAMS, read_shapes, release_weights

MODEL_KEYS = tuple(f.name for f in fields(GPTConfig) if f.name not in RUNTIME)
SHAPES = ("n_embd", "n_head", "n_layer", "afn", "n_ctx")  # what a caller's flags may contradict
KINDS = ("a model folder (config.json + model.safetensors: this project's or a transformers openai-gpt one), "
         "the original release's model/ folder (params_shapes.json + params_0.npy ... params_9.npy), a run "
         "folder holding model/, or a .pt file (checkpoints/step_N.pt, best_params.pt)")
TIED = ("lm_head.decoder.weight", "pos_emb_mask")  # the LM head is the embedding table; a constant


@dataclass
class FolderInfo:
    """What a model folder (or checkpoint) says about its model, without its weights."""
    path: Path                       # what was read
    kind: str                        # folder | hf | release | checkpoint | best_params | estimator
    source: Path                     # the file that states the shapes (named in errors)
    cfg: GPTConfig                   # shapes and dropouts (backend: the default)
    layout: EmbeddingLayout          # rows: tokens | specials | positions (n_ctx)
    head: HeadSpec | None = None     # the task head, None for a language model
    task: str | None = None
    label_names: list | None = None  # index = class id
    vocab: tuple[str, str] | None = None  # (encoder json, merges file), None: see vocab_problem
    vocab_problem: str | None = None
    options: dict = field(default_factory=dict)  # training options
    extra: dict = field(default_factory=dict)
    stated: tuple[str, ...] = SHAPES  # the shapes the source states (the release's folder: no n_head, afn)
    weights: Path | None = None       # the file with the tensors
    digest: str | None = None         # its SHA-256 as config.json records it
    state: dict | None = field(default=None, repr=False)  # tensors already read (.pt files)

    def require_vocab(self) -> tuple[str, str]:
        """The vocabulary files, or one CheckpointError saying why there are none."""
        if self.vocab is None:
            raise CheckpointError(self.vocab_problem or f"{self.path}: no vocabulary beside this model (vocab.json + "
                                  "merges.txt, or encoder_bpe_40000.json + vocab_40000.bpe): pass its files")
        return self.vocab


# ----------------------------------------------------------------------------------------- helpers
def json_object(f: Path) -> dict:
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{f}: expected a JSON object, found {type(d).__name__}")
    return d


def parse_cfg(d: dict, source, stated=SHAPES) -> GPTConfig:
    if not isinstance(d, dict):
        raise CheckpointError(f"{source}: the model's configuration is missing (expected n_embd, n_head, ...)")
    cfg = GPTConfig(**{k: d[k] for k in MODEL_KEYS if k in d})
    for k in ("n_embd", "n_head", "n_layer"):
        v = getattr(cfg, k)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise CheckpointError(f"{source}: {k} must be an integer >= 1, found {v!r}")
    if "n_head" in stated and cfg.n_embd % cfg.n_head:
        raise CheckpointError(f"{source}: n_head {cfg.n_head} does not divide n_embd {cfg.n_embd}")
    if cfg.afn not in ("gelu", "relu", "swish"):
        raise CheckpointError(f"{source}: afn {cfg.afn!r}, expected gelu, relu or swish")
    for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop", "clf_pdrop"):
        v = getattr(cfg, k)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1):
            raise CheckpointError(f"{source}: {k} must be a probability in [0, 1), found {v!r}")
    return cfg


def parse_layout(d, source) -> EmbeddingLayout:
    try:
        return EmbeddingLayout.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: the embedding layout is damaged ({type(e).__name__}: {e})") from None


def parse_head(d, source, layout=None, **kw) -> HeadSpec | None:
    """A HeadSpec from a section's dict, or from a head type and the layout's classify token."""
    try:
        if isinstance(d, dict):
            return HeadSpec.from_dict(d)
        return None if d is None else HeadSpec(d, layout.clf, **kw)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: the task head's description is damaged ({type(e).__name__}: {e})") from None


def vocab_beside(folder: Path, names=VOCAB_FILES) -> tuple[str, str] | None:
    return next(((str(folder / e), str(folder / b)) for e, b in names
                 if (folder / e).is_file() and (folder / b).is_file()), None)


# ------------------------------------------------------------------------------------------ folders
def section_fields(sec: dict, f) -> dict:
    """FolderInfo's fields from a "gpt1_fast" section (config.json's, or a checkpoint's model_config)."""
    if sec.get("format") != FORMAT or sec.get("version") != VERSION:
        raise CheckpointError(f"{f}: gpt1_fast section of format {sec.get('format')!r} version {sec.get('version')!r}; "
                              f"this code reads {FORMAT!r} version {VERSION}")
    labels = sec.get("label_names")
    if labels is not None and not isinstance(labels, list):
        raise CheckpointError(f"{f}: label_names must be a list, found {type(labels).__name__}")
    layout, head = parse_layout(sec.get("layout"), f), parse_head(sec.get("head"), f)
    clf = layout.clf if "_classify_" in layout.specials else None
    if head is not None and (clf is not None and head.clf_token != clf or not 0 <= head.clf_token < layout.pos_offset):
        raise CheckpointError(f"{f}: the head reads token {head.clf_token}, but the layout's _classify_ token is "
                              f"{clf if clf is not None else f'absent (tokens and specials are 0..{layout.pos_offset - 1})'}")
    return dict(cfg=parse_cfg(sec.get("model"), f), layout=layout, head=head, task=sec.get("task"), label_names=labels,
                options=sec.get("options") or {}, extra=sec.get("extra") or {})


def _from_section(p: Path, f: Path, d: dict, sec: dict) -> FolderInfo:
    kw = section_fields(sec, f)
    cfg, layout = kw["cfg"], kw["layout"]
    for k, want in (("vocab_size", layout.pos_offset), ("n_positions", layout.n_ctx), ("n_embd", cfg.n_embd),
                    ("n_layer", cfg.n_layer), ("n_head", cfg.n_head), ("afn", cfg.afn)):
        if d.get(k) != want:
            raise CheckpointError(f"{f}: {k} is {d.get(k)!r} but its gpt1_fast section says {want!r}")
    files = sec.get("files") or {}
    # transformers saved this folder again (its config.json says so): the weights are its, not the ones the
    # section's digest names; what the section says of the model (layout, head, labels) still holds
    digest = None if "transformers_version" in d else files.get(WEIGHTS)
    info = FolderInfo(p, "folder", f, **kw, weights=p / WEIGHTS, digest=digest)
    if not info.weights.is_file():
        raise CheckpointError(f"{info.weights}: not found (config.json describes a model whose weights are missing)")
    if all(n in files for n in VOCAB):
        info.vocab = tuple(str(p / n) for n in VOCAB)
        for n in VOCAB:
            if not (p / n).is_file() or sha256_file(p / n) != files[n]:
                info.vocab, info.vocab_problem = None, (
                    f"{p / n}: {'missing' if not (p / n).is_file() else 'changed since the model was saved'} "
                    f"(config.json records its SHA-256): the vocabulary this model was trained with is gone")
                break
    return info


def _from_hf(p: Path, f: Path, d: dict) -> FolderInfo:
    defaults = {"vocab_size": 40478, "n_positions": 512, "n_embd": 768, "n_layer": 12, "n_head": 12}
    n = {k: d.get(k, v) for k, v in defaults.items()}
    for k, v in n.items():
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise CheckpointError(f"{f}: {k} must be an integer >= 1, found {v!r}")
    afn = {"silu": "swish"}.get(d.get("afn", "gelu"), d.get("afn", "gelu"))  # transformers: swish = silu
    cfg = parse_cfg(dict(n_embd=n["n_embd"], n_head=n["n_head"], n_layer=n["n_layer"], afn=afn,
                    **{k: d[k] for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop") if k in d},
                    clf_pdrop=d.get("summary_first_dropout", 0.1)), f)
    w = weights_file(p)
    if w is None:
        raise CheckpointError(f"{p}: no model.safetensors or pytorch_model.bin beside config.json")
    return FolderInfo(p, "hf", f, cfg, EmbeddingLayout(n["vocab_size"], (), n["n_positions"]),
                      vocab=vocab_beside(p), weights=w)


def from_release(p: Path) -> FolderInfo:
    f = p / "params_shapes.json"
    shapes = read_shapes(p)
    if len(shapes[0]) != 2 or len(shapes[1]) != 2 or shapes[0][1] != shapes[1][1]:
        raise CheckpointError(f"{f}: positions {shapes[0]} and tokens {shapes[1]} must be [rows, n_embd] of one width")
    (n_ctx, c), n_vocab = shapes[0], shapes[1][0]
    cfg = parse_cfg(dict(n_embd=c, n_layer=(len(shapes) - 2) // len(LAYER_PARAMS)), f, ("n_embd", "n_layer", "n_ctx"))
    return FolderInfo(p, "release", f, cfg, EmbeddingLayout(n_vocab, (), n_ctx), vocab=vocab_beside(p),
                      stated=("n_embd", "n_layer", "n_ctx"))


def _from_estimator(p: Path, f: Path, meta: dict) -> FolderInfo:
    try:
        name, params, classes, pairs = meta["estimator"], dict(meta["params"]), meta.get("classes"), meta.get("pairs")
        # the model's shapes: its own "cfg" in the first of these folders, the estimator's keywords later
        layout, cfg = parse_layout(meta["layout"], f), parse_cfg(meta.get("cfg") or params, f)
        voc = dict(meta["vocabulary"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{f}: an estimator folder whose config.json lacks {e}") from None
    if name == "MultipleChoice":
        head_type = "multiple_choice"
    elif name == "Regressor":
        head_type = "similarity" if pairs else "regression"
    elif name in ("Classifier", "Entailment", "Similarity"):
        head_type = ("similarity" if name == "Similarity" else "classification", len(classes or ()))
    else:
        raise CheckpointError(f"{f}: unknown estimator {name!r}")
    head = parse_head(head_type, f, layout, lm_coef=params.get("lm_coef", 0.5))
    info = FolderInfo(p, "estimator", f, cfg, layout, head, label_names=classes, options=params,
                      extra={"estimator": name, "pairs": pairs}, weights=p / WEIGHTS)
    paths = (voc.get("encoder_path"), voc.get("bpe_path"))
    if all(x and Path(x).is_file() for x in paths) and [sha256_file(x) for x in paths] == list(voc.get("sha256") or ()):
        info.vocab = paths
    else:
        info.vocab_problem = (f"{f}: the vocabulary this estimator was trained with ({paths[0]}, {paths[1]}) is "
                              "missing or changed since it was saved")
    return info


def from_config_json(p: Path) -> FolderInfo | None:
    """The model whose config.json is in folder `p`; None for a fine-tuning run's own config.json."""
    f = p / CONFIG
    d = json_object(f)
    sec = d.get("gpt1_fast")
    if isinstance(sec, dict) and "format" in sec:
        return _from_section(p, f, d, sec)
    if d.get("format") == "gpt1_fast-estimator-v1":
        return _from_estimator(p, f, d)
    if d.get("model_type") == "openai-gpt" or {"n_embd", "vocab_size"} <= d.keys():
        info = _from_hf(p, f, d)
        if isinstance(sec, dict):  # a pretraining folder written before model folders: its facts
            info.extra = {k: v for k, v in sec.items() if k not in ("cfg", "layout", "vocab")}
        return info
    if {"cfg", "layout"} <= d.keys():
        return None  # a fine-tuning run's own config.json: the model is beside it
    raise CheckpointError(f"{f}: not a model's config.json (expected model_type 'openai-gpt' or a 'gpt1_fast' "
                          f"section; found the keys {sorted(d)[:8]})")


# ------------------------------------------------------------------------------------------ tensors
def _verify(info: FolderInfo) -> None:
    if info.digest is not None and sha256_file(info.weights) != info.digest:
        raise CheckpointError(f"{info.weights}: its SHA-256 differs from the one config.json records: the file was "
                              "changed or damaged after the save, or a save was interrupted; save the model again")


def read_state_dict(info: FolderInfo) -> dict[str, torch.Tensor]:
    """The tensors under our names: `transformer.*` (the embedding table whole) and, with a head,
    `task_head.linear.*`. Tied and constant tensors are left out."""
    if info.state is not None or info.kind == "estimator":  # under our names already
        sd = info.state if info.state is not None else read_weights_file(info.weights)
        return {k.replace("task_head.head.", "task_head."): v for k, v in sd.items()  # (the regressor's old wrapper)
                if k not in TIED and not k.endswith(".attn.b") and (info.head is not None or not k.startswith("task_head."))}
    if info.kind == "release":
        return {f"transformer.{k}": v for k, v in release_weights(info.path).state_dict().items()}
    _verify(info)
    raw = read_weights_file(info.weights)
    sd = {f"transformer.{k}": v for k, v in transformer_from_hf(raw, info.weights).state_dict().items()}
    if info.head is not None:
        w, b = from_file(info.head, raw, info.cfg.n_embd, info.weights)
        sd.update({"task_head.linear.weight": w, "task_head.linear.bias": b})
    return sd


def transformer_weights(info: FolderInfo) -> TransformerWeights:
    """The transformer's tensors, the embedding table split at the layout's first position."""
    sd = read_state_dict(info)
    return TransformerWeights.from_state_dict({k.removeprefix("transformer."): v for k, v in sd.items()
                                               if k.startswith("transformer.")}, info.layout.pos_offset)


