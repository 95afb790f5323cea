"""Launch choices of the attention kernels: the candidate configurations per shape and architecture,
and the committed choice table (`table`), which the op uses unless autotuning is asked for.

Every candidate compiles without register spills for the architectures it is offered on (sm_80,
sm_90 at D=64; tests/test_attention.py compiles each one with Triton's launch-time specialisation):
e.g. tutorial 06's 32/128/128/32 backward spills with 4 warps (this kernel's masking and dropout
state), and with 8 warps a little on sm_80 only. Every candidate is also checked for correctness
in the interpreter (tests/test_attention.py::test_every_candidate).

A choice key is (T, D, dtype, dropout on, B·H rounded up to a power of two, arch); "fwd" choices are
config dicts, "bwd" choices (kind, config).
"""
from __future__ import annotations

import functools

import torch

from ._op import next_pow2

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
SMALL_T = 128  # T <= SMALL_T: the whole-sequence backward program is a candidate


def _cfg(num_warps, num_stages, **blocks):
    return dict(blocks, num_warps=num_warps, num_stages=num_stages)


@functools.lru_cache(maxsize=None)
def fwd_configs(T: int, D: int, dtype: torch.dtype, arch: int = 0) -> list[dict]:
    """Forward candidates; `arch` = compute capability x10 (0: CPU / interpreter)."""
    if dtype == torch.float32:  # exact fp32 dots run on the FMA units: small tiles
        return [_cfg(4, 2, BLOCK_M=32, BLOCK_N=32)]
    if T <= 64:  # the tight tile first, then 64-row tiles (one warpgroup: Hopper's wgmma needs 64 rows)
        cands = [_cfg(4, 2, BLOCK_M=max(16, next_pow2(T)), BLOCK_N=16 if T <= 16 else 32),
                 _cfg(4, 2, BLOCK_M=64, BLOCK_N=32), _cfg(4, 2, BLOCK_M=64, BLOCK_N=64)]
        return [c for i, c in enumerate(cands) if c not in cands[:i] and (T > 32 or c["BLOCK_N"] == 32 or i == 0)]
    if D >= 128:
        return [_cfg(4, 2, BLOCK_M=64, BLOCK_N=32)]
    # 128x64 tiles with 8 warps spill 8 bytes on sm_80 when dropout is on (16-bit RNG lanes).
    sm80 = 0 < arch < 90
    if T <= SMALL_T:
        cands = [_cfg(4, 2, BLOCK_M=64, BLOCK_N=32), _cfg(8, 2, BLOCK_M=128, BLOCK_N=32),
                 _cfg(4, 2, BLOCK_M=32, BLOCK_N=32), _cfg(8, 2, BLOCK_M=128, BLOCK_N=64),
                 _cfg(4, 2, BLOCK_M=128, BLOCK_N=32)]
    else:
        cands = [_cfg(8, 3, BLOCK_M=128, BLOCK_N=64), _cfg(8, 4, BLOCK_M=128, BLOCK_N=64),
                 _cfg(8, 3, BLOCK_M=64, BLOCK_N=64), _cfg(8, 3, BLOCK_M=128, BLOCK_N=32),
                 _cfg(4, 3, BLOCK_M=64, BLOCK_N=32)]
    return [c for c in cands if not (sm80 and c["BLOCK_M"] == 128 and c["BLOCK_N"] == 64)]


# Backward candidates per architecture (sm_80's register allocation differs: several sm_90 choices
# spill a few bytes there). arch 0 (CPU / interpreter) uses the sm_90 lists' first entries.
_TILED = {
    90: [_cfg(8, 3, BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=32),
         _cfg(8, 3, BLOCK_M1=16, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=16),
         _cfg(4, 3, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16),
         _cfg(8, 3, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32),  # tutorial 06's blocks
         _cfg(8, 4, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32)],
    80: [_cfg(8, 3, BLOCK_M1=16, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=16),
         _cfg(4, 3, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)],
}
# Atomic-dQ backward (T > 128): dK/dV programs only, so BLOCK_M2/BLOCK_N2 are unused (kept equal).
_ATOMIC = {
    90: [_cfg(8, 3, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=32, BLOCK_N2=128),
         _cfg(8, 3, BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=32, BLOCK_N2=64),
         _cfg(4, 3, BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=32, BLOCK_N2=64),
         _cfg(8, 4, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=32, BLOCK_N2=128)],  # 64x128 spills
    80: [_cfg(8, 3, BLOCK_M1=16, BLOCK_N1=64, BLOCK_M2=16, BLOCK_N2=64),
         _cfg(4, 3, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=16, BLOCK_N2=32)],
}
# Extra tiled candidates for T <= 128: 32-wide blocks skip more of the masked triangle and give more
# programs per (batch, head) (occupancy at small T).
_TILED_SHORT = [_cfg(4, 2, BLOCK_M1=32, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=32),
                _cfg(2, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)]
