"""A training step without host syncs, and its capture (gpt1_fast/graphs.py), on the CPU.

The real CUDA capture is tested in tests/test_gpu_step.py (`-m cuda`). Here: the whole ROCStories step
(Triton backend through the interpreter, fused OpenAI-Adam with capturable=True) issues no
host-synchronising op (tests/host_sync.py, the CPU stand-in for `torch.cuda.set_sync_debug_mode`), and
CapturedStep's bookkeeping (warm-up, one capture per shape, static input buffers, the checks) gives
the same parameters as eager steps, bitwise, through a stand-in graph backend that replays the step
on the static buffers as a graph would.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import copy  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from gpt1_fast.config import GPTConfig  # noqa: E402
from gpt1_fast.graphs import CapturedStep, unsupported_reason  # noqa: E402
from gpt1_fast.model import DoubleHeadModel  # noqa: E402
from gpt1_fast.opt import OpenAIAdam  # noqa: E402
from host_sync import NoHostSync  # noqa: E402
from step_helpers import rocstories_batch, trainer_step  # noqa: E402

N_VOCAB, N_SPECIAL = 50, 3


def _model(backend="triton", p=0.1, n_layer=2):
    torch.manual_seed(0)
    cfg = GPTConfig(n_embd=32, n_head=2, n_layer=n_layer, embd_pdrop=p, attn_pdrop=p, resid_pdrop=p, clf_pdrop=p,
                    backend=backend)
    return DoubleHeadModel(cfg, N_VOCAB + 2, "multiple_choice", N_VOCAB + N_SPECIAL + 16, 16)


def _batch(seed, T, B=3):
    return rocstories_batch(B, T, N_VOCAB, seed)


def _adam(model, capturable=True):
    return OpenAIAdam(model.parameters(), lr=1e-3, t_total=20, l2=0.01, max_grad_norm=1.0, fused=True,
                      capturable=capturable)


def test_training_step_has_no_host_sync():
    """Forward, fused LM head, backward and the fused optimizer with capturable=True, after one warm-up
    step (optimizer state): not one op that would make the host wait for a GPU."""
    model = _model(n_layer=1).train()
    opt = _adam(model)
    step = trainer_step(model, opt)
    step(*_batch(0, 8, B=2))
    mode = NoHostSync()
    with mode:
        step(*_batch(1, 8, B=2))
    assert "gpt1_fast::lm_head_loss_bwd" in mode.seen and "gpt1_fast::attn_packed_fwd" in mode.seen
    assert "gpt1_fast::openai_adam_" in mode.seen


def test_host_sync_check_catches_item_and_nonzero_row_selection(monkeypatch):
    """The check fails on `.item()`, and on the LM head's former row selection (`nonzero`)."""
    from gpt1_fast.kernels import lm_head

    with pytest.raises(AssertionError, match="host-synchronising"), NoHostSync():
        torch.ones(3).sum().item()
    h, w = torch.randn(6, 8, requires_grad=True), torch.randn(20, 8)
    t, m = torch.randint(0, 20, (6,)), torch.tensor([1, 0, 1, 1, 0, 1.0])
    monkeypatch.setattr(lm_head, "row_order", lambda mask, bound: torch.nonzero(mask).squeeze(1))
    with pytest.raises(AssertionError, match="nonzero"), NoHostSync():
        lm_head.lm_head_loss(h, w, t, m)


class ReplayOnStaticBuffers:
    """Stand-in for the CUDA graph backend: a 'graph' re-runs the step on the buffers captured with
    it, so a step that read anything but its static inputs would diverge from eager training."""

    def __init__(self):
        self.captures = self.eager_calls = 0

    def eager(self, fn, inputs):
        self.eager_calls += 1
        return fn(*inputs)

    def capture(self, fn, static_inputs):
        self.captures += 1
        out = torch.zeros(())

        def replay():
            out.copy_(fn(*static_inputs))
        return replay, out


def test_captured_steps_equal_eager_steps_bitwise():
    """Ten steps over two widths (one capture each, after two warm-up calls), dropout on: the same
    losses and parameters as ten eager steps from the same state and RNG."""
    batches = [_batch(i, 12 if i % 3 else 8) for i in range(10)]
    ref = _model(backend="torch").train()  # the capture logic is the same for every backend
    ours = copy.deepcopy(ref)
    ref_step = trainer_step(ref, _adam(ref))
    backend = ReplayOnStaticBuffers()
    opt = _adam(ours)
    captured = CapturedStep(trainer_step(ours, opt), opt, warmup=2, backend=backend)
    torch.manual_seed(5)
    ref_losses = [ref_step(*b) for b in batches]
    torch.manual_seed(5)
    losses = [captured(*b) for b in batches]
    assert backend.captures == captured.graphs == 2 and backend.eager_calls == 2 * 2  # per width
    assert all(torch.equal(a, b) for a, b in zip(losses, ref_losses))
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name


def test_captured_step_refuses_what_a_graph_would_get_wrong():
    model = _model(backend="torch", p=0.0)
    with pytest.raises(ValueError, match="capturable=True"):
        CapturedStep(trainer_step(model, _adam(model, False)), _adam(model, False))
    opt = _adam(model)

    def keeps_grads(X, M, Y):
        model(X, M, Y)["loss"].backward()
        opt.step()

    with pytest.raises(RuntimeError, match="zero_grad"):
        CapturedStep(keeps_grads, opt, backend=ReplayOnStaticBuffers())(*_batch(0, 8))
    captured = CapturedStep(trainer_step(model, opt), opt, warmup=1, backend=ReplayOnStaticBuffers())
    captured(*_batch(0, 8))
    captured(*_batch(1, 8))  # captured here
    opt.param_groups[0]["lr"] = 5e-4  # a schedule written on the host: the graph would not see it
    with pytest.raises(RuntimeError, match="hyperparameter"):
        captured(*_batch(2, 8))


def test_cpu_inputs_run_eagerly_and_unsupported_reasons():
    model = _model(backend="torch", p=0.0)
    opt = _adam(model)
    captured = CapturedStep(trainer_step(model, opt), opt)
    for i in range(4):
        assert torch.isfinite(captured(*_batch(i, 8)))
    assert captured.graphs == 0
    cuda = torch.device("cuda")
    assert unsupported_reason(cuda, "pow2") is None and unsupported_reason(cuda, "global") is None
    assert "pow2" in unsupported_reason(cuda, "batch")
    assert "CUDA device" in unsupported_reason(torch.device("cpu"), "pow2")
    assert "processes" in unsupported_reason(cuda, "pow2", world=2)
