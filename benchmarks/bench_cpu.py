"""GPT-1 on the CPU against Hugging Face transformers on the same cores, in one process, same inputs:

  inference    classification forward (tokens/s), 16 texts x 64 tokens, ours with the default backend
               (auto: on a CPU, PyTorch's fused LayerNorm, GELU and attention kernels eagerly, the
               reference formulas under torch.compile): ours fp32 eager (--dtype fp32 --no-compile),
               ours bf16 autocast eager, ours compiled + bf16 (what a
               long evaluation runs by default on a CPU with native bf16: gpt1_fast.inference), ours
               compiled fp32; HF OpenAIGPTModel + the same head, fp32 and under bf16 autocast. The
               logits are compared with ours in fp32 (max_abs_diff).
  fine-tuning  one step (forward, loss with the auxiliary LM term, backward, optimizer) on 8 stories x 2
               endings x 77 tokens: ours (the Trainer's step: OpenAI-Adam, fp32 master weights) fp32 and
               bf16 autocast, eager and compiled (--compile); HF OpenAIGPTDoubleHeadsModel + AdamW + clipping,
               fp32 and bf16 autocast.
  generation   8 prompts x 16 tokens, 256 new tokens each, greedy: ours fp32 and bf16 (the `cpu` backend's
               decoding on weights packed once per generation, bf16 cache: what `generate` runs by default
               on such a CPU) against HF `generate` (fp32; its GPT-1 has no KV cache); tokens/s and two
               floors: every step reads the weights once (n_params x 2 bytes in bf16, x 4 in fp32) at the
               copy bandwidth measured in this run; and the weights plus the mean cache at the read
               bandwidth (a sum) measured in this run.

Interleaved rounds (each round times every implementation once, rotated), medians. Threads, the CPU's
bf16 flags and the versions go with the results. --quick: 2 layers x 128, vocab 1000, few tokens.
"""
from __future__ import annotations

import contextlib
import tempfile
import time

import torch

from benchmarks.common import bench, interleaved, measure_ceilings, medians, row, write_results
from benchmarks.bench_train_step import N_SPECIAL, batch, hf_step, ours_step
from gpt1_fast import cpu
from gpt1_fast.config import GPTConfig
from gpt1_fast.inference import block_weights, compiled_head_outputs, head_outputs
from gpt1_fast.model import DoubleHeadModel, LMModel

CPU = torch.device("cpu")


def sizes(quick: bool) -> dict:
    if quick:
        return dict(cfg=GPTConfig(n_embd=128, n_head=4, n_layer=2), n_vocab=1000, infer=(4, 32), train=(2, 32),
                    gen=(2, 8, 16), rounds=(2, 2, 2))
    # rounds of inference, fine-tuning, generation (a fine-tuning step takes seconds here, HF's generation minutes;
    # fine-tuning gets 7: its ratios moved by ~10 % between runs of 3 on a shared 2-core machine)
    return dict(cfg=GPTConfig(), n_vocab=40478, infer=(16, 64), train=(8, 77), gen=(8, 16, 256), rounds=(5, 7, 3))


