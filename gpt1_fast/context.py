"""What every run sets up, written once: `RunContext(args)` from an entry point's options.

    ctx = RunContext(args)                      # device, one process or torchrun's DDP
    ctx.seed()                                  # Python, NumPy and torch from --seed
    model = build(...).to(ctx.device)
    opt = ctx.optimizer(model, t_total=..., schedule=..., warmup=...)
    step_model = ctx.wrap(model, dynamic=...)   # DDP with several processes, torch.compile where on
    with ctx.autocast(): ...                    # bf16 autocast where --dtype says so

Fine-tuning (gpt1_fast.train), pretraining (gpt1_fast.pretrain) and the estimators share it, so the
rules below hold everywhere: --dtype auto is bf16 autocast on CUDA and fp32 on the CPU (parameters and
optimizer state stay fp32); --compile defaults to on for CUDA; the optimizer is OpenAIAdam with every
optimisation option of the run (learning rate, L2, betas, epsilon, global-norm clipping).

Inference (evaluation inside training, the estimators' predict, the predict and generate commands)
has its own rule, `inference_settings`: there is no gradient to keep exact, so --dtype auto is bf16
wherever the hardware multiplies bf16 natively (CUDA; a CPU with AVX-512-BF16, AMX or Arm BF16), and
a long CPU evaluation is compiled (`ctx.inference`).
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from . import cpu
from .distributed import Dist
from .opt import OpenAIAdam

# torch.compile of the inference forward costs ~20-60 s per static shape on a 2-core CPU and saves ~40 %
# of a bf16 forward: by default a CPU evaluation is compiled when it is at least this much work
# (parameters x tokens: ~85k tokens at GPT-1 size; benchmarks/NOTES.md, CPU inference)
COMPILE_MIN_WORK = 1e13


def uses_bf16(dtype: str, device: torch.device) -> bool:
    """--dtype: bf16 autocast on request, or by default (auto) on CUDA."""
    return dtype == "bf16" or (dtype == "auto" and device.type == "cuda")


def uses_compile(compile_opt: bool | None, device: torch.device) -> bool:
    """--compile / --no-compile, or by default on CUDA."""
    return compile_opt if compile_opt is not None else device.type == "cuda"


@dataclass(frozen=True)
class InferenceSettings:
    """How a model is run when nothing is learned: bf16 autocast or fp32, compiled or eager.
    compile None: decided per evaluation by `compiles(work)`."""
    device: torch.device
    bf16: bool
    compile: bool | None

    def autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of the matrix products (generation keeps its key/value cache in it)."""
        return torch.bfloat16 if self.bf16 else torch.float32

    def compiles(self, work: float) -> bool:
        """Whether an evaluation of `work` (parameters x tokens) runs compiled: as --compile says, else
        on a CPU with a C++ compiler when it is long enough to repay the compilation (COMPILE_MIN_WORK),
        never on CUDA (its fused kernels run eager)."""
        if self.compile is not None:
            return self.compile
        return self.device.type == "cpu" and work >= COMPILE_MIN_WORK and cpu.cpp_compiler() is not None


def inference_settings(device: torch.device, dtype: str = "auto", compile: bool | None = None) -> InferenceSettings:
    """The inference rule, for every entry point: --dtype fp32 or bf16 as asked; auto: bf16 on CUDA and
    on a CPU with native bf16 (cpu.native_bf16), fp32 on other CPUs (emulated bf16 is slower than fp32).
    --compile / --no-compile as asked; default: see InferenceSettings.compiles."""
    device = torch.device(device)
    native = device.type == "cuda" or (device.type == "cpu" and cpu.native_bf16())
    bf16 = dtype == "bf16" or (dtype == "auto" and native)
    return InferenceSettings(device, bf16, compile)


class RunContext:
    """Seed, device (torchrun's DDP when launched by it), precision, compilation, optimizer."""

    def __init__(self, args, distributed: bool = True):
        self.args = args
        self.dist = Dist(args.device, distributed=distributed)
        self.device = self.dist.device
        self.bf16 = uses_bf16(getattr(args, "dtype", "fp32"), self.device)
        self.compile = uses_compile(getattr(args, "compile", False), self.device)
        self.inference = inference_settings(self.device, getattr(args, "dtype", "fp32"),
                                            getattr(args, "compile", False))

    @classmethod
    def local(cls, device="cpu", dtype: str = "fp32", compile: bool = False, seed: int = 0) -> "RunContext":
        """One process on `device`, without options (a Trainer built by hand, a test)."""
        import argparse

        return cls(argparse.Namespace(device=str(device), dtype=dtype, compile=compile, seed=seed), distributed=False)

    @property
    def main(self) -> bool:
        return self.dist.main

    def seed(self, offset: int = 0) -> None:
        """Seed every RNG from --seed (+ offset: each process its own dropout masks after the
        model is built, the same initial weights everywhere before)."""
        random.seed(self.args.seed + offset)
        np.random.seed(self.args.seed + offset)
        torch.manual_seed(self.args.seed + offset)

    def autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def wrap(self, model: torch.nn.Module, dynamic: bool | None = None) -> torch.nn.Module:
        """What the training step calls: the model inside DDP with several processes, compiled
        where --compile says (dynamic: shapes vary from batch to batch)."""
        step_model = model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            step_model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.compile:
            step_model = torch.compile(step_model, dynamic=dynamic)
        return step_model

    def optimizer(self, model: torch.nn.Module, *, t_total: int, schedule: str, warmup: float) -> OpenAIAdam:
        """OpenAIAdam over the model's parameters with the run's optimisation options."""
        a = self.args
        graphs = getattr(a, "cuda_graphs", False)  # a captured step needs the fused, device-side step
        return OpenAIAdam(model.parameters(), lr=a.lr, schedule=schedule, warmup=warmup, t_total=t_total,
                          b1=a.b1, b2=a.b2, e=a.e, l2=a.l2, vector_l2=a.vector_l2, max_grad_norm=a.max_grad_norm,
                          fused=True if graphs else None, capturable=graphs)

    def barrier(self) -> None:
        self.dist.barrier()

    def close(self) -> None:
        self.dist.close()
