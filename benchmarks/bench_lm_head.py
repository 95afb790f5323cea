"""Tied LM head + cross-entropy, forward + backward: the fused op against what a user would run,
interleaved in one process, every implementation's loss checked against float64.

Shapes: rows 9,856 (ROCStories 64 x 2 x 77) and 32,768 (pretraining 64 x 512), V 40,990, C 768, bf16
h and weight. --quick: 48 x 300 x 32 in float32 (CPU; ours only under TRITON_INTERPRET=1).

Implementations (every row kept unless the name says otherwise):
  ours: fused                      ops.lm_head_loss backend "triton" (gpt1_fast/kernels/lm_head.py):
                                   no host sync; every row through the GEMMs
  ours: fused (75 % kept, bound)   25 % rows masked and rows_bound = the kept count: only the kept
                                   rows multiplied (what a caller that knows the count on the host gets)
  cuBLAS + F.cross_entropy         ops.lm_head_loss backend "torch": full logits, float32 cross-entropy
  torch.compile(cuBLAS + CE)       the same function compiled by Inductor (fuses the upcast, softmax and
                                   its backward; the logits still exist)
  torch.compile + auto-chunker     with Inductor's auto_chunker, where this torch has it
  F.linear_cross_entropy, chunked  torch's own fused loss with LinearCrossEntropyOptions, where present
  Liger-Kernel                     LigerFusedLinearCrossEntropyLoss(reduction="sum"), when importable
                                   (the GPU suite installs it from .whl/: benchmarks/README.md)

Losses: each implementation's sum over rows against float64 (`loss_rel_err`): a row's bf16 logits
move its loss by at most u (|z_t| + E_p |z|) ~ 1e-3 of it, and the sum only averages that, so
`loss_ok` asks for < 1e-3. Floor: 6 N V C flops (logits GEMM, dh and dweight GEMMs) at the measured
bf16 matmul rate; ours runs 8 N V C (logits recomputed in backward). peak_extra_gib:
max_memory_allocated above the inputs during one forward + backward, each implementation alone.
"""
from __future__ import annotations

import os

import torch

from benchmarks.common import default_device, interleaved, measure_ceilings, medians, row, write_results
from gpt1_fast import ops

CORE = ("ours: fused", "cuBLAS + F.cross_entropy", "torch.compile(cuBLAS + CE)", "Liger-Kernel",
        "F.linear_cross_entropy, chunked")


def ours(h, w, t, m, rows_bound=0):
    """Our LM-head loss: the one function every "ours" row calls."""
    return ops.lm_head_loss(h, w, t, m, backend="triton", rows_bound=rows_bound).sum()


def reference(h, w, t, m):
    return ops.lm_head_loss(h, w, t, m, backend="torch").sum()


def _liger():
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except Exception as e:  # noqa: BLE001 - not installed, or built for another torch
        print(f"Liger-Kernel: skipped ({type(e).__name__}: {e}; the GPU suite installs it from .whl/)")
        return None
    fn = LigerFusedLinearCrossEntropyLoss(reduction="sum")
    return lambda h, w, t, m: fn(w, h, t)


def _torch_chunked():
    import torch.nn.functional as F

    if not hasattr(F, "linear_cross_entropy") or not hasattr(torch.nn, "LinearCrossEntropyOptions"):
        print(f"F.linear_cross_entropy, chunked: skipped (torch {torch.__version__} has none)")
        return None
    opts = torch.nn.LinearCrossEntropyOptions()
    return lambda h, w, t, m: F.linear_cross_entropy(h, w, t, reduction="sum", options=opts)


def _auto_chunked():
    import torch._inductor.config as cfg

    if not hasattr(cfg, "auto_chunker"):
        print(f"torch.compile + auto-chunker: skipped (torch {torch.__version__} has none)")
        return None
    with cfg.patch({"auto_chunker.enable": True}):
        compiled = torch.compile(reference)

    def run(*args):
        with cfg.patch({"auto_chunker.enable": True}):
            return compiled(*args)
    return run


