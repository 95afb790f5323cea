"""GPU check of the fused LM head + cross-entropy and of the fake-tensor memory benchmark:

(the fused op's parity at GPT-1 size and its compiled step are pytest tests: tests/test_gpu.py, -m cuda)
1. the ROCStories step (GPT-1, batch 64 x 2 x 77, bf16 autocast, triton backend, fused Adam, eager):
   torch.cuda.max_memory_allocated of one step after a warm-up step, against the peak that
   benchmarks/bench_memory.py reads on fake tensors (goal: within 10 %), and with
   activation checkpointing;
2. pretraining 64 x 512: peak memory and step time with and without activation checkpointing.
Prints one line per check; exits non-zero on a failure.

    PYTHONPATH=. python benchmarks/gpu_check_lm_head.py
"""
from __future__ import annotations

import sys

import torch

from benchmarks import bench_memory
from benchmarks.common import bench
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel
from gpt1_fast.opt import OpenAIAdam


def real_step_peak(ckpt: bool) -> tuple[float, float]:
    """(peak GiB of the second step, its loss) on the GPU."""
    cfg = GPTConfig(backend="triton", activation_checkpointing=ckpt)
    B, T, n_vocab = 64, 77, bench_memory.N_VOCAB
    X, M, Y = bench_memory.rocstories_batch(B, T, n_vocab, torch.Generator().manual_seed(0))
    X, M, Y = X.cuda(), M.cuda(), Y.cuda()
    torch.manual_seed(0)
    model = DoubleHeadModel(cfg, n_vocab + 2, "multiple_choice", n_vocab + 3 + T, T).cuda().train()
    opt = OpenAIAdam(model.parameters(), lr=6.25e-5, schedule="warmup_linear", warmup=0.002, t_total=1000,
                     l2=0.01, max_grad_norm=1, fused=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(X, M, Y)["loss"]
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
    for ckpt in (False, True):
        fake = bench_memory.rocstories_case(GPTConfig(activation_checkpointing=ckpt), 64, 77, True)["peak"]["Total"]
        fake /= 2**30
        real, _ = real_step_peak(ckpt)
        good = abs(real - fake) <= 0.1 * real
        ok &= good
        print(f"{'ok ' if good else 'BAD'} ROCStories step peak, checkpointing={ckpt}: max_memory_allocated "
              f"{real:.3f} GiB, fake-tensor benchmark {fake:.3f} GiB ({(fake - real) / real:+.1%})")
    pretrain_table()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
