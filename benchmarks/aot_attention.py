"""Registers, spills, shared memory and wgmma use of every attention candidate, from an ahead-of-time
compile for sm_90 (no GPU needed): the statistics the untimed entries of the choice table
(attention_configs.AOT_SM90) were picked from, until a GPU times them.

    PYTHONPATH=. python benchmarks/aot_attention.py [--T 16,32,48,64,200] [--json]

For each T, bf16, D = 64, dropout on and off: the launches that forward + backward of each candidate
would make (recorded, not run), each compiled once. `wgmma`: the PTX uses Hopper's warpgroup MMA
(a 64-row operand per warpgroup of 4 warps); otherwise the dots run as mma.sync. `programs/SM`: how
many such programs fit on one SM by registers and warps.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.pop("TRITON_INTERPRET", None)  # real compiles: under the interpreter the kernels are not JITFunctions

import torch  # noqa: E402

from gpt1_fast.kernels import attention as A  # noqa: E402
from gpt1_fast.kernels import attention_configs as AC  # noqa: E402
from gpt1_fast.kernels.aot import compile_launch, recording_launches, resident_programs  # noqa: E402


def candidate_launches(T: int, p: float, cap: int = 90):
    """[(what, choice, [(kernel, args, kw)])]: each forward and backward candidate at T, the other
    direction at the table's choice."""
    key = (T, 64, torch.bfloat16, p > 0, 1, cap)
    out = []
    for what in ("fwd", "bwd"):
        for choice in AC.candidates(what, key, deterministic=False):
            with recording_launches(cap) as calls, A.TUNING.override(**{what: choice}):
                qkv = torch.randn(1, T, 3 * 2 * 64, dtype=torch.bfloat16, requires_grad=True)
                A.causal_attention_packed(qkv, 2, p).sum().backward()
            kernels = [c for c in calls if (c[0].__name__ == "attn_fwd") == (what == "fwd")]
            out.append((what, choice, kernels))
    return out


def stats(T_list, cap: int = 90) -> list[dict]:
    rows = []
    for T in T_list:
        for p in (0.1, 0.0):
            for what, choice, kernels in candidate_launches(T, p, cap):
                for kernel, args, kw in kernels:
                    st = compile_launch(kernel, args, kw, cap)
                    rows.append(dict(T=T, p=p, what=what, choice=str(choice), kernel=kernel.__name__,
                                     regs=st["regs"], spills=st["spills"], shared=st["shared"], wgmma=st["wgmma"],
                                     warps=st["num_warps"],
                                     programs_per_sm=resident_programs(st["regs"], st["num_warps"])))
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", default="16,32,48,64,200", help="sequence lengths, comma-separated")
    ap.add_argument("--arch", type=int, default=90)
    args = ap.parse_args(argv)
    rows = stats([int(t) for t in args.T.split(",")], args.arch)
    print("| T | p | what | choice | kernel | regs | spills | shared | wgmma | programs/SM |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['T']} | {r['p']} | {r['what']} | {r['choice']} | {r['kernel']} | {r['regs']} | {r['spills']} | "
              f"{r['shared']} | {r['wgmma']} | {r['programs_per_sm']} |")


if __name__ == "__main__":
    main()
