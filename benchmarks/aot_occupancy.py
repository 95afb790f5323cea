"""Registers, spills and resident warps per SM of the LayerNorm/GELU kernels' launch configs, from an
ahead-of-time compile (no GPU needed): the occupancy side of a tuning decision, before any timing.

    PYTHONPATH=. python benchmarks/aot_occupancy.py [--arch 90]

Prints one markdown row per (kernel, width, config), bf16 activations and fp32 parameters (the model's
mixed-precision case). Residency: 64 K registers and 64 warps per SM (sm_80 and sm_90), registers
allocated per warp in units of 256.
"""
from __future__ import annotations

import argparse
import os

os.environ.pop("TRITON_INTERPRET", None)  # real compiles: under the interpreter the kernels are not JITFunctions

import triton  # noqa: E402

from gpt1_fast.kernels import layernorm_gelu_kernels as K  # noqa: E402
from gpt1_fast.kernels.aot import compile_stats, resident_programs  # noqa: E402

A = "*bf16"
SIGS = {
    K.ln_fwd_kernel: dict(X=A, R=A, W="*fp32", B="*fp32", Y=A, Mean="*fp32", Rstd="*fp32", M="i32", N="i32",
                           eps="fp32"),
    K.ln_bwd_kernel: dict(DY=A, X=A, R=A, W="*fp32", Mean="*fp32", Rstd="*fp32", DS=A, DWp="*fp32", DBp="*fp32",
                           M="i32", N="i32", rows_per_prog="i32"),
    K.bias_gelu_bwd_kernel: dict(DY=A, X=A, B="*fp32", DX=A, DBp="*fp32", M="i32", N="i32", rows_per_prog="i32"),
}
# (kernel, width, constexprs, num_warps): the launched defaults (layernorm_gelu_configs) and the candidates
# timed around them (layernorm_gelu_configs.SWEEP)
CASES = [
    (K.ln_fwd_kernel, 768, dict(HAS_RES=True, ROWS=1, BLOCK_N=1024), 4),
    (K.ln_fwd_kernel, 768, dict(HAS_RES=True, ROWS=1, BLOCK_N=1024), 8),
    *[(K.ln_bwd_kernel, 768, dict(HAS_RES=True, ROWS=r, BLOCK_N=1024), w)
      for r, w in ((1, 2), (1, 4), (1, 8), (1, 16), (2, 8), (2, 16))],
    *[(K.ln_bwd_kernel, 3072, dict(HAS_RES=True, ROWS=1, BLOCK_N=4096), w) for w in (8, 16, 32)],
    *[(K.bias_gelu_bwd_kernel, 768, dict(ROWS=r, BLOCK_N=256), w)
      for r, w in ((8, 8), (8, 4), (4, 4), (4, 8), (16, 8), (8, 16))],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 to compile for (default 90)")
    args = ap.parse_args()
    print(f"sm_{args.arch}, triton {triton.__version__}, bf16 activations\n")
    print("| kernel | width | constexprs | warps | regs | spill bytes | programs/SM | warps/SM |")
    print("|---|---|---|---|---|---|---|---|")
    for fn, n, const, nw in CASES:
        st = compile_stats(fn, SIGS[fn], const, args.arch, num_warps=nw)
        regs, spills = st["regs"], st["spills"]
        progs = resident_programs(regs, nw)
        shown = {k: v for k, v in const.items() if k != "HAS_RES"}
        print(f"| {fn.__name__} | {n} | {shown} | {nw} | {regs} | {spills} | {progs} | {progs * nw} |", flush=True)


if __name__ == "__main__":
    main()
