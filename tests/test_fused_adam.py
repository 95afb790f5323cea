"""Fused OpenAI-Adam (gpt1_fast._C) against the multi-tensor OpenAIAdam and a float64 NumPy
re-derivation of SPEC §5; op registration, state-dict interchange, edge cases; on a GPU: no host
sync and CUDA-graph capture; where nvcc exists: the CUDA kernels compile spill-free for sm_80/sm_90."""
from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt1_fast.opt as opt_mod
from gpt1_fast.opt import OpenAIAdam

from gpt1_fast._ext import CSRC
TOL = 2e-6

needs_fused = pytest.mark.skipif(opt_mod._fused_unavailable_reason("cpu") is not None,
                                 reason=f"fused extension unavailable: {opt_mod._fused_unavailable_reason('cpu')}")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ------------------------------------------------------------------------- float64 reference (SPEC §5)
def np_schedule(name, x, warmup):
    s = 1.0 if x <= warmup else 0.0
    ramp = x / warmup if s else 0.0
    if name == "warmup_linear":
        return (ramp + (1 - s)) * (1 - x)
    if name == "warmup_cosine":
        return ramp + (1 - s) * 0.5 * (1 + math.cos(math.pi * x))
    if name == "warmup_then_cosine":
        return ramp + (1 - s) * 0.5 * (1 + math.cos(math.pi * (x - warmup) / (1 - warmup)))
    return ramp + (1 - s)


def np_openai_adam(params, grad_seq, groups, max_grad_norm):
    """params: float64 arrays; grad_seq: per step a list (None = no grad); groups: per param a dict of
    lr, schedule, warmup, t_total, b1, b2, e, l2, vector_l2. Returns params, m, v, steps and m_abs, the
    same average over |g|: the scale of the terms m sums, by which its rounding error is judged (a
    sum that cancels to near zero cannot be expected to keep its relative precision)."""
    p = [x.copy() for x in params]
    m = [np.zeros_like(x) for x in params]
    m_abs = [np.zeros_like(x) for x in params]
    v = [np.zeros_like(x) for x in params]
    steps = [0] * len(params)
    for grads in grad_seq:
        scale = 1.0
        if max_grad_norm > 0:
            norm = math.sqrt(sum(float((g * g).sum()) for g in grads if g is not None))
            scale = max_grad_norm / max(norm, max_grad_norm)
        for i, g in enumerate(grads):
            if g is None:
                continue
            h, t = groups[i], steps[i]
            factor = np_schedule(h["schedule"], t / h["t_total"], h["warmup"])
            lrt = h["lr"] * factor * math.sqrt(1 - h["b2"] ** (t + 1)) / (1 - h["b1"] ** (t + 1))
            g = g * scale
            m[i] = h["b1"] * m[i] + (1 - h["b1"]) * g
            m_abs[i] = h["b1"] * m_abs[i] + (1 - h["b1"]) * np.abs(g)
            v[i] = h["b2"] * v[i] + (1 - h["b2"]) * g * g
            upd = m[i] / (np.sqrt(v[i]) + h["e"])
            if h["l2"] > 0 and (p[i].ndim > 1 or h["vector_l2"]):
                upd = upd + h["l2"] * p[i]
            p[i] = p[i] - lrt * upd
            steps[i] += 1
    return p, m, v, steps, m_abs


def as_f64(x):
    return np.asarray(x.detach().cpu().double() if torch.is_tensor(x) else x, dtype=np.float64)


def rel_dev(a, ref, scale=None) -> float:
    """max |a - ref| / max |scale| (scale defaults to ref)."""
    a, ref = as_f64(a), as_f64(ref)
    if ref.size == 0:
        return 0.0
    scale = np.abs(ref if scale is None else as_f64(scale)).max()
    return float(np.abs(a - ref).max() / max(scale, 1e-30))


