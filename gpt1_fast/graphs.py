"""A whole training step (forward, backward, optimizer step) captured in a CUDA graph and replayed,
so that a host-bound step costs GPU time only: GPT-1 fine-tuning at T = 77 launches a few hundred
small kernels per step, and their Python and launch cost exceeded the GPU work they start
(benchmarks/NOTES.md, "Causal attention").

    step = CapturedStep(train_step, optimizer)   # train_step(*batch) -> loss: forward, backward,
                                                 # optimizer.step(), optimizer.zero_grad(set_to_none=True)
    for batch in batches:
        loss = step(*batch)                      # one real step per call; no host sync

What the step must satisfy (checked where it can be):
- static shapes: one graph per input signature (shapes, dtypes, devices), so pad to few widths
  (`--padding pow2`: at most 7 for n_ctx 512; `global`: one);
- no host synchronisation inside (`.item()`, `nonzero`, shapes that depend on data): the capture
  fails on one. gpt1_fast's training step has none (the LM head picks its rows on the device);
- an optimizer whose step runs on the device alone: `OpenAIAdam(..., capturable=True)` (step
  counters and the learning-rate schedule on the device). Host-side hyperparameters are baked into
  the graph when it is captured, so a replay is refused once a param group's value has changed
  (a schedule written into group["lr"] on the host must move into the optimizer first);
- it ends with `optimizer.zero_grad(set_to_none=True)`: the gradients then live and die inside
  the graph (none accumulate across replays);
- every input reaches the step through its arguments: they are copied into static buffers before
  each replay. Tensors created inside are fine; dropout stays random (the CUDA generator is
  graph-safe: each replay draws new masks).

How: the first `warmup` calls of a signature run eagerly on a side stream (real steps: optimizer
state, torch.compile, autotuning, cuBLAS workspaces and lazy initialisation happen there); the next
call captures the step and replays it; later calls copy their inputs and replay. The graphs share
one memory pool (replays are sequential on one stream), so the widths' temporaries are not held
side by side. Without CUDA (inputs on the CPU) every call simply runs the step.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["CapturedStep", "unsupported_reason"]


def unsupported_reason(device: torch.device, padding: str, world: int = 1) -> str | None:
    """Why a training run on `device` with this padding policy and process count cannot capture its
    step (None: it can)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device (got {device.type})"
    if padding == "batch":
        return ("CUDA graphs need few static shapes: per-batch padding gives up to one graph per multiple "
                "of 8; use --padding pow2 (at most 7 graphs) or global (one)")
    if world > 1:
        return "CUDA graphs are not supported with several processes (DDP's gradient hooks are not captured)"
    return None


def _signature(inputs) -> tuple:
    return tuple((tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else ("value", x)
                 for x in inputs)


def _hyperparameters(optimizer) -> tuple:
    """Every plain value of every param group (lr, betas, ...): what a capture bakes in."""
    if optimizer is None:
        return ()
    return tuple(tuple(sorted((k, v) for k, v in g.items() if isinstance(v, (int, float, bool, str, tuple))))
                 for g in optimizer.param_groups)


class CudaGraphs:
    """The CUDA side of CapturedStep: eager warm-up and capture on one side stream, graphs in one pool."""

    def __init__(self):
        self.stream = torch.cuda.Stream()
        self.pool = torch.cuda.graph_pool_handle()

    def eager(self, fn: Callable, inputs):
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = fn(*inputs)
        torch.cuda.current_stream().wait_stream(self.stream)
        return out

    def capture(self, fn: Callable, static_inputs) -> tuple[Callable[[], None], torch.Tensor]:
        """(replay, static output): the step recorded, not run."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            out = fn(*static_inputs)
        return graph.replay, out


class CapturedStep:
    """`step(*inputs) -> loss`, run as a CUDA graph replay after `warmup` eager calls per input
    signature (module docstring). `graphs` counts the captures; `backend` replaces the CUDA side
    (anything with `eager(fn, inputs)` and `capture(fn, static_inputs) -> (replay, output)`)."""

    def __init__(self, step: Callable, optimizer=None, *, warmup: int = 2, backend=None):
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the first calls must run eagerly), got {warmup}")
        if optimizer is not None and (getattr(optimizer, "capturable", True) is False or any(
                g.get("capturable") is False for g in optimizer.param_groups)):
            raise ValueError("CapturedStep needs an optimizer whose step can be captured: "
                             "OpenAIAdam(..., capturable=True)")
        self.step, self.optimizer, self.warmup = step, optimizer, warmup
        self._backend = backend
        self._entries: dict = {}
        self._hparams = None
        self.graphs = 0

    def _cuda(self, inputs) -> bool:
        return self._backend is not None or any(isinstance(x, torch.Tensor) and x.is_cuda for x in inputs)

    def __call__(self, *inputs):
        if not self._cuda(inputs):
            return self.step(*inputs)
        if self._backend is None:
            self._backend = CudaGraphs()
        entry = self._entries.setdefault(_signature(inputs), {"calls": 0, "replay": None})
        if entry["replay"] is None:
            if entry["calls"] < self.warmup:
                entry["calls"] += 1
                out = self._backend.eager(self.step, inputs)
                self._check_grads_released()
                return out
            self._check_hyperparameters()
            entry["static"] = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
            entry["replay"], entry["out"] = self._backend.capture(self.step, entry["static"])
            self.graphs += 1
        else:
            self._check_hyperparameters()
            for static, x in zip(entry["static"], inputs):
                if isinstance(x, torch.Tensor) and x is not static:
                    static.copy_(x, non_blocking=True)
        entry["replay"]()
        out = entry["out"]
        return out.detach().clone() if isinstance(out, torch.Tensor) else out

    def _check_grads_released(self) -> None:
        if self.optimizer is not None and any(p.grad is not None for g in self.optimizer.param_groups
                                              for p in g["params"]):
            raise RuntimeError("a captured step must end with optimizer.zero_grad(set_to_none=True): gradients "
                               "left in place would accumulate across replays")

    def _check_hyperparameters(self) -> None:
        now = _hyperparameters(self.optimizer)
        if self._hparams is None:
            self._hparams = now
        elif now != self._hparams:
            raise RuntimeError("an optimizer hyperparameter changed after the step was captured (the graph "
                               "replays the captured values): compute schedules on the device, inside the "
                               "optimizer, not by writing param_groups on the host")
