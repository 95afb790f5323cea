"""One ROCStories training step of the whole model (forward, TF loss, backward, clipped OpenAI-Adam),
ours against what a user would otherwise run, interleaved in one process.

Shape: batch 64 stories x 2 endings x T=77 tokens (the fitted n_ctx of the real data), GPT-1 size
(12 x 768, vocab 40478 + 3 specials + 77 positions); bf16 autocast with fp32 parameters on CUDA.
--quick: 2 layers x 128 wide, batch 8, on whatever device is there (CPU: reference rows only).

Implementations:
  ours: triton+fused+compile   Triton kernels, fused OpenAI-Adam, torch.compile  (what train.py runs on a GPU)
  ours: triton+fused           the same, eager
  reference: torch             the original's math op for op (ops backend "torch"), foreach OpenAI-Adam, eager
  reference: torch+compile     torch.compile of the reference (the strongest no-custom-kernel alternative)
  HF transformers              OpenAIGPTDoubleHeadsModel + clip_grad_norm_ + AdamW(fused=True), eager

Floor: FLOPs = 6 x (non-embedding params + LM-head GEMM) x tokens + causal attention (counted once),
over the measured bf16 matmul rate.
"""
from __future__ import annotations

import torch

from benchmarks.common import bench, default_device, measure_ceilings, row, write_results
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel
from gpt1_fast.opt import OpenAIAdam
from gpt1_fast.train import lm_and_clf_losses

N_SPECIAL = 3


def batch(B, T, n_vocab, device, gen):
    X = torch.zeros(B, 2, T, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, n_vocab, (B, 2, T), generator=gen)
    X[..., 1] = torch.arange(n_vocab + N_SPECIAL, n_vocab + N_SPECIAL + T)
    lengths = torch.randint(T // 2, T, (B, 2), generator=gen)
    M = (torch.arange(T) <= lengths[..., None]).float()
    X[torch.arange(B)[:, None], torch.arange(2)[None], lengths, 0] = n_vocab + 2  # classify token
    Y = torch.randint(0, 2, (B,), generator=gen)
    return X.to(device), M.to(device), Y.to(device), lengths.to(device)


def flops_per_step(cfg, B, T, vocab):
    tokens = B * 2 * T
    d, L = cfg.n_embd, cfg.n_layer
    dense = 12 * d * d * L  # c_attn 3d^2 + c_proj d^2 + mlp 8d^2
    attn_fwd = L * 2 * 2 * (B * 2) * T * T * d / 2  # qk^T and pv, causal half
    return 6 * (dense + vocab * d) * tokens + 3.5 * attn_fwd


def ours_step(cfg, backend, fused, compile_, vocab, T, device, lm_coef=0.5):
    torch.manual_seed(0)
    model = DoubleHeadModel(cfg.replace(backend=backend), vocab - N_SPECIAL - T + 2, "multiple_choice", vocab, T)
    model.to(device).train()
    opt = OpenAIAdam(model.parameters(), lr=6.25e-5, schedule="warmup_linear", warmup=0.002, t_total=1000,
                     l2=0.01, max_grad_norm=1, fused=fused)
    fwd = torch.compile(model) if compile_ else model
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(X, M, Y, _lengths):
        with amp:
            lm_logits, clf_logits = fwd(X)
        lm, clf = lm_and_clf_losses(lm_logits, clf_logits, X, M, Y)
        (clf.mean() + lm_coef * lm.mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def hf_step(cfg, vocab, T, device, lm_coef=0.5):
    import transformers

    hcfg = transformers.OpenAIGPTConfig(vocab_size=vocab - T, n_positions=T, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                                        n_head=cfg.n_head, num_labels=1)
    model = transformers.OpenAIGPTDoubleHeadsModel(hcfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01, fused=device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(X, M, Y, lengths):
        with amp:
            out = model(input_ids=X[..., 0], mc_token_ids=lengths)
        lm_logits = out.logits[:, :, :-1].reshape(-1, out.logits.size(-1))
        lm, clf = lm_and_clf_losses(lm_logits, out.mc_logits, X, M, Y)
        (clf.mean() + lm_coef * lm.mean()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main(quick: bool = False):
    device = default_device()
    cfg = GPTConfig(n_embd=128, n_head=4, n_layer=2) if quick else GPTConfig()
    n_vocab = 4000 if quick else 40478
    B, T = (8, 77) if quick else (64, 77)
    vocab = n_vocab + N_SPECIAL + T
    ceilings = measure_ceilings(device, quick)
    gen = torch.Generator().manual_seed(0)
    batches = [batch(B, T, n_vocab, device, gen) for _ in range(4)]
    impls = {}
    if device.type == "cuda":
        impls["ours: triton+fused+compile"] = lambda: ours_step(cfg, "triton", True, True, vocab, T, device)
        impls["ours: triton+fused"] = lambda: ours_step(cfg, "triton", True, False, vocab, T, device)
    impls["reference: torch"] = lambda: ours_step(cfg, "torch", False, False, vocab, T, device)
    if device.type == "cuda":
        impls["reference: torch+compile"] = lambda: ours_step(cfg, "torch", False, True, vocab, T, device)
    try:
        import transformers  # noqa: F401

        impls["HF transformers"] = lambda: hf_step(cfg, vocab, T, device)
    except ImportError:
        pass
    flops = flops_per_step(cfg, B, T, vocab)
    times, mem = {}, {}
    for name, make in impls.items():  # one model at a time: the full model x5 would not share memory well
        try:
            step = make()
            it = iter(range(1 << 30))
            run = lambda: step(*batches[next(it) % len(batches)])  # noqa: E731
            for _ in range(3):
                run()  # warm-up (compilation, autotuning, optimizer state)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            times[name] = bench(run, device, warmup_ms=50, rep_ms=500 if not quick else 100)
            if device.type == "cuda":
                mem[name] = torch.cuda.max_memory_allocated() / 2**30
        except Exception as e:  # a baseline that cannot run here is reported, not fatal
            print(f"{name}: skipped ({type(e).__name__}: {e})")
        finally:
            step = run = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    base = "reference: torch+compile" if "reference: torch+compile" in times else "reference: torch"
    rows = []
    for name, ms in times.items():
        extra = {"peak_mem_gib": round(mem[name], 2)} if name in mem else {}
        extra["tokens_per_s"] = round(B * 2 * T / ms * 1e3)
        if "HF transformers" in times and name != "HF transformers":
            extra["ratio_vs_hf"] = round(ms / times["HF transformers"], 3)
        rows.append(row("train step", [B, 2, T], "bfloat16" if device.type == "cuda" else "float32", name, ms,
                        flops=flops, ceilings=ceilings, baseline=base if name != base else None,
                        baseline_ms=times.get(base), **extra))
    write_results("train_step", rows, ceilings, device,
                  notes=f"GPT-1 {cfg.n_layer}x{cfg.n_embd}, batch {B} stories x 2 x {T} tokens; ratio = ours / "
                        f"{base}; floor at the matmul ceiling = {flops / ceilings['matmul_tflops'] / 1e9:.2f} ms")


if __name__ == "__main__":
    main()
