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
import re
import subprocess
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # real compiles: under the interpreter the kernels are not JITFunctions

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from gpt1_fast.kernels import layernorm_gelu as K  # noqa: E402

A = "*bf16"
SIGS = {
    K._ln_fwd_kernel: dict(X=A, R=A, W="*fp32", B="*fp32", Y=A, Mean="*fp32", Rstd="*fp32", M="i32", N="i32",
                           eps="fp32"),
    K._ln_bwd_kernel: dict(DY=A, X=A, R=A, W="*fp32", Mean="*fp32", Rstd="*fp32", DS=A, DWp="*fp32", DBp="*fp32",
                           M="i32", N="i32", rows_per_prog="i32"),
    K._bias_gelu_bwd_kernel: dict(DY=A, X=A, B="*fp32", DX=A, DBp="*fp32", M="i32", N="i32", rows_per_prog="i32"),
}
# (kernel, width, constexprs, num_warps): the launched defaults (ln_ / gelu_*_config) and the GPU sweep's
# candidates around them (benchmarks/gpu_check_layernorm_gelu.py)
CASES = [
    (K._ln_fwd_kernel, 768, dict(HAS_RES=True, ROWS=1, BLOCK_N=1024), 4),
    (K._ln_fwd_kernel, 768, dict(HAS_RES=True, ROWS=1, BLOCK_N=1024), 8),
    *[(K._ln_bwd_kernel, 768, dict(HAS_RES=True, ROWS=r, BLOCK_N=1024), w)
      for r, w in ((1, 2), (1, 4), (1, 8), (1, 16), (2, 8), (2, 16))],
    *[(K._ln_bwd_kernel, 3072, dict(HAS_RES=True, ROWS=1, BLOCK_N=4096), w) for w in (8, 16, 32)],
    *[(K._bias_gelu_bwd_kernel, 768, dict(ROWS=r, BLOCK_N=256), w)
      for r, w in ((8, 8), (8, 4), (4, 4), (4, 8), (16, 8), (8, 16))],
]


def _ptxas(cap: int) -> str:
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return get_ptxas(cap).path
    except Exception:
        from triton import knobs
        return knobs.nvidia.ptxas.path


def compile_stats(fn, sig: dict, const: dict, num_warps: int, cap: int) -> tuple[int, int, str]:
    """(registers per thread, spill bytes, PTX) of `fn` compiled for sm_<cap>: `sig` maps the runtime
    arguments to Triton types, `const` the constexprs to values. Raises if ptxas fails."""
    # launch-time specialisation: 16-byte aligned pointers, ints that are multiples of 16
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]]
             for k, v in sig.items() if v.startswith("*") or v == "i32"}
    src = triton.compiler.ASTSource(fn=fn, signature={**sig, **{k: "constexpr" for k in const}},
                                    constexprs=const, attrs=attrs)
    ptx = triton.compile(src, target=GPUTarget("cuda", cap, 32), options={"num_warps": num_warps}).asm["ptx"]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        arch = "sm_90a" if cap == 90 else f"sm_{cap}"
        out = subprocess.run([_ptxas(cap), "-v", f"--gpu-name={arch}", f.name, "-o", os.devnull],
                             capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    log = out.stdout + out.stderr
    regs = re.findall(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if out.returncode != 0 or not regs or not spills:
        raise RuntimeError(f"ptxas on {fn.__name__} {const} for sm_{cap} failed:\n{log[-2000:]}")
    return int(regs[0]), sum(int(a) + int(b) for a, b in spills), ptx


def resident_programs(regs: int, num_warps: int) -> int:
    """Programs of `num_warps` warps that fit on one SM at `regs` registers per thread (at most 32)."""
    per_warp = -(-regs * 32 // 256) * 256
    return min(65536 // (per_warp * num_warps), 64 // num_warps, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 to compile for (default 90)")
    args = ap.parse_args()
    print(f"sm_{args.arch}, triton {triton.__version__}, bf16 activations\n")
    print("| kernel | width | constexprs | warps | regs | spill bytes | programs/SM | warps/SM |")
    print("|---|---|---|---|---|---|---|---|")
    for fn, n, const, nw in CASES:
        regs, spills, _ = compile_stats(fn, SIGS[fn], const, nw, args.arch)
        progs = resident_programs(regs, nw)
        shown = {k: v for k, v in const.items() if k != "HAS_RES"}
        print(f"| {fn.__name__} | {n} | {shown} | {nw} | {regs} | {spills} | {progs} | {progs * nw} |", flush=True)


if __name__ == "__main__":
    main()
