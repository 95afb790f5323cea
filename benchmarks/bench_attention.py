"""Causal attention with attention dropout: ours (Triton, gpt1_fast/kernels/attention.py) vs PyTorch SDPA
(each of its backends; the fastest is the baseline) vs the reference math (matmul, mask, softmax,
dropout, matmul), forward / backward / forward+backward, dropout 0 and 0.1, bf16; and the packed
variant (c_attn's [B, T, 3C] in, [B, T, C] out) vs split + SDPA + merge.

Shapes: ROCStories (B=128 sequences, H=12, T=77, D=64), LM (B=64, H=12, T=512, D=64) and a GLUE batch
(B=32, T=48: the untimed small-T table choices). bf16 in and out
on the GPU: under bf16 autocast the model feeds this op c_attn's bf16 output (LayerNorm/GELU, whose
inputs mix dtypes, time that mix in their benchmark).
FLOPs are causal, counted once: forward 2 matmuls x 2·B·H·T·T·D / 2; backward 2.5x forward.
Correctness on the GPU is `TRITON_INTERPRET=0 pytest -m cuda tests` (tests/test_gpu.py), which
benchmarks/gpu_suite.py runs first. Besides the deterministic default ("triton": the committed
choice table), "triton nondeterministic" (atomic-dQ backward allowed, with dropout at T > 128) and
"triton autotuned" (candidates timed at first call) are timed.
--quick on a CPU: tiny shapes, reference and SDPA only (the Triton interpreter is no timing target).
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

from benchmarks.common import bench, default_device, measure_ceilings, row, write_results
from gpt1_fast import reference


def ref_attention(q, k, v, p):
    """SPEC §3 as the original computes it (gpt1_fast.reference, the 'torch' backend of gpt1_fast.ops)."""
    return reference.attention(q, k, v, p, True)


def sdpa_backends(device):
    """(name, context manager factory) for each SDPA backend to try; the automatic choice first."""
    from contextlib import nullcontext

    out = [("sdpa-auto", nullcontext)]
    if device.type != "cuda":
        return out
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
        if hasattr(SDPBackend, name):
            be = getattr(SDPBackend, name)
            out.append((f"sdpa-{name.split('_')[0].lower()}", lambda be=be: sdpa_kernel([be])))
    return out


def causal_flops(B, H, T, D):
    return 2 * 2 * B * H * T * T * D / 2


def loop_ms(fn, device, iters: int = 100):
    """Wall time per call of `fn` over back-to-back calls (no L2 flush, one sync at the end): what an
    eager training loop sees, host overhead included. do_bench flushes L2 before each call, which also
    gives the host a head start of the flush's duration (~0.1 ms on an H100) per call."""
    if device.type != "cuda":
        return None
    import time

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / iters * 1e3)
    return best


def host_costs(device, shape=(128, 12, 77, 64)) -> list[str]:
    """Host microseconds per call at the ROCStories shape: the time to enqueue n calls (the GPU keeps
    up or queues; one sync after the clock stops), ours vs SDPA, plus a bare Triton launch. With
    ATTN_HOST_PROFILE=<path>, a cProfile (main thread: the forward and the autograd call; the
    backward runs on autograd's device thread) of 100 fwd+bwd calls is written there."""
    import time

    from gpt1_fast.kernels import attention as A

    B, H, T, D = shape
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = _inputs(B, H, T, D, device, dtype)
    do = torch.randn(B, H, T, D, device=device, dtype=dtype)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def per_call_us(fn, n=200):
        for _ in range(3):
            fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t1 = time.perf_counter()
        sync()
        return (t1 - t0) / n * 1e6

    out = A.causal_attention(q, k, v)
    o = torch.empty_like(q)
    lse = torch.empty((B, H, T), device=device, dtype=torch.float32)
    seed = torch.zeros(1, dtype=torch.int64, device=device)
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    cases = {
        "triton fwd": lambda: A.causal_attention(q, k, v),
        "triton bwd": lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True),
        "triton fwd+bwd": lambda: torch.autograd.grad(A.causal_attention(q, k, v), (q, k, v), do),
        "sdpa fwd+bwd": lambda: torch.autograd.grad(sdpa(q, k, v), (q, k, v), do),
        "bare Triton launch (forward kernel)": lambda: _bare_launch(A, q, k, v, o, lse, seed),
        "torch.empty": lambda: torch.empty((B, H, T), device=device),
    }

    def single_threaded(fn):
        # The backward on the calling thread instead of autograd's per-device worker thread: our backward
        # is Python, so with the worker it costs GIL handoffs and wake-ups between two threads.
        def run():
            with torch.autograd.set_multithreading_enabled(False):
                return fn()
        return run

    cases["triton fwd+bwd, autograd single-threaded"] = single_threaded(cases["triton fwd+bwd"])
    cases["sdpa fwd+bwd, autograd single-threaded"] = single_threaded(cases["sdpa fwd+bwd"])
    lines = [f"host us/call {name}: {per_call_us(fn):.1f}" for name, fn in cases.items()]
    path = os.environ.get("ATTN_HOST_PROFILE")
    if path:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(100):
            cases["triton fwd+bwd"]()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
        from gpt1_fast.fileio import atomic_write_text

        atomic_write_text(path, "\n".join(lines) + "\n\n" + buf.getvalue())
    return lines


