"""One model folder for everything the project saves, read back from anything it ever wrote.

    from gpt1_fast.folder import save_pretrained, load_pretrained, read_config
    save_pretrained(model, "runs/sst-2/model", layout=layout, vocab_paths=(enc, bpe), task="sst-2",
                    label_names=["0", "1"], options={"lr": 6.25e-5})
    model, info = load_pretrained("runs/sst-2/model")     # a DoubleHeadModel (an LMModel without a head)
    info = read_config("model/")                          # shapes, layout, head, labels, vocabulary; no weights
    cfg = config_for(info, n_embd=args.n_embd, ...)       # the user's flags checked against the folder
    init_from(model, "runs/books/model", layout=layout)   # fine-tuning's start: tokens, specials, positions, blocks

    python -m gpt1_fast.folder SRC DST                    # any model the project reads -> a model folder

The format (folder_save.py) is a transformers `openai-gpt` folder with the task head and the
vocabulary; `read_config` / `load_pretrained` read it and every other kind (folder_read.py): a
transformers folder of any width, the original release's `model/`, a run's resume checkpoint
`checkpoints/step_N.pt`, an old `best_params.pt` or estimator folder, a run folder (its `model/`).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from .config import GPTConfig
from .errors import CheckpointError, UsageError
from .folder_pt import read_pt
from .folder_read import (KINDS, SHAPES, TIED, FolderInfo, from_config_json, from_release, read_state_dict,
                          transformer_weights)
from .folder_save import CONFIG, WEIGHTS, export_hf, model_section, save_pretrained
from .hf_io import weights_file
from .layout import EmbeddingLayout
from .model import DoubleHeadModel, LMModel
from .weights import copy_into

__all__ = ["FolderInfo", "read_config", "save_pretrained", "export_hf", "model_section", "load_pretrained",
           "build_model", "init_from", "check_flags", "config_for", "convert"]


def read_config(path) -> FolderInfo:
    """What the model at `path` is (shapes, layout, head, labels, vocabulary), without its weights."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: not found; expected {KINDS}")
    if p.is_file() and p.name in (CONFIG, WEIGHTS):
        p = p.parent
    if p.is_file():
        return read_pt(p)
    if (p / CONFIG).is_file():
        info = from_config_json(p)
        if info is not None:
            return info
    if (p / "params_shapes.json").is_file():
        return from_release(p)
    for sub in ("model", "best_params.pt"):  # a run folder
        if (p / sub).exists():
            return read_config(p / sub)
    if weights_file(p) is not None:
        raise CheckpointError(f"{p}: {weights_file(p).name} without config.json (an interrupted save, or a "
                              "transformers folder missing its config)")
    steps = sorted((p / "checkpoints").glob("step_*.pt"))
    hint = f" (a run without its model yet? its newest checkpoint is {steps[-1]})" if steps else ""
    raise CheckpointError(f"{p}: no model here{hint}; expected {KINDS}")


# ------------------------------------------------------------------------------------ the shapes
def cli_flag(name: str) -> str:
    return f"argument --{name}"


def check_flags(info: FolderInfo, name=cli_flag, **flags) -> None:
    """One UsageError when a value the user gave (not None) contradicts the model: n_embd, n_head,
    n_layer, afn must equal what the source states (the release's folder states no n_head or afn);
    n_ctx may be smaller than its positions, not larger. `name` spells an option in the message
    (command lines: "argument --n_embd"; estimators pass `lambda n: n`)."""
    for k, v in flags.items():
        if k not in SHAPES:
            raise TypeError(f"check_flags: unknown shape {k!r}; expected one of {SHAPES}")
        if v is None or k not in info.stated:
            continue
        have = info.layout.n_ctx if k == "n_ctx" else getattr(info.cfg, k)
        if k == "n_ctx" and v > have:
            raise UsageError(f"{name(k)}: {v} exceeds the {have} positions of the model in {info.source}")
        if k != "n_ctx" and v != have:
            raise UsageError(f"{name(k)}: {v} contradicts {info.source}, whose model has {k} {have}; leave it out "
                             "(the shapes come from the model)")


