"""Peak memory without a GPU (benchmarks/bench_memory.py, run as `python -m benchmarks memory --quick` in a
subprocess: tests do not import benchmarks/) and the lean-activation options of the model.

The tracker is checked on a calibration step whose bytes are counted here by hand; activation
checkpointing and the recomputed GELU must not change any number.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import copy  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from gpt1_fast import ops  # noqa: E402
from gpt1_fast.config import GPTConfig  # noqa: E402
from gpt1_fast.model import Attention, TransformerModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = GPTConfig(n_embd=32, n_head=2, n_layer=2)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("memory")
    env = dict(os.environ, TRITON_INTERPRET="1", GPT1_FAST_RESULTS_DIR=str(out_dir),
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    res = subprocess.run([sys.executable, "-m", "benchmarks", "memory", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (out_dir / "memory-fake-quick.md").exists()
    return json.loads((out_dir / "memory-fake-quick.json").read_text())


def _rows(results):
    return {(r["case"], r["impl"], tuple(r["shape"])): r for r in results["rows"]}


def test_tracker_calibration_step_by_hand(quick_results):
    """Linear 256 -> 128 without bias (131072 bytes of fp32 weight), x [64, 256] (65536), y [64, 128]
    (32768), Adam: 2 moments of the weight's size + a 4-byte step counter, from the warm-up step."""
    W, X, Y = 128 * 256 * 4, 64 * 256 * 4, 64 * 128 * 4
    r = next(r for r in quick_results["rows"] if r["case"] == "calibration")
    stages, parts = r["stages_bytes"], r["parts_bytes"]
    assert stages["forward"] == W + (2 * W + 4) + X + Y
    assert stages["backward"] == stages["forward"] + W  # + the weight's gradient
    assert (parts["Parameter"], parts["Gradient"], parts["Activation"]) == (W, W, X + Y)
    assert parts["Total"] >= stages["backward"]


def test_fused_lm_head_alone_keeps_no_logits(quick_results):
    """LM head alone (fake tensors) at N = 500 and 2000, V = 1064, C = 128, the fused op in chunks of
    128 rows: the reference holds [N, V] logits (bf16 and fp32 copies); the fused op one chunk of bf16
    logits, the bf16 copy of the weight, the fp32 dweight accumulator, a chunk of dh, and 8 bytes per
    row (loss, lse)."""
    V, C, chunk = 1064, 128, 128
    rows = _rows(quick_results)
    for N in (500, 2000):
        ref = rows[("LM-head loss alone", "reference (cuBLAS + F.cross_entropy)", (N, V, C))]
        ours = rows[("LM-head loss alone", "fused", (N, V, C))]
        assert ours["chunk_rows"] == chunk
        assert ref["extra_without_grads_bytes"] >= N * V * (2 + 4)
        assert ours["extra_without_grads_bytes"] <= chunk * V * 2 + V * C * (2 + 4) + chunk * C * 2 + N * 8


def test_quick_benchmark_rows(quick_results):
    rows = {(r["case"], r["impl"]): r for r in quick_results["rows"]}
    roc_ref = rows[("ROCStories step", "reference LM head")]
    roc = rows[("ROCStories step", "fused LM head")]
    assert roc["peak_gib"] < roc_ref["peak_gib"]
    assert roc["lm_loss_kept_mib"] < roc_ref["lm_loss_kept_mib"]
    pre = rows[("pretraining step", "fused LM head")]
    ckpt = rows[("pretraining step", "fused LM head, activation checkpointing")]
    assert ckpt["activations_gib"]["all blocks"] < pre["activations_gib"]["all blocks"]


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
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        for backend, dtype in (("triton", torch.bfloat16), ("torch", torch.float32)):
            model = TransformerModel(SMALL.replace(backend=backend), vocab=60, n_ctx=8)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h = model(input_ids=torch.zeros(2, 8, dtype=torch.long))
            assert h.dtype == dtype, backend


def _mlp_saved_bytes() -> int:
    """Bytes the first block's MLP saves for backward (parameters aside), on 4 x 16 tokens."""
    model = TransformerModel(GPTConfig(n_embd=64, n_head=2, n_layer=1, backend="triton"), vocab=60, n_ctx=16)
    params = {p.data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        if t.data_ptr() not in params:
            saved[t.data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.train().h[0].mlp(torch.randn(4, 16, 64))
    return sum(saved.values())


def test_mlp_keeps_less_with_recompute(monkeypatch):
    """With the GELU recomputed in backward the MLP keeps exactly gelu's output less (64 tokens x 256
    hidden x 4 bytes) than the bias_gelu + linear composition."""
    lean = _mlp_saved_bytes()
    monkeypatch.setattr(ops, "act_linear", lambda x, bias, w, b, afn, backend: ops.linear(
        ops.bias_act(x, bias, afn, backend), w, b))
    assert _mlp_saved_bytes() - lean == 64 * 256 * 4