# ------------------------------------------------------------------------------------ a small "model"
# Odd sizes (tails of vector loops), one tensor larger than a 32K-element CPU chunk, a 3-D weight,
# an empty tensor, a bias and a LayerNorm gain.
SHAPES = [(300, 131), (131,), (7, 5, 3), (0, 4), (64, 33), (33,), (1,), (45,)]
GROUP_OF = [0, 1, 0, 1, 2, 2, 4, 3]  # five groups: decay, no decay (own lr), vector_l2, two own schedules
DEFAULTS = dict(lr=1e-3, schedule="warmup_linear", warmup=0.1, t_total=40, b1=0.9, b2=0.999, e=1e-8, l2=0.01,
                vector_l2=False)
GROUPS = [{}, {"lr": 3e-3, "l2": 0.0}, {"lr": 5e-4, "l2": 0.05, "vector_l2": True},
          {"schedule": "warmup_cosine", "warmup": 0.05, "lr": 2e-3},
          {"schedule": "warmup_then_cosine", "warmup": 0.1, "lr": 1e-3}]


def make_params(device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.02).to(device)) for s in SHAPES]


def make_opt(params, **kw):
    groups = [{"params": [p for p, gi in zip(params, GROUP_OF) if gi == k], **GROUPS[k]} for k in range(len(GROUPS))]
    return OpenAIAdam(groups, **{k: v for k, v in DEFAULTS.items()}, max_grad_norm=1.0, **kw)


def grad_sequence(n_steps, seed=1, dtype=torch.float32):
    """Per step, per param: a gradient or None. Steps 0, 3, 6, ... are large (clipping active); the
    last param gets no gradient on odd steps (its own step count lags); the (45,) param never has one
    on step 0."""
    gen = torch.Generator().manual_seed(seed)
    seq = []
    for t in range(n_steps):
        scale = 30.0 if t % 3 == 0 else 0.003
        grads = [(torch.randn(s, generator=gen) * scale).to(dtype) for s in SHAPES]
        if t % 2 == 1:
            grads[-1] = None
        seq.append(grads)
    return seq


def set_grad(p, g):
    if g is not None and g.dtype != p.dtype:
        if not hasattr(p, "grad_dtype"):
            pytest.skip("this torch cannot attach a gradient of another dtype to a parameter")
        p.grad_dtype = None  # allow fp16/bf16 gradients on fp32 parameters
    p.grad = g


def run(opt, params, seq, device="cpu"):
    for grads in seq:
        for p, g in zip(params, grads):
            set_grad(p, None if g is None else g.to(device).clone())
        opt.step()


def groups_per_param():
    return [{**DEFAULTS, **GROUPS[gi]} for gi in GROUP_OF]


# ------------------------------------------------------------------------------------------ tests
@needs_fused
def test_fused_cpu_matches_unfused_and_float64_reference():
    n_steps = 32
    seq = grad_sequence(n_steps)
    # The sequence exercises clipping on some steps only, and crosses the warmup (t/t_total = 0.1 at t=4).
    norms = [math.sqrt(sum(float((g.double() ** 2).sum()) for g in gs if g is not None)) for gs in seq]
    assert any(n > 1.0 for n in norms) and any(n < 1.0 for n in norms)
    assert n_steps / DEFAULTS["t_total"] > DEFAULTS["warmup"]

    pf, pu = make_params(), make_params()
    p0 = [p.detach().double().numpy().copy() for p in pf]
    of, ou = make_opt(pf, fused=True), make_opt(pu, fused=False)
    assert of.fused and not ou.fused
    run(of, pf, seq)
    run(ou, pu, seq)
    ref_p, ref_m, ref_v, ref_steps, m_abs = np_openai_adam(
        p0, [[None if g is None else g.double().numpy() for g in gs] for gs in seq], groups_per_param(), 1.0)
    for i, (a, b) in enumerate(zip(pf, pu)):
        sf, su = of.state[a], ou.state[b]
        assert float(sf["step"]) == float(su["step"]) == ref_steps[i]
        for name, x, y, r, scale in (("p", a, b, ref_p[i], None),
                                     ("exp_avg", sf["exp_avg"], su["exp_avg"], ref_m[i], m_abs[i]),
                                     ("exp_avg_sq", sf["exp_avg_sq"], su["exp_avg_sq"], ref_v[i], None)):
            assert rel_dev(x, r, scale) <= TOL, (i, name, "fused vs float64", rel_dev(x, r, scale))
            assert rel_dev(x, y, scale if scale is None else m_abs[i]) <= TOL, (i, name, "fused vs unfused")
        # The update itself (p - p0), not only p, agrees with the float64 derivation.
        if a.numel():
            assert rel_dev(a.detach().double().numpy() - p0[i], ref_p[i] - p0[i]) <= 2e-5, i


