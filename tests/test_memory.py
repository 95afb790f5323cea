"""Peak-memory machinery (benchmarks/bench_memory.py) and the lean-activation options of the model.

The tracker is checked on a toy step whose bytes are counted by hand; the benchmark itself runs at
its quick size; activation checkpointing and the recomputed GELU must not change any number.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import copy  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from benchmarks import bench_memory as B  # noqa: E402
from gpt1_fast import ops  # noqa: E402
from gpt1_fast.config import GPTConfig  # noqa: E402
from gpt1_fast.model import Attention, TransformerModel  # noqa: E402

SMALL = GPTConfig(n_embd=32, n_head=2, n_layer=2)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def test_tracker_toy_step_by_hand():
    """Linear 256 -> 128 without bias (131072 bytes of fp32 weight), x [64, 256] (65536), y [64, 128]
    (32768), Adam: 2 moments of the weight's size + a 4-byte step counter, from the warm-up step."""
    W, X, Y = 128 * 256 * 4, 64 * 256 * 4, 64 * 128 * 4
    with B.fake_env(None):
        model = torch.nn.Linear(256, 128, bias=False)
        opt = torch.optim.Adam(model.parameters(), foreach=False)

        def step(stage):
            x = torch.ones(64, 256)
            y = model(x)
            stage("forward")
            y.sum().backward()
            stage("backward")
            opt.step()
            opt.zero_grad(set_to_none=True)

        r = B.tracked_step(step, model, opt)
    assert r["stages"]["forward"] == W + (2 * W + 4) + X + Y
    assert r["stages"]["backward"] == r["stages"]["forward"] + W  # + the weight's gradient
    p = r["peak"]
    assert (p["Parameter"], p["Gradient"], p["Activation"]) == (W, W, X + Y)
    assert p["Total"] >= r["stages"]["backward"]


def test_fused_lm_head_alone_keeps_no_logits(monkeypatch):
    """Fake LM head at N=700, V=1000, C=64 in chunks of 128 rows: the reference holds [N, V] logits
    (bf16 and fp32 copies); the fused op one chunk of bf16 logits, the bf16 copy of the weight, the
    fp32 dweight accumulator, a chunk of h and of dh, and 8 bytes per row (loss, lse)."""
    from gpt1_fast.kernels import lm_head

    N, V, C = 700, 1000, 64
    monkeypatch.setattr(lm_head, "CHUNK_BYTES", 128 * V * 2)
    assert lm_head.chunk_rows_for(V, 2) == 128
    ref = B.lm_head_alone_case(N, V, C, fused=False)
    ours = B.lm_head_alone_case(N, V, C, fused=True)
    assert ref["extra_without_grads"] >= N * V * (2 + 4)
    assert ours["extra_without_grads"] <= 128 * V * 2 + V * C * (2 + 4) + 2 * 128 * C * 2 + N * 8


def test_quick_benchmark_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "RESULTS_DIR", tmp_path)
    out = B.main(quick=True)
    rows = {(r["case"], r["impl"]): r for r in out["rows"]}
    roc_ref = rows[("ROCStories step", "reference LM head")]
    roc = rows[("ROCStories step", "fused LM head")]
    assert roc["peak_gib"] < roc_ref["peak_gib"]
    assert roc["lm_loss_kept_mib"] < roc_ref["lm_loss_kept_mib"]
    pre = rows[("pretraining step", "fused LM head")]
    ckpt = rows[("pretraining step", "fused LM head, activation checkpointing")]
    assert ckpt["activations_gib"]["all blocks"] < pre["activations_gib"]["all blocks"]
    assert (tmp_path / "memory-fake-quick.json").exists() and (tmp_path / "memory-fake-quick.md").exists()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_activation_checkpointing_same_numbers(backend):
    """Recomputed blocks give the same loss and gradients, dropout included (the RNG is restored)."""
    torch.manual_seed(0)
    ref = TransformerModel(SMALL.replace(backend=backend), vocab=60, n_ctx=8).train()
    for m in ref.modules():  # the Triton attention is tested elsewhere (slow in the interpreter)
        if isinstance(m, Attention):
            m.backend = "torch"
    ours = copy.deepcopy(ref)
    ours.activation_checkpointing = True
    ids = torch.randint(0, 52, (3, 8))
    out = []
    for model in (ref, ours):
        torch.manual_seed(1)
        h = model(input_ids=ids)
        loss = (h.float() ** 2).mean()
        out.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    assert torch.equal(out[0][0], out[1][0])
    for a, b in zip(out[0][1], out[1][1]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_gelu_linear_recompute_matches_reference():
    from gpt1_fast.kernels.gelu_linear import gelu_linear

    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 3, 64, generator=g, requires_grad=True)
    bias = torch.randn(64, generator=g, requires_grad=True)
    w = (torch.randn(64, 16, generator=g) * 0.1).requires_grad_()
    b = torch.randn(16, generator=g, requires_grad=True)
    y = gelu_linear(z, bias, w, b)
    y_ref = ops.linear(ops.gelu(z + bias), w, b)
    assert y.shape == (5, 3, 16) and rel(y, y_ref) < 1e-6
    dy = torch.randn_like(y)
    for a, r in zip(torch.autograd.grad(y, (z, bias, w, b), dy), torch.autograd.grad(y_ref, (z, bias, w, b), dy)):
        assert rel(a, r) < 1e-5


def test_lean_forward_keeps_bf16_stream_under_autocast():
    """Triton backend under bf16 autocast: the residual stream (the hidden states) is bf16, so no
    float32 copy per block; the reference backend keeps the original's float32 stream."""
    with B.fake_env(None):
        for backend, dtype in (("triton", torch.bfloat16), ("torch", torch.float32)):
            model = TransformerModel(SMALL.replace(backend=backend), vocab=60, n_ctx=8)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h = model(input_ids=torch.zeros(2, 8, dtype=torch.long))
            assert h.dtype == dtype, backend


def test_mlp_keeps_less_with_recompute(monkeypatch):
    """Fake step of a 1-block triton model: with the GELU recomputed in backward the MLP keeps exactly
    gelu's output less (64 tokens x 256 hidden x 4 bytes) than the bias_gelu + linear composition."""
    cfg = GPTConfig(n_embd=64, n_head=2, n_layer=1, backend="triton")

    def mlp_bytes():
        with B.fake_env(None):
            model = TransformerModel(cfg, vocab=60, n_ctx=16).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            ids = torch.zeros(4, 16, dtype=torch.long)

            def step(stage):
                model(input_ids=ids).float().sum().backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            return B.tracked_step(step, model, opt)["modules"]["h.0.mlp"]

    lean = mlp_bytes()
    monkeypatch.setattr(ops, "act_linear", lambda x, bias, w, b, afn, backend: ops.linear(
        ops.bias_act(x, bias, afn, backend), w, b))
    assert mlp_bytes() - lean == 4 * 16 * 256 * 4
