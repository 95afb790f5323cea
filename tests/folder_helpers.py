"""Shared by test_folder.py and test_folder_kinds.py: tiny models of every head family with every
parameter random (so a swapped, transposed or mis-scaled tensor changes the outputs), their inputs
in this package's packed form and in transformers' form, and a small vocabulary's two files."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from gpt1_fast.config import GPTConfig
from gpt1_fast.layout import EmbeddingLayout
from gpt1_fast.model import DoubleHeadModel, LMModel

N_VOCAB, N_CTX, N_EMBD = 40, 16, 32
LAYOUT = EmbeddingLayout(N_VOCAB, n_ctx=N_CTX)  # the paper's three specials
CFG = GPTConfig(n_embd=N_EMBD, n_head=4, n_layer=2, embd_pdrop=0.1, attn_pdrop=0.05, resid_pdrop=0.15,
                clf_pdrop=0.2, backend="torch")
# family -> (head_type as DoubleHeadModel takes it, label names)
FAMILIES = {
    "lm": (None, None),
    "multiple_choice": ("multiple_choice", None),
    "classification": (("classification", 3), ["neg", "neutral", "pos"]),
    "inference": ("inference", ["entailment", "contradiction", "neutral"]),
    "similarity": (("similarity", 2), ["0", "1"]),
    "regression_pairs": ("similarity", None),
    "regression": ("regression", None),
    "one_class": (("classification", 1), None),
    "wide": (("classification", N_EMBD + 5), None),  # more classes than the width: no transformers head
}


def write_vocab(folder: Path, n_vocab: int = N_VOCAB) -> tuple[Path, Path]:
    """An encoder json of n_vocab tokens and a merges file (only their bytes matter here)."""
    folder.mkdir(parents=True, exist_ok=True)
    enc, bpe = folder / "encoder.json", folder / "merges.bpe"
    enc.write_text(json.dumps({f"tok{i}</w>": i for i in range(n_vocab)}, indent=1), encoding="utf-8")
    bpe.write_text("#version: 0.2\nt o\nto k\n", encoding="utf-8")
    return enc, bpe


def randomize(model, seed: int = 0):
    """Every parameter random: weights ~ N(0, 0.3), gains ~ 1 + N(0, 0.3), biases nonzero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if name.endswith(".g") else 0.0))
    return model


def make(family: str, seed: int = 0, cfg: GPTConfig = CFG, layout: EmbeddingLayout = LAYOUT):
    head_type, _ = FAMILIES[family]
    if head_type is None:
        return randomize(LMModel(cfg, layout.size, layout.n_ctx), seed)
    return randomize(DoubleHeadModel(cfg, layout.clf, head_type, layout.size, layout.n_ctx, lm_coef=0.25), seed)


def choices(family: str) -> int | None:
    """Sequences per example: k answers (multiple choice), both orders (similarity), None: one."""
    head_type = FAMILIES[family][0]
    if head_type == "multiple_choice":
        return 3
    if head_type == "similarity" or (isinstance(head_type, tuple) and head_type[0] == "similarity"):
        return 2
    return None


def batch(family: str, n: int = 4, seed: int = 1, layout: EmbeddingLayout = LAYOUT) -> torch.Tensor:
    """Packed input [n, (k,) T, 2]: `start tokens... classify` then padding (token 0), positions."""
    g = torch.Generator().manual_seed(seed)
    k = choices(family)
    shape = (n, k) if k else (n,)
    T = layout.n_ctx
    tokens = torch.zeros(*shape, T, dtype=torch.long)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in shape]).view(-1, len(shape)):
        length = int(torch.randint(3, T - 1, (1,), generator=g))
        seq = torch.randint(0, layout.n_vocab, (length,), generator=g)
        seq[0], seq[-1] = layout.start, layout.clf
        tokens[tuple(idx)][:length] = seq
    positions = layout.pos_offset + torch.arange(T).expand(*shape, T)
    return torch.stack([tokens, positions], -1)


def hf_inputs(x: torch.Tensor, clf: int) -> dict:
    """transformers' inputs for the same sequences: ids and the classify token's index."""
    ids = x[..., 0]
    return {"input_ids": ids, "mc_token_ids": (ids == clf).int().argmax(-1)}
