"""What every task shares: encoded splits, batches padded to their own longest sequence, the
metric scale (SPEC §6, §8). The encoding cache is tasks.cache."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PAD_MULTIPLE = 8  # "batch" padding rounds T up to a multiple of this
PADDINGS = ("batch", "pow2", "global")


@dataclass
class Encoded:
    """A split after its task's input transform: S token sequences per example (specials included),
    zero-padded to one width. Positions are added per batch (they depend only on the layout)."""
    tokens: np.ndarray          # int32 [N, S, width]
    lengths: np.ndarray         # int64 [N, S], real tokens of each sequence
    labels: np.ndarray | None   # int64 class ids, float32 scores (regression), None: unlabelled
    ids: list[str]              # the row ids a submission writes

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_sequences(cls, seqs: list[list[list[int]]], labels, ids, width: int) -> "Encoded":
        n, s = len(seqs), len(seqs[0]) if seqs else 0
        tokens = np.zeros((n, s, width), dtype=np.int32)
        lengths = np.zeros((n, s), dtype=np.int64)
        for i, example in enumerate(seqs):
            for j, seq in enumerate(example):
                if len(seq) > width:
                    raise ValueError(f"example {i} needs {len(seq)} positions, more than n_ctx {width}")
                tokens[i, j, :len(seq)] = seq
                lengths[i, j] = len(seq)
        return cls(tokens, lengths, None if labels is None else np.asarray(labels), list(ids))


def longest(seqs: list[list[list[int]]]) -> int:
    return max((len(s) for example in seqs for s in example), default=1)


def batch_width(lengths: np.ndarray, n_ctx: int, padding: str = "batch") -> int:
    """T of a batch: its longest sequence rounded up to a multiple of PAD_MULTIPLE ("batch") or to a
    power of two from PAD_MULTIPLE up ("pow2": at most 7 widths for n_ctx 512, so torch.compile
    builds a few static graphs), capped at n_ctx; or n_ctx itself ("global"). Exact whichever: attention is causal,
    the head reads the classify token's position and the LM loss is masked, so nothing before a
    sequence's end sees the padding after it."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if padding == "global":
        return n_ctx
    t = int(lengths.max())
    if padding == "pow2":
        t = max(PAD_MULTIPLE, 1 << (t - 1).bit_length())  # 8, 16, ..., 256, then n_ctx
    else:
        t = -(-t // PAD_MULTIPLE) * PAD_MULTIPLE
    return min(n_ctx, t)


def make_batch(enc: Encoded, idx, layout, device, padding: str = "batch"):
    """Examples `idx` of a split -> X [B, S, T, 2] int64 (tokens, positions), M [B, S, T] float32
    (1 on real tokens), Y [B] (None when unlabelled), on `device`."""
    idx = np.asarray(idx)
    lengths = enc.lengths[idx]
    T = batch_width(lengths, layout.n_ctx, padding)
    tok = torch.from_numpy(enc.tokens[idx, :, :T].astype(np.int64))
    X = torch.empty(tok.shape + (2,), dtype=torch.int64)
    X[..., 0] = tok
    X[..., 1] = torch.arange(layout.pos_offset, layout.pos_offset + T)
    M = (torch.arange(T) < torch.from_numpy(lengths)[..., None]).float()
    Y = None if enc.labels is None else torch.from_numpy(enc.labels[idx])
    return X.to(device), M.to(device), (None if Y is None else Y.to(device))


# ------------------------------------------------------------------------------------ metrics
METRIC_KEYS = {"accuracy": "acc", "f1": "f1", "mcc": "mcc", "pearson": "pearson", "spearman": "spearman"}
METRIC_TITLES = {"accuracy": "Accuracy", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman"}


def compute_metrics(names, y_true, y_pred) -> dict[str, float]:
    """The task's metrics in percent (as the paper reports them), by metric name (tasks.metrics)."""
    from .metrics import compute

    return compute(tuple(names), np.asarray(y_true), np.asarray(y_pred))


# ------------------------------------------------------------------------------------- text fields
def flat_texts(fields: dict[str, list], names) -> dict[str, list[str]]:
    """The text fields among `names` as flat lists of strings: multiple choice's answer lists joined
    (regroup_choices undoes it after encoding)."""
    texts = {k: fields[k] for k in names if k in fields and k != "choices"}
    if "choices" in fields:
        texts["choices"] = [a for answers in fields["choices"] for a in answers]
    return texts


def regroup_choices(ids: dict[str, list], fields: dict[str, list]) -> dict[str, list]:
    """Encoded flat texts (flat_texts) -> the same, each example's answers as one list again."""
    if "choices" in fields:
        flat, grouped, i = ids["choices"], [], 0
        for answers in fields["choices"]:
            grouped.append(flat[i:i + len(answers)])
            i += len(answers)
        ids = dict(ids, choices=grouped)
    return ids
