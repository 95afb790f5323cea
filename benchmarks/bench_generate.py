"""Text generation: tokens/s for 8 prompts x 256 new tokens (greedy), GPT-1 size, in one process:

  ours: KV cache        gpt1_fast LMModel.generate: prefill once, then one forward of one token per row
  ours: uncached        the same sampler with use_cache=False: the whole prefix recomputed every step
  HF transformers       OpenAIGPTLMHeadModel.generate (no KV cache in that model) on the same weights,
                        exported with gpt1_fast.export_hf (skipped, with the reason, where this
                        transformers cannot load it)
  on CUDA also:
  ours: KV cache, bf16  the same loop on a bf16 copy of the model
  static KV cache + torch.compile(reduce-overhead), bf16   benchmarks/static_decode.py: every shape fixed,
                        one CUDA-graph replay per token - the strongest alternative on a GPU (HF's
                        StaticCache + compile, gpt-fast); greedy tokens compared with ours in bf16

Prompts: 8 rows of 16 random tokens (equal lengths, so HF needs no padding and the three greedy
outputs can be checked to agree: `tokens_match`). fp32 on every device (the CPU numbers are the goal:
ours >= 5x HF). --quick: 4 layers x 128 wide, vocab 1000, 32 new tokens.
Floor (memory-bound decoding): each step reads every weight once (plus the cache):
n_params x 4 bytes x steps over the measured copy bandwidth.
"""
from __future__ import annotations

import tempfile
import time

import torch

from benchmarks.common import default_device, measure_ceilings, row, write_results
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import LMModel
from gpt1_fast.weights import export_hf

N_PROMPTS, PROMPT_LEN = 8, 16


def sizes(quick: bool):
    if quick:
        return GPTConfig(n_embd=128, n_head=4, n_layer=4), 1000, 128, 32
    return GPTConfig(), 40478, 512, 256


def timed(fn, device, runs: int) -> tuple[float, object]:
    """Median seconds of `runs` calls (after the caller's warm-up), and the last result."""
    times, out = [], None
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def hf_generate(ours, device, hf_in):
    """HF's generate on our weights, or None with the reason printed (transformers 5.x may lack the model
    or refuse the exported folder)."""
    try:
        import transformers

        with tempfile.TemporaryDirectory() as d:
            export_hf(ours, d)
            hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(d).to(device).eval()
    except Exception as e:  # noqa: BLE001
        print(f"HF transformers: skipped ({type(e).__name__}: {str(e)[:300]})")
        return None
    return lambda n: hf.generate(hf_in, attention_mask=torch.ones_like(hf_in), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)[:, PROMPT_LEN:].tolist()


def gpu_impls(ours, prompts, rows_in) -> dict:
    """The bf16 rows (CUDA): ours on a bf16 copy, and the compiled static-cache decoder."""
    import copy

    from benchmarks.static_decode import StaticCacheDecoder

    ours16 = copy.deepcopy(ours).to(torch.bfloat16)
    impls = {"ours: KV cache, bf16": lambda n: ours16.generate(rows_in, n, greedy=True).tokens}
    try:
        dec = StaticCacheDecoder(ours, len(rows_in))
        impls["static KV cache + torch.compile(reduce-overhead), bf16"] = lambda n: dec.generate(prompts, n)
    except Exception as e:  # noqa: BLE001
        print(f"static KV cache: skipped ({type(e).__name__}: {str(e)[:300]})")
    return impls


def main(quick: bool = False):
    device = default_device()
    cfg, n_vocab, n_ctx, n_new = sizes(quick)
    cfg = cfg.replace(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, backend="auto")
    torch.manual_seed(0)
    ours = LMModel(cfg, n_vocab + n_ctx, n_ctx).to(device).eval()
    prompts = torch.randint(0, n_vocab, (N_PROMPTS, PROMPT_LEN), generator=torch.Generator().manual_seed(1))
    rows_in = prompts.tolist()
    hf_in = prompts.to(device)

    impls = {
        "ours: KV cache": lambda n: ours.generate(rows_in, n, greedy=True).tokens,
        "ours: uncached": lambda n: ours.generate(rows_in, n, greedy=True, use_cache=False).tokens,
    }
    hf = hf_generate(ours, device, hf_in)
    if hf is not None:
        impls["HF transformers"] = hf
    if device.type == "cuda":
        impls.update(gpu_impls(ours, hf_in, rows_in))
    ceilings = measure_ceilings(device, quick)
    runs = 3 if quick else 1
    with torch.no_grad():
        for name, fn in list(impls.items()):  # warm-up: a few tokens (on a GPU the full length: compilation, graphs)
            try:
                fn(4)
                if device.type == "cuda":
                    fn(n_new)
            except Exception as e:  # noqa: BLE001 - a baseline that cannot run here is reported, not fatal
                print(f"{name}: skipped ({type(e).__name__}: {str(e)[:300]})")
                del impls[name]
        results = {name: timed(lambda: fn(n_new), device, runs) for name, fn in impls.items()}
    n_params = sum(p.numel() for p in ours.parameters())
    steps = n_new
    tokens = N_PROMPTS * n_new
    ref = results["ours: KV cache"][1]
    ref16 = results.get("ours: KV cache, bf16", (None, ref))[1]
    base = "HF transformers" if "HF transformers" in results else "ours: uncached"
    base_s = results[base][0]
    out_rows = []
    for name, (sec, toks) in results.items():
        bf16 = "bf16" in name
        extra = {"speedup_vs_hf": round(base_s / sec, 2)} if base == "HF transformers" else {}
        out_rows.append(row("generate greedy", [N_PROMPTS, PROMPT_LEN, n_new], "bfloat16" if bf16 else "float32", name,
                            sec * 1e3, nbytes=n_params * (2 if bf16 else 4) * steps, ceilings=ceilings, baseline=base,
                            baseline_ms=base_s * 1e3, tokens_per_s=round(tokens / sec, 1),
                            tokens_match=toks == (ref16 if bf16 else ref), **extra))
    note = (f"{N_PROMPTS} prompts x {PROMPT_LEN} tokens, {n_new} new tokens each, greedy, fp32 (bf16 rows: bf16 "
            "weights; their tokens compared with ours in bf16); "
            f"{cfg.n_layer} layers x {cfg.n_embd}, vocab {n_vocab}, n_ctx {n_ctx}; median of {runs} run(s). "
            "'of ceiling' counts the weights read once per step.")
    write_results("generate" + ("-quick" if quick else ""), out_rows, ceilings, device, notes=note)
    for r in out_rows:
        print(f"{r['impl']:>18}: {r['tokens_per_s']:9.1f} tokens/s  ({r.get('speedup_vs_hf', '-')}x HF, "
              f"same tokens as ours: {r['tokens_match']})")
    return out_rows


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)
