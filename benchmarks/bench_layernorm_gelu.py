"""LayerNorm(x + residual) and bias + tanh-GELU: ours (Triton) vs eager PyTorch vs torch.compile.

Shapes: GPT-1 fine-tuning token counts (ROCStories batch 64 x 2 choices x 77 = 9856 rows, and
64 x 512 = 32768 rows), widths 768 (LayerNorm input, c_proj outputs) and 3072 (MLP hidden), bf16
and fp32 activations with fp32 parameters (what the model holds under autocast).

Bytes counted (the floor; the same count is used for every implementation, so GB/s is "useful"
bandwidth; s = activation element size, M rows, N width, parameters fp32):
  layer_norm fwd:  read x, residual (2MNs) + weight, bias (8N); write y (MNs) + mean, rstd (8M)
  layer_norm bwd:  read dy, x, residual (3MNs) + weight (4N) + mean, rstd (8M);
                   write d(x + residual) once (MNs; it is the gradient of both) + dweight, dbias (8N)
  bias_gelu fwd:   read x (MNs) + bias (4N); write y (MNs)
  bias_gelu bwd:   read dy, x (2MNs) + bias (4N); write dx (MNs) + dbias (4N)
  fwd+bwd:         the sum of the two.
The backward re-reads x and residual instead of a saved x + residual: the same bytes over a training
step (see gpt1_fast/kernels/layernorm_gelu.py).

Timing (CUDA): each measured call is captured in a CUDA graph and the replay is timed (GPU time
of the kernels; host overhead excluded, see graph_ms); rows say "timing": "cuda-graph", or
"eager-calls" where capture failed. Forward with inputs that require grad (the training regime:
the reference's forward then also saves what its backward needs); backward =
torch.autograd.grad of a retained graph (no .grad accumulation); fwd+bwd = both. The references cast the fp32 parameters to the activation dtype
first (F.layer_norm on CUDA rejects bf16 input with fp32 weight; for GELU, x + b would promote bf16 to
fp32 and move twice the bytes), so every implementation has the same output dtype.
On a CPU, Triton runs only under TRITON_INTERPRET=1 and torch.compile is skipped: such results are
for development only.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .common import bench, default_device, measure_ceilings, row, write_results

NAME = "layernorm_gelu"


def ln_bytes(M, N, s, direction):
    fwd = 2 * M * N * s + 8 * N + M * N * s + 8 * M
    bwd = 3 * M * N * s + 4 * N + 8 * M + M * N * s + 8 * N
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[direction]


def gelu_bytes(M, N, s, direction):
    fwd = M * N * s + 4 * N + M * N * s
    bwd = 2 * M * N * s + 4 * N + M * N * s + 4 * N
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[direction]


def ref_layer_norm(x, r, w, b):
    return F.layer_norm(x + r, (x.shape[-1],), w.to(x.dtype), b.to(x.dtype), 1e-5)


def ref_bias_gelu(x, b):
    return F.gelu(x + b.to(x.dtype), approximate="tanh")


def graph_ms(calls: dict, device, stream=None) -> dict:
    """{name: median ms} of each zero-argument callable, timed as the replay of a CUDA graph that
    holds one call (common.bench's do_bench around the replay: L2 flushed before each). Measures the
    GPU time of the kernels alone: with do_bench around eager calls, the host time of a call (Python,
    the custom-op and autograd machinery, Triton's launcher: 0.1-0.5 ms for a backward, more than
    the 256 MB L2 flush that should hide it) leaked into the numbers of the first H100 run.
    `stream`: the stream the calls' autograd graphs were built on (backward replays there)."""
    s = stream or torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    graphs = {}
    with torch.cuda.stream(s):
        for name, call in calls.items():
            for _ in range(2):  # compile / autotune / lazy backward compilation outside the capture
                call()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=s):
                call()
            graphs[name] = g
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    return {name: bench(g.replay, device) for name, g in graphs.items()}


def _timers(fn, inputs, device):
    """(ms for fwd, bwd, fwd+bwd of fn(*inputs) (all inputs require grad), timing method)."""
    if device.type == "cuda":
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):  # the retained graph's backward then runs on s too
                y = fn(*inputs)
                dy = torch.randn_like(y)
            return graph_ms({"fwd": lambda: fn(*inputs),
                             "bwd": lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True),
                             "fwd+bwd": lambda: torch.autograd.grad(fn(*inputs), inputs, dy)},
                            device, s), "cuda-graph"
        except Exception as e:  # capture not possible: time eager calls (host overhead included)
            print(f"CUDA graph timing failed ({type(e).__name__}: {str(e)[:200]}); timing eager calls", flush=True)
            torch.cuda.synchronize()
    y = fn(*inputs)
    dy = torch.randn_like(y)
    out = {"fwd": bench(lambda: fn(*inputs), device)}
    out["bwd"] = bench(lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True), device)
    out["fwd+bwd"] = bench(lambda: torch.autograd.grad(fn(*inputs), inputs, dy), device)
    return out, "eager-calls"


