"""The one evaluation path of a fine-tuned model: task-head outputs for encoded examples.

Used by the Trainer's evaluation, the estimators' predict and the predict command. Examples are
sorted by length and batched, so each batch is padded little (exact: attention is causal, the head
reads the classify token), then the outputs are put back in the examples' order.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from .tasks.common import make_batch


@torch.no_grad()
def task_logits(model, enc, layout, *, batch_size: int, padding: str = "batch", autocast=None,
                progress=None) -> torch.Tensor:
    """Task-head outputs (float32, on the CPU) of every example of `enc` (tasks.common.Encoded), in
    order. padding "global" keeps the examples' order (every batch is n_ctx wide anyway).
    autocast: a context-manager factory (RunContext.autocast); progress: wraps the batch range."""
    n = len(enc)
    order = np.arange(n) if padding == "global" else np.argsort(enc.lengths.max(1), kind="stable")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    batches = range(math.ceil(n / batch_size))
    for b in (progress(batches) if progress is not None else batches):
        X, _, _ = make_batch(enc, order[b * batch_size:(b + 1) * batch_size], layout, device, padding)
        with (autocast() if autocast is not None else contextlib.nullcontext()):
            out.append(model.task_logits(X).float().cpu())
    model.train(was_training)
    logits = torch.cat(out) if out else torch.zeros(0)
    result = torch.empty_like(logits)
    result[torch.from_numpy(order)] = logits
    return result
