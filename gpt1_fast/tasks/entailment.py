"""Entailment (SNLI, MNLI, QNLI, RTE, SciTail): `start premise delim hypothesis extract` -> ClfHead
over the labels, cross-entropy."""
from __future__ import annotations

FIELDS = ("premise", "hypothesis")


def transform(fields: dict[str, list[list[int]]], layout) -> list[list[list[int]]]:
    """One sequence per example: [start] premise [delim] hypothesis [clf], each text cut to
    n_ctx // 2 - 2 tokens (the original's ROCStories rule, so that every pair fits)."""
    m = layout.n_ctx // 2 - 2
    return [[[layout.start] + p[:m] + [layout.delimiter] + h[:m] + [layout.clf]]
            for p, h in zip(fields["premise"], fields["hypothesis"])]


def head_type(spec):
    return ("classification", len(spec.label_names))
