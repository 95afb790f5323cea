"""A task whose examples come from memory (the estimators of gpt1_fast.api) instead of dataset files.

Everything else is the task layer's: the family's input transform, the head, the metrics, the
predictions. `encode(fields, labels)` turns Python lists of texts into an `Encoded` split on a layout;
`data(splits)` fits the layout's n_ctx to the longest example (as the file-based tasks do).
"""
from __future__ import annotations

import numpy as np

from ..layout import EmbeddingLayout
from .common import Encoded, flat_texts, longest, regroup_choices
from .task import UNCAPPED, FAMILIES, Task, TaskData


class InMemoryTask(Task):
    def __init__(self, name: str, family: str, head_type, metrics: tuple[str, ...], label_names=None,
                 has_valid: bool = False):
        self.name, self.family, self.head_type = name, family, head_type
        self.module = FAMILIES[family]
        self.metrics, self.label_names = tuple(metrics), label_names
        self.eval_splits, self.test_splits = (("valid",) if has_valid else ()), ()
        if head_type in ("similarity", "regression"):
            self.score_range = (-np.inf, np.inf)  # predictions: the score itself, unclipped

    @property
    def display(self) -> str:
        return self.name

    def tokenize(self, fields: dict[str, list], text_encoder) -> dict[str, list]:
        return tokenize(fields, text_encoder)

    def encode(self, fields: dict[str, list], labels, text_encoder, layout: EmbeddingLayout,
               cap: int) -> tuple[Encoded, int]:
        """New examples for a model fitted on `layout` (n_ctx fitted to its training data under the
        context cap `cap`): transformed as in training (the cap's cutting rule); an example that
        still needs more positions than the model has is cut to fit them (the family's rule on the
        layout's n_ctx). -> (the split, how many examples were cut)."""
        ids = self.tokenize(fields, text_encoder)
        n = len(next(iter(ids.values())))
        return encode_new(self, ids, labels, [str(i) for i in range(n)], layout, cap)

    def data(self, splits: dict[str, tuple[dict, np.ndarray | None]], text_encoder, cap: EmbeddingLayout) -> TaskData:
        """Splits {name: (fields, labels)} encoded under the cap, n_ctx fitted to the longest example."""
        ids = {k: self.tokenize(fields, text_encoder) for k, (fields, _) in splits.items()}
        seqs = {k: self.transform(v, cap) for k, v in ids.items()}
        n_fit = max(longest(s) for s in seqs.values())
        enc = {k: Encoded.from_sequences(s, splits[k][1], [str(i) for i in range(len(s))], n_fit)
               for k, s in seqs.items()}
        return TaskData(cap.with_n_ctx(n_fit), enc)


def tokenize(fields: dict[str, list], text_encoder) -> dict[str, list]:
    """Every text field through the BPE (multiple choice's answer lists flattened, then regrouped)."""
    texts = flat_texts(fields, fields)
    return regroup_choices({k: text_encoder.encode(v) for k, v in texts.items()}, fields)


def encode_new(task, ids: dict[str, list], labels, row_ids, layout: EmbeddingLayout, cap: int) -> tuple[Encoded, int]:
    """Examples a model fitted on `layout` has not seen (its n_ctx fitted to its training data under the
    context cap `cap`): transformed as in training (the cap's cutting rule); an example that still needs
    more positions than the model has is cut to fit them (the family's rule on the layout's n_ctx).
    -> (the split, how many examples were cut)."""
    seqs = task.transform(ids, layout.with_n_ctx(cap))
    long = [i for i, example in enumerate(seqs) if max(map(len, example)) > layout.n_ctx]
    if long:
        again = task.transform({k: [v[i] for i in long] for k, v in ids.items()}, layout)
        for i, example in zip(long, again):
            seqs[i] = example
    n_cut = sum(a != b for a, b in zip(seqs, task.transform(ids, layout.with_n_ctx(UNCAPPED))))
    return Encoded.from_sequences(seqs, labels, row_ids, layout.n_ctx), n_cut