def make_impls(device, interp, core=False) -> dict:
    """{name: (fn(h, w, t, m, kept) -> summed loss, runs on the 75 %-kept mask)}."""
    impls = {}
    if device.type == "cuda" or interp:
        impls["ours: fused"] = (lambda h, w, t, m, kept: ours(h, w, t, m), False)
        impls["ours: fused (75 % kept, bound)"] = (lambda h, w, t, m, kept: ours(h, w, t, m, kept), True)
    impls["cuBLAS + F.cross_entropy"] = (lambda h, w, t, m, kept: reference(h, w, t, m), False)
    if device.type == "cuda":
        compiled = torch.compile(reference)
        impls["torch.compile(cuBLAS + CE)"] = (lambda h, w, t, m, kept: compiled(h, w, t, m), False)
        for name, make in (("torch.compile + auto-chunker", _auto_chunked), ("F.linear_cross_entropy, chunked",
                                                                              _torch_chunked), ("Liger-Kernel", _liger)):
            if core and name not in CORE:
                continue
            fn = make()
            if fn is not None:
                impls[name] = ((lambda f: lambda h, w, t, m, kept: f(h, w, t, m))(fn), False)
    return impls


def float64_loss(h, w, t, m, rows: int = 2048) -> float:
    """sum_i m_i CE(h_i @ wᵀ, t_i) in float64, in chunks of rows (the [N, V] float64 logits would not fit)."""
    w64, total = w.detach().double(), 0.0
    for s in range(0, h.shape[0], rows):
        z = h[s:s + rows].detach().double() @ w64.t()
        ce = torch.nn.functional.cross_entropy(z, t[s:s + rows], reduction="none")
        total += float((ce * m[s:s + rows].double()).sum())
    return total


def _case(N, V, C, device, dtype):
    g = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(N, C, device=device, dtype=dtype, generator=g).requires_grad_()
    w = (torch.randn(V, C, device=device, dtype=dtype, generator=g) * 0.02).requires_grad_()
    t = torch.randint(0, V, (N,), device=device, generator=g)
    masks = {False: torch.ones(N, device=device),
             True: (torch.rand(N, device=device, generator=g) < 0.75).float()}
    return h, w, t, masks, int(masks[True].sum())  # the kept count, read once here (the host's number)


def _measure_one(fn, h, w, t, m, kept, ref, device):
    """(run, loss relative error vs float64, peak extra GiB) of one implementation, alone."""
    def run():
        h.grad = w.grad = None
        fn(h, w, t, m, kept).backward()

    loss = float(fn(h, w, t, m, kept).detach())  # the first call also compiles
    run()
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        h.grad = w.grad = None
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return run, abs(loss - ref) / abs(ref), peak


def _rows(shape, times, info, dtype, ceilings):
    N, V, C = shape
    base = "cuBLAS + F.cross_entropy"
    out = []
    for name, ms in times.items():
        err, peak = info[name]
        extra = {"loss_rel_err": float(f"{err:.2e}"), "loss_ok": err < 1e-3}
        if peak is not None:
            extra["peak_extra_gib"] = round(peak, 3)
        for other in ("Liger-Kernel", "torch.compile(cuBLAS + CE)", "F.linear_cross_entropy, chunked"):
            if other in times and name != other:
                extra[f"ratio_vs_{other}"] = round(ms / times[other], 3)
        out.append(row("lm_head fwd+bwd", [N, V, C], dtype, name, ms, flops=6 * N * V * C, ceilings=ceilings,
                       baseline=base if name != base else None, baseline_ms=times.get(base), **extra))
    return out


def main(quick: bool = False, core: bool = False):
    device = default_device()
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    ceilings = measure_ceilings(device, quick)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cases = [(48, 300, 32)] if quick or device.type != "cuda" else [(9856, 40990, 768), (32768, 40990, 768)]
    impls = make_impls(device, interp, core)
    rows, notes = [], ("tflops count 6 N V C (ours runs 8 N V C: logits recomputed in backward); interleaved rounds, "
                       "median; loss_rel_err: the summed loss against float64; peak_extra_gib: max_memory_allocated "
                       "above the inputs during one fwd+bwd, each implementation alone")
    for shape in cases:
        h, w, t, masks, kept = _case(*shape, device, dtype)
        refs = {partial: float64_loss(h, w, t, m) for partial, m in masks.items()}
        runs, info = {}, {}
        for name, (fn, partial) in impls.items():
            try:
                runs[name], *info[name] = _measure_one(fn, h, w, t, masks[partial], kept, refs[partial], device)
            except Exception as e:  # noqa: BLE001 - a baseline that cannot run here is reported, not fatal
                print(f"{name}: skipped ({type(e).__name__}: {str(e)[:300]})")
        done = list(rows)

        def write(meds, done=done, shape=shape, info=info):
            rows[:] = done + _rows(shape, meds, info, dtype, ceilings)
            write_results("lm_head", rows, ceilings, device, notes=notes)

        timing = dict(rounds=2, min_runs=1, rep_ms=0) if quick else dict(rounds=5)
        write(medians(interleaved(runs, device, on_round=write, **timing)))
    return rows


if __name__ == "__main__":
    main()