@needs_fused
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_cpu_half_gradients(dtype):
    seq = grad_sequence(6, seed=3, dtype=dtype)
    params = make_params()
    p0 = [p.detach().double().numpy().copy() for p in params]
    opt = make_opt(params, fused=True)
    run(opt, params, seq)
    ref_p, ref_m, ref_v, _, m_abs = np_openai_adam(
        p0, [[None if g is None else g.double().numpy() for g in gs] for gs in seq], groups_per_param(), 1.0)
    for i, p in enumerate(params):
        assert rel_dev(p, ref_p[i]) <= TOL
        assert rel_dev(opt.state[p]["exp_avg"], ref_m[i], m_abs[i]) <= TOL
        assert rel_dev(opt.state[p]["exp_avg_sq"], ref_v[i]) <= TOL


@needs_fused
def test_params_without_grad_and_empty_tensors():
    params = make_params()
    frozen = torch.nn.Parameter(torch.randn(10, 3))
    before = frozen.detach().clone()
    opt = OpenAIAdam([{"params": params + [frozen]}], lr=1e-3, l2=0.01, t_total=10, max_grad_norm=1.0, fused=True)
    run(opt, params, grad_sequence(2))
    assert torch.equal(frozen, before) and frozen not in opt.state
    empty = params[SHAPES.index((0, 4))]
    assert empty.shape == (0, 4) and float(opt.state[empty]["step"]) == 2
    # No gradients at all: a no-op.
    for p in params:
        p.grad = None
    snapshot = [p.detach().clone() for p in params]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, snapshot))


@needs_fused
def test_fused_step_runs_gpt1_fast_ops():
    params = make_params()
    opt = make_opt(params, fused=True)
    seq = grad_sequence(1)
    for p, g in zip(params, seq[0]):
        p.grad = g
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    names = {e.name for e in prof.events()}
    assert "gpt1_fast::openai_adam_" in names and "gpt1_fast::global_norm" in names, sorted(names)[:30]
    assert not any(n.startswith("aten::_foreach") for n in names)


@needs_fused
def test_ops_opcheck():
    """Schemas (mutation annotations), fake implementations and AOT tracing: what torch.compile needs."""
    ps = [torch.randn(5, 3), torch.randn(7), torch.randn(0)]
    gs = [torch.randn(5, 3), torch.randn(7, dtype=torch.bfloat16), torch.randn(0)]
    ms, vs = [torch.randn_like(p) for p in ps], [torch.rand_like(p) for p in ps]
    steps = [torch.tensor(3.0) for _ in ps]
    norm = torch.ops.gpt1_fast.global_norm(gs)
    assert abs(norm.item() - math.sqrt(sum(float((g.double() ** 2).sum()) for g in gs))) <= 1e-6 * norm.item()
    torch.library.opcheck(torch.ops.gpt1_fast.global_norm.default, (gs,))
    torch.library.opcheck(torch.ops.gpt1_fast.openai_adam_.default,
                          (ps, gs, ms, vs, steps, norm, 1.0, 1e-3, opt_mod.SCHEDULE_IDS["warmup_linear"], 0.002,
                           100.0, 0.9, 0.999, 1e-8, 0.01, False))


