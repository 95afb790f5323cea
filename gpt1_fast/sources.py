"""Where an entry point's model comes from, written once for train, pretrain (--init_from), generate,
predict and the estimators.

A model path (any kind gpt1_fast.folder reads: a model folder of this project or of transformers, the
release's model/, a run folder, a checkpoint file) states its shapes, positions and vocabulary: the
shape options (n_embd, n_head, n_layer, afn; None = not given) are checked against it (a contradiction
is one error naming both), n_ctx may ask for fewer positions. From scratch, the shapes are the
options', GPT-1's where not given, and the vocabulary the option's files or those beside model_dir.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from .config import GPTConfig
from .errors import CheckpointError, UsageError
from .folder import config_for, read_config
from .folder_read import FolderInfo
from .pretrained import resolve_vocab

SHAPE_OPTIONS = ("n_embd", "n_head", "n_layer", "afn")
MAX_N_CTX = 512  # the release's positions: the default context cap


@dataclass
class Source:
    info: FolderInfo | None   # what the model path says (None: from scratch)
    cfg: GPTConfig            # the model's configuration (shapes, dropouts, backend)
    vocab: tuple[str, str]    # (encoder json, merges file)
    n_ctx: int                # the context cap: the option's, else 512 or the model's positions if fewer


def _run_options(args) -> dict:
    """The GPTConfig fields the options set that are not shapes (dropouts, backend, checkpointing)."""
    names = {f.name for f in fields(GPTConfig)} - set(SHAPE_OPTIONS)
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def scratch_config(args, name=lambda n: f"argument --{n}") -> GPTConfig:
    """GPT-1's configuration under the options given (a random model of these shapes)."""
    cfg = GPTConfig(**{k: v for k in SHAPE_OPTIONS if (v := getattr(args, k, None)) is not None},
                    **_run_options(args))
    if cfg.n_embd % cfg.n_head:
        raise UsageError(f"{name('n_head')}: {cfg.n_head} does not divide {name('n_embd').split()[-1]} {cfg.n_embd}")
    return cfg


def model_source(args, path=None, scratch: bool | None = None, name=lambda n: f"argument --{n}") -> Source:
    """The model of `path` (default args.model_dir) under the options, or from scratch (default
    args.from_scratch). `name` spells an option in errors (estimators: `lambda n: n`)."""
    scratch = getattr(args, "from_scratch", False) if scratch is None else scratch
    path = path if path is not None else args.model_dir
    given = (getattr(args, "encoder_path", None), getattr(args, "bpe_path", None))
    n_ctx = getattr(args, "n_ctx", None)
    if scratch:
        vocab = resolve_vocab(path, *given)
        return Source(None, scratch_config(args, name), vocab, n_ctx or MAX_N_CTX)
    info = _read(path, name)
    shapes = {k: getattr(args, k, None) for k in SHAPE_OPTIONS}
    cfg = config_for(info, name, **shapes, n_ctx=n_ctx, **_run_options(args))
    if all(given):
        vocab = given
    else:
        own = info.require_vocab()
        vocab = (given[0] or own[0], given[1] or own[1])
    return Source(info, cfg, tuple(map(str, vocab)), n_ctx or min(MAX_N_CTX, info.layout.n_ctx))


def _read(path, name):
    """read_config, with the way out where there is no model at all: where to get one, or from scratch."""
    from pathlib import Path

    try:
        return read_config(path)
    except CheckpointError as e:
        if Path(path).is_file() or Path(path).is_dir() and any(Path(path).iterdir()):
            raise
        flag = name("model_dir").removeprefix("argument ")
        raise CheckpointError(f"{e}. Point {flag} at a model, e.g. the original release's model/ folder from "
                              f"https://github.com/openai/finetune-transformer-lm, or pass "
                              f"{name('from_scratch').removeprefix('argument ')} for a random initialisation") from None


def transferred_blocks(n_transfer: int, n_layer: int) -> int:
    """--n_transfer as gpt1_fast.folder.init_from takes it: at most the model's blocks; -1 none."""
    return -1 if n_transfer == -1 else min(n_transfer, n_layer)
