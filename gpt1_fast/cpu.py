"""What this CPU computes fast: whether it has bf16 arithmetic of its own.

bf16 pays on a CPU only where the instruction set has it: AVX-512-BF16 (Intel Cooper Lake and later,
AMD Zen 4 and later), AMX (Intel Sapphire Rapids and later) or Arm's BF16 extension (Armv8.6:
Graviton 3, Neoverse V1/N2). Elsewhere oneDNN emulates bf16 GEMMs with fp32 instructions and
conversions (AVX-512 without BF16: slower than fp32), or PyTorch falls back to scalar loops (AVX2):
the inference rule (gpt1_fast.context.inference_settings) then keeps fp32.
"""
from __future__ import annotations

import functools
import os
import platform
import shutil

import torch

# x86: AVX-512-BF16 (dot products of bf16 pairs), AMX-BF16 (tile matrix multiply); Arm: FEAT_BF16
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
CPUINFO = "/proc/cpuinfo"


@functools.lru_cache(maxsize=None)
def cpu_flags(path: str = CPUINFO) -> frozenset[str]:
    """The instruction-set flags of the first processor listed in /proc/cpuinfo ('flags' on x86,
    'Features' on Arm); empty where there is no such file (macOS, Windows: bf16 is not assumed)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU multiplies bf16 natively (AVX-512-BF16, AMX-BF16 or Arm BF16)."""
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU code generation would run ($CXX, else g++, c++ or clang++),
    or None where there is none (then nothing is compiled by default)."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def describe() -> dict:
    """The CPU facts a benchmark result records: model, threads, PyTorch's vector ISA, the bf16 flags."""
    flags = cpu_flags()
    return {"processor": _model_name() or platform.machine(), "threads": torch.get_num_threads(),
            "capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_flags": sorted(NATIVE_BF16_FLAGS & flags), "native_bf16": native_bf16(flags)}


def _model_name() -> str | None:
    try:
        with open(CPUINFO, encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return None
