"""Peak memory of one whole training step, measured without a GPU (device-independent: CPU-fake).

Each case builds the model on fake tensors (FakeTensorMode on the CPU device: shapes and dtypes, no
data, no compute) and runs one warm-up step (so the optimizer state exists, as in every later step),
then one tracked step - forward, loss, backward, optimizer, in the real dtypes (bf16 autocast, fp32
parameters and optimizer state) and backends - under
`torch.distributed._tools.mem_tracker.MemTracker`, which sees every tensor each op returns and when
it dies. It prints the peak with its parts (parameters, gradients, optimizer state, activations
and backward temporaries), the activations each module keeps for backward, and what the LM loss
keeps. The tied-weight model is built directly on fake tensors (`meta` + to_empty() cannot swap
the tied weight into a fake tensor).

What it does not see: buffers an opaque custom op allocates inside its kernel (the Triton
LayerNorm/GELU/attention ops are fake here: their outputs are counted, their small workspaces are
not), the caching allocator's rounding and fragmentation, and the CUDA context. The fused LM head
runs its own host code on the fake tensors (its chunks of logits are counted); it needs no data
(which rows are kept is only read on the device).

Cases: a calibration step counted by hand (tests/test_memory.py), ROCStories fine-tuning 64 x 2 x 77 (reference LM head = today's path: full logits, float32
cross-entropy; fused = ops.lm_head_loss "triton"), pretraining 64 x 512 (with and without
activation checkpointing), and the LM-head loss alone at 9,856 and 32,768 rows, V 40,990, C 768.
--quick: a 2-layer, 128-wide model, small batches, the LM head in chunks of 128 rows (CI).
Writes benchmarks/results/memory-fake.json and .md.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import re
from unittest import mock

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from benchmarks.common import RESULTS_DIR, git_commit
from gpt1_fast import ops
from gpt1_fast.config import GPTConfig
from gpt1_fast.fileio import atomic_write_text
from gpt1_fast.kernels import lm_head as lm_head_kernel
from gpt1_fast.model import DoubleHeadModel, TransformerModel
from gpt1_fast.opt import OpenAIAdam

GIB = 2**30
N_VOCAB, N_SPECIAL = 40478, 3


# ------------------------------------------------------------------------------------ machinery
def _register_adam_fakes() -> None:
    """Fake implementations of the fused OpenAI-Adam extension's ops (C++ kernels only): the global
    norm is one scalar, the update is in place."""
    import gpt1_fast._ext  # noqa: F401  (loads the ops)

    for name, fn in (("gpt1_fast::global_norm", lambda tensors: tensors[0].new_empty((), dtype=torch.float32)),
                     ("gpt1_fast::openai_adam_", lambda *args: None)):
        try:
            torch.library.register_fake(name)(fn)
        except RuntimeError:  # already registered (a second run in one process)
            pass


def _cuda_dropout(x, p=0.5, training=True, inplace=False):
    return torch.native_dropout(x, p, training)[0] if training and p > 0 else x


@contextlib.contextmanager
def fake_env():
    """FakeTensorMode on the CPU, CUDA's dropout, the fused Adam's fakes."""
    _register_adam_fakes()
    with contextlib.ExitStack() as stack:
        mode = stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        # CUDA's dropout (native_dropout: a bool mask, 1 byte per element) instead of the CPU's
        # (input * bernoulli noise: a mask in the input's dtype)
        stack.enter_context(mock.patch.object(F, "dropout", _cuda_dropout))
        yield mode


def materialise(make_model):
    # Built directly on fake tensors: `meta` + to_empty() cannot swap the tied embedding/LM-head
    # weight into a fake tensor (torch 2.13: "Cannot swap t1 because it has weakref associated").
    return make_model().train()


def _snap(mt, kind="current") -> dict:
    snap = mt.get_tracker_snapshot(kind)
    return {getattr(k, "value", k): v for k, v in snap.get(torch.device("cpu"), {}).items()}


def module_activations(mt, model) -> dict:
    """Bytes of activations each named child keeps after its forward (ACT post - pre forward)."""
    out = {}
    for name, mod in model.named_modules():
        st = mt.memory_tracking.get(mod)
        if st is None or not name:
            continue
        pre, post = st.snapshots.get(_pre_state()), st.snapshots.get(_post_state())
        if not pre or not post:
            continue
        a = post[0].get(torch.device("cpu"), {})
        b = pre[0].get(torch.device("cpu"), {})
        out[name] = sum(v for k, v in a.items() if getattr(k, "value", k) == "Activation") - \
            sum(v for k, v in b.items() if getattr(k, "value", k) == "Activation")
    return out


def _pre_state():
    from torch.distributed._tools.mem_tracker import _ModState
    return _ModState.PRE_FW


def _post_state():
    from torch.distributed._tools.mem_tracker import _ModState
    return _ModState.POST_FW


def tracked_step(step, model, opt) -> dict:
    """Run step(stage) once untracked (optimizer state), then once under MemTracker; `stage(name)`
    inside the step records the current total. Returns the peak, its parts, the stages, what each
    module keeps and what the LM loss (every ops.lm_head_loss call) keeps for backward."""
    from torch.distributed._tools.mem_tracker import MemTracker

    step(lambda name: None)
    mt = MemTracker()
    mt.track_external(model, opt)
    stages = {}
    kept_by_lm_loss = []
    real = ops.lm_head_loss

    def record(name):
        stages[name] = _snap(mt)["Total"]

    def lm_head_loss(*args, **kw):
        before = _snap(mt)["Total"]
        out = real(*args, **kw)
        kept_by_lm_loss.append(_snap(mt)["Total"] - before)
        return out

    with mock.patch.object(ops, "lm_head_loss", lm_head_loss), mt:
        step(record)
    peak = _snap(mt, "peak")
    return {"peak": peak, "stages": stages, "modules": module_activations(mt, model),
            "lm_loss": sum(kept_by_lm_loss)}


# ---------------------------------------------------------------------------------------- cases
def rocstories_batch(B, T, n_vocab, gen):
    """As benchmarks/bench_train_step.py: stories of length uniform in [T/2, T), classify token at the end."""
    X = torch.zeros(B, 2, T, 2, dtype=torch.long)
    X[..., 0] = torch.randint(0, n_vocab, (B, 2, T), generator=gen)
    X[..., 1] = torch.arange(n_vocab + N_SPECIAL, n_vocab + N_SPECIAL + T)
    lengths = torch.randint(T // 2, T, (B, 2), generator=gen)
    M = (torch.arange(T) <= lengths[..., None]).float()
    X[torch.arange(B)[:, None], torch.arange(2)[None], lengths, 0] = n_vocab + 2
    Y = torch.randint(0, 2, (B,), generator=gen)
    return X, M, Y


def lm_losses_from_hidden(h, embed_weight, x_tokens, m, backend):
    """Per-sequence LM losses of the training step: every position but the last predicts the next
    token; all T rows of h go in (no copy of h[:, :-1]), the last position with mask 0."""
    S, T = x_tokens.shape
    targets = torch.cat([x_tokens[:, 1:], x_tokens[:, :1]], 1).reshape(-1)
    mask = torch.cat([m[:, 1:], torch.zeros_like(m[:, :1])], 1)
    lm = ops.lm_head_loss(h.reshape(S * T, -1), embed_weight, targets, mask.reshape(-1), backend=backend)
    return lm.view(S, T).sum(1) / mask.sum(1)


def rocstories_case(cfg, B, T, lm_fused: bool, n_vocab=N_VOCAB, ckpt=False):
    gen = torch.Generator().manual_seed(0)
    X, M, Y = rocstories_batch(B, T, n_vocab, gen)
    vocab = n_vocab + N_SPECIAL + T
    with fake_env():
        model = materialise(lambda: DoubleHeadModel(cfg.replace(backend="triton", activation_checkpointing=ckpt),
                                                    n_vocab + 2, "multiple_choice", vocab, T))
        opt = OpenAIAdam(model.parameters(), lr=6.25e-5, schedule="warmup_linear", warmup=0.002, t_total=1000,
                         l2=0.01, max_grad_norm=1, fused=True)
        X, M, Y = (t.clone() for t in (X, M, Y))

        if not lm_fused:
            model.lm_head.backend = "torch"

        def step(stage):
            # the training path: DoubleHeadModel's objective (LMHead.loss -> ops.lm_head_loss)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(X, M, Y)["loss"]
                stage("after loss")  # inside autocast, whose weight cache the step holds until here
            loss.backward()
            stage("after backward")
            opt.step()
            opt.zero_grad(set_to_none=True)

        return tracked_step(step, model, opt)


def pretrain_case(cfg, B, T, ckpt: bool, n_vocab=N_VOCAB):
    vocab = n_vocab + T
    with fake_env():
        model = materialise(lambda: TransformerModel(cfg.replace(backend="triton", activation_checkpointing=ckpt),
                                                     vocab, T))
        opt = OpenAIAdam(model.parameters(), lr=2.5e-4, schedule="warmup_cosine", warmup=0.002, t_total=1000,
                         l2=0.01, max_grad_norm=1, fused=True)
        ids = torch.zeros(B, T, dtype=torch.long)

        def step(stage):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h = model(input_ids=ids)
                lm = lm_losses_from_hidden(h, model.embed.weight, ids, torch.ones(B, T), "triton")
                stage("after loss")
            loss = lm.mean()
            loss.backward()
            stage("after backward")
            opt.step()
            opt.zero_grad(set_to_none=True)

        return tracked_step(step, model, opt)


def lm_head_alone_case(N, V, C, fused: bool, chunk_rows: int = 0):
    """h [N, C] bf16 and weight [V, C] fp32 (a parameter under autocast) -> loss.sum() -> backward.
    Extra = the peak minus h and weight themselves. chunk_rows: the fused op's (0: its default)."""
    with fake_env():
        h = torch.empty(N, C, dtype=torch.bfloat16, requires_grad=True)
        w = torch.nn.Parameter(torch.empty(V, C))
        t = torch.zeros(N, dtype=torch.long)
        m = torch.ones(N)
        from torch.distributed._tools.mem_tracker import MemTracker

        mt = MemTracker()
        mt.track_external(h, w, t, m)
        with mt:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = lm_head_kernel.lm_head_loss(h, w, t, m, chunk_rows) if fused else \
                    ops.lm_head_loss(h, w, t, m, backend="torch")
            loss.sum().backward()
        peak = _snap(mt, "peak")
    base = (N * C * 2) + V * C * 4 + N * 8 + N * 4
    return {"peak": peak, "extra": peak["Total"] - base,
            "extra_without_grads": peak["Total"] - base - N * C * 2 - V * C * 4}


