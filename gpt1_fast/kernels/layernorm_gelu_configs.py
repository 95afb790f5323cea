"""Launch configurations of the LayerNorm/GELU kernels: the committed choice per (kernel, width,
activation element size) and the candidates timed around it when autotuning is asked for.

The choices come from the H100 sweeps at 32768 rows recorded in benchmarks/NOTES.md ("LayerNorm")
and benchmarks/results/layernorm_gelu-*.json; they are the same on every architecture except where
a config spills on sm_80 (see the comments). Every choice and candidate is compiled for sm_80 and
sm_90 without spills by tests/test_layernorm_gelu.py and benchmarks/aot_occupancy.py.
"""
from __future__ import annotations

import functools

from ._op import next_pow2

MAX_WIDTH = 8192  # a LayerNorm row lives in registers: 8192 fp32 per row over 16 warps is 16 per thread
KERNELS = ("ln_fwd", "ln_bwd", "gelu_fwd", "gelu_bwd")

# [G, N] fp32 partials -> [N]: narrow column blocks so that even N = 768 spreads over 48 programs,
# tall row blocks so that a few hundred partial rows take a few iterations
SUM_CONFIG = {"BLOCK_G": 128, "BLOCK_C": 16, "num_warps": 4}


def ln_fwd_config(N: int, elem: int = 2, arch: int = 0) -> dict:
    block_n = next_pow2(N)
    # one row per program: several rows per program were no better at 768 over two H100 runs, and
    # one row of 768 already gives every thread of a 4-warp program one 16-byte bf16 load per tensor
    num_warps = max(4, min(8, block_n // 512))
    if elem == 4 and block_n >= 4096:
        num_warps = 16  # 8 warps spill on sm_80 with fp32 at 4096
    rows = max(1, 512 // block_n)  # narrow rows (< 512) only: several per program
    return {"BLOCK_N": block_n, "ROWS": rows, "num_warps": num_warps}


def ln_bwd_config(N: int, elem: int = 2, arch: int = 0) -> dict:
    block_n = next_pow2(N)
    # the persistent loop is latency-bound: more warps, more loads in flight (NOTES.md, "Occupancy")
    num_warps = max(8, min(16, block_n // 256))
    # PROGS_PER_SM: programs per SM of the persistent-style grid (interpreter: a few in all)
    return {"BLOCK_N": block_n, "ROWS": max(1, 512 // block_n), "num_warps": num_warps,
            "PROGS_PER_SM": max(2, 2048 // (32 * num_warps) // 2)}


def _gelu_block_n(N: int) -> int:
    # column tiles of 256 divide both GPT-1 widths (768, 3072) exactly: no masked lanes
    return 256 if N >= 256 else next_pow2(N)


def gelu_fwd_config(N: int, elem: int = 2, arch: int = 0) -> dict:
    block_n = _gelu_block_n(N)
    return {"BLOCK_N": block_n, "ROWS": max(1, 4096 // block_n), "num_warps": 8}


def gelu_bwd_config(N: int, elem: int = 2, arch: int = 0) -> dict:
    block_n = _gelu_block_n(N)
    return {"BLOCK_N": block_n, "ROWS": max(1, 2048 // block_n), "num_warps": 8, "PROGS_PER_SM": 4}


CONFIG = {"ln_fwd": ln_fwd_config, "ln_bwd": ln_bwd_config, "gelu_fwd": gelu_fwd_config,
          "gelu_bwd": gelu_bwd_config}


def _ln_f(*c):
    return [dict(ROWS=r, num_warps=w) for r, w in c]


def _ln_b(*c):
    return [dict(ROWS=r, num_warps=w, PROGS_PER_SM=p) for r, w, p in c]


def _g_f(*c):
    return [dict(ROWS=r, BLOCK_N=n, num_warps=w) for r, n, w in c]


def _g_b(*c):
    return [dict(ROWS=r, BLOCK_N=n, num_warps=w, PROGS_PER_SM=p) for r, n, w, p in c]


# Alternatives to the choice, per (kernel, width), 2-byte activations: what the sweeps timed, plus
# the untimed ones the AOT occupancy table suggests (16 warps at 768 and 32 at 3072 for the LN
# backward: fewer registers per thread, more resident warps; NOTES.md, "Occupancy").
SWEEP = {
    ("ln_fwd", 768): _ln_f((1, 1), (1, 2), (1, 8), (2, 4)),
    ("ln_fwd", 3072): _ln_f((1, 4), (1, 16)),
    ("ln_bwd", 768): _ln_b((1, 4, 4), (2, 4, 4), (2, 8, 2), (1, 8, 4), (1, 2, 8), (1, 16, 4), (1, 16, 2)),
    ("ln_bwd", 3072): _ln_b((1, 16, 1), (1, 8, 4), (1, 8, 2), (1, 4, 8), (1, 32, 1), (1, 32, 2)),
    ("gelu_fwd", 768): _g_f((8, 256, 4), (32, 256, 16)),
    ("gelu_bwd", 768): _g_b((8, 256, 8, 8), (4, 256, 4, 8), (16, 256, 8, 2), (8, 256, 4, 8), (4, 256, 8, 6),
                            (8, 256, 16, 3)),
    ("gelu_bwd", 3072): _g_b((8, 256, 8, 8), (4, 256, 4, 8), (16, 256, 8, 2), (8, 256, 4, 8)),
}


@functools.lru_cache(maxsize=None)  # asked at every call: host time matters at small token counts
def table(what: str, key: tuple, deterministic: bool = True) -> dict:
    """The committed choice for kernel `what` at key (width, element size, arch). These kernels use
    no atomics, so `deterministic` changes nothing."""
    return CONFIG[what](*key)


def candidates(what: str, key: tuple, deterministic: bool = True) -> list[dict]:
    """The choice first, then the sweep's alternatives for this width (2-byte activations only)."""
    N, elem, _ = key
    base = table(what, key)
    alts = SWEEP.get((what, N), []) if elem == 2 else []
    return [base] + [{**base, **a} for a in alts]
