"""One optimizer step with global-norm clipping over GPT-1's parameters: fused OpenAI-Adam
(gpt1_fast._C) against PyTorch's best pair and the slower paths, interleaved in one process.

Parameters: the 146 tensors of the released checkpoint (SPEC §1: positions [512, 768], tokens with the
3 ROCStories specials [40481, 768], then 12 x 12 layer tensors): 116.5 M fp32 parameters, one group
with l2 = 0.01 (decay on the 50 matrices). --quick: the same 146 tensors at width 128, vocab 4000
(2.9 M parameters). BENCH_ADAM_DEVICES=cuda,cpu (default: cuda when present, else cpu) picks devices.

Implementations (each on its own copy of p, m, v; all read the same fresh random gradients whose
global norm is far above max_grad_norm = 1, so clipping is active):
  fused            OpenAIAdam(fused=True): global-norm op + one multi-tensor update op per group
  fused+graph      (CUDA) the same step captured once in a CUDA graph (capturable=True), replayed
  torch fused      torch.nn.utils.clip_grad_norm_ + torch.optim.AdamW(fused=True)
  torch foreach    torch.nn.utils.clip_grad_norm_ + torch.optim.AdamW(foreach=True)
  unfused          OpenAIAdam(fused=False): the torch._foreach_* path of gpt1_fast.opt
  per-param loop   the PyTorch port's loop: one parameter at a time, clipping each on its own

Bytes that must move per step (the floor; the same count for every row, so GB/s is useful bandwidth):
read p, g, m, v and write p, m, v (28 B per fp32 parameter), plus the norm pass reading g (4 B):
32 B per parameter, 3.73 GB for GPT-1.
"""
from __future__ import annotations

import math
import os
import statistics

import torch

from benchmarks.common import bench, default_device, measure_ceilings, row, write_results
from gpt1_fast.opt import OpenAIAdam, lr_at

MAX_GRAD_NORM = 1.0
LR, L2 = 6.25e-5, 0.01


def gpt1_shapes(quick: bool) -> list[tuple[int, ...]]:
    d, vocab, ctx, layers = (128, 4000, 256, 12) if quick else (768, 40478 + 3, 512, 12)
    shapes: list[tuple[int, ...]] = [(ctx, d), (vocab, d)]
    for _ in range(layers):
        shapes += [(d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,), (d,), (d,)]
    return shapes


class PerParamLoop:
    """The PyTorch port's OpenAIAdam step (seeds/): per parameter, clip_grad_norm_ on that parameter
    alone (its bug), then the Adam arithmetic one tensor at a time."""

    def __init__(self, params, t_total):
        self.params, self.t_total = params, t_total
        self.state = {p: {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                      for p in params}

    @torch.no_grad()
    def step(self):
        group = dict(lr=LR, schedule="warmup_linear", warmup=0.002, t_total=self.t_total, b1=0.9, b2=0.999)
        for p in self.params:
            st = self.state[p]
            torch.nn.utils.clip_grad_norm_(p, MAX_GRAD_NORM)
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m.mul_(0.9).add_(p.grad, alpha=0.1)
            v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
            denom = v.sqrt().add_(1e-8)
            p.addcdiv_(m, denom, value=-lr_at(group, st["step"]))
            if p.dim() > 1:
                p.add_(p, alpha=-LR * L2)
            st["step"] += 1


def make_impls(shapes, grads, device):
    t_total = 10_000
    impls = {}

    def clone_params():
        ps = [torch.nn.Parameter(torch.randn(s, device=device) * 0.02) for s in shapes]
        for p, g in zip(ps, grads):
            p.grad = g
        return ps

    ps = clone_params()
    fused = OpenAIAdam(ps, lr=LR, t_total=t_total, l2=L2, max_grad_norm=MAX_GRAD_NORM, fused=True)
    impls["fused"] = fused.step

    if device.type == "cuda":
        ps = clone_params()
        cap = OpenAIAdam(ps, lr=LR, t_total=t_total, l2=L2, max_grad_norm=MAX_GRAD_NORM, fused=True, capturable=True)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            cap.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            cap.step()
        impls["fused+graph"] = graph.replay

    for name, kw in (("torch fused", {"fused": True}), ("torch foreach", {"foreach": True})):
        ps = clone_params()
        try:
            adamw = torch.optim.AdamW(ps, lr=LR, weight_decay=L2, **kw)
        except (RuntimeError, ValueError) as e:  # fused AdamW not supported on this device
            print(f"skipping {name}: {e}")
            continue

        def step(ps=ps, adamw=adamw):
            torch.nn.utils.clip_grad_norm_(ps, MAX_GRAD_NORM)
            adamw.step()

        impls[name] = step

    ps = clone_params()
    impls["unfused"] = OpenAIAdam(ps, lr=LR, t_total=t_total, l2=L2, max_grad_norm=MAX_GRAD_NORM, fused=False).step
    ps = clone_params()
    impls["per-param loop"] = PerParamLoop(ps, t_total).step
    return impls


def run_device(device: torch.device, quick: bool):
    shapes = gpt1_shapes(quick)
    n_params = sum(math.prod(s) for s in shapes)
    print(f"{device}: {len(shapes)} tensors, {n_params / 1e6:.1f} M parameters")
    ceilings = measure_ceilings(device, quick)
    # Fresh random gradients, global norm ~ sqrt(n_params) >> MAX_GRAD_NORM: clipping always active.
    grads = [torch.randn(s, device=device) for s in shapes]
    impls = make_impls(shapes, grads, device)
    for fn in impls.values():  # warm-up: state allocation, kernel loading
        fn()
    rounds = 2 if quick else 3
    rep_ms = 200 if device.type == "cpu" else 300
    times: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(rounds):  # interleaved: each round times every implementation once
        for name, fn in impls.items():
            times[name].append(bench(fn, device, warmup_ms=10, rep_ms=rep_ms, min_runs=3))
    nbytes = 32 * n_params
    shape = f"{len(shapes)} tensors, {n_params / 1e6:.1f}M params"
    base_ms = statistics.median(times["torch fused"]) if "torch fused" in times else None
    rows = []
    for name, ts in times.items():
        ms = statistics.median(ts)
        rows.append(row("openai_adam step + clip", shape, torch.float32, name, ms, nbytes=nbytes, ceilings=ceilings,
                        baseline="torch fused" if base_ms else None, baseline_ms=base_ms,
                        spread_ms=[round(min(ts), 4), round(max(ts), 4)]))
    floor_ms = nbytes / (ceilings["copy_gbps"] * 1e6)
    notes = (f"Floor: {nbytes / 1e9:.3f} GB (32 B/param: read p, g, m, v; write p, m, v; the norm pass reads g) "
             f"at the measured copy bandwidth = {floor_ms:.3f} ms. Median of {rounds} interleaved rounds; "
             "'torch fused' = clip_grad_norm_ + AdamW(fused=True).")
    write_results("adam", rows, ceilings, device, notes)
    return rows


def main(quick: bool = False):
    torch.manual_seed(0)
    names = os.environ.get("BENCH_ADAM_DEVICES")
    devices = [torch.device(n) for n in names.split(",")] if names else [default_device()]
    for device in devices:
        run_device(device, quick)


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)
