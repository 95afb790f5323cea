"""Tied LM head + cross-entropy, forward + backward: the fused op against what a user would run.

Shapes: rows 9,856 (ROCStories 64 x 2 x 77) and 32,768 (pretraining 64 x 512), V 40,990, C 768, bf16
h and weight, every row kept (the others cannot skip rows; a row with 75 % kept shows what skipping
buys). --quick: 48 x 300 x 32 in float32 (CPU; ours only under TRITON_INTERPRET=1).

Implementations:
  ours: fused                 ops.lm_head_loss backend "triton" (gpt1_fast/kernels/lm_head.py)
  cuBLAS + F.cross_entropy    ops.lm_head_loss backend "torch": full logits, float32 cross-entropy
  Liger-Kernel                LigerFusedLinearCrossEntropyLoss(reduction="sum"), when importable

Floor: 6 N V C flops (logits GEMM, dh and dweight GEMMs) at the measured bf16 matmul rate. Ours runs
8 N V C (the logits are recomputed in backward). Peak memory above the inputs: max_memory_allocated.
"""
from __future__ import annotations

import os

import torch

from benchmarks.common import bench, default_device, measure_ceilings, row, write_results
from gpt1_fast import ops


def _liger():
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except Exception:
        return None
    fn = LigerFusedLinearCrossEntropyLoss(reduction="sum")
    return lambda h, w, t, m: fn(w, h, t)


def make_impls(device, interp):
    impls = {}
    if device.type == "cuda" or interp:
        impls["ours: fused"] = lambda h, w, t, m: ops.lm_head_loss(h, w, t, m, backend="triton").sum()
    impls["cuBLAS + F.cross_entropy"] = lambda h, w, t, m: ops.lm_head_loss(h, w, t, m, backend="torch").sum()
    liger = _liger() if device.type == "cuda" else None
    if liger is not None:
        impls["Liger-Kernel"] = liger
    return impls


def main(quick: bool = False):
    device = default_device()
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    ceilings = measure_ceilings(device, quick)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cases = [(48, 300, 32)] if quick or device.type != "cuda" else [(9856, 40990, 768), (32768, 40990, 768)]
    impls = make_impls(device, interp)
    rows = []
    for N, V, C in cases:
        g = torch.Generator(device=device).manual_seed(0)
        h = torch.randn(N, C, device=device, dtype=dtype, generator=g).requires_grad_()
        w = (torch.randn(V, C, device=device, dtype=dtype, generator=g) * 0.02).requires_grad_()
        t = torch.randint(0, V, (N,), device=device, generator=g)
        masks = {"all rows": torch.ones(N, device=device),
                 "75 % rows kept": (torch.rand(N, device=device, generator=g) < 0.75).float()}
        times, mems = {}, {}
        for mname, m in masks.items():
            for name, fn in impls.items():
                if mname != "all rows" and name != "ours: fused":
                    continue
                key = f"{name} ({mname})" if mname != "all rows" else name

                def run():
                    h.grad = w.grad = None
                    fn(h, w, t, m).backward()

                try:
                    run()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                        h.grad = w.grad = None
                        torch.cuda.reset_peak_memory_stats()
                        base = torch.cuda.memory_allocated()
                        run()
                        mems[key] = (torch.cuda.max_memory_allocated() - base) / 2**30
                    times[key] = bench(run, device)
                except Exception as e:  # a baseline that cannot run here is reported, not fatal
                    print(f"{key}: skipped ({type(e).__name__}: {e})")
        flops = 6 * N * V * C
        base_name = "cuBLAS + F.cross_entropy"
        for key, ms in times.items():
            extra = {"peak_extra_gib": round(mems[key], 3)} if key in mems else {}
            if "Liger-Kernel" in times and key != "Liger-Kernel":
                extra["ratio_vs_liger"] = round(ms / times["Liger-Kernel"], 3)
            rows.append(row("lm_head fwd+bwd", [N, V, C], dtype, key, ms, flops=flops, ceilings=ceilings,
                            baseline=base_name if key != base_name else None, baseline_ms=times.get(base_name),
                            **extra))
    write_results("lm_head", rows, ceilings, device,
                  notes="tflops count 6 N V C (ours runs 8 N V C: logits recomputed in backward); "
                        "peak_extra_gib = max_memory_allocated above the inputs during one fwd+bwd")


if __name__ == "__main__":
    main()
