"""OpenAIAdam (multi-tensor path, fused=False) against an independent float64 NumPy derivation of
SPEC §5: global-norm clipping, bias-corrected step size, schedule with warmup, decoupled l2."""
import math

import numpy as np
import pytest
import torch

from gpt1_fast.opt import OpenAIAdam

SHAPES = [(6, 5), (5,), (3, 4, 2), (7,)]  # matrices get l2; vectors only with vector_l2
N_STEPS = 30


def schedule(name, x, warmup):
    s = 1.0 if x <= warmup else 0.0
    if name == "warmup_linear":
        return (s * x / warmup + (1 - s)) * (1 - x)
    if name == "warmup_cosine":
        return s * x / warmup + (1 - s) * 0.5 * (1 + math.cos(math.pi * x))
    if name == "warmup_constant":
        return s * x / warmup + (1 - s)
    if name == "warmup_then_cosine":  # the paper's pretraining: the cosine starts where the warm-up ends
        return s * x / warmup + (1 - s) * 0.5 * (1 + math.cos(math.pi * (x - warmup) / (1 - warmup)))
    raise ValueError(name)


def reference(params, grads, *, lr, sched, warmup, t_total, b1, b2, e, l2, vector_l2, max_grad_norm):
    p = [a.astype(np.float64) for a in params]
    m = [np.zeros_like(a) for a in p]
    v = [np.zeros_like(a) for a in p]
    clipped_steps = 0
    for t, gs in enumerate(grads):
        g = [a.astype(np.float64) for a in gs]
        if max_grad_norm > 0:
            norm = math.sqrt(sum(float((a * a).sum()) for a in g))
            clipped_steps += norm > max_grad_norm
            g = [a * (max_grad_norm / max(norm, max_grad_norm)) for a in g]
        lrt = lr * schedule(sched, t / t_total, warmup) * math.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            upd = m[i] / (np.sqrt(v[i]) + e)
            if l2 > 0 and (p[i].ndim > 1 or vector_l2):
                upd = upd + l2 * p[i]
            p[i] = p[i] - lrt * upd
    return p, clipped_steps


def make_problem(seed):
    rng = np.random.RandomState(seed)
    params = [(rng.randn(*s) * 0.1).astype(np.float32) for s in SHAPES]
    # Gradient scale varies over steps so the global norm (max_grad_norm 1) is above 1 on some
    # steps and below on others.
    scales = [0.05, 0.4, 1.5, 0.2, 3.0][:] * (N_STEPS // 5)
    grads = [[(rng.randn(*s) * sc).astype(np.float32) for s in SHAPES] for sc in scales]
    return params, grads


@pytest.mark.parametrize("sched", ["warmup_linear", "warmup_cosine", "warmup_constant", "warmup_then_cosine"])
@pytest.mark.parametrize("vector_l2", [False, True])
def test_openai_adam_matches_float64_reference(sched, vector_l2):
    params, grads = make_problem(0)
    # warmup 0.1 of t_total 30: steps t = 0..3 warm up, then the schedule proper (boundary crossed).
    hp = dict(lr=0.01, sched=sched, warmup=0.1, t_total=N_STEPS, b1=0.9, b2=0.999, e=1e-8, l2=0.05,
              vector_l2=vector_l2, max_grad_norm=1.0)
    want, clipped = reference(params, grads, **hp)
    assert 0 < clipped < N_STEPS, "the problem must clip on some steps only"

    ps = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in params]
    opt = OpenAIAdam(ps, lr=hp["lr"], schedule=sched, warmup=hp["warmup"], t_total=N_STEPS, b1=hp["b1"],
                     b2=hp["b2"], e=hp["e"], l2=hp["l2"], vector_l2=vector_l2, max_grad_norm=hp["max_grad_norm"],
                     fused=False)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
    for p, p0, w in zip(ps, params, want):
        moved_ref = w - p0.astype(np.float64)
        moved = p.detach().double().numpy() - p0.astype(np.float64)
        dev = np.abs(moved - moved_ref).max() / np.abs(moved_ref).max()
        assert dev <= 1e-5, f"shape {p0.shape}: relative deviation {dev:.2e}"


def test_vectors_are_not_decayed_without_vector_l2():
    """With zero gradients Adam's step is 0, so only l2 moves a parameter: matrices shrink, vectors stay."""
    w = torch.nn.Parameter(torch.ones(3, 3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = OpenAIAdam([w, b], lr=0.1, schedule="warmup_constant", warmup=0.05, t_total=10, l2=0.5,
                     max_grad_norm=1.0, fused=False)
    for _ in range(2):  # step t=0 is inside the warmup (factor 0/0.05 = 0); t=1 has factor 1
        w.grad, b.grad = torch.zeros(3, 3), torch.zeros(3)
        opt.step()
    lrt = 0.1 * math.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2)
    torch.testing.assert_close(w.detach(), torch.full((3, 3), 1 - lrt * 0.5))
    torch.testing.assert_close(b.detach(), torch.ones(3))


def test_clipping_is_global_not_per_parameter():
    """Two parameters with gradient norms 0.6 and 0.8 (global 1.0 <= max 1): neither is clipped,
    though a per-parameter clip at 0.7 would touch the second. At max 0.5 both scale by 0.5."""
    a = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = OpenAIAdam([a, b], lr=0.1, t_total=10, max_grad_norm=0.5, fused=False)
    a.grad, b.grad = torch.tensor([0.6]), torch.tensor([0.8])
    opt.clip_grad_norm_()
    torch.testing.assert_close(a.grad, torch.tensor([0.3]))
    torch.testing.assert_close(b.grad, torch.tensor([0.4]))


@pytest.mark.parametrize("fused", [False, None])
def test_zero_warmup_means_no_warmup(fused):
    from gpt1_fast.opt import SCHEDULES, lr_at

    for name, sched in SCHEDULES.items():
        assert sched(0.0, 0.0) == sched(0.0, -1) == 1.0, name  # TF would compute 0/0 at the first step
    p = torch.nn.Parameter(torch.ones(3, 2))
    opt = OpenAIAdam([p], lr=0.1, schedule="warmup_linear", warmup=0, t_total=10, fused=fused)
    p.grad = torch.full_like(p, 0.5)
    opt.step()
    assert torch.isfinite(p).all()
    m, v = 0.1 * 0.5, 0.001 * 0.25  # first-step moments
    want = 1 - lr_at(opt.param_groups[0], 0) * m / (math.sqrt(v) + 1e-8)
    torch.testing.assert_close(p.detach(), torch.full_like(p, want), rtol=1e-6, atol=0)
