"""Similarity (QQP, MRPC, STS-B): no inherent order, so both orders `start a delim b extract` and
`start b delim a extract`; their classify states are added before the linear head (SimilarityHead).
QQP and MRPC: two classes, cross-entropy. STS-B: one score (regression on 0-5), squared error."""
from __future__ import annotations

FIELDS = ("text_a", "text_b")


def transform(fields: dict[str, list[list[int]]], layout) -> list[list[list[int]]]:
    """Two sequences per example, a-then-b and b-then-a, each text cut to n_ctx // 2 - 2 tokens."""
    m = layout.n_ctx // 2 - 2
    s, d, c = layout.start, layout.delimiter, layout.clf
    return [[[s] + a[:m] + [d] + b[:m] + [c], [s] + b[:m] + [d] + a[:m] + [c]]
            for a, b in zip(fields["text_a"], fields["text_b"])]


def head_type(spec):
    return "similarity" if spec.label_names is None else ("similarity", len(spec.label_names))