def config_for(info: FolderInfo, name=cli_flag, **flags) -> GPTConfig:
    """The model's GPTConfig under the caller's flags (None: not given): the shapes (n_embd, n_head,
    n_layer, afn; n_ctx is only checked) must agree with the source, or fill what it does not state;
    dropouts, backend and activation_checkpointing are the caller's choice."""
    shapes = {k: flags.pop(k) for k in SHAPES if k in flags}
    check_flags(info, name, **shapes)
    unknown = set(flags) - {f.name for f in dataclasses.fields(GPTConfig)}
    if unknown:
        raise TypeError(f"config_for: unknown options {sorted(unknown)}")
    cfg = info.cfg.replace(**{k: v for k, v in {**shapes, **flags}.items() if v is not None and k != "n_ctx"})
    if cfg.n_embd % cfg.n_head:
        unstated = "n_head" not in info.stated
        said = f" (GPT-1's, assumed: {info.source} does not state it)" if unstated else f" of {info.source}"
        raise UsageError(f"{name('n_head')}: {cfg.n_head}{said} does not divide n_embd {cfg.n_embd}")
    return cfg


# ---------------------------------------------------------------------------------------- models
def build_model(info: FolderInfo, cfg: GPTConfig | None = None, head: bool = True, n_ctx: int | None = None):
    """An untrained model of the folder's shapes: a DoubleHeadModel when it has a head (and `head`),
    else an LMModel; `n_ctx` smaller than the folder's keeps its first positions."""
    cfg = cfg or info.cfg
    layout = info.layout if n_ctx is None else info.layout.with_n_ctx(n_ctx)
    if not (head and info.head):
        return LMModel(cfg, layout.size, layout.n_ctx)
    h = info.head
    return DoubleHeadModel(cfg, h.clf_token, h.head_type, layout.size, layout.n_ctx, lm_coef=h.lm_coef)


def _load_exact(model, sd: dict, info: FolderInfo) -> None:
    """Every tensor the model has (but tied and constant ones) from `sd`, shapes checked first."""
    file = info.weights or info.path
    own = model.state_dict()
    want = {k for k in own if k not in TIED and not k.endswith(".attn.b")}
    missing, unexpected = sorted(want - sd.keys()), sorted(sd.keys() - want)
    if missing or unexpected:
        raise CheckpointError(f"{file}: for the model {info.source} describes, tensors missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise CheckpointError(f"{file}: {k}: the model {info.source} describes expects {tuple(own[k].shape)}, "
                                  f"the file has {tuple(v.shape)}")
    model.load_state_dict(sd, strict=False)


def load_pretrained(path, *, head: bool = True, backend: str = "auto", device=None, **flags):
    """-> (model, info): the model at `path` (any kind read_config reads), weights loaded, in eval
    mode. head=False: an LMModel even when the folder has a task head (generation). flags: the
    user's shapes (n_embd, n_head, n_layer, afn, n_ctx; None = not given) checked against the
    folder (n_ctx smaller than its positions keeps the first ones), or other GPTConfig fields."""
    info = read_config(path)
    n_ctx = flags.get("n_ctx")
    cfg = config_for(info, backend=backend, **flags)
    model = build_model(info, cfg, head, n_ctx)
    sd = read_state_dict(info)
    if n_ctx is not None and n_ctx < info.layout.n_ctx:
        sd["transformer.embed.weight"] = sd["transformer.embed.weight"][:info.layout.pos_offset + n_ctx]
        info = dataclasses.replace(info, layout=info.layout.with_n_ctx(n_ctx))
    if not head:
        sd = {k: v for k, v in sd.items() if not k.startswith("task_head.")}
    _load_exact(model, sd, info)
    info.state = None  # the tensors now live in the model
    return model.to(device or "cpu").eval(), info


