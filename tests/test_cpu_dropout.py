"""Dropout of the `cpu` backend under torch.compile (gpt1_fast.cpu_dropout): the hashed masks' statistics,
Inductor's code giving the eager bits, the scale, the backward's mask, seeding, and where it is used."""
import pytest
import torch
import torch.nn.functional as F

from gpt1_fast import cpu, cpu_dropout, ops

N = 1 << 20


def sigmas(observed: float, expected: float, n: int) -> float:
    """How many standard deviations a Bernoulli frequency over n draws lies from its probability."""
    return abs(observed - expected) / (expected * (1 - expected) / n) ** 0.5


def key(k: int) -> torch.Tensor:
    return torch.tensor(k, dtype=torch.int32)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_drop_each_element_with_probability_p_independently(p):
    m = cpu_dropout.keep_mask((N // 1024, 1024), p, key(12345))
    assert m.dtype == torch.bool and m.shape == (N // 1024, 1024)
    drop = ~m.view(-1)
    assert sigmas(drop.float().mean().item(), p, N) < 5
    for lag in (1, 2, 1024, 768):  # neighbours in a row, in a column, one hidden size apart
        both = (drop[:-lag] & drop[lag:]).float().mean().item()
        assert sigmas(both, p * p, N - lag) < 5, lag
    other = ~cpu_dropout.keep_mask((N // 1024, 1024), p, key(12346)).view(-1)  # the next key: unrelated
    assert sigmas((drop & other).float().mean().item(), p * p, N) < 5
    assert sigmas((drop == other).float().mean().item(), p * p + (1 - p) ** 2, N) < 5


def test_threshold_and_key_range():
    """p = 0 keeps all, the key's whole int32 range is used (the sign bit too)."""
    assert cpu_dropout.keep_mask((1000,), 0.0, key(7)).all()
    keys = torch.stack([cpu_dropout.draw_key("cpu") for _ in range(200)])
    assert keys.dtype == torch.int32 and (keys < 0).any() and (keys > 0).any()
    with pytest.raises(ValueError, match="2\\^31"):
        cpu_dropout.keep_mask((1 << 16, 1 << 15), 0.1, key(0))


needs_compiler = pytest.mark.skipif(cpu.cpp_compiler() is None, reason="no C++ compiler for Inductor")


@needs_compiler
def test_inductors_code_gives_the_eager_masks():
    """The int32 products wrap the same way in Inductor's vectorised C++ (and its loop tails) as eagerly."""
    fn = torch.compile(cpu_dropout.keep_mask, fullgraph=True, dynamic=False)
    for shape, k in (((3, 77, 77), 5), ((1001,), -2 ** 31), ((16, 768), 2 ** 31 - 1)):
        assert torch.equal(fn(shape, 0.1, key(k)), cpu_dropout.keep_mask(shape, 0.1, key(k))), shape


@needs_compiler
def test_compiled_dropout_scales_kept_values_and_its_gradient_uses_the_same_mask():
    p = 0.25
    x = torch.randn(64, 96, requires_grad=True)
    f = torch.compile(lambda x: ops.dropout(x, p, True, backend="cpu"), fullgraph=True)
    torch.manual_seed(0)
    y = f(x)
    kept = y != 0
    assert sigmas(1 - kept.float().mean().item(), p, x.numel()) < 5
    torch.testing.assert_close(y[kept], x.detach()[kept] / (1 - p), rtol=1e-6, atol=0)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / (1 - p), rtol=1e-6, atol=0)
    torch.manual_seed(0)
    assert torch.equal(f(x), y)  # the seed decides the mask
    assert not torch.equal(f(x), y)  # and every call draws a new one


@needs_compiler
def test_compiled_attention_dropout_is_unbiased():
    """The attention probabilities' dropout under compile (cpu backend): averaged over many draws it gives
    attention without dropout (a mask without its 1/(1-p), or no mask, would not)."""
    torch.manual_seed(0)
    qkv = torch.randn(2, 8, 3 * 16)
    f = torch.compile(lambda qkv: ops.attention(qkv, 2, 0.5, True, backend="cpu"), fullgraph=True)
    plain = ops.attention(qkv, 2, 0.0, False, backend="torch")
    draws = torch.stack([f(qkv) for _ in range(400)])
    sem = draws.std(0) / 400 ** 0.5  # the standard error of each element's mean
    assert (sem > 0).all()  # dropout happens everywhere (the first position too: its one key is dropped or not)
    assert ((draws.mean(0) - plain).abs() < 5 * sem).all()


class GraphOps:
    """A torch.compile backend that records the functions Dynamo's graph calls, then runs it eagerly."""

    def __init__(self):
        self.targets = []

    def __call__(self, gm, example_inputs):
        self.targets += [n.target for n in gm.graph.nodes if n.op == "call_function"]
        return gm.forward


def test_used_under_compile_with_the_cpu_backend_only():
    x = torch.randn(8, 32)
    for backend, hashed in (("cpu", True), ("auto", True), ("torch", False)):
        rec = GraphOps()
        torch.compile(lambda x: ops.dropout(x, 0.1, True, backend=backend), backend=rec, fullgraph=True)(x)
        assert (torch.randint in rec.targets) == hashed and (F.dropout in rec.targets) != hashed, backend
        torch._dynamo.reset()
    torch.manual_seed(3)
    eager = ops.dropout(x, 0.1, True, backend="cpu")  # eagerly: ATen's dropout, as F.dropout draws it
    torch.manual_seed(3)
    assert torch.equal(eager, F.dropout(x, 0.1, True))
    assert ops.dropout(x, 0.1, False, backend="cpu") is x  # eval: untouched


def test_the_models_dropouts_go_through_the_op():
    """Every dropout module of the model (embeddings, residual branches, heads) is one that ops.dropout
    serves, with the model's backend."""
    from gpt1_fast.config import GPTConfig
    from gpt1_fast.model import DoubleHeadModel, Dropout, set_backend

    m = DoubleHeadModel(GPTConfig(n_embd=32, n_head=2, n_layer=2, backend="cpu"), 60, "multiple_choice", vocab=80,
                        n_ctx=8)
    drops = [mod for mod in m.modules() if isinstance(mod, torch.nn.Dropout)]
    mine = [d for d in drops if isinstance(d, Dropout)]
    assert len(mine) == 1 + 2 * 2 + 1  # embeddings, two a block, the head
    assert all(d.backend == "cpu" for d in mine)
    set_backend(m, "torch")
    assert all(d.backend == "torch" for d in mine)