@needs_fused
@pytest.mark.parametrize("direction", ["fused->unfused", "unfused->fused"])
def test_state_dict_round_trip(direction):
    seq = grad_sequence(12, seed=5)
    first, second = (True, False) if direction == "fused->unfused" else (False, True)
    pa = make_params()
    oa = make_opt(pa, fused=first)
    run(oa, pa, seq[:6])
    sd = copy.deepcopy(oa.state_dict())
    # Same format from both paths: 0-d float32 CPU step, exp_avg, exp_avg_sq.
    for st in sd["state"].values():
        assert set(st) == {"step", "exp_avg", "exp_avg_sq"}
        assert st["step"].dtype == torch.float32 and st["step"].dim() == 0 and st["step"].device.type == "cpu"
    pb = [torch.nn.Parameter(p.detach().clone()) for p in pa]
    ob = make_opt(pb, fused=second)
    ob.load_state_dict(sd)
    assert ob.fused == second
    # Both continue: the original optimizer and the one restored into the other implementation.
    run(oa, pa, seq[6:])
    run(ob, pb, seq[6:])
    for a, b in zip(pa, pb):
        assert rel_dev(b, a) <= TOL
        assert float(ob.state[b]["step"]) == float(oa.state[a]["step"])
        assert rel_dev(ob.state[b]["exp_avg_sq"], oa.state[a]["exp_avg_sq"]) <= TOL
    # The loaded counters are copies, not aliases of the state dict.
    assert all(float(st["step"]) in (6.0, 3.0) for st in sd["state"].values())


@needs_fused
def test_non_contiguous_grad_and_bad_input():
    p = torch.nn.Parameter(torch.randn(8, 6))
    q = torch.nn.Parameter(p.detach().clone())
    g = torch.randn(6, 8).t()  # non-contiguous
    of = OpenAIAdam([p], lr=1e-2, t_total=10, fused=True)
    ou = OpenAIAdam([q], lr=1e-2, t_total=10, fused=False)
    p.grad, q.grad = g, g.clone()
    of.step()
    ou.step()
    assert rel_dev(p, q) <= TOL
    with pytest.raises(RuntimeError, match="float32"):
        OpenAIAdam([torch.nn.Parameter(torch.randn(3, dtype=torch.float64))], lr=1e-3, fused=True)
    with pytest.raises(RuntimeError, match="capturable"):
        OpenAIAdam([torch.nn.Parameter(torch.randn(3))], lr=1e-3, fused=False, capturable=True)
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16"):
        torch.ops.gpt1_fast.global_norm([torch.randn(3, dtype=torch.float64)])


def test_fallback_warns_once_and_fused_true_raises(monkeypatch):
    monkeypatch.setattr(opt_mod, "_fused_unavailable_reason", lambda device_type="cpu": "no compiler here")
    params = [torch.nn.Parameter(torch.randn(4, 4))]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("default")  # Python's own: a message once per place, no state of ours
        a = OpenAIAdam(params, lr=1e-3)
        b = OpenAIAdam(params, lr=1e-3)
    assert not a.fused and not b.fused
    assert sum("fused step unavailable" in str(x.message) for x in w) == 1
    with pytest.raises(RuntimeError, match="no compiler here"):
        OpenAIAdam(params, lr=1e-3, fused=True)


@pytest.mark.skipif(shutil.which("ninja") is None and shutil.which(str(Path(sys.executable).parent / "ninja")) is None
                    or shutil.which(os.environ.get("CXX", "c++")) is None, reason="needs ninja and a C++ compiler")