def calibration_case():
    """A step whose bytes are counted by hand in tests/test_memory.py: Linear 256 -> 128 without bias,
    x [64, 256], y = model(x), y.sum().backward(), Adam."""
    with fake_env():
        model = torch.nn.Linear(256, 128, bias=False)
        opt = torch.optim.Adam(model.parameters(), foreach=False)

        def step(stage):
            x = torch.ones(64, 256)  # alive until the step returns
            y = model(x)
            stage("forward")
            y.sum().backward()
            stage("backward")
            opt.step()
            opt.zero_grad(set_to_none=True)

        return tracked_step(step, model, opt)


# ------------------------------------------------------------------------------------------ main
PARTS = ("Parameter", "Gradient", "Optstate", "Activation", "Temp", "Buffer", "Other")


def _row(case, shape, impl, res, **extra):
    peak = res["peak"]
    r = {"case": case, "shape": shape, "dtype": "bf16 autocast, fp32 params", "impl": impl,
         "peak_gib": round(peak["Total"] / GIB, 3),
         "parts_gib": {k: round(peak.get(k, 0) / GIB, 3) for k in PARTS if peak.get(k, 0)}}
    if "stages" in res:
        r["stages_gib"] = {k: round(v / GIB, 3) for k, v in res["stages"].items()}
        mods = res["modules"]
        blocks = [v for k, v in mods.items() if re.search(r"(^|\.)h\.\d+$", k)]
        r["activations_gib"] = {"per block": round(max(blocks, default=0) / GIB, 3),
                                "all blocks": round(sum(blocks) / GIB, 3),
                                **{k: round(v / GIB, 3) for k, v in mods.items()
                                   if re.fullmatch(r"(transformer\.)?(embed|drop)|\w+_head", k) and v}}
        r["block0_modules_mib"] = {m.group(1): round(v / 2**20, 1) for k, v in mods.items()
                                   if (m := re.search(r"(?:^|\.)h\.0\.(.+)$", k))}
        r["lm_loss_kept_mib"] = round(res["lm_loss"] / 2**20, 1)
    r.update(extra)
    return r


