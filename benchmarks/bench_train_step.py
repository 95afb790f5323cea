"""One ROCStories training step of the whole model (forward, TF loss, backward, clipped OpenAI-Adam),
ours against what a user would otherwise run, interleaved in one process (every implementation
resident, each round times each once).

Shape: batch 64 stories x 2 endings, GPT-1 size (12 x 768, vocab 40478 + 3 specials + 77 positions),
bf16 autocast with fp32 parameters on CUDA. Story lengths resemble ROCStories' (about 47 +- 9 tokens,
at most 77, the fitted n_ctx). --quick: 2 layers x 128 wide, batch 8, on whatever device is there.

Every implementation gets the same batches padded to 77 (kernel speed, nothing else). Padding is
reported apart: "per-batch padding" runs our captured step on the same batches cut to their own
longest story (rounded up to 8, as --padding batch does), against the same step at 77.

Implementations (--core: the ones marked *, the GPU suite's first call):
  * ours: compiled               `ours_step`: Triton kernels, fused OpenAI-Adam, torch.compile (train.py on a GPU)
  * ours: compiled + CUDA graph  the same step object, captured whole (gpt1_fast.graphs.CapturedStep)
  * ours: eager + CUDA graph     not compiled, captured: no compile cost, no host cost
  * ours: eager + CUDA graph, per-batch padding   the padding row (ratio against the row above)
  * nanoGPT recipe               GPT-1 written nanoGPT's way (SDPA, F.layer_norm, nn.Linear), the model AND
                                 its loss inside torch.compile, clip_grad_norm_ + AdamW(fused=True): the
                                 baseline of the README's whole-step ratio
    ours: eager                  Triton kernels, fused Adam, no compile, no graph
    reference: torch (+compile)  the original's math op for op (ops backend "torch"), foreach OpenAI-Adam
    HF transformers (+compile)   OpenAIGPTDoubleHeadsModel + clip_grad_norm_ + AdamW(fused=True)
Every "ours" row calls one function, `ours_step` (to be pointed at the trainer's own train_step).

Floor: FLOPs = 6 x (non-embedding params + LM-head GEMM) x tokens + causal attention (counted once),
over the measured bf16 matmul rate. peak_mem_gib: max_memory_allocated during a step minus what was
allocated before the implementation was built (its parameters, gradients, optimizer state, graphs).
"""
from __future__ import annotations

import torch

from benchmarks.common import default_device, interleaved, measure_ceilings, medians, prepare_steps, row, write_results
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel
from gpt1_fast.opt import OpenAIAdam
from gpt1_fast import ops

N_SPECIAL = 3


