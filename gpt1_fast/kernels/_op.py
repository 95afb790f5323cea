"""The one registration and launch layer of the Triton ops, and their tuning object.

A fused op is a forward body and a backward body (plain functions that allocate outputs and launch
kernels through `launcher`), their fake (meta) implementations, and the autograd glue
(`setup_context`, `grads`). `FusedOp` turns them into:

- two registered ops `gpt1_fast::<name>_fwd` / `_bwd`, so torch.compile traces them without a graph
  break and AOTAutograd sees the backward. Compiled Triton: `torch.library.triton_op`, whose launches
  go through `wrap_triton`, so Inductor sees the kernels themselves. Under TRITON_INTERPRET=1 (the CPU
  tests) `wrap_triton` hands back the raw interpreted kernel and triton_op's fake implementation (the
  body run on FakeTensors) would dereference fake data pointers, so there the bodies are opaque
  `torch.library.custom_op`s with the explicit fakes. Autograd is `register_autograd` in both cases.
- an eager path: outside tracing, `op(*inputs)` is a `torch.autograd.Function` that calls the same
  bodies with launches going straight to the kernels. The dispatcher, the custom-op autograd wrapper
  and the `wrap_triton` higher-order op cost tens of microseconds of Python per call, as much as the
  kernels themselves at GPT-1's fine-tuning shapes (benchmarks/NOTES.md, "host cost").

`Tuning` is each op's launch-choice object: a committed table answers by default (so which kernel
runs never depends on timing noise); timing candidates happens only when asked; overrides for
benchmarks and tests are a context manager on the object.

Registering a new op (see layernorm_gelu.py for a complete one; tests/test_kernels_determinism.py
runs this example with `_scale_kernel(X, Y, n, s, BLOCK: tl.constexpr)` writing Y = s·X):

    from . import _op

    def _scale_fwd(x: torch.Tensor, s: float) -> tuple[torch.Tensor]:
        x = x.contiguous()                   # autograd may pass an expanded (stride-0) gradient
        y = torch.empty_like(x)
        cfg = TUNING.choose("fwd", (x.numel(), _op.arch(x)))
        _op.launcher(_scale_kernel)[(_op.cdiv(x.numel(), cfg["BLOCK"]),)](x, y, x.numel(), s, **cfg)
        return (y,)

    def _scale_bwd(dy: torch.Tensor, s: float) -> torch.Tensor:
        return _scale_fwd(dy, s)[0]

    def _setup(ctx, inputs, output):      # register_autograd passes output= by name
        ctx.s = inputs[1]

    def _grads(ctx, backward, dy):           # backward: the registered op or, eagerly, the body
        return backward(dy, ctx.s), None

    TUNING = _op.Tuning("scale", table=lambda what, key, deterministic: {"BLOCK": 1024, "num_warps": 4})
    scale_op = _op.FusedOp("scale", _scale_fwd, _scale_bwd,
                           forward_fake=lambda x, s: (torch.empty_like(x),),
                           backward_fake=lambda dy, s: torch.empty_like(dy),
                           setup_context=_setup, grads=_grads)
    y, = scale_op(x, 2.0)

The forward body returns a tensor or a tuple (the op's result first, then whatever the backward
needs, such as LayerNorm's mean and rstd: `setup_context` marks those non-differentiable).
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

try:  # torch's own switch between wrap_triton's higher-order op and a direct launch
    from torch._library.triton import is_wrap_triton_enabled, set_wrap_triton_enabled
except ImportError:  # older torch: always wrap (correct, only slower eagerly)
    def is_wrap_triton_enabled() -> bool:
        return True

    def set_wrap_triton_enabled(enabled: bool):
        return contextlib.nullcontext()

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


# ------------------------------------------------------------------------------------- launching
def launcher(kernel):
    """`launcher(kernel)[grid](*args)`: through `wrap_triton` while a triton_op is being traced (so
    Inductor sees the launch), straight to the kernel otherwise (the eager path turns wrapping off,
    the interpreter never needs it)."""
    if INTERPRET or not is_wrap_triton_enabled():
        return kernel
    return torch.library.wrap_triton(kernel)


def is_eager() -> bool:
    """True inside a body called by the eager path: launches run now, so they may be timed."""
    return not is_wrap_triton_enabled()


# Host-side helpers in plain Python: triton.cdiv / next_power_of_2 are constexpr functions in recent
# Triton and cost microseconds per call from Python (they showed in the host-overhead profile).
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length() if n > 1 else 1


@functools.lru_cache(maxsize=None)
def _arch_of(device_type: str, index) -> int:
    if device_type != "cuda" or INTERPRET:
        return 0
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def arch(t: torch.Tensor) -> int:
    """Compute capability x10 of t's device (90 for an H100); 0 on a CPU / under the interpreter."""
    return _arch_of(t.device.type, t.device.index)


def is_tracing(t: torch.Tensor) -> bool:
    """True under torch.compile, fake/functional tensors or a dispatch mode: use the registered ops."""
    return (torch.compiler.is_compiling() or type(t) not in (torch.Tensor, torch.nn.Parameter)
            or _get_current_dispatch_mode() is not None)


# ------------------------------------------------------------------------------------- registration
def _register(name: str, body: Callable, fake: Callable, opaque: bool = False):
    # opaque: a body that triton_op cannot trace (a host sync, a data-dependent shape) is a custom_op
    # everywhere; Inductor then calls it as it is.
    if INTERPRET or opaque:
        op = torch.library.custom_op(name, mutates_args=())(body)
        op.register_fake(fake)
        return op
    return torch.library.triton_op(name, body, mutates_args=())