def markdown(out) -> str:
    lines = [f"# memory (CPU-fake, device-independent): one training step's peak", "",
             f"torch {out['torch']}, commit {out['commit']}, {out['date']}", "", out["notes"], "",
             "| case | shape | impl | peak GiB | params | grads | opt state | activations | bwd temps | "
             "LM loss keeps (MiB) | per block | extra over inputs |", "|---" * 12 + "|"]
    for r in out["rows"]:
        if "parts_gib" not in r:  # the calibration row, in bytes (JSON only)
            continue
        p = r["parts_gib"]
        lines.append(f"| {r['case']} | {r['shape']} | {r['impl']} | {r['peak_gib']} | {p.get('Parameter', '')} | "
                     f"{p.get('Gradient', '')} | {p.get('Optstate', '')} | {p.get('Activation', '')} | "
                     f"{p.get('Temp', '')} | {r.get('lm_loss_kept_mib', '')} | "
                     f"{r.get('activations_gib', {}).get('per block', '')} | {r.get('extra_gib', '')} |")
    lines += ["", "GiB unless marked. Parts are at the moment of the peak ('bwd temps': tensors made during backward). "
              "'LM loss keeps': what the ops.lm_head_loss calls hold from their call to the backward. "
              "'extra over inputs' (LM head alone): the peak minus h and weight. Per-module detail in the JSON."]
    return "\n".join(lines) + "\n"


