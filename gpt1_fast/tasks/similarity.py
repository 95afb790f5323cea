"""Similarity (QQP, MRPC, STS-B): no inherent order, so both orders `start a delim b extract` and
`start b delim a extract`; their classify states are added before the linear head (SimilarityHead).
QQP and MRPC: two classes, cross-entropy. STS-B, a score on 0-5, by one of two objectives:
- "soft_labels" (the default, the TF release's): the score y as a distribution over the 6 classes
  0..5 (mass y - floor(y) on floor(y) + 1, the rest on floor(y); gpt1_fast.reference.soft_labels),
  a 6-way head trained by cross-entropy against it, the prediction its expected class sum_k p_k k;
- "regression": one output, squared error, the prediction the output itself.
Either prediction is clipped to the score's range."""
from __future__ import annotations

FIELDS = ("text_a", "text_b")
OBJECTIVES = ("soft_labels", "regression")  # a score's training objective; the first is the default


def transform(fields: dict[str, list[list[int]]], layout) -> list[list[list[int]]]:
    """Two sequences per example, a-then-b and b-then-a, each text cut to n_ctx // 2 - 2 tokens."""
    m = layout.n_ctx // 2 - 2
    s, d, c = layout.start, layout.delimiter, layout.clf
    return [[[s] + a[:m] + [d] + b[:m] + [c], [s] + b[:m] + [d] + a[:m] + [c]]
            for a, b in zip(fields["text_a"], fields["text_b"])]


def head_type(spec, objective: str = OBJECTIVES[0]):
    """Classes: ('similarity', n). A score on 0..n-1: ('similarity_soft_labels', n), or 'similarity'
    (one output) for the regression objective."""
    if spec.label_names is not None:
        return ("similarity", len(spec.label_names))
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "regression":
        return "similarity"
    lo, hi = spec.score_range
    if lo != 0 or hi != int(hi):
        raise ValueError(f"soft labels need scores on 0..n (classes 0, 1, ..., n), {spec.name}'s are on {lo:g}-{hi:g}")
    return ("similarity_soft_labels", int(hi) + 1)