def _bare_launch(A, q, k, v, o, lse, seed):
    from torch._library.triton import set_wrap_triton_enabled

    with set_wrap_triton_enabled(False):  # as the eager path launches
        A._launch_fwd(q, k, v, o, A._bht(o), lse, seed, 0.0, 0.125)


def kernel_ms(fn, device, iters: int = 10):
    """GPU busy time per call of `fn` (sum of its kernels' durations, from the profiler): the time
    without Python and launch overhead. Measured apart from the wall-clock timings."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    total_us = 0.0
    for evt in prof.key_averages():
        if str(getattr(evt, "device_type", "")).endswith("CUDA"):
            total_us += getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0.0)
    return total_us / iters / 1e3 if total_us > 0 else None


def _inputs(B, H, T, D, device, dtype):
    return [torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]


def main(quick: bool = False):
    device = default_device()
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    ceilings = measure_ceilings(device, quick)
    notes = []
    if on_gpu:
        notes.append("Correctness: tests/test_gpu.py (pytest -m cuda), run before this by gpu_suite.py.")
        from gpt1_fast.kernels.attention import TUNING, causal_attention, causal_attention_packed
        try:
            host = host_costs(device)
            print("\n".join(host), flush=True)
            notes.append("Host cost (" + "; ".join(h.replace("host us/call ", "") for h in host) + " us per call).")
        except Exception as e:  # noqa: BLE001 - diagnostic only
            print(f"host cost measurement failed: {type(e).__name__}: {e}", flush=True)
    else:
        notes.append("Triton kernels not timed on CPU (interpreter); reference and SDPA only.")
    if quick or not on_gpu:
        shapes = {"rocstories": (4, 12, 77, 64), "lm": (2, 12, 128, 64), "glue": (4, 12, 48, 64)}
    else:  # glue: a GLUE batch of 32 under per-batch padding (T <= 64: the table's untimed AOT picks)
        shapes = {"rocstories": (128, 12, 77, 64), "lm": (64, 12, 512, 64), "glue": (32, 12, 48, 64)}
    if on_gpu:
        from gpt1_fast.kernels import _op
        from gpt1_fast.kernels.attention_configs import choice_source

        arch = _op.arch(torch.empty(1, device=device))
        notes.append("Table choices: " + "; ".join(
            f"{case} {w} {choice_source(w, (T, D, dtype, True, _op.next_pow2(B * H), arch))}"
            for case, (B, H, T, D) in shapes.items() for w in ("fwd", "bwd")) + " (aot and default: untimed picks).")
    rows = []
    for case, (B, H, T, D) in shapes.items():
        fl = causal_flops(B, H, T, D)
        for p in (0.0, 0.1):
            q, k, v = _inputs(B, H, T, D, device, dtype)
            do = torch.randn(B, H, T, D, device=device, dtype=dtype)
            impls = {}
            if on_gpu:
                impls["triton"] = (lambda q, k, v, p=p: causal_attention(q, k, v, p), None)
                if p > 0 and T > 128:  # where the table has a faster non-deterministic choice
                    impls["triton nondeterministic"] = (impls["triton"][0],
                                                        lambda: TUNING.override(deterministic=False))
                impls["triton autotuned"] = (impls["triton"][0], lambda: TUNING.override(autotune=True))
            for name, ctx in sdpa_backends(device):
                impls[name] = (lambda q, k, v, p=p: F.scaled_dot_product_attention(q, k, v, dropout_p=p,
                                                                                  is_causal=True), ctx)
            impls["reference"] = (lambda q, k, v, p=p: ref_attention(q, k, v, p), None)
            # Warm up every implementation (compiles, autotunes), then time phase by phase with the
            # implementations interleaved, two rounds, keeping each one's best median.
            from contextlib import nullcontext

            outs = {}
            for name, (fn, ctx) in impls.items():
                with (ctx or nullcontext)():
                    try:
                        outs[name] = fn(q, k, v)
                        torch.autograd.grad(outs[name], (q, k, v), do, retain_graph=True)
                    except Exception as e:  # noqa: BLE001 - a backend that does not take this case
                        print(f"  {case} p={p} {name}: unavailable ({str(e).splitlines()[0][:100]})", flush=True)
                        outs.pop(name, None)
            phases = {
                "fwd": lambda fn, name: (lambda: fn(q, k, v)),
                "bwd": lambda fn, name: (lambda: torch.autograd.grad(outs[name], (q, k, v), do, retain_graph=True)),
                "fwd+bwd": lambda fn, name: (lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do)),
            }
            times = {}
            for _round in range(2):
                for phase, make in phases.items():
                    for name in outs:
                        fn, ctx = impls[name]
                        with (ctx or nullcontext)():
                            ms = bench(make(fn, name), device)
                        times[(name, phase)] = min(ms, times.get((name, phase), float("inf")))
            for name in outs:
                fn, ctx = impls[name]
                try:
                    with (ctx or nullcontext)():
                        g = kernel_ms(phases["fwd+bwd"](fn, name), device)
                    if g is not None:
                        times[(name, "fwd+bwd kernels")] = g
                    with (ctx or nullcontext)():
                        g = loop_ms(phases["fwd+bwd"](fn, name), device)
                    if g is not None:
                        times[(name, "fwd+bwd back-to-back")] = g
                except Exception as e:  # noqa: BLE001 - the profiler is optional here
                    print(f"  profiler failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
                print(f"  {case} p={p} {name}: " + ", ".join(f"{ph} {times[(name, ph)]:.4f}" for ph in
                      ("fwd", "bwd", "fwd+bwd", "fwd+bwd kernels", "fwd+bwd back-to-back") if (name, ph) in times),
                      flush=True)
            del outs
            sdpa_names = [n for n in impls if n.startswith("sdpa") and (n, "fwd+bwd") in times]
            for phase, mult in (("fwd", 1.0), ("bwd", 2.5), ("fwd+bwd", 3.5), ("fwd+bwd kernels", 3.5),
                                ("fwd+bwd back-to-back", 3.5)):
                cands = [n for n in sdpa_names if (n, phase) in times]
                if not cands:
                    continue
                best = min(cands, key=lambda n: times[(n, phase)])
                for name in impls:
                    if (name, phase) not in times:
                        continue
                    rows.append(row(f"{case} {phase} p={p}", (B, H, T, D), dtype, name, times[(name, phase)],
                                    flops=fl * mult, ceilings=ceilings, baseline=f"{best} (best sdpa)",
                                    baseline_ms=times[(best, phase)]))
            del q, k, v, do
        # packed layout: c_attn output in, heads merged out (what the model calls)
        C = H * D
        for p in (0.0, 0.1):
            qkv = torch.randn(B, T, 3 * C, device=device, dtype=dtype, requires_grad=True)
            do = torch.randn(B, T, C, device=device, dtype=dtype)

            def split_sdpa(x, p=p):
                q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in x.split(C, dim=2))
                return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True).transpose(1, 2).reshape(B, T, C)

            impls = {"split+sdpa+merge": split_sdpa}
            if on_gpu:
                impls = {"triton-packed": lambda x, p=p: causal_attention_packed(x, H, p), **impls}
            for label, timer in (("", bench), (" kernels", kernel_ms), (" back-to-back", loop_ms)):
                times = {}
                for _round in range(2 if timer is bench else 1):
                    for n, fn in impls.items():
                        ms = timer(lambda fn=fn: torch.autograd.grad(fn(qkv), qkv, do), device)
                        times[n] = ms if n not in times or ms is None else min(ms, times[n])
                if times["split+sdpa+merge"] is None:
                    continue
                for n, ms in times.items():
                    if ms is not None:
                        rows.append(row(f"{case} packed fwd+bwd{label} p={p}", (B, T, 3 * C), dtype, n, ms,
                                        flops=fl * 3.5, ceilings=ceilings, baseline="split+sdpa+merge",
                                        baseline_ms=times["split+sdpa+merge"]))
            del qkv, do
    if on_gpu:
        picked = TUNING.report()
        print("autotune / backward-kind choices:\n" + "\n".join(f"  {k}: {v}" for k, v in picked.items()))
        notes.append("Autotune picks ('triton autotuned' rows): " + "; ".join(f"{k}: {v}" for k, v in picked.items()))
    notes.append("'fwd+bwd kernels' rows: GPU busy time per call from the profiler (no Python/launch overhead). "
                 "'back-to-back' rows: wall time per call over 100 consecutive calls, no L2 flush (host overhead "
                 "included, not hidden behind do_bench's per-call flush).")
    write_results("attention", rows, ceilings, device, " ".join(notes))


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: this benchmark times compiled kernels (or, on CPU, torch only)")
    main(quick="--quick" in sys.argv)
