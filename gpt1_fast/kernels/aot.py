"""Ahead-of-time compile of one kernel configuration for an NVIDIA target, without a GPU: registers,
spills and PTX, for the no-spill tests (tests/test_attention.py, tests/test_layernorm_gelu.py) and
the occupancy table (benchmarks/aot_occupancy.py).

Needs real Triton JIT functions: import the kernels in a process without TRITON_INTERPRET=1 (the
tests run this in a subprocess).
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def compiling_env() -> dict:
    """The environment for a subprocess that compiles kernels for real: the interpreter off, this
    checkout first on PYTHONPATH (the tests' own process runs under TRITON_INTERPRET=1)."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int64: "i64",
                 torch.int32: "i32", torch.int8: "i8"}


def specialise(fn, args: tuple, float_ty: str = "fp32") -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of `fn` launched with `args` (positional runtime arguments), as
    Triton's launch-time specialisation sees them: 16-byte-aligned pointers and ints divisible by 16
    are compiled as such (it enables vector loads), ints equal to 1 become constants. Python floats
    are typed `float_ty`: eager Triton passes fp32, Inductor fp64 scalars."""
    sig, constexprs, attrs = {}, {}, {}
    for i, (name, a) in enumerate(zip(fn.arg_names, args)):
        if isinstance(a, torch.Tensor):
            sig[name] = "*" + _TRITON_TYPES[a.dtype]
            if a.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(a, bool):
            sig[name] = "i1"
        elif isinstance(a, int):
            if a == 1:
                sig[name], constexprs[name] = "constexpr", 1
                continue
            sig[name] = "i32" if -2**31 <= a < 2**31 else "i64"
            if a % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = float_ty
    return sig, constexprs, attrs


def aligned_attrs(fn, sig: dict) -> dict:
    """Divisibility attributes for an explicit signature: every pointer and i32 taken as 16-aligned
    (the common case at GPT-1's widths)."""
    return {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k, v in sig.items()
            if v.startswith("*") or v == "i32"}


def compile_stats(fn, sig: dict, constexprs: dict, cap: int, *, num_warps: int = 4, num_stages: int | None = None,
                  attrs: dict | None = None) -> dict:
    """Compile `fn` for sm_<cap>. `sig` types the runtime arguments, `constexprs` gives values.
    Returns regs (per thread), spills (stack + local bytes: the local-memory frame the driver reports
    as Triton's n_spills), shared (bytes) and ptx."""
    import triton
    from triton.backends.compiler import GPUTarget

    attrs = aligned_attrs(fn, sig) if attrs is None else attrs
    src = triton.compiler.ASTSource(fn=fn, signature={**sig, **{k: "constexpr" for k in constexprs}},
                                    constexprs=constexprs, attrs=attrs)
    opts = {"num_warps": num_warps, **({"num_stages": num_stages} if num_stages is not None else {})}
    compiled = triton.compile(src, target=GPUTarget("cuda", cap, 32), options=opts)
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k.cubin"
        path.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(path)], capture_output=True,
                               text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    if m is None:
        raise RuntimeError(f"no resource usage for {fn.__name__} {constexprs} on sm_{cap}:\n{usage[-2000:]}")
    return {"regs": int(m[1]), "spills": int(m[2]) + int(m[4]), "shared": compiled.metadata.shared,
            "ptx": compiled.asm["ptx"]}


def resident_programs(regs: int, num_warps: int) -> int:
    """Programs of `num_warps` warps that fit on one SM at `regs` registers per thread (64 K registers
    and 64 warps per SM on sm_80 and sm_90, registers allocated per warp in units of 256; at most 32)."""
    per_warp = -(-regs * 32 // 256) * 256
    return min(65536 // (per_warp * num_warps), 64 // num_warps, 32)


@contextlib.contextmanager
def recording_launches(arch: int):
    """`with recording_launches(90) as calls: op(...)`: every kernel launch of the ops is appended to
    `calls` as (JITFunction, positional args, keyword args) instead of running, with the launch
    choices made as on a GPU of compute capability arch / 10 (run on CPU tensors, without the
    interpreter). What to compile ahead of time is then exactly what would launch."""
    from . import _op

    calls: list = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kw: calls.append((self.kernel, args, kw))

    saved = _op.arch, _op.launcher
    _op.arch, _op.launcher = (lambda t: arch), Recorder
    try:
        yield calls
    finally:
        _op.arch, _op.launcher = saved


def compile_launch(kernel, args: tuple, kw: dict, cap: int, float_ty: str = "fp32") -> dict:
    """compile_stats of one recorded launch (its specialisation, constexprs and options), plus
    `wgmma`: whether the PTX uses Hopper's warpgroup MMA (sm_90) rather than mma.sync."""
    sig, constexprs, attrs = specialise(kernel, args, float_ty)
    opts = {k: kw[k] for k in ("num_warps", "num_stages") if k in kw}
    constexprs.update({k: v for k, v in kw.items() if k not in opts})
    sig = {k: v for k, v in sig.items() if v != "constexpr"}
    st = compile_stats(kernel, sig, constexprs, cap, attrs=attrs, **opts)
    st["wgmma"] = "wgmma.mma_async" in st["ptx"]
    return {**st, "constexprs": constexprs, "num_warps": opts.get("num_warps", 4), "num_stages": opts.get("num_stages")}