_TILED_SMALL_T = [_cfg(4, 2, BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=32),
                  _cfg(4, 2, BLOCK_M1=32, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=32)]
_TILED_FP32 = {90: _cfg(8, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16),
               80: _cfg(4, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)}
_TILED_D128 = _cfg(4, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)
# The whole-sequence program at BLOCK_T=128 spills on sm_80 in every configuration tried.
_SMALL_128 = {90: [_cfg(8, 1, BLOCK_T=128, BLOCK_N=32), _cfg(8, 2, BLOCK_T=128, BLOCK_N=32)], 80: []}


@functools.lru_cache(maxsize=None)
def bwd_configs(T: int, D: int, dtype: torch.dtype, arch: int = 0) -> dict[str, list[dict]]:
    """Backward candidates per kernel kind ("small": one program per (batch, head); "tiled":
    tutorial-06 kernel, after the delta preprocess for T > 128; "atomic": dK/dV loop with dQ by fp32
    atomics, T > 128)."""
    family = 80 if 0 < arch < 90 else 90
    # Exact fp32 dots need many more registers: the whole-sequence program spills even at 8 warps.
    if dtype == torch.float32:
        return {"tiled": [_TILED_FP32[family]]}
    if T <= SMALL_T:
        block_t = max(16, next_pow2(T))
        if block_t <= 64 and D <= 64:
            # the whole sequence in one program, and the tiled kernel with 4-warp tiles whose dK/dV and
            # dQ passes have 64-row operands (wgmma-capable on sm_90) or 32-row ones
            return {"small": [_cfg(4, 2, BLOCK_T=block_t, BLOCK_N=32 if block_t >= 32 else 16)],
                    "tiled": _TILED_SMALL_T}
        if D >= 128:
            return {"small": [_cfg(8, 1, BLOCK_T=block_t, BLOCK_N=32)]}
        kinds = {"small": _SMALL_128[family], "tiled": _TILED[family] + _TILED_SHORT}
        return {k: v for k, v in kinds.items() if v}
    if D >= 128:
        return {"tiled": [_TILED_D128]}
    return {"tiled": _TILED[family], "atomic": _ATOMIC[family]}


def candidates(what: str, key: tuple, deterministic: bool = True) -> list:
    """What autotuning times for `what` at `key`: forward configs, or (kind, config) pairs. The atomic
    kind only with dropout and when non-determinism is allowed: without dropout it saved no GPU time
    on an H100 and costs two more launches (zeroing, dQ store) of host time, which L2-flushed timing
    does not see (benchmarks/NOTES.md, "Causal attention")."""
    T, D, dtype, dropout, _bh, arch = key
    if what == "fwd":
        return fwd_configs(T, D, dtype, arch)
    kinds = bwd_configs(T, D, dtype, arch)
    return [(kind, c) for kind, cs in kinds.items() for c in cs
            if kind != "atomic" or (dropout and not deterministic)]


