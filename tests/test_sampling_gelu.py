"""The sampling order (temperature, then top-k, then top-p) on a known distribution, and GELU's
constants: the reference against the literal formula in float64, the Triton kernel within 1e-6."""
import math

import pytest
import torch

from gpt1_fast import reference
from gpt1_fast.sampling import next_tokens, sampling_logits


def probs(**kw):
    return sampling_logits(torch.tensor([[2.0, 1.0, 0.0]]), **kw).softmax(-1)[0].double()


def softmax(x):
    e = [math.exp(v) for v in x]
    return [v / sum(e) for v in e]


def test_temperature_comes_before_top_p():
    # T = 2: softmax([1, 0.5, 0]) = [0.506, 0.307, 0.186]; top_p 0.6 keeps {0, 1} (0.506 < 0.6).
    # Top-p first (on softmax([2, 1, 0]) = [0.665, 0.245, 0.090]) would keep {0} alone.
    p = probs(temperature=2.0, top_p=0.6)
    q = softmax([1.0, 0.5])
    torch.testing.assert_close(p, torch.tensor([q[0], q[1], 0.0], dtype=torch.float64), rtol=0, atol=1e-6)


def test_top_k_comes_before_top_p():
    # top_k 2 then top_p 0.7: renormalised [0.731, 0.269] -> {0}; top_p first on [0.665, 0.245, 0.090]
    # would keep {0, 1}, which top_k 2 keeps too.
    p = probs(top_k=2, top_p=0.7)
    assert p.tolist() == [1.0, 0.0, 0.0]
    p = probs(temperature=0.5, top_k=2)  # top-k alone is the same either way: the k largest logits
    q = softmax([4.0, 2.0])
    torch.testing.assert_close(p, torch.tensor([q[0], q[1], 0.0], dtype=torch.float64), rtol=0, atol=1e-6)


def test_samples_follow_the_filtered_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0]).repeat(6000, 1)
    got = next_tokens(logits, temperature=2.0, top_p=0.6, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(got, minlength=3).double() / len(got)
    q = softmax([1.0, 0.5])
    assert freq[2] == 0 and abs(freq[0] - q[0]) < 0.02


def gelu_literal(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def test_reference_gelu_is_the_literal_formula_in_float64():
    x = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    err = (reference.gelu(x) - gelu_literal(x)).abs().max().item()
    assert err <= 1e-12  # 0.0447 in place of 0.044715 is 8.7e-6 away


def test_triton_gelu_within_1e_6_of_the_formula_on_minus_4_to_4():
    pytest.importorskip("triton")
    from gpt1_fast.kernels.layernorm_gelu import bias_gelu

    x = torch.linspace(-4, 4, 8192, dtype=torch.float64)
    bias = torch.zeros(64, dtype=torch.float32)
    got = bias_gelu(x.float().view(128, 64), bias).double().flatten()
    err = (got - gelu_literal(x.float().double())).abs().max().item()
    assert err <= 1e-6, err


def test_triton_gelu_gradient_within_2e_6_of_the_formulas_on_minus_4_to_4():
    pytest.importorskip("triton")
    from gpt1_fast.kernels.layernorm_gelu import bias_gelu

    x = torch.linspace(-4, 4, 8192, dtype=torch.float64).float()
    xd = x.double().requires_grad_()
    want, = torch.autograd.grad(gelu_literal(xd).sum(), xd)
    xf = x.view(128, 64).requires_grad_()
    got, = torch.autograd.grad(bias_gelu(xf, torch.zeros(64, requires_grad=True)).sum(), xf)
    err = (got.double().flatten() - want).abs().max().item()
    assert err <= 2e-6, err  # 3 * 0.044715 written 0.1341 is 1.5e-5 away
