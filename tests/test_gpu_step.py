"""The training step on a CUDA GPU without host syncs, and captured in a CUDA graph (gpt1_fast/graphs.py):
`TRITON_INTERPRET=0 pytest -m cuda tests/test_gpu_step.py`. Needs the fused Adam's CUDA kernels.

Sync-freedom is checked by PyTorch itself: `torch.cuda.set_sync_debug_mode("error")` raises on any
operation that makes the host wait for the device.
"""
import contextlib
import copy
import os

import pytest
import torch

from gpt1_fast.config import GPTConfig
from gpt1_fast.graphs import CapturedStep
from gpt1_fast.model import DoubleHeadModel
from gpt1_fast.opt import OpenAIAdam
from step_helpers import rocstories_batch, trainer_step

pytestmark = [pytest.mark.cuda, pytest.mark.priority,
              pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                 reason="compiled Triton needed: run with TRITON_INTERPRET=0")]
N_VOCAB, N_SPECIAL, N_CTX = 40478, 3, 77


@contextlib.contextmanager
def no_sync():
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _setup(n_layer=12, p=0.1):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=n_layer, embd_pdrop=p, attn_pdrop=p, resid_pdrop=p, clf_pdrop=p, backend="triton")
    model = DoubleHeadModel(cfg, N_VOCAB + 2, "multiple_choice", N_VOCAB + N_SPECIAL + N_CTX, N_CTX).cuda().train()
    opt = OpenAIAdam(model.parameters(), lr=6.25e-5, t_total=100, l2=0.01, max_grad_norm=1.0, fused=True,
                     capturable=True)
    return model, opt


def _batch(B, T, seed):
    return rocstories_batch(B, T, N_VOCAB, seed, "cuda")


def _step_fn(model, opt):
    return trainer_step(model, opt, bf16=True)


def test_training_step_makes_no_host_sync():
    """GPT-1 size, batch 16 x 2 x 64, dropout on, bf16, the fused LM head and fused Adam
    (capturable): after one warm-up step, a whole eager step runs with sync debugging set to raise."""
    model, opt = _setup()
    step = _step_fn(model, opt)
    batch = _batch(16, 64, 0)
    step(*batch)
    with no_sync():
        loss = step(*batch)
    assert torch.isfinite(loss)


def test_lm_head_makes_no_host_sync():
    from gpt1_fast.kernels.lm_head import lm_head_loss

    h = torch.randn(4096, 768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(40990, 768, device="cuda", requires_grad=True)
    t = torch.randint(0, 40990, (4096,), device="cuda")
    m = (torch.rand(4096, device="cuda") < 0.75).float()
    lm_head_loss(h, w, t, m).sum().backward()  # warm-up: compiles, cuBLAS handles
    with no_sync():
        for bound in (0, 3500):
            lm_head_loss(h, w, t, m, rows_bound=bound).sum().backward()


def test_captured_steps_equal_eager_steps():
    """Two widths (32, 64; one graph each after 2 eager warm-up calls), 2 blocks at GPT-1 width,
    dropout off: ten captured steps give bitwise the losses and parameters of ten eager steps (the
    same kernels in the same order). Replays run under sync debugging set to raise."""
    model, opt = _setup(n_layer=2, p=0.0)
    ref = copy.deepcopy(model)
    ref_opt = OpenAIAdam(ref.parameters(), lr=6.25e-5, t_total=100, l2=0.01, max_grad_norm=1.0, fused=True,
                         capturable=True)
    batches = [_batch(8, 32 if i % 2 else 64, i) for i in range(10)]
    eager = [_step_fn(ref, ref_opt)(*b) for b in batches]
    captured = CapturedStep(_step_fn(model, opt), opt, warmup=2)
    losses = [captured(*b) for b in batches[:6]]
    with no_sync():
        losses += [captured(*b) for b in batches[6:]]
    assert captured.graphs == 2
    assert all(torch.equal(a, b) for a, b in zip(losses, eager)), [(a.item(), b.item()) for a, b in zip(losses, eager)]
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name


def test_captured_step_draws_new_dropout_masks():
    """Dropout on: replays of one batch give different losses (the generator is advanced per
    replay), all finite; the parameters move."""
    model, opt = _setup(n_layer=2, p=0.1)
    captured = CapturedStep(_step_fn(model, opt), opt, warmup=1)
    batch = _batch(8, 64, 0)
    before = model.transformer.h[0].attn.c_attn.w.detach().clone()
    losses = torch.stack([captured(*batch) for _ in range(5)])
    assert captured.graphs == 1 and torch.isfinite(losses).all()
    assert len(set(losses[2:].tolist())) == 3  # the three replays differ
    assert not torch.equal(model.transformer.h[0].attn.c_attn.w, before)
