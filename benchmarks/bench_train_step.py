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
  HF transformers+compile      the same with torch.compile of the model
  nanoGPT recipe               GPT-1 written nanoGPT's way (SDPA, F.layer_norm, nn.Linear) + torch.compile
                               + clip_grad_norm_ + AdamW(fused=True): the strongest no-custom-kernel
                               alternative, and the baseline of the README's whole-step ratio

Floor: FLOPs = 6 x (non-embedding params + LM-head GEMM) x tokens + causal attention (counted once),
over the measured bf16 matmul rate.
"""
from __future__ import annotations

import torch

from benchmarks.common import bench, default_device, measure_ceilings, row, write_results
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel
from gpt1_fast.opt import OpenAIAdam
from gpt1_fast import ops

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


def objective(lm_logits, clf_logits, X, M, Y, lm_coef=0.5):
    """SPEC §4 from logits (the baselines that produce logits): mean clf loss + lm_coef x mean of the
    per-sequence masked LM losses."""
    T = X.size(-2)
    mask = M[..., 1:].reshape(-1, T - 1)
    lm = ops.cross_entropy(lm_logits, X[..., 1:, 0].reshape(-1)).view(-1, T - 1)
    return ops.cross_entropy(clf_logits, Y).mean() + lm_coef * ((lm * mask).sum(1) / mask.sum(1)).mean()


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
        with amp:  # the training path: the model's objective, LM loss from hidden states (ops.lm_head_loss)
            loss = fwd(X, M, Y)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def hf_step(cfg, vocab, T, device, lm_coef=0.5, compile_=False):
    import transformers

    hcfg = transformers.OpenAIGPTConfig(vocab_size=vocab - T, n_positions=T, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                                        n_head=cfg.n_head, num_labels=1)
    model = transformers.OpenAIGPTDoubleHeadsModel(hcfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01, fused=device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    fwd = torch.compile(model) if compile_ else model

    def step(X, M, Y, lengths):
        with amp:
            out = fwd(input_ids=X[..., 0], mc_token_ids=lengths)
        lm_logits = out.logits[:, :, :-1].reshape(-1, out.logits.size(-1))
        objective(lm_logits, out.mc_logits, X, M, Y, lm_coef).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class _NanoBlock(torch.nn.Module):
    """GPT-1's post-LN block written the nanoGPT way: nn.Linear, SDPA (flash/cuDNN), F.layer_norm,
    tanh-GELU, F.dropout."""

    def __init__(self, C, H, p):
        super().__init__()
        nn = torch.nn
        self.H, self.p = H, p
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        self.ln_1, self.ln_2 = nn.LayerNorm(C, eps=1e-5), nn.LayerNorm(C, eps=1e-5)

    def forward(self, x):
        F = torch.nn.functional
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in self.c_attn(x).split(C, 2))
        p = self.p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True).transpose(1, 2).reshape(B, T, C)
        n = self.ln_1(x + F.dropout(self.c_proj(y), p, self.training))
        m = F.dropout(self.mlp_proj(F.gelu(self.c_fc(n), approximate="tanh")), p, self.training)
        return self.ln_2(n + m)


class _NanoGPT1(torch.nn.Module):
    """GPT-1 with the multiple-choice head, nanoGPT style: the same shapes, math and outputs as
    DoubleHeadModel (tied LM head over the whole table, classify token by argmax)."""

    def __init__(self, cfg, vocab, clf_token):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, cfg.n_embd)
        self.h = torch.nn.ModuleList(_NanoBlock(cfg.n_embd, cfg.n_head, cfg.resid_pdrop) for _ in range(cfg.n_layer))
        self.clf = torch.nn.Linear(cfg.n_embd, 1)
        torch.nn.init.normal_(self.embed.weight, std=0.02)  # GPT-1's init (nn.Embedding's is N(0, 1))
        self.p, self.clf_token = cfg.embd_pdrop, clf_token

    def forward(self, X):
        F = torch.nn.functional
        B, n_choices, T, _ = X.shape
        h = F.dropout(self.embed(X.view(-1, T, 2)), self.p, self.training).sum(2)
        for block in self.h:
            h = block(h)
        lm_logits = h[:, :-1].reshape(-1, h.size(-1)) @ self.embed.weight.t()
        idx = (X[..., 0].reshape(-1, T) == self.clf_token).int().argmax(-1)
        clf_h = h[torch.arange(h.size(0), device=h.device), idx]
        return lm_logits, self.clf(F.dropout(clf_h, self.p, self.training)).view(B, n_choices)


def nanogpt_step(cfg, vocab, T, device, lm_coef=0.5):
    """nanoGPT's recipe on GPT-1: torch.compile + SDPA + clip_grad_norm_ + AdamW(fused=True), bf16 autocast."""
    torch.manual_seed(0)
    model = _NanoGPT1(cfg, vocab, vocab - T - 1).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01, fused=device.type == "cuda")
    fwd = torch.compile(model)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(X, M, Y, _lengths):
        with amp:
            lm_logits, clf_logits = fwd(X)
        objective(lm_logits, clf_logits, X, M, Y, lm_coef).backward()
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
        impls["nanoGPT recipe"] = lambda: nanogpt_step(cfg, vocab, T, device)
    try:
        import transformers  # noqa: F401

        impls["HF transformers"] = lambda: hf_step(cfg, vocab, T, device)
        if device.type == "cuda":
            impls["HF transformers+compile"] = lambda: hf_step(cfg, vocab, T, device, compile_=True)
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
    base = next(b for b in ("nanoGPT recipe", "reference: torch+compile", "reference: torch") if b in times or
                b == "reference: torch")
    rows = []
    for name, ms in times.items():
        extra = {"peak_mem_gib": round(mem[name], 2)} if name in mem else {}
        extra["tokens_per_s"] = round(B * 2 * T / ms * 1e3)
        for other, label in (("HF transformers", "ratio_vs_hf"), ("HF transformers+compile", "ratio_vs_hf_compile"),
                             ("reference: torch+compile", "ratio_vs_reference_compile")):
            if other in times and name != other:
                extra[label] = round(ms / times[other], 3)
        rows.append(row("train step", [B, 2, T], "bfloat16" if device.type == "cuda" else "float32", name, ms,
                        flops=flops, ceilings=ceilings, baseline=base if name != base else None,
                        baseline_ms=times.get(base), **extra))
    write_results("train_step", rows, ceilings, device,
                  notes=f"GPT-1 {cfg.n_layer}x{cfg.n_embd}, batch {B} stories x 2 x {T} tokens; ratio = ours / "
                        f"{base}; floor at the matmul ceiling = {flops / ceilings['matmul_tflops'] / 1e9:.2f} ms")


if __name__ == "__main__":
    main()