# The fastest choices measured on an H100 (sm_90), bf16, D = 64, at the model's shapes (ROCStories
# B·H = 128·12, T = 77; LM B·H = 64·12, T = 512), from the autotune picks recorded in
# benchmarks/results/attention-nvidia-h100-80gb-hbm3.json (notes, "Autotune picks"). Keys: (what,
# T bucket: "short" 64 < T <= 128, "long" T > 128, dropout on, deterministic).
MEASURED_SM90 = {
    ("fwd", "short", False, True): _cfg(4, 2, BLOCK_M=64, BLOCK_N=32),
    ("fwd", "short", True, True): _cfg(4, 2, BLOCK_M=64, BLOCK_N=32),
    ("bwd", "short", False, True): ("tiled", _cfg(2, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)),
    ("bwd", "short", True, True): ("tiled", _cfg(2, 2, BLOCK_M1=16, BLOCK_N1=32, BLOCK_M2=32, BLOCK_N2=16)),
    ("fwd", "long", False, True): _cfg(4, 3, BLOCK_M=64, BLOCK_N=32),
    ("fwd", "long", True, True): _cfg(4, 3, BLOCK_M=64, BLOCK_N=32),
    ("bwd", "long", False, True): ("tiled", _cfg(8, 3, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32)),
    # with dropout the atomic-dQ kind was fastest (benchmarks/NOTES.md, "Causal attention"); the
    # fastest deterministic one is the tiled kind's pick, the same tiles as without dropout
    ("bwd", "long", True, True): ("tiled", _cfg(8, 3, BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32)),
    ("bwd", "long", True, False): ("atomic", _cfg(4, 3, BLOCK_M1=32, BLOCK_N1=64, BLOCK_M2=32, BLOCK_N2=64)),
}


# Not timed on a GPU: picked from the ahead-of-time compile statistics of every candidate for sm_90
# (bf16, D = 64, dropout on and off; `benchmarks/aot_attention.py`, the table in benchmarks/NOTES.md,
# "Attention at small T"), by this rule: no spills; Hopper's wgmma where its 64-row operand is at
# least half used (T > 32); then the most programs per SM with dropout on (training). Values index
# `candidates(what, key)`. Both small-T buckets get their first candidate:
#   T <= 32:      forward the tight 16- or 32-row tile (mma.sync; a 64-row tile would be 50-75 % masked),
#                 backward the whole-sequence program (72-158 registers, 3-7 programs/SM; tiled 167-254, 2-3)
#   32 < T <= 64: forward 64 x 32 (wgmma, 128 registers, 4 programs/SM; 64 x 64: 188, 2), backward the
#                 whole-sequence program, BLOCK_T 64 (wgmma, 234 registers with dropout, one launch)
AOT_SM90 = {("fwd", "tiny"): 0, ("bwd", "tiny"): 0, ("fwd", "small"): 0, ("bwd", "small"): 0}


def _bucket(T: int) -> str:
    """T buckets of the table: "tiny" (<= 32), "small" (<= 64), "short" (<= 128), "long". The GLUE
    lengths of per-batch padding (multiples of 8 up to ~128) and of --padding pow2 (8 .. 256) fall in
    the first three; ROCStories (77) in "short", pretraining (512) in "long"."""
    return "tiny" if T <= 32 else "small" if T <= 64 else "short" if T <= SMALL_T else "long"


def choice_source(what: str, key: tuple, deterministic: bool = True) -> str:
    """Where the table's answer for `key` comes from: "measured" (the H100 autotune run), "aot" (AOT
    statistics, untimed) or "default" (the first candidate, untimed)."""
    T, D, dtype, dropout, _bh, arch = key
    if arch == 90 and D == 64 and dtype != torch.float32:
        bucket = _bucket(T)
        if (what, bucket, dropout, deterministic) in MEASURED_SM90 or (what, bucket, dropout, True) in MEASURED_SM90:
            return "measured"
        if (what, bucket) in AOT_SM90:
            return "aot"
    return "default"


@functools.lru_cache(maxsize=None)  # asked at every call: host time matters at T = 77
def table(what: str, key: tuple, deterministic: bool = True):
    """The committed choice: on sm_90 with 16-bit inputs and D = 64 the measured fastest
    (MEASURED_SM90) or, at T <= 64, the AOT statistics' pick (AOT_SM90); elsewhere the first
    candidate (deterministic: the atomic kind is never first), a safe default that compiles without
    spills but was not timed. `choice_source` says which."""
    source = choice_source(what, key, deterministic)
    bucket = _bucket(key[0])
    if source == "measured":  # no non-deterministic entry: the deterministic one
        return MEASURED_SM90.get((what, bucket, key[3], deterministic)) or MEASURED_SM90[(what, bucket, key[3], True)]
    if source == "aot":
        return candidates(what, key, True)[AOT_SM90[(what, bucket)]]
    return candidates(what, key, True)[0]