def batch(B, T, n_vocab, device, gen):
    """(X, M, Y, lengths): stories of ROCStories-like lengths (47 +- 9 tokens, at most T), padded to T."""
    X = torch.zeros(B, 2, T, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, n_vocab, (B, 2, T), generator=gen)
    X[..., 1] = torch.arange(n_vocab + N_SPECIAL, n_vocab + N_SPECIAL + T)
    lengths = (torch.randn(B, 2, generator=gen) * 9 * T / 77 + 47 * T / 77).round().long().clamp(T // 4, T - 1)
    M = (torch.arange(T) <= lengths[..., None]).float()
    X[torch.arange(B)[:, None], torch.arange(2)[None], lengths, 0] = n_vocab + 2  # classify token
    Y = torch.randint(0, 2, (B,), generator=gen)
    return X.to(device), M.to(device), Y.to(device), lengths.to(device)


def per_batch_padded(b, multiple=8):
    """The same batch cut to its longest story, rounded up to `multiple` (as --padding batch does)."""
    X, M, Y, lengths = b
    T = min(X.size(2), -(-(int(lengths.max()) + 1) // multiple) * multiple)
    return X[:, :, :T].contiguous(), M[:, :, :T].contiguous(), Y, lengths


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


def ours_step(cfg, backend, fused, compile_, vocab, T, device, lm_coef=0.5, capturable=False, dtype="auto"):
    """Our training step, (step(X, M, Y, lengths) -> loss, optimizer): the ONE function every "ours" row
    calls, and it is the product's: gpt1_fast.tasks.trainer.Trainer's own device step (the model's
    objective with the fused LM-head loss, backward, OpenAI-Adam, gradients released), built by the
    RunContext as `gpt1_fast.train` builds it (--dtype: bf16 autocast on CUDA by default; torch.compile
    where asked); the batch itself is given (Trainer.train_step makes it from the encoded split first)."""
    import argparse

    import numpy as np

    from gpt1_fast.context import RunContext
    from gpt1_fast.layout import EmbeddingLayout
    from gpt1_fast.tasks import get_task
    from gpt1_fast.tasks.common import Encoded
    from gpt1_fast.tasks.task import TaskData
    from gpt1_fast.tasks.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    layout = EmbeddingLayout(vocab - N_SPECIAL - T, n_ctx=T)
    model = DoubleHeadModel(cfg.replace(backend=backend), layout.clf, "multiple_choice", vocab, T, lm_coef=lm_coef)
    model.to(device).train()
    opt = OpenAIAdam(model.parameters(), lr=6.25e-5, schedule="warmup_linear", warmup=0.002, t_total=1000,
                     l2=0.01, max_grad_norm=1, fused=fused, capturable=capturable)
    ctx = RunContext(argparse.Namespace(device=str(device), dtype=dtype, compile=compile_, seed=0), distributed=False)
    one = Encoded.from_sequences([[[layout.start, layout.clf]] * 2], np.zeros(1, dtype=np.int64), ["0"], T)
    trainer = Trainer(get_task("rocstories"), TaskData(layout, {"train": one}), model, opt,
                      TrainConfig(n_batch=1, padding="global"), ctx)
    return (lambda X, M, Y, _lengths=None: trainer._device_step(X, M, Y)), opt


def captured(step_and_opt):
    """The step captured whole in a CUDA graph (one graph per batch shape)."""
    from gpt1_fast.graphs import CapturedStep

    step, opt = step_and_opt
    graphed = CapturedStep(lambda X, M, Y: step(X, M, Y), opt)
    return lambda X, M, Y, _lengths=None: graphed(X, M, Y)


def hf_step(cfg, vocab, T, device, lm_coef=0.5, compile_=False, bf16=None):
    """HF transformers' GPT-1 with the same objective (transformers 4.x and 5.x: the model class is looked
    up by name; where it is gone the row is skipped with the reason)."""
    import transformers

    if not hasattr(transformers, "OpenAIGPTDoubleHeadsModel"):
        raise RuntimeError(f"transformers {transformers.__version__} has no OpenAIGPTDoubleHeadsModel")
    hcfg = transformers.OpenAIGPTConfig(vocab_size=vocab - T, n_positions=T, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                                        n_head=cfg.n_head, num_labels=1)
    model = transformers.OpenAIGPTDoubleHeadsModel(hcfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01, fused=device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" if bf16 is None else bf16)
    fwd = torch.compile(model) if compile_ else model

    def step(X, M, Y, lengths):
        with amp:
            out = fwd(input_ids=X[..., 0], mc_token_ids=lengths)
        lm_logits = out.logits[:, :, :-1].reshape(-1, out.logits.size(-1))
        loss = objective(lm_logits, out.mc_logits, X, M, Y, lm_coef)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

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
    """nanoGPT's recipe on GPT-1: the model and its loss compiled together (nanoGPT's forward returns the
    loss), SDPA, clip_grad_norm_ + AdamW(fused=True), bf16 autocast."""
    torch.manual_seed(0)
    model = _NanoGPT1(cfg, vocab, vocab - T - 1).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01, fused=device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def model_and_loss(X, M, Y):
        lm_logits, clf_logits = model(X)
        return objective(lm_logits, clf_logits, X, M, Y, lm_coef)

    compiled = torch.compile(model_and_loss) if device.type == "cuda" else model_and_loss

    def step(X, M, Y, _lengths=None):
        with amp:
            loss = compiled(X, M, Y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def implementations(cfg, vocab, T, device, core: bool) -> list[tuple]:
    """[(name, make() -> step, batches "padded" | "per_batch", row whose memory base it shares)]."""
    cuda, built = device.type == "cuda", {}

    def once(key, make):
        return lambda: built[key] if key in built else built.setdefault(key, make())

    compiled = once("compiled", lambda: ours_step(cfg, "triton", True, True, vocab, T, device, capturable=True))
    eager_graph = once("eager_graph", lambda: captured(ours_step(cfg, "triton", True, False, vocab, T, device,
                                                                 capturable=True)))
    specs = []
    if cuda:
        specs += [("ours: compiled", lambda: compiled()[0], "padded", None),
                  ("ours: compiled + CUDA graph", lambda: captured(compiled()), "padded", "ours: compiled"),
                  ("ours: eager + CUDA graph", eager_graph, "padded", None),
                  ("ours: eager + CUDA graph, per-batch padding", eager_graph, "per_batch", "ours: eager + CUDA graph"),
                  ("nanoGPT recipe", lambda: nanogpt_step(cfg, vocab, T, device), "padded", None)]
    if core and cuda:
        return specs
    if cuda:
        specs.append(("ours: eager", lambda: ours_step(cfg, "triton", True, False, vocab, T, device)[0], "padded", None))
    specs.append(("reference: torch", lambda: ours_step(cfg, "torch", False, False, vocab, T, device)[0], "padded", None))
    if cuda:
        specs.append(("reference: torch+compile", lambda: ours_step(cfg, "torch", False, True, vocab, T, device)[0],
                      "padded", None))
    specs.append(("HF transformers", lambda: hf_step(cfg, vocab, T, device), "padded", None))
    if cuda:
        specs.append(("HF transformers+compile", lambda: hf_step(cfg, vocab, T, device, compile_=True), "padded", None))
    return specs


def result_rows(times, peaks, tokens, flops, ceilings, dtype, B, T):
    base = "nanoGPT recipe" if "nanoGPT recipe" in times else "reference: torch"
    rows = []
    for name, ms in times.items():
        extra = {"tokens_per_s": round(tokens / ms * 1e3)}
        if name in peaks:
            extra["peak_mem_gib"] = round(peaks[name], 2)
        for other, label in (("HF transformers", "ratio_vs_hf"), ("HF transformers+compile", "ratio_vs_hf_compile"),
                             ("reference: torch+compile", "ratio_vs_reference_compile")):
            if other in times and name != other:
                extra[label] = round(ms / times[other], 3)
        padding = name.endswith("per-batch padding")
        ref = "ours: eager + CUDA graph" if padding else base
        rows.append(row("train step, padding saving" if padding else "train step", [B, 2, T], dtype, name, ms,
                        flops=None if padding else flops, ceilings=ceilings, baseline=ref if name != ref else None,
                        baseline_ms=times.get(ref), **extra))
    return rows


def main(quick: bool = False, core: bool = False):
    device = default_device()
    cfg = GPTConfig(n_embd=128, n_head=4, n_layer=2) if quick else GPTConfig()
    n_vocab = 4000 if quick else 40478
    B, T = (8, 77) if quick else (64, 77)
    vocab = n_vocab + N_SPECIAL + T
    ceilings = measure_ceilings(device, quick)
    gen = torch.Generator().manual_seed(0)
    padded = [batch(B, T, n_vocab, device, gen) for _ in range(4)]
    batches = {"padded": padded, "per_batch": [per_batch_padded(b) for b in padded]}
    widths = sorted({b[0].size(2) for b in batches["per_batch"]})
    runs, peaks = prepare_steps(implementations(cfg, vocab, T, device, core), batches, device, 1 if quick else 3)
    flops, dtype = flops_per_step(cfg, B, T, vocab), "bfloat16" if device.type == "cuda" else "float32"
    notes = (f"GPT-1 {cfg.n_layer}x{cfg.n_embd}, batch {B} stories x 2 x {T} tokens (per-batch padding: widths "
             f"{widths}); ratio = time / the named baseline's; interleaved rounds, median; floor at the matmul "
             f"ceiling = {flops / ceilings['matmul_tflops'] / 1e9:.2f} ms. Goals: ours: compiled <= 0.8x the nanoGPT "
             "recipe, >= 50 % MFU, peak <= 4 GiB")

    def write(meds):
        write_results("train_step" + ("-quick" if quick else ""), result_rows(meds, peaks, B * 2 * T, flops, ceilings,
                                                                                dtype, B, T), ceilings, device, notes)

    timing = dict(rounds=2, min_runs=1, rep_ms=0) if quick else dict(rounds=5, warmup_ms=50, rep_ms=300)
    write(medians(interleaved(runs, device, on_round=write, **timing)))


if __name__ == "__main__":
    main()
