"""Classification (SST-2, CoLA): `start text extract` -> ClfHead over the labels, cross-entropy."""
from __future__ import annotations

FIELDS = ("text",)


def transform(fields: dict[str, list[list[int]]], layout) -> list[list[list[int]]]:
    """One sequence per example: [start] text[:n_ctx - 2] [clf]."""
    n = layout.n_ctx - 2
    return [[[layout.start] + t[:n] + [layout.clf]] for t in fields["text"]]


def head_type(spec):
    return ("classification", len(spec.label_names))
