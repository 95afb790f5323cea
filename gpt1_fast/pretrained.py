"""Where a run finds its pretrained checkpoint, its vocabulary and its encoding cache.

The release's `model/` folder (params_shapes.json, params_0..9.npy, encoder_bpe_40000.json,
vocab_40000.bpe) or a Hugging Face openai-gpt folder (model.safetensors, vocab.json, merges.txt).
"""
from __future__ import annotations

import os
from pathlib import Path

VOCAB_FILES = (("encoder_bpe_40000.json", "vocab_40000.bpe"), ("vocab.json", "merges.txt"))  # release, HF


def resolve_vocab(model_dir, encoder_path=None, bpe_path=None) -> tuple[str, str]:
    """Vocabulary files: the given paths, else the release's (or a HF folder's) files in model_dir."""
    if encoder_path and bpe_path:
        return str(encoder_path), str(bpe_path)
    md = Path(model_dir)
    if not any((md / e).is_file() for e, _ in VOCAB_FILES) and (md / "model").is_dir():
        md = md / "model"  # a run folder (pretrain's --out, a fine-tuning run) holds its model in model/
    enc, bpe = next(((e, b) for e, b in VOCAB_FILES if (md / e).is_file()), VOCAB_FILES[0])
    return str(encoder_path or md / enc), str(bpe_path or md / bpe)


def checkpoint_present(model_dir) -> bool:
    md = Path(model_dir)
    return ((md / "params_shapes.json").is_file() and (md / "params_0.npy").is_file()) or \
        (md / "model.safetensors").is_file() or (md / "pytorch_model.bin").is_file()


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gpt1_fast")


def resolve_cache_dir(arg: str | None) -> str | None:
    """--cache_dir: None -> the default folder; 'none' (or '') -> no cache."""
    if arg is None:
        return default_cache_dir()
    return None if arg.lower() in ("none", "") else arg


class LazyTextEncoder:
    """Reads the vocabulary now (its size, and a clear error if a file is missing) but builds the
    TextEncoder (ftfy + spaCy) only on a cache miss: with the encoded datasets cached, training runs
    on a machine without spaCy/ftfy."""

    def __init__(self, encoder_path, bpe_path):
        from .text import read_vocab

        self.paths = (str(encoder_path), str(bpe_path))
        self.n_vocab = len(read_vocab(encoder_path, bpe_path)[0])
        self._te = None

    def encode(self, texts, verbose=False):
        if self._te is None:
            from .text import TextEncoder

            self._te = TextEncoder(*self.paths)
        return self._te.encode(texts, verbose=verbose)
