"""GPU check of the fused LM head + cross-entropy and of the fake-tensor memory benchmark:

1. parity of ops.lm_head_loss "triton" against a float64 full-softmax reference at GPT-1's V and C,
   bf16 / fp16 / fp32 (loss, dh, dweight), an fp32 weight with bf16 h (autocast), 75 % rows kept;
2. the ROCStories step (GPT-1, batch 64 x 2 x 77, bf16 autocast, triton backend, fused Adam, eager):
   torch.cuda.max_memory_allocated of one step after a warm-up step, against the peak that
   benchmarks/bench_memory.py reads on fake tensors (goal: within 10 %), and with
   activation checkpointing;
3. torch.compile (Inductor) of the training step with the fused op: same loss as eager;
4. pretraining 64 x 512: peak memory and step time with and without activation checkpointing.
Prints one line per check; exits non-zero on a failure.

    PYTHONPATH=. python benchmarks/gpu_check_lm_head.py
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from benchmarks import bench_memory
from benchmarks.common import bench
from gpt1_fast import ops
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel
from gpt1_fast.opt import OpenAIAdam

TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def parity(N, V, C, dtype, wdtype, keep) -> bool:
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(N, C, device="cuda", generator=g).to(dtype).requires_grad_()
    w = (torch.randn(V, C, device="cuda", generator=g) * 0.05).to(wdtype).requires_grad_()
    t = torch.randint(0, V, (N,), device="cuda", generator=g)
    m = (torch.rand(N, device="cuda", generator=g) < keep).float()
    dl = torch.rand(N, device="cuda", generator=g) + 0.5
    loss = ops.lm_head_loss(h, w, t, m, backend="triton")
    dh, dw = torch.autograd.grad(loss, (h, w), dl)
    hr, wr = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = F.cross_entropy(hr @ wr.t(), t, reduction="none") * m.double()
    dhr, dwr = torch.autograd.grad(ref, (hr, wr), dl.double())
    errs = rel(loss, ref), rel(dh, dhr), rel(dw, dwr)
    ok = max(errs) < TOL[dtype] and dh.dtype == dtype and dw.dtype == wdtype
    print(f"{'ok ' if ok else 'BAD'} parity N={N} V={V} C={C} h={dtype} w={wdtype} keep={keep}: "
          f"loss {errs[0]:.2e} dh {errs[1]:.2e} dw {errs[2]:.2e}")
    return ok


def real_step_peak(ckpt: bool, compile_: bool = False) -> tuple[float, float]:
    """(peak GiB of the second step, its loss) on the GPU."""
    cfg = GPTConfig(backend="triton", activation_checkpointing=ckpt)
    B, T, n_vocab = 64, 77, bench_memory.N_VOCAB
    X, M, Y = bench_memory.rocstories_batch(B, T, n_vocab, torch.Generator().manual_seed(0))
    X, M, Y = X.cuda(), M.cuda(), Y.cuda()
    torch.manual_seed(0)
    model = DoubleHeadModel(cfg, n_vocab + 2, "multiple_choice", n_vocab + 3 + T, T).cuda().train()
    opt = OpenAIAdam(model.parameters(), lr=6.25e-5, schedule="warmup_linear", warmup=0.002, t_total=1000,
                     l2=0.01, max_grad_norm=1, fused=True)
    fwd = torch.compile(model) if compile_ else model

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(X, M, Y)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    loss = step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model, opt
    torch.cuda.empty_cache()
    return peak, loss


def pretrain_table() -> None:
    """Peak memory against step time for each option at pretraining size (64 x 512, bf16, eager and
    compiled): the table NOTES.md asks for. Prints rows; no pass/fail."""
    from gpt1_fast.model import TransformerModel

    B, T = 64, 512
    ids = torch.randint(0, bench_memory.N_VOCAB, (B, T), device="cuda")
    for ckpt in (False, True):
        for compile_ in (False, True):
            torch.manual_seed(0)
            model = TransformerModel(GPTConfig(backend="triton", activation_checkpointing=ckpt),
                                     bench_memory.N_VOCAB + T, T).cuda().train()
            opt = OpenAIAdam(model.parameters(), lr=2.5e-4, schedule="warmup_cosine", warmup=0.002, t_total=1000,
                             max_grad_norm=1, fused=True)
            fwd = torch.compile(model) if compile_ else model

            def step():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    h = fwd(input_ids=ids)
                    mask = torch.ones(B, T, device="cuda")
                    loss = bench_memory.lm_losses_from_hidden(h, model.embed.weight, ids, mask, "triton").mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            for _ in range(3):
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            ms = bench(step, torch.device("cuda"), warmup_ms=50, rep_ms=1000)
            print(f"pretraining 64x512 checkpointing={ckpt} compile={compile_}: {ms:.1f} ms/step, "
                  f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
            del model, opt, fwd
            torch.cuda.empty_cache()


def main() -> int:
    ok = True
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        ok &= parity(4096, 40990, 768, dtype, dtype, 1.0)
    ok &= parity(3000, 40990, 768, torch.bfloat16, torch.float32, 0.75)
    ok &= parity(1, 40990, 768, torch.bfloat16, torch.bfloat16, 1.0)
    for ckpt in (False, True):
        fake = bench_memory.rocstories_case(GPTConfig(activation_checkpointing=ckpt), 64, 77, True)["peak"]["Total"]
        fake /= 2**30
        real, _ = real_step_peak(ckpt)
        good = abs(real - fake) <= 0.1 * real
        ok &= good
        print(f"{'ok ' if good else 'BAD'} ROCStories step peak, checkpointing={ckpt}: max_memory_allocated "
              f"{real:.3f} GiB, fake-tensor benchmark {fake:.3f} GiB ({(fake - real) / real:+.1%})")
    _, eager_loss = real_step_peak(False)
    peak_c, compiled_loss = real_step_peak(False, compile_=True)
    good = abs(eager_loss - compiled_loss) <= 1e-2 * abs(eager_loss)
    ok &= good
    print(f"{'ok ' if good else 'BAD'} torch.compile step: loss {compiled_loss:.5f} vs eager {eager_loss:.5f}, "
          f"peak {peak_c:.3f} GiB")
    pretrain_table()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
