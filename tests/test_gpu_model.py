"""The whole model's fused training path (Triton LayerNorm, GELU, attention, the fused LM head in the
objective) against the reference ops on a CUDA GPU: `TRITON_INTERPRET=0 pytest -m cuda`.

Tolerances (tests/tolerances.py): a 12-layer model amplifies rounding errors by an amount no count of
roundings predicts, so the reference path at the same precision measures it, against the float64
model: the fused path may be at most 2x as far from float64 as the reference path is. It rounds
once more per LayerNorm (the residual stream kept in bf16 under autocast): sqrt(2) in quadrature, and
its kernels round as often as cuBLAS + the torch ops otherwise. A result the reference gets nearly
exact is allowed one rounding of its dtype.
"""
import copy
import os
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from gpt1_fast import reference
from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel, set_backend
from gpt1_fast.testing import rel_err
from step_helpers import rocstories_batch
from tolerances import tolerance, unit_roundoff

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                 reason="compiled Triton needed: run with TRITON_INTERPRET=0")]
N_VOCAB, N_SPECIAL = 40478, 3
ZERO_GRAD = "task_head.linear.bias"  # exactly 0: both endings' logits share it (softmax is shift-invariant)


def _model(n_layer=12, p=0.0, T=77):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=n_layer, embd_pdrop=p, attn_pdrop=p, resid_pdrop=p, clf_pdrop=p, backend="torch")
    return DoubleHeadModel(cfg, N_VOCAB + 2, "multiple_choice", N_VOCAB + N_SPECIAL + T, T).cuda()


def _batch(B=8, T=77, seed=0):
    return rocstories_batch(B, T, N_VOCAB, seed, "cuda")


def _run(model, batch, amp, backend=None, fwd=None):
    """Objective, task logits and every gradient of one training forward + backward."""
    if backend is not None:
        set_backend(model, backend)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        out = (fwd or model)(*batch)
    out["loss"].backward()
    res = {"loss": out["loss"].detach().reshape(1), "task_logits": out["task_logits"].detach()}
    res.update({n: p.grad.clone() for n, p in model.named_parameters()})
    return res


def _float64(model, batch):
    """The reference model in float64, its cross-entropies too (the reference computes them in float32)."""
    m64 = set_backend(copy.deepcopy(model), "torch").double()
    with mock.patch.object(reference, "cross_entropy",
                           lambda logits, t: F.cross_entropy(logits.double(), t, reduction="none")):
        return _run(m64, batch, amp=False)


def _assert_no_worse(ours, ref, exact, dtype, tokens, what):
    """ours within 2x the reference's distance from float64, plus one rounding of its dtype and a
    float32 sum over every token (a parameter's gradient sums over them); the shared bias exactly 0 up
    to the float32 sum of the two endings' probabilities (4 u32 per example)."""
    floor = tolerance({dtype: 1}, K=tokens)
    for k in exact:
        if k == ZERO_GRAD:
            assert ours[k].abs().max() <= 4 * unit_roundoff(torch.float32) * len(ref["task_logits"]), (what, k)
            continue
        e_ours, e_ref = rel_err(ours[k], exact[k]), rel_err(ref[k], exact[k])
        assert e_ours <= 2 * e_ref + floor, (what, k, e_ours, e_ref)


@pytest.mark.priority
def test_fused_training_path_vs_reference_dropout_off():
    """GPT-1 size, 8 x 2 x 77 tokens: the objective (task + 0.5 LM through the fused head), the task
    logits and all 148 gradients, float32 and bf16 autocast."""
    model, batch = _model(), _batch()
    exact = _float64(model, batch)
    for amp, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        ref = _run(model, batch, amp, "torch")
        ours = _run(model, batch, amp, "triton")
        _assert_no_worse(ours, ref, exact, dtype, batch[1].numel(), f"amp={amp}")


@pytest.mark.priority
def test_compiled_fused_step_equals_eager_with_backward():
    """torch.compile(fullgraph=True) of the fused training path (2 blocks at GPT-1 width, bf16): loss,
    logits and every gradient as close to float64 as eager is (same rule), so also close to eager."""
    model, batch = _model(n_layer=2), _batch()
    exact = _float64(model, batch)
    eager = _run(model, batch, True, "triton")
    compiled = _run(model, batch, True, fwd=torch.compile(model, fullgraph=True))
    _assert_no_worse(compiled, eager, exact, torch.bfloat16, batch[1].numel(), "compiled")


def _dropout_samples(model, backend, seeds, batch):
    set_backend(model, backend)
    r = {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(1)).cuda() for n, p in
         model.named_parameters() if n.endswith(("h.0.attn.c_attn.w", "h.1.mlp.c_fc.w"))}
    out = []
    for s in seeds:
        torch.manual_seed(s)
        res = _run(model, batch, True)
        out.append([res["loss"].item()] + [(res[n].float() * v).sum().item() for n, v in r.items()])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.priority
def test_fused_training_path_dropout_distribution():
    """Dropout 0.1 everywhere (the masks differ: Philox in the attention kernel, PyTorch's elsewhere),
    2 blocks at GPT-1 width, bf16: over 24 seeds each, the loss and two gradient projections have the
    same distribution on both paths: means within 4 standard errors (Welch), variance ratios inside
    the F distribution's two-sided 0.1 % bounds. A wrong keep rate or a missing 1/(1-p) moves the
    variance or the mean far outside; without dropout every sample would be equal (checked)."""
    from scipy import stats

    model, batch, n = _model(n_layer=2, p=0.1).train(), _batch(), 24
    ours = _dropout_samples(model, "triton", range(n), batch)
    ref = _dropout_samples(model, "torch", range(100, 100 + n), batch)
    lo, hi = stats.f.ppf(0.0005, n - 1, n - 1), stats.f.ppf(0.9995, n - 1, n - 1)
    assert (ours.std(0) > 0).all() and (ref.std(0) > 0).all()
    se = (ours.var(0) / n + ref.var(0) / n).sqrt()
    assert ((ours.mean(0) - ref.mean(0)).abs() <= 4 * se).all(), ((ours.mean(0) - ref.mean(0)) / se)
    ratio = ours.var(0) / ref.var(0)
    assert ((ratio > lo) & (ratio < hi)).all(), (ratio, lo, hi)