def main(quick: bool = False):
    if quick:
        cfg, B, T_roc, T_pre, n_vocab = GPTConfig(n_embd=128, n_head=4, n_layer=2), 4, 33, 64, 1000
        lm_rows, V, C = (500, 2000), 1000 + 64, 128
    else:
        cfg, B, T_roc, T_pre, n_vocab = GPTConfig(), 64, 77, 512, N_VOCAB
        lm_rows, V, C = (9856, 32768), 40990, 768
    chunk = 128 if quick else 0
    cal = calibration_case()
    rows = [{"case": "calibration", "shape": [64, 256, 128], "impl": "Linear 256 -> 128, Adam",
             "stages_bytes": cal["stages"], "parts_bytes": {k: cal["peak"].get(k, 0) for k in PARTS + ("Total",)}}]
    for fused in (False, True):
        res = rocstories_case(cfg, B, T_roc, fused, n_vocab)
        rows.append(_row("ROCStories step", [B, 2, T_roc], "fused LM head" if fused else "reference LM head", res))
    for ckpt in (False, True):
        res = pretrain_case(cfg, B, T_pre, ckpt, n_vocab)
        rows.append(_row("pretraining step", [B, T_pre], "fused LM head" + (", activation checkpointing" * ckpt), res))
    for N in lm_rows:
        ref = lm_head_alone_case(N, V, C, False)
        ours = lm_head_alone_case(N, V, C, True, chunk)
        for name, res in (("reference (cuBLAS + F.cross_entropy)", ref), ("fused", ours)):
            rows.append(_row("LM-head loss alone", [N, V, C], name, res, extra_gib=round(res["extra"] / GIB, 3),
                             extra_without_grads_gib=round(res["extra_without_grads"] / GIB, 3),
                             extra_without_grads_bytes=res["extra_without_grads"], chunk_rows=chunk,
                             **({"extra_fraction_of_reference": round(res["extra"] / ref["extra"], 3)}
                                if res is ours else {})))
    out = {"bench": "memory", "device": "CPU-fake (FakeTensorMode + MemTracker; device-independent)",
           "torch": torch.__version__, "commit": git_commit(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "notes": ("Quick sizes (2 x 128 model): checks the machinery only. " if quick else "GPT-1 12 x 768. ")
           + "bf16 autocast, fp32 parameters, fused OpenAI-Adam; Triton backend for the blocks. "
             "Not seen: opaque kernels' workspaces, allocator rounding, the CUDA context.",
           "rows": rows}
    name = "memory-fake-quick" if quick else "memory-fake"
    path = RESULTS_DIR / f"{name}.json"
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    md = markdown(out)
    atomic_write_text(path.with_suffix(".md"), md)
    print(md)
    print(f"wrote {path} and {path.with_suffix('.md').name}")
    return out


if __name__ == "__main__":
    main()