def test_jit_build_when_installed_extension_is_missing(tmp_path):
    code = ("import sys; sys.modules['gpt1_fast._C'] = None  # as if pip had not built it\n"
            "import torch; from gpt1_fast import _ext\n"
            "r = _ext.unavailable_reason('cpu'); assert r is None, r\n"
            "r = _ext.unavailable_reason('cpu', 'cpu_decode_blocks'); assert r is None, r\n"
            "print(torch.ops.gpt1_fast.global_norm([torch.full((4,), 0.5), torch.ones(3)]).item())")
    env = {**os.environ, "GPT1_FAST_EXT_DIR": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "2.0"
    assert "just in time" in out.stderr


# --------------------------------------------------------------------------------- CUDA kernels: AOT
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_kernels_compile_without_spills(arch, tmp_path):
    out = subprocess.run(["nvcc", "-c", "-O3", "-std=c++17", f"-arch={arch}", "-Xptxas", "-v",
                          str(CSRC / "openai_adam_cuda.cu"), "-o", str(tmp_path / "k.o")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    kernels = re.findall(r"Compiling entry function '(\w+)' for '(\w+)'", log)
    assert {k for k, _ in kernels} and all(a == arch for _, a in kernels)
    for name in ("openai_adam_kernel", "sumsq_kernel", "norm_finalize_kernel", "increment_steps_kernel"):
        assert any(name in k for k, _ in kernels), name
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert spills and all(s == ("0", "0") for s in spills), log
    frames = re.findall(r"(\d+) bytes stack frame", log)
    assert frames and all(f == "0" for f in frames), log  # no local memory at all


# ---------------------------------------------------------------------------------- CUDA: on a GPU
def _cuda_fused_reason():
    return opt_mod._fused_unavailable_reason("cuda") if torch.cuda.is_available() else "no GPU"


needs_cuda_fused = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda_fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fused_cuda_matches_float64_and_unfused(dtype):
    assert _cuda_fused_reason() is None, _cuda_fused_reason()
    seq = grad_sequence(32, dtype=dtype)
    pf, pu = make_params("cuda"), make_params("cuda")
    p0 = [p.detach().double().cpu().numpy().copy() for p in pf]
    of, ou = make_opt(pf, fused=True), make_opt(pu, fused=False)
    run(of, pf, seq, "cuda")
    run(ou, pu, seq, "cuda")
    ref_p, ref_m, ref_v, ref_steps, m_abs = np_openai_adam(
        p0, [[None if g is None else g.double().numpy() for g in gs] for gs in seq], groups_per_param(), 1.0)
    for i, (a, b) in enumerate(zip(pf, pu)):
        assert float(of.state[a]["step"]) == ref_steps[i]
        assert rel_dev(a, ref_p[i]) <= TOL, (i, rel_dev(a, ref_p[i]))
        assert rel_dev(of.state[a]["exp_avg"], ref_m[i], m_abs[i]) <= TOL
        assert rel_dev(of.state[a]["exp_avg_sq"], ref_v[i]) <= TOL
        if dtype == torch.float32:  # the unfused path clips half gradients in half precision
            assert rel_dev(a, b) <= TOL


@needs_cuda_fused
@pytest.mark.parametrize("capturable", [False, True])
def test_fused_cuda_step_does_not_sync(capturable):
    params = make_params("cuda")
    opt = make_opt(params, fused=True, capturable=capturable)
    seq = grad_sequence(3)
    for grads in seq:
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.cuda()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")


@needs_cuda_fused
def test_fused_cuda_step_graph_capture():
    seq = grad_sequence(10, seed=7)
    seq = [[g if g is not None else torch.zeros(s) for g, s in zip(gs, SHAPES)] for gs in seq]  # static grads
    params, ref = make_params("cuda"), make_params("cuda")
    opt = make_opt(params, fused=True, capturable=True)
    ref_opt = make_opt(ref, fused=True)
    for p, g in zip(params, seq[0]):
        p.grad = g.cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up steps (state allocation) outside the graph
        for grads in seq[:3]:
            for p, g in zip(params, grads):
                p.grad.copy_(g)
            opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for grads in seq[3:]:
        for p, g in zip(params, grads):
            p.grad.copy_(g)
        graph.replay()
    run(ref_opt, ref, seq, "cuda")
    torch.cuda.synchronize()
    for a, b in zip(params, ref):
        assert float(opt.state[a]["step"]) == float(ref_opt.state[b]["step"]) == len(seq)
        assert rel_dev(a, b) <= TOL