def amp(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------ inference
def inference_impls(cfg, n_vocab, B, T) -> tuple[dict, dict, int]:
    """({name: run() -> logits}, {name: dtype}, n tokens): ours and HF on the same weights and texts."""
    import transformers

    from gpt1_fast.weights import export_hf

    torch.manual_seed(0)
    n_ctx, clf = 512 if T > 32 else 64, n_vocab + 2
    ours = DoubleHeadModel(cfg.replace(backend="auto"), clf, ("classification", 2), n_vocab + N_SPECIAL + n_ctx,
                           n_ctx).eval()
    X = torch.zeros(B, 1, T, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, n_vocab, (B, 1, T), generator=torch.Generator().manual_seed(1))
    X[:, :, -1, 0] = clf
    X[..., 1] = torch.arange(n_vocab + N_SPECIAL, n_vocab + N_SPECIAL + T)
    with tempfile.TemporaryDirectory() as d:
        export_hf(ours.transformer, d)
        hf = transformers.OpenAIGPTModel.from_pretrained(d).eval()
    ids, head = X[:, 0, :, 0], ours.task_head.linear

    def ours_fn(bf16, compiled):
        """As task_logits runs a batch: the blocks' bf16 weights made once per evaluation (not timed)."""
        fwd = compiled_head_outputs() if compiled else head_outputs
        weights = block_weights(ours, torch.bfloat16) if bf16 else None
        return lambda: _no_grad(lambda: fwd(ours, X, weights), bf16)

    def hf_fn(bf16):
        return lambda: _no_grad(lambda: head(hf(input_ids=ids).last_hidden_state[:, -1]).float(), bf16)

    impls = {"ours: fp32 eager": ours_fn(False, False), "ours: bf16 eager": ours_fn(True, False),
             "ours: compiled bf16": ours_fn(True, True), "ours: compiled fp32": ours_fn(False, True),
             "HF transformers fp32": hf_fn(False), "HF transformers bf16 autocast": hf_fn(True)}
    dtypes = {k: "bfloat16" if "bf16" in k else "float32" for k in impls}
    return impls, dtypes, B * T


def _no_grad(fn, bf16: bool):
    with torch.no_grad(), amp(bf16):
        return fn()


def warm(impls: dict, label: str) -> dict:
    """Call each once (compilation, first-touch): {name: seconds}; one that fails is dropped, with why."""
    first = {}
    for name, fn in list(impls.items()):
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a baseline that cannot run here is reported, not fatal
            print(f"{label} {name}: skipped ({type(e).__name__}: {str(e)[:300]})", flush=True)
            del impls[name]
            continue
        first[name] = time.perf_counter() - t0
    return first


def inference_rows(cfg, n_vocab, B, T, rounds) -> list[dict]:
    impls, dtypes, tokens = inference_impls(cfg, n_vocab, B, T)
    first = warm(impls, "inference")
    ref = impls["ours: fp32 eager"]().float()
    diffs = {k: (fn().float() - ref).abs().max().item() for k, fn in impls.items()}
    t = medians(interleaved(impls, CPU, rounds=rounds, min_runs=3, rep_ms=0))
    rows = []
    for name, ms in t.items():
        extra = {key: round(t[h] / ms, 2) for key, h in (("x_hf_fp32", "HF transformers fp32"),
                                                          ("x_hf_bf16", "HF transformers bf16 autocast")) if h in t}
        rows.append(row("inference: classification forward", [B, T], dtypes[name], name, ms,
                        baseline="HF transformers fp32" if "HF transformers fp32" in t else None,
                        baseline_ms=t.get("HF transformers fp32"), tokens_per_s=round(tokens / ms * 1e3),
                        first_call_s=round(first[name], 1), max_abs_diff=round(diffs[name], 5), **extra))
    return rows


# ---------------------------------------------------------------------------------------- fine-tuning
def ours_train_step(cfg, vocab, T, bf16: bool, compiled: bool):
    """The Trainer's own device step on a CPU (bench_train_step.ours_step) with the default backend (auto:
    the CPU LM-head loss, gpt1_fast/cpu_lm_head.py): the model's objective, backward, OpenAI-Adam (fp32
    master weights and state), --dtype bf16 or fp32, --compile or not."""
    return ours_step(cfg, "auto", None, compiled, vocab, T, CPU, dtype="bf16" if bf16 else "fp32")[0]


def hf_train_step(cfg, vocab, T, bf16: bool):
    """HF transformers' GPT-1 double-heads model, the same objective, clip_grad_norm_ + AdamW."""
    torch.manual_seed(0)
    return hf_step(cfg, vocab, T, CPU, bf16=bf16)


def train_rows(cfg, n_vocab, B, T, rounds) -> list[dict]:
    vocab = n_vocab + N_SPECIAL + T
    gen = torch.Generator().manual_seed(0)
    batches = [batch(B, T, n_vocab, CPU, gen) for _ in range(2)]
    makers = {"ours: fp32 eager": lambda: ours_train_step(cfg, vocab, T, False, False),
              "ours: fp32 compiled": lambda: ours_train_step(cfg, vocab, T, False, True),
              "ours: bf16 eager": lambda: ours_train_step(cfg, vocab, T, True, False),
              "ours: bf16 compiled": lambda: ours_train_step(cfg, vocab, T, True, True),
              "HF transformers fp32": lambda: hf_train_step(cfg, vocab, T, False),
              "HF transformers bf16 autocast": lambda: hf_train_step(cfg, vocab, T, True)}
    impls = {}
    for name, make in makers.items():  # built one after another: each holds its model and optimizer state
        step, it = make(), iter(range(10 ** 9))
        impls[name] = (lambda step, it: lambda: step(*batches[next(it) % len(batches)]))(step, it)
    first = warm(impls, "fine-tuning")
    t = medians(interleaved(impls, CPU, rounds=rounds, min_runs=1, rep_ms=0))
    rows = []
    for name, ms in t.items():
        hf = "HF transformers bf16 autocast" if "bf16" in name else "HF transformers fp32"
        rows.append(row("fine-tuning step", [B, 2, T], "bfloat16" if "bf16" in name else "float32", name, ms,
                        baseline=hf if hf in t else None, baseline_ms=t.get(hf),
                        speedup_vs_hf=round(t[hf] / ms, 2) if hf in t else None,
                        tokens_per_s=round(B * 2 * T / ms * 1e3), first_call_s=round(first[name], 1)))
    return rows


# ----------------------------------------------------------------------------------------- generation
def generation_rows(cfg, n_vocab, n_prompts, prompt_len, n_new, rounds, ceilings) -> list[dict]:
    from benchmarks.bench_generate import hf_generate

    torch.manual_seed(0)
    n_ctx = 512 if n_new > 64 else 64
    ours = LMModel(cfg.replace(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, backend="auto"), n_vocab + n_ctx,
                   n_ctx).eval()
    prompts = torch.randint(0, n_vocab, (n_prompts, prompt_len), generator=torch.Generator().manual_seed(1))
    rows_in = prompts.tolist()
    impls = {"ours: fp32": lambda n: ours.generate(rows_in, n, greedy=True).tokens,
             "ours: bf16": lambda n: ours.generate(rows_in, n, greedy=True, dtype=torch.bfloat16).tokens}
    hf = hf_generate(ours, CPU, prompts)
    for fn in impls.values():
        fn(4)
    out = {}
    times = interleaved({k: (lambda k, fn: lambda: out.__setitem__(k, fn(n_new)))(k, fn) for k, fn in impls.items()},
                        CPU, rounds=rounds, min_runs=1, rep_ms=0)
    t = medians(times)
    if hf is not None:
        t0 = time.perf_counter()
        out["HF transformers fp32"] = hf(n_new)
        t["HF transformers fp32"] = (time.perf_counter() - t0) * 1e3
    n_params = sum(p.numel() for p in ours.parameters())
    # the cache's keys and values read by the attention of a step, on average over the n_new steps
    kv_values = 2 * cfg.n_layer * n_prompts * cfg.n_embd * (prompt_len + (n_new - 1) / 2)
    rows = []
    for name, ms in t.items():
        bytes_per_param = 2 if "bf16" in name else 4
        floor_ms = n_params * bytes_per_param / (ceilings["copy_gbps"] * 1e9) * 1e3 * n_new
        read_ms = (n_params + kv_values) * bytes_per_param / (ceilings["read_gbps"] * 1e9) * 1e3 * n_new
        same = sum(a == b for a, b in zip(out[name], out["ours: fp32"]))
        rows.append(row("generate greedy", [n_prompts, prompt_len, n_new], "bfloat16" if "bf16" in name else "float32",
                        name, ms, nbytes=n_params * bytes_per_param * n_new, ceilings=ceilings,
                        baseline="HF transformers fp32" if hf is not None else None,
                        baseline_ms=t.get("HF transformers fp32"), tokens_per_s=round(n_prompts * n_new / ms * 1e3, 1),
                        ms_per_step=round(ms / n_new, 2), floor_ms_per_step=round(floor_ms / n_new, 2),
                        read_floor_ms_per_step=round(read_ms / n_new, 2), of_read_floor=round(read_ms / ms, 3),
                        speedup_vs_hf=round(t["HF transformers fp32"] / ms, 1) if hf is not None else None,
                        rows_equal_to_ours_fp32=f"{same}/{n_prompts}"))
    return rows


def read_bandwidth(quick: bool) -> float:
    """GB/s of a sum over 128 MiB of fp32 (4 MiB --quick): bytes read alone, what a decode step's products
    and attention do (the copy bandwidth counts a write per read, which a CPU core pays for less)."""
    x = torch.randn((1 << 20) if quick else (1 << 25))
    return round(x.numel() * 4 / bench(lambda: x.sum(), CPU) / 1e6, 1)


# ----------------------------------------------------------------------------------------------- main
def main(quick: bool = False):
    s = sizes(quick)
    cfg, n_vocab, (r_infer, r_train, r_gen) = s["cfg"], s["n_vocab"], s["rounds"]
    ceilings = {**measure_ceilings(CPU, quick), "read_gbps": read_bandwidth(quick)}
    facts = cpu.describe()
    notes = (f"{facts['processor']}, {facts['threads']} threads, PyTorch CPU capability {facts['capability']}, "
             f"native bf16 flags {facts['bf16_flags'] or 'none'}; GPT-1 {cfg.n_layer}x{cfg.n_embd}, vocab {n_vocab}. "
             "ratio = time / HF fp32's; x_hf_fp32 / x_hf_bf16 / speedup_vs_hf: HF's time / ours (same dtype for "
             "fine-tuning); interleaved rounds, medians; generation: one HF run; 'of ceiling' = the weights "
             "read once per step at the copy bandwidth over the measured time (the floor's fraction); of_read_floor: the "
             "weights and the mean cache read once per step at the read bandwidth (read_gbps, a sum) over the time.")
    rows = []

    def write():
        write_results("cpu" + ("-quick" if quick else ""), rows, {**ceilings, **facts}, CPU, notes=notes)

    for part in (lambda: inference_rows(cfg, n_vocab, *s["infer"], r_infer),
                 lambda: train_rows(cfg, n_vocab, *s["train"], r_train),
                 lambda: generation_rows(cfg, n_vocab, *s["gen"], r_gen, ceilings)):
        rows += part()
        write()  # each part's rows as soon as they exist: a long run cut short keeps them
    return rows


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)
