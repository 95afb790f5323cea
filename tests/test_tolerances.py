"""The error model behind the GPU tests' tolerances (tests/tolerances.py), checked against errors measured
on the CPU: each prediction must land within 30 % of what rounding really does (so a tolerance built
on it is neither loose nor flaky), and the LM head's per-row bound must hold and be used (the worst
row reaches a good part of its bound)."""
import math

import torch

import tolerances as T


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_unit_roundoffs_are_the_formats():
    assert T.unit_roundoff(torch.bfloat16) == 2 ** -8 and T.unit_roundoff(torch.float16) == 2 ** -11
    assert T.unit_roundoff(torch.float32) == 2 ** -24
    assert math.isclose(T.tolerance({torch.bfloat16: 1}), 3 * 2 ** -8 / math.sqrt(3))
    assert 4.5 < T.tail(10_000) < 6


def test_one_rounding_is_u_over_sqrt3():
    x = torch.randn(200_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        measured = _rel(x.to(dtype), x)
        assert 0.7 < measured / T.predicted({dtype: 1}) < 1.3, dtype


def test_matmul_roundings_add_in_quadrature():
    """bf16 inputs rounded from float64 (two roundings: the K errors add like the terms), the product
    of exact bf16 inputs accumulated in float32 and stored bf16 (one rounding, K = 768)."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(256, 768, dtype=torch.float64, generator=g), torch.randn(768, 384, dtype=torch.float64,
                                                                              generator=g)
    ab, bb = a.to(torch.bfloat16), b.to(torch.bfloat16)
    inputs_rounded = _rel(ab.double() @ bb.double(), a @ b)
    assert 0.7 < inputs_rounded / T.predicted({torch.bfloat16: 2}) < 1.3
    out_rounded = _rel((ab.float() @ bb.float()).to(torch.bfloat16), ab.double() @ bb.double())
    assert 0.7 < out_rounded / T.predicted({torch.bfloat16: 1}, K=768) < 1.3


def _lm_rows(N, V, C, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, C, generator=g, dtype=torch.float64).to(torch.bfloat16).double()
    w = torch.randn(V, C, generator=g, dtype=torch.float64) * 0.05 * math.sqrt(768 / C)
    return h, w, torch.randint(0, V, (N,), generator=g)


def _loss(z, t):
    return torch.logsumexp(z, 1) - z[torch.arange(z.shape[0]), t]


def test_lm_head_bound_holds_and_is_used():
    """The loss from bf16-rounded logits (what the fused head and cuBLAS + cross-entropy store), with
    the weight as given or rounded to bf16 first (autocast): every row inside its bound, the worst
    at more than a tenth of it."""
    h, w, t = _lm_rows(512, 4096, 128, 2)
    exact = _loss(h @ w.t(), t)
    for weight_rounded in (False, True):
        wc = w.to(torch.bfloat16).double() if weight_rounded else w
        ours = _loss((h @ wc.t()).to(torch.bfloat16).double(), t)
        ratio = ((ours - exact).abs() / T.lm_head_loss_bound(h, w, t, torch.bfloat16, weight_rounded)).max()
        assert 0.1 < ratio <= 1.0, (weight_rounded, ratio)
    # a head one rounding sloppier (the logits rounded twice, through fp16 then bf16 of 2x too big a
    # step) breaks the bound
    sloppy = _loss(((h @ w.t()) * (1 + 2 ** -7 * torch.sign(torch.randn(512, 4096, dtype=torch.float64)))), t)
    assert ((sloppy - exact).abs() > T.lm_head_loss_bound(h, w, t, torch.bfloat16, False)).any()
