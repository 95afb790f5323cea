"""Pretraining throughput: one update of `gpt1_fast.pretrain` (batch 64 x 512 tokens, every position
predicted, dropout 0.1, clipped Adam with L2), GPT-1 size, bf16 autocast with fp32 parameters,
ours against the alternatives on the same model, interleaved in one process (every implementation
resident, each round times each once, results rewritten after every round).

Implementations (--core: the ones marked *, the GPU suite's first call):
  * ours: triton+fused+compile   `ours_step`, what `gpt1_fast.pretrain` runs on a GPU (Triton kernels,
                                 fused OpenAI-Adam, torch.compile); every "ours" row calls this one function
  * ours: compiled + CUDA graph  the same step object captured whole (gpt1_fast.graphs.CapturedStep)
  * nanoGPT recipe               the same GPT-1 written as nanoGPT's model.py does (post-LN here), SDPA
                                 (is_causal), the model and its loss in torch.compile, clip_grad_norm_ +
                                 AdamW(fused=True)
    ours: triton+fused           eager
    ours: torch+compile          the reference ops backend, compiled (no custom kernel)
    HF transformers              OpenAIGPTLMHeadModel (eager, as a user runs it) + clip_grad_norm_ + AdamW(fused=True)
--quick: 2 layers x 128 wide, vocab 4000, batch 4 x 64, on whatever device is there (CPU: eager rows only).

Reported per row: ms per update, tokens/s, MFU (`fraction_of_ceiling`: model FLOPs / time / the measured bf16 matmul rate),
peak memory (CUDA: max_memory_allocated during a step minus what was allocated before the
implementation was built). Model FLOPs per update = 6 x N x tokens + causal attention 6 x L x T x d x tokens
(N = non-embedding parameters + the tied LM head's vocab x d; attention counted at half the T x T
square, fwd + bwd = 3x fwd).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.common import default_device, interleaved, measure_ceilings, medians, prepare_steps, row, write_results
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import LMModel
from gpt1_fast.opt import OpenAIAdam


def flops_per_update(cfg: GPTConfig, vocab: int, B: int, T: int) -> float:
    d, L = cfg.n_embd, cfg.n_layer
    n = 12 * d * d * L + vocab * d  # c_attn 3d^2 + c_proj d^2 + MLP 8d^2 per layer; the LM head GEMM
    tokens = B * T
    return 6 * n * tokens + 6 * L * T * d * tokens


# ------------------------------------------------------------------------ nanoGPT recipe, GPT-1 model
class NanoBlock(nn.Module):
    def __init__(self, d, n_head, p):
        super().__init__()
        self.n_head, self.p = n_head, p
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in self.c_attn(x).split(C, dim=2))
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)
        n = self.ln_1(x + self.drop(self.c_proj(a.transpose(1, 2).reshape(B, T, C))))  # GPT-1: post-LN
        return self.ln_2(n + self.drop(self.mlp_proj(F.gelu(self.c_fc(n), approximate="tanh"))))


class NanoGPT1(nn.Module):
    def __init__(self, cfg: GPTConfig, n_vocab: int, n_ctx: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(n_vocab, cfg.n_embd), nn.Embedding(n_ctx, cfg.n_embd)
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.h = nn.ModuleList([NanoBlock(cfg.n_embd, cfg.n_head, cfg.resid_pdrop) for _ in range(cfg.n_layer)])
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, x, y):
        h = self.drop(self.wte(x) + self.wpe(torch.arange(x.size(1), device=x.device)))
        for block in self.h:
            h = block(h)
        return F.cross_entropy((h @ self.wte.weight.T).float().view(-1, self.wte.num_embeddings), y.reshape(-1))


def adamw_groups(model):
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    return [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------- the steps
def amp(device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def ours_step(cfg, backend, compile_, n_vocab, T, device, B, capturable=False):
    """Our pretraining update, (step(x, y) -> loss, optimizer): the ONE function every "ours" row calls,
    and it is the product's: gpt1_fast.pretraining.LMTrainer's own device step (the LM loss inside
    LMModel, backward, OpenAI-Adam with the paper's schedule, gradients released), built by the
    RunContext as `gpt1_fast.pretrain` builds it (bf16 autocast on CUDA, torch.compile where asked)."""
    import argparse

    import numpy as np

    from gpt1_fast.context import RunContext
    from gpt1_fast.pretraining import LMConfig, LMTrainer

    torch.manual_seed(0)
    lm = LMModel(cfg.replace(backend=backend), n_vocab + T, T).to(device).train()
    ctx = RunContext(argparse.Namespace(device=str(device), dtype="auto", compile=compile_, seed=0), distributed=False)
    opt = OpenAIAdam(lm.parameters(), lr=2.5e-4, l2=0.01, max_grad_norm=1, fused=True if capturable else None,
                     capturable=capturable)
    tokens = np.zeros((B + 2) * (T + 1), dtype=np.uint16)  # the trainer's sampler needs a split; batches are given
    trainer = LMTrainer(lm, opt, tokens, tokens, LMConfig(n_ctx=T, n_batch=B, total_steps=1000, warmup_steps=20),
                        ctx)
    return trainer._device_step, opt


def nanogpt_step(cfg, compile_, n_vocab, T, device):
    torch.manual_seed(0)
    model = NanoGPT1(cfg, n_vocab, T).to(device).train()
    opt = torch.optim.AdamW(adamw_groups(model), lr=2.5e-4, fused=device.type == "cuda")
    fwd = torch.compile(model) if compile_ else model

    def step(x, y):
        with amp(device):
            loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def hf_step(cfg, n_vocab, T, device):
    import transformers

    if not hasattr(transformers, "OpenAIGPTLMHeadModel"):
        raise RuntimeError(f"transformers {transformers.__version__} has no OpenAIGPTLMHeadModel")
    hcfg = transformers.OpenAIGPTConfig(vocab_size=n_vocab, n_positions=T, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                                        n_head=cfg.n_head)
    model = transformers.OpenAIGPTLMHeadModel(hcfg).to(device).train()
    opt = torch.optim.AdamW(adamw_groups(model), lr=2.5e-4, fused=device.type == "cuda")

    def step(x, y):
        with amp(device):
            logits = model(input_ids=x).logits
        F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def implementations(cfg, n_vocab, T, device, B, core: bool) -> list[tuple]:
    """[(name, make() -> step, batches key, row whose memory base it shares)] (common.prepare_steps)."""
    from gpt1_fast.graphs import CapturedStep

    built = {}

    def compiled():
        if "c" not in built:
            built["c"] = ours_step(cfg, "triton", True, n_vocab, T, device, B, capturable=True)
        return built["c"]

    if device.type != "cuda":
        return [("ours: torch", lambda: ours_step(cfg, "torch", False, n_vocab, T, device, B)[0], "b", None),
                ("nanoGPT recipe (eager)", lambda: nanogpt_step(cfg, False, n_vocab, T, device), "b", None),
                ("HF transformers", lambda: hf_step(cfg, n_vocab, T, device), "b", None)]
    specs = [("ours: triton+fused+compile", lambda: compiled()[0], "b", None),
             ("ours: compiled + CUDA graph", lambda: CapturedStep(*compiled()), "b", "ours: triton+fused+compile"),
             ("nanoGPT recipe", lambda: nanogpt_step(cfg, True, n_vocab, T, device), "b", None)]
    if not core:
        specs += [("ours: triton+fused", lambda: ours_step(cfg, "triton", False, n_vocab, T, device, B)[0], "b", None),
                  ("ours: torch+compile", lambda: ours_step(cfg, "torch", True, n_vocab, T, device, B)[0], "b", None),
                  ("HF transformers", lambda: hf_step(cfg, n_vocab, T, device), "b", None)]
    return specs


def main(quick: bool = False, core: bool = False):
    device = default_device()
    cuda = device.type == "cuda"
    cfg = GPTConfig(n_embd=128, n_head=4, n_layer=2) if quick else GPTConfig()
    n_vocab = 4000 if quick else 40478
    B, T = (4, 64) if quick else (64, 512)
    ceilings = measure_ceilings(device, quick)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        w = torch.randint(0, n_vocab, (B, T + 1), generator=gen).to(device)
        batches.append((w[:, :-1], w[:, 1:]))
    runs, peaks = prepare_steps(implementations(cfg, n_vocab, T, device, B, core), {"b": batches}, device,
                                1 if quick else 2)
    flops = flops_per_update(cfg, n_vocab + T, B, T)
    floor_ms = flops / ceilings["matmul_tflops"] / 1e9

    def write(times):
        base = next((n for n in ("nanoGPT recipe", "nanoGPT recipe (eager)") if n in times), None)
        rows = []
        for name, ms in times.items():
            extra = {"tokens_per_s": round(B * T / ms * 1e3)}
            if name in peaks:
                extra["peak_mem_gib"] = round(peaks[name], 2)
            if "HF transformers" in times and name != "HF transformers":
                extra["ratio_vs_hf"] = round(ms / times["HF transformers"], 3)
            rows.append(row("pretrain update", [B, T], "bfloat16" if cuda else "float32", name, ms, flops=flops,
                            ceilings=ceilings, baseline=base if name != base else None, baseline_ms=times.get(base),
                            **extra))
        write_results("pretrain" + ("-quick" if quick else ""), rows, ceilings, device,
                      notes=f"GPT-1 {cfg.n_layer}x{cfg.n_embd}, vocab {n_vocab} + {T} positions, batch {B} x {T} "
                            f"tokens, dropout 0.1; ratio = ours / {base}; interleaved rounds, median; "
                            f"fraction_of_ceiling is the MFU (model TFLOP/s over the measured matmul rate); floor at "
                            f"the ceiling {floor_ms:.2f} ms ({math.floor(B * T / floor_ms * 1e3):,} tokens/s). "
                            "Goal: MFU >= 0.5 and >= 1.15x the nanoGPT recipe (ratio <= 0.87).")

    timing = dict(rounds=2, min_runs=1, rep_ms=0) if quick else dict(rounds=5, warmup_ms=100, rep_ms=1000)
    write(medians(interleaved(runs, device, on_round=write, **timing)))


if __name__ == "__main__":
    main()