def main(quick: bool = False) -> None:
    device = default_device()
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    run_ours = device.type == "cuda" or interp
    run_compile = device.type == "cuda"
    ceilings = measure_ceilings(device, quick)
    if quick or device.type != "cuda":
        rows_list, widths, dtypes = ([64, 256], [96, 384], [torch.float32])
    else:
        rows_list, widths, dtypes = ([9856, 32768], [768, 3072], [torch.bfloat16, torch.float32])

    impls = {}
    if run_ours:
        from gpt1_fast.kernels.layernorm_gelu import bias_gelu, layer_norm

        impls["ours"] = (lambda x, r, w, b: layer_norm(x, w, b, 1e-5, residual=r), bias_gelu)
    impls["eager"] = (ref_layer_norm, ref_bias_gelu)
    if run_compile:
        impls["torch.compile"] = (torch.compile(ref_layer_norm, dynamic=False),
                                  torch.compile(ref_bias_gelu, dynamic=False))
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    notes = ("Bytes: inputs read once, outputs written once (see the module docstring); params fp32. "
             "ratio = ours / torch.compile (below 1 is faster); ratio_vs_eager likewise. "
             "CUDA times: CUDA-graph replays of one call (GPU time, host overhead excluded).")
    if not run_ours:
        notes += " Triton not run (no GPU, TRITON_INTERPRET unset): reference implementations only."
    if not run_compile:
        notes += " torch.compile skipped on CPU."
    rows = []
    g = torch.Generator(device=device).manual_seed(0)
    for di, dtype in enumerate(dtypes):
        if di:  # results so far, in case a time-limited run is cut short
            write_results(NAME, rows, ceilings, device, notes + " (partial: dtypes so far)")
        s = torch.tensor([], dtype=dtype).element_size()
        for M in rows_list:
            for N in widths:
                def rnd(*shape, dt=dtype):
                    return torch.randn(*shape, device=device, dtype=torch.float32, generator=g).to(dt).requires_grad_()

                ln_in = [rnd(M, N), rnd(M, N), (1 + 0.1 * rnd(N, dt=torch.float32)).detach().requires_grad_(),
                         rnd(N, dt=torch.float32)]
                gelu_in = [rnd(M, N), rnd(N, dt=torch.float32)]
                for op, inputs, nbytes in (("layer_norm+residual", ln_in, ln_bytes),
                                           ("bias_gelu", gelu_in, gelu_bytes)):
                    idx = 0 if op.startswith("layer_norm") else 1
                    timed = {name: _timers(fns[idx], inputs, device) for name, fns in impls.items()}
                    times = {name: t for name, (t, _) in timed.items()}
                    for direction in ("fwd", "bwd", "fwd+bwd"):
                        nb = nbytes(M, N, s, direction)
                        floor_ms = nb / (ceilings["copy_gbps"] * 1e6)
                        for name in impls:
                            ms = times[name][direction]
                            extra = {"direction": direction, "floor_ms": round(floor_ms, 5), "timing": timed[name][1]}
                            base = None
                            if name == "ours":
                                extra["ratio_vs_eager"] = round(ms / times["eager"][direction], 3)
                                base = "torch.compile" if "torch.compile" in times else "eager"
                            rows.append(row(f"{op} {direction}", (M, N), dtype, name, ms, nbytes=nb,
                                            ceilings=ceilings, baseline=base,
                                            baseline_ms=times[base][direction] if base else None, **extra))
                            r = rows[-1]
                            print(f"{op:20s} {direction:8s} {M:6d}x{N:<5d} {str(dtype)[6:]:9s} {name:14s} "
                                  f"{ms:8.4f} ms {r.get('gbps', 0):8.1f} GB/s {r.get('fraction_of_ceiling', '')}"
                                  f" {('ratio vs ' + base + ' ' + str(r.get('ratio'))) if base else ''}", flush=True)
    write_results(NAME, rows, ceilings, device, notes)


if __name__ == "__main__":
    import sys

    main("--quick" in sys.argv)