def init_from(model, path, *, layout: EmbeddingLayout, n_transfer: int = -2) -> FolderInfo:
    """Start `model` (fine-tuning, continued pretraining) from the transformer of any model read_config
    reads: its token rows, the specials it has under the same names (the others ~ N(0, 0.02), drawn
    as the release's code draws them), its first layout.n_ctx positions and its first `n_transfer`
    blocks (-2: all the model has; -1: none). Every shape is checked before anything is copied."""
    tr = model.transformer if hasattr(model, "transformer") else model
    info = read_config(path)
    src = info.layout
    for k, mine in (("n_embd", tr.n_embd), ("n_head", tr.h[0].attn.n_head), ("afn", tr.h[0].mlp.afn)):
        if k in info.stated and getattr(info.cfg, k) != mine:
            raise CheckpointError(f"{info.source}: {k} {getattr(info.cfg, k)}, the model being initialised has {mine}")
    if layout.n_vocab != src.n_vocab:
        raise CheckpointError(f"{info.source}: a vocabulary of {src.n_vocab} tokens; the model's layout has "
                              f"{layout.n_vocab} (a model is fine-tuned with the vocabulary it was trained with)")
    if layout.n_ctx > src.n_ctx:
        raise CheckpointError(f"{info.source}: {src.n_ctx} positions; the model needs n_ctx {layout.n_ctx}")
    tw = transformer_weights(info)
    special = torch.from_numpy((np.random.randn(layout.n_special, tr.n_embd) * 0.02).astype(np.float32))
    for i, name in enumerate(layout.specials):
        if name in src.specials:
            special[i] = tw.tokens[src.special(name)]
    embed = torch.cat([tw.tokens[:src.n_vocab], special, tw.positions[:layout.n_ctx]])
    copy_into(tr, embed, tw.layers, len(tr.h) if n_transfer == -2 else n_transfer, info.weights or info.path,
              f"{src.n_vocab} tokens + {layout.n_special} specials + {layout.n_ctx} positions")
    return info


def convert(src, dst, *, vocab_paths=None, **flags) -> Path:
    """Write the model at `src` (any kind) as a model folder `dst`; `vocab_paths` when src has none."""
    model, info = load_pretrained(src, **flags)
    return save_pretrained(model, dst, layout=info.layout, vocab_paths=vocab_paths or info.require_vocab(),
                           task=info.task, head_type=info.head.head_type if info.head else None,
                           label_names=info.label_names, options=info.options,
                           extra=dict(info.extra, converted_from=str(Path(src).resolve())))


# ---------------------------------------------------------------------------------- command line
def main(argv=None) -> Path:
    from .cli import OutFolder, Parser, add_option
    from .options import OPTIONS

    p = Parser(prog="python -m gpt1_fast.folder", description="Write a model (" + KINDS + ") as a model folder "
               "(config.json, model.safetensors, vocab.json, merges.txt) that every command and transformers read.")
    p.add_argument("src", help="the model to convert")
    p.add_argument("dst", help="the folder to write")
    for n in ("encoder_path", "bpe_path", "n_head"):  # the vocabulary when SRC has none; the release's n_head
        add_option(p, OPTIONS[n], None)
    p.add_argument("--overwrite", action="store_true", help="replace the model in DST")
    a = p.parse_args(argv)
    if (a.encoder_path is None) != (a.bpe_path is None):
        p.error("argument --encoder_path: give both --encoder_path and --bpe_path, or neither")
    try:
        OutFolder.convert(a.dst)
    except ValueError as e:
        p.error(f"argument dst: {e}")
    if (Path(a.dst) / CONFIG).exists() and not a.overwrite:
        p.error(f"argument dst: {a.dst} already holds a model (config.json): pass --overwrite or choose another folder")
    vocab = (a.encoder_path, a.bpe_path) if a.encoder_path else None
    out = convert(a.src, a.dst, vocab_paths=vocab, n_head=a.n_head)
    print(f"wrote {out}", file=sys.stderr)
    return out


def cli(argv=None) -> None:
    """Command-line entry: one `error:` line, no traceback (2: a flag, 1: a file, a folder)."""
    from .cli import run_cli

    run_cli(main, argv, "python -m gpt1_fast.folder", file_errors=(ValueError, OSError))


if __name__ == "__main__":
    cli()
