"""LayerNorm(x + residual) and bias + tanh-GELU: ours (Triton) vs eager PyTorch vs torch.compile.

Shapes: GPT-1 fine-tuning token counts (ROCStories batch 64 x 2 choices x 77 = 9856 rows, and
64 x 512 = 32768 rows), widths 768 (LayerNorm input, c_proj outputs) and 3072 (MLP hidden), fp32
parameters (what the model holds under autocast). Activation dtypes, three cases:
  "model":  what the model feeds each op under bf16 autocast, read off a small GPT with forward
            hooks (`model_dtype_mix`): LayerNorm gets an fp32 x (the residual stream) plus a bf16
            sublayer output and writes fp32; bias+GELU reads and writes bf16.
  "bf16" and "fp32": every activation in that dtype.

Bytes counted (the floor; the same count is used for every implementation, so GB/s is "useful"
bandwidth; sx, sr, sy = element sizes of x, residual, output; M rows, N width, parameters fp32):
  layer_norm fwd:  read x, residual (MN(sx+sr)) + weight, bias (8N); write y (MNsy) + mean, rstd (8M)
  layer_norm bwd:  read dy, x, residual (MN(sy+sx+sr)) + weight (4N) + mean, rstd (8M);
                   write d(x + residual) once (MNsy; it is the gradient of both) + dweight, dbias (8N)
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
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .common import bench, default_device, measure_ceilings, row, write_results

NAME = "layernorm_gelu"


def ln_bytes(M, N, s, direction):
    sx, sr, sy = s
    fwd = M * N * (sx + sr) + 8 * N + M * N * sy + 8 * M
    bwd = M * N * (sy + sx + sr) + 4 * N + 8 * M + M * N * sy + 8 * N
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[direction]


def gelu_bytes(M, N, s, direction):
    s = s[0]
    fwd = M * N * s + 4 * N + M * N * s
    bwd = 2 * M * N * s + 4 * N + M * N * s + 4 * N
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[direction]


def ref_layer_norm(x, r, w, b):
    s = x + r
    return F.layer_norm(s, (x.shape[-1],), w.to(s.dtype), b.to(s.dtype), 1e-5)


def ref_bias_gelu(x, b):
    return F.gelu(x + b.to(x.dtype), approximate="tanh")


def model_dtype_mix(device) -> dict:
    """{"layer_norm": (x, residual, output dtype), "bias_gelu": (x, output dtype)} as the model calls
    them under bf16 autocast: forward hooks on a small GPT (the torch backend; the outputs are the
    fused ops' contract: LayerNorm writes x + residual's promoted dtype, bias+GELU writes x's)."""
    from gpt1_fast.config import GPTConfig
    from gpt1_fast.model import MLP, LayerNorm, TransformerModel

    model = TransformerModel(GPTConfig(n_embd=32, n_head=2, n_layer=1, backend="torch"), vocab=40, n_ctx=8)
    model = model.to(device).train()
    seen = {}

    def ln_hook(mod, args, kwargs, out):
        x, r = args[0], kwargs.get("residual", args[1] if len(args) > 1 else None)
        seen["layer_norm"] = (x.dtype, r.dtype, torch.promote_types(x.dtype, r.dtype))

    def fc_hook(mod, args, out):
        seen["bias_gelu"] = (out.dtype, out.dtype)

    hooks = [m.register_forward_hook(ln_hook, with_kwargs=True) for m in model.modules() if isinstance(m, LayerNorm)]
    hooks += [m.c_fc.register_forward_hook(fc_hook) for m in model.modules() if isinstance(m, MLP)]
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(input_ids=torch.randint(0, 30, (2, 8), device=device))
    finally:
        for h in hooks:
            h.remove()
    return seen


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
    mix = model_dtype_mix(device)
    bf16, fp32 = torch.bfloat16, torch.float32
    # case -> (LayerNorm x, residual dtypes; bias+GELU x dtype)
    cases = {"model": (mix["layer_norm"][:2], mix["bias_gelu"][0]), "bf16": ((bf16, bf16), bf16),
             "fp32": ((fp32, fp32), fp32)}
    if quick or device.type != "cuda":
        rows_list, widths = [64, 256], [96, 384]
        cases = {"model": cases["model"], "fp32": cases["fp32"]}
    else:
        rows_list, widths = [9856, 32768], [768, 3072]
    print("dtype mix the model feeds under bf16 autocast: " + str(mix).replace("torch.", ""), flush=True)

    impls = {}
    TUNING = None
    if run_ours:
        from gpt1_fast.kernels.layernorm_gelu import TUNING
        from gpt1_fast.kernels.layernorm_gelu import bias_gelu, layer_norm

        impls["ours"] = (lambda x, r, w, b: layer_norm(x, w, b, 1e-5, residual=r), bias_gelu)
        if device.type == "cuda":  # the committed choice vs the sweep's candidates timed at first call
            impls["ours autotuned"] = impls["ours"]
    impls["eager"] = (ref_layer_norm, ref_bias_gelu)
    if run_compile:
        impls["torch.compile"] = (torch.compile(ref_layer_norm, dynamic=False),
                                  torch.compile(ref_bias_gelu, dynamic=False))
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    notes = ("Dtype cases: 'model' = what the model feeds each op under bf16 autocast (forward hooks on a "
             f"small GPT: {str(mix).replace('torch.', '')}), 'bf16'/'fp32' = all activations in that dtype. "
             "Bytes: inputs read once, outputs written once (see the module docstring); params fp32. "
             "ratio = ours / torch.compile (below 1 is faster); ratio_vs_eager likewise. "
             "CUDA times: CUDA-graph replays of one call (GPU time, host overhead excluded).")
    if not run_ours:
        notes += " Triton not run (no GPU, TRITON_INTERPRET unset): reference implementations only."
    if not run_compile:
        notes += " torch.compile skipped on CPU."
    rows = []
    g = torch.Generator(device=device).manual_seed(0)

    def size(dt):
        return torch.tensor([], dtype=dt).element_size()

    def short(dt):
        return str(dt).replace("torch.", "").replace("float", "fp").replace("bfp16", "bf16")

    for ci, (case, ((ln_x, ln_r), gelu_x)) in enumerate(cases.items()):
        if ci:  # results so far, in case a time-limited run is cut short
            write_results(NAME, rows, ceilings, device, notes + " (partial: cases so far)")
        ln_out = torch.promote_types(ln_x, ln_r)
        ln_label = f"{case}: x {short(ln_x)} + r {short(ln_r)} -> {short(ln_out)}"
        gelu_label = f"{case}: {short(gelu_x)}"
        for M in rows_list:
            for N in widths:
                def rnd(*shape, dt):
                    return torch.randn(*shape, device=device, dtype=torch.float32, generator=g).to(dt).requires_grad_()

                ln_in = [rnd(M, N, dt=ln_x), rnd(M, N, dt=ln_r),
                         (1 + 0.1 * rnd(N, dt=torch.float32)).detach().requires_grad_(), rnd(N, dt=torch.float32)]
                gelu_in = [rnd(M, N, dt=gelu_x), rnd(N, dt=torch.float32)]
                for op, inputs, nbytes, sizes, label in (
                        ("layer_norm+residual", ln_in, ln_bytes, (size(ln_x), size(ln_r), size(ln_out)), ln_label),
                        ("bias_gelu", gelu_in, gelu_bytes, (size(gelu_x),), gelu_label)):
                    idx = 0 if op.startswith("layer_norm") else 1
                    timed = {}
                    for name, fns in impls.items():
                        with (TUNING.override(autotune=True) if name == "ours autotuned" else nullcontext()):
                            timed[name] = _timers(fns[idx], inputs, device)
                    times = {name: t for name, (t, _) in timed.items()}
                    for direction in ("fwd", "bwd", "fwd+bwd"):
                        nb = nbytes(M, N, sizes, direction)
                        floor_ms = nb / (ceilings["copy_gbps"] * 1e6)
                        for name in impls:
                            ms = times[name][direction]
                            extra = {"direction": direction, "floor_ms": round(floor_ms, 5), "timing": timed[name][1]}
                            base = None
                            if name.startswith("ours"):
                                extra["ratio_vs_eager"] = round(ms / times["eager"][direction], 3)
                                base = "torch.compile" if "torch.compile" in times else "eager"
                            rows.append(row(f"{op} {direction}", (M, N), label, name, ms, nbytes=nb,
                                            ceilings=ceilings, baseline=base,
                                            baseline_ms=times[base][direction] if base else None, **extra))
                            r = rows[-1]
                            print(f"{op:20s} {direction:8s} {M:6d}x{N:<5d} {label:28s} {name:14s} "
                                  f"{ms:8.4f} ms {r.get('gbps', 0):8.1f} GB/s {r.get('fraction_of_ceiling', '')}"
                                  f" {('ratio vs ' + base + ' ' + str(r.get('ratio'))) if base else ''}", flush=True)
    if TUNING is not None and TUNING.timed:
        notes += " 'ours autotuned' picks: " + "; ".join(f"{k}: {v}" for k, v in TUNING.report().items())
    write_results(NAME, rows, ceilings, device, notes)


if __name__ == "__main__":
    import sys

    main("--quick" in sys.argv)
