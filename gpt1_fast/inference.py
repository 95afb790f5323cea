"""The one evaluation path of a fine-tuned model: task-head outputs for encoded examples.

Used by the Trainer's evaluation, the estimators' predict and the predict command. Examples are
sorted by length and batched, so each batch is padded little (exact: attention is causal, the head
reads the classify token), then the outputs are put back in the examples' order.

How the forward runs is an `InferenceSettings` (gpt1_fast.context.inference_settings: the one rule
for every entry point): under bf16 autocast or in fp32, eager or compiled. Compiled, the batches are
padded to a power-of-two width and the last one to the full batch, so that a whole evaluation runs a
handful of static shapes (at most 7 widths up to 512); torch.compile keeps the graphs for the rest of
the process (any later evaluation, any model of the same shapes: the weights are inputs of the graph,
not constants), and the first evaluation that compiles says how long it took.
"""
from __future__ import annotations

import functools
import math
import sys
import time

import numpy as np
import torch

from .context import InferenceSettings
from .tasks.common import make_batch

MAX_GRAPHS = 64  # compiled shapes and model structures kept per process


def block_weights(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Copies in `dtype` of the blocks' weight matrices, by their names in model.transformer: made once
    per evaluation, they spare every batch autocast's cast of every matrix (GPT-1 on a CPU: ~15 ms of
    a ~200 ms compiled bf16 batch of 16 x 64). The rounding is autocast's own, so are the products.
    Never kept past the evaluation: the Trainer's model changes between evaluations."""
    return {name: p.detach().to(dtype) for name, p in model.transformer.block_matrices().items()}


def head_outputs(model, X: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """model.task_logits(X) with the task head in float32 whatever the autocast: the transformer's
    output (the residual stream after the last LayerNorm) is float32 already, and the head's few
    products cost nothing, so the logits are not rounded to bf16 (two close classes would tie).
    weights: block_weights() to run the transformer with, in place of its own matrices."""
    h = model.transformer(X) if not weights else torch.func.functional_call(model.transformer, weights, (X,))
    with torch.autocast(X.device.type, enabled=False):
        return model.task_head(h.float(), X)


@functools.cache
def compiled_head_outputs():
    """head_outputs compiled for static shapes (one torch.compile wrapper for the process: its graphs are
    kept with the function's code and guarded on the shapes and the model's structure). Up to
    MAX_GRAPHS of them: past torch's default of 8, a process that evaluates several models (an estimator
    refitted, other vocabularies) would silently run the rest eager."""
    import torch._dynamo

    compiled = torch.compile(head_outputs, dynamic=False)

    def run(model, X, weights=None):
        with torch._dynamo.config.patch(recompile_limit=MAX_GRAPHS):
            return compiled(model, X, weights)

    return run


def graphs_compiled() -> int:
    """Graphs torch.compile has built in this process so far (its own counter)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@torch.no_grad()
def task_logits(model, enc, layout, *, batch_size: int, padding: str = "batch",
                settings: InferenceSettings | None = None, progress=None) -> torch.Tensor:
    """Task-head outputs (float32, on the CPU) of every example of `enc` (tasks.common.Encoded), in
    order. padding "global" keeps the examples' order (every batch is n_ctx wide anyway).
    settings: precision and compilation (default: fp32, eager: the reference path); progress: wraps
    the batch range."""
    n = len(enc)
    device = next(model.parameters()).device
    settings = settings or InferenceSettings(device, bf16=False, compile=False)
    n_params = sum(p.numel() for p in model.parameters())
    compiled = n > 0 and settings.compiles(float(n_params) * float(enc.lengths.sum()))
    order = np.arange(n) if padding == "global" else np.argsort(enc.lengths.max(1), kind="stable")
    width_rule = "pow2" if compiled and padding != "global" else padding
    batch_size = min(batch_size, max(n, 1))
    forward = compiled_head_outputs() if compiled else head_outputs
    weights = block_weights(model, settings.dtype) if settings.bf16 and n > 0 else None
    was_training = model.training
    model.eval()
    out, compile_s, graphs = [], 0.0, graphs_compiled() if compiled else 0
    batches = range(math.ceil(n / batch_size))
    for b in (progress(batches) if progress is not None else batches):
        idx = order[b * batch_size:(b + 1) * batch_size]
        real = len(idx)
        if compiled and real < batch_size:  # the last batch at the full size: one shape per width
            idx = np.concatenate([idx, np.repeat(idx[-1:], batch_size - real)])
        X, _, _ = make_batch(enc, idx, layout, device, width_rule)
        t0, before = time.perf_counter(), graphs_compiled() if compiled else 0
        with settings.autocast():
            out.append(forward(model, X, weights)[:real].float().cpu())
        if compiled and graphs_compiled() > before:
            compile_s += time.perf_counter() - t0
    model.train(was_training)
    if compiled and graphs_compiled() > graphs:
        print(f"note: compiled the inference forward for {graphs_compiled() - graphs} batch shape(s) in "
              f"{compile_s:.1f} s (once per process; --no-compile runs it eager)", file=sys.stderr, flush=True)
    logits = torch.cat(out) if out else torch.zeros(0)
    result = torch.empty_like(logits)
    result[torch.from_numpy(order)] = logits
    return result