class FusedOp:
    """A forward/backward pair of Triton bodies as one differentiable op (see the module docstring).

    forward(*inputs) -> a tensor or a tuple of tensors; backward(*args) -> whatever `grads` needs;
    setup_context(ctx, inputs, output) saves for the backward (these parameter names: register_autograd
    passes them by keyword); grads(ctx, backward, *grad_outputs)
    -> one gradient (or None) per input, calling `backward(*args)`. `op(*inputs)` returns what
    forward returns.
    opaque: register custom ops even for compiled Triton (bodies triton_op cannot trace).
    """

    def __init__(self, name: str, forward: Callable, backward: Callable, *, forward_fake: Callable,
                 backward_fake: Callable, setup_context: Callable, grads: Callable, opaque: bool = False):
        self.name = name
        self.forward, self.backward = forward, backward
        self.forward_op = _register(f"gpt1_fast::{name}_fwd", forward, forward_fake, opaque)
        self.backward_op = _register(f"gpt1_fast::{name}_bwd", backward, backward_fake, opaque)
        backward_op = self.backward_op
        self.forward_op.register_autograd(lambda ctx, *g: grads(ctx, backward_op, *g), setup_context=setup_context)

        def eager_forward(*inputs):
            with set_wrap_triton_enabled(False):
                return forward(*inputs)

        def eager_backward(ctx, *grad_outputs):
            with set_wrap_triton_enabled(False):
                return grads(ctx, backward, *grad_outputs)

        # built with type() so that its autograd node is named after the op ("<name>_eagerBackward")
        self.eager = type(f"{name}_eager", (torch.autograd.Function,), {
            "forward": staticmethod(eager_forward), "setup_context": staticmethod(setup_context),
            "backward": staticmethod(eager_backward)})

    def __call__(self, *inputs):
        if is_tracing(inputs[0]):
            return self.forward_op(*inputs)
        return self.eager.apply(*inputs)


# ------------------------------------------------------------------------------------- tuning
def _env_flag(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    return default if v is None else v not in ("", "0", "false", "False")


class Tuning:
    """Launch choices of one op.

    `choose(what, key)` answers, in this order: an active `override(what=...)`; with autotuning on
    and a `run` given (eager launches on a GPU), the fastest of `candidates(what, key, deterministic)`
    timed once per key (`run(choice)` must launch the op's kernels with that choice and nothing
    else); otherwise `table(what, key, deterministic)`, the committed choice: deterministic, so the
    same inputs and seed give bitwise the same results in every process.

    Autotuning is off unless `GPT1_FAST_AUTOTUNE=1` or `override(autotune=True)`. `deterministic`
    (on unless `GPT1_FAST_DETERMINISTIC=0` or `override(deterministic=False)`) excludes choices whose
    result depends on the order of floating-point atomics. Timed picks are kept in `timed` (per
    process: bitwise reproducibility across processes holds only with the table).
    """

    def __init__(self, name: str, table: Callable[[str, tuple, bool], Any],
                 candidates: Callable[[str, tuple, bool], list] | None = None):
        self.name, self.table, self.candidates = name, table, candidates
        self.autotune = _env_flag("GPT1_FAST_AUTOTUNE", False)
        self.deterministic = _env_flag("GPT1_FAST_DETERMINISTIC", True)
        self.timed: dict = {}
        self._overrides: dict = {}

    def choose(self, what: str, key: tuple, run: Callable[[Any], None] | None = None) -> Any:
        if what in self._overrides:
            return self._overrides[what]
        if self.autotune and run is not None and self.candidates is not None:
            k = (what, key, self.deterministic)
            if k not in self.timed:
                self.timed[k] = self._time(self.candidates(what, key, self.deterministic), run)
            return self.timed[k]
        return self.table(what, key, self.deterministic)

    def launch(self, what: str, key: tuple, fn: Callable, *args) -> Any:
        """`fn(choice, *args)` with `choice = choose(what, key, ...)`, `fn` also serving as the timed
        run when autotuning applies (eager launches of compiled kernels); returns fn's result."""
        run = (lambda c: fn(c, *args)) if self.autotune and not INTERPRET and is_eager() else None
        return fn(self.choose(what, key, run), *args)

    @staticmethod
    def _time(cands: list, run: Callable) -> Any:
        from triton.testing import do_bench

        times, error = [], None
        for c in cands:
            try:
                times.append((do_bench(lambda: run(c), warmup=5, rep=20), c))
            except Exception as e:  # noqa: BLE001 - e.g. out of shared memory on this GPU: others run
                error = e
        if not times:
            raise RuntimeError("no candidate launch configuration could run") from error
        return min(times, key=lambda t: t[0])[1]

    @contextlib.contextmanager
    def override(self, **choices):
        """`with tuning.override(fwd=cfg, autotune=True, deterministic=False): ...` for benchmarks,
        sweeps and tests; restores the previous state on exit."""
        settings = {k: choices.pop(k) for k in ("autotune", "deterministic") if k in choices}
        prev_settings = {k: getattr(self, k) for k in settings}
        prev = dict(self._overrides)
        for k, v in settings.items():
            setattr(self, k, v)
        self._overrides.update(choices)
        try:
            yield self
        finally:
            self._overrides = prev
            for k, v in prev_settings.items():
                setattr(self, k, v)

    def report(self) -> dict:
        """{"what key": choice} of the timed picks so far (for benchmark notes)."""
        return {f"{self.name} {what} {key}{'' if det else ' non-deterministic'}": str(c)
                for (what, key, det), c in self.timed.items()}
