"""Loader of the C++/CUDA extension `gpt1_fast._C` (fused OpenAI-Adam; the blocks of a bf16 decoding step
on the CPU), sources in `gpt1_fast/csrc/`, shipped inside the package so a non-editable install can build
it too.

Order: the library `pip install` built; else a just-in-time build with ninja
(`torch.utils.cpp_extension.load`) into a cache directory (`$GPT1_FAST_EXT_DIR`, default
`~/.cache/gpt1_fast/ext`). The CUDA part is added when torch has CUDA and a CUDA toolchain is found:
if the installed `_C` was built without it, the CUDA kernels alone are built just in time and
registered beside it. Nothing here raises: `unavailable_reason(device_type)` says why not.
Set GPT1_FAST_NO_JIT=1 to forbid just-in-time builds.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
CPU_SOURCES = ["openai_adam.cpp", "cpu_decode.cpp"]
CUDA_SOURCES = ["openai_adam_cuda.cpp", "openai_adam_cuda.cu"]
# the ops each dispatch key must have (a library built from older sources lacks some: unavailable_reason(op=...))
OPS = {"CPU": ("global_norm", "openai_adam_", "cpu_decode_blocks", "transpose_to_bf16"),
       "CUDA": ("global_norm", "openai_adam_")}
# -fno-math-errno: sqrtf that may set errno keeps GCC from vectorising the update loop.
# -fopenmp: at::parallel_for is `omp parallel` in torch's headers; without it the loop runs on one thread.
CXX_FLAGS = ["-O3", "-fno-math-errno", "-fopenmp"]
LD_FLAGS = ["-fopenmp"]


def _has_kernel(dispatch_key: str, ops: tuple[str, ...] | None = None) -> bool:
    """Whether every op of `ops` (default: all of the key's) has a kernel for `dispatch_key`."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    try:
        return all(has(f"gpt1_fast::{op}", dispatch_key) for op in ops or OPS[dispatch_key])
    except RuntimeError:  # op not registered
        return False


def _cuda_toolchain() -> bool:
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None and torch.cuda.is_available()


def _build_dir() -> Path:
    tag = f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}".replace("+", "_")
    root = os.environ.get("GPT1_FAST_EXT_DIR") or Path.home() / ".cache" / "gpt1_fast" / "ext"
    path = Path(root) / tag
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jit(name: str, sources: list[str]) -> None:
    from torch.utils.cpp_extension import load

    where = _build_dir()
    print(f"gpt1_fast: building the C++ extension ({', '.join(sources)}) just in time in {where} "
          "(once; later runs reuse it)", file=sys.stderr, flush=True)
    load(name=name, sources=[str(CSRC / s) for s in sources], build_directory=str(where),
         extra_cflags=CXX_FLAGS, extra_ldflags=LD_FLAGS, extra_cuda_cflags=["-O3", "-lineinfo"], is_python_module=False, verbose=False)


@functools.lru_cache(maxsize=None)
def _load() -> str | None:
    """Make the ops available. None on success, else why the CPU ops are unavailable."""
    if _has_kernel("CPU"):
        return None
    try:
        import gpt1_fast._C  # noqa: F401  (registers the ops)

        return None
    except ImportError as e:
        prebuilt = f"gpt1_fast._C is not installed ({e})"
    if os.environ.get("GPT1_FAST_NO_JIT"):
        return f"{prebuilt}, and GPT1_FAST_NO_JIT is set"
    if not (CSRC / CPU_SOURCES[0]).is_file():
        return f"{prebuilt}, and its sources ({CSRC}) are missing (a broken install: reinstall gpt1_fast)"
    cuda = _cuda_toolchain()
    try:
        _jit("gpt1_fast_C_cuda" if cuda else "gpt1_fast_C", CPU_SOURCES + (CUDA_SOURCES if cuda else []))
    except Exception as e:  # no compiler, no ninja, compile error...
        return f"{prebuilt}, and building it just in time failed: {type(e).__name__}: {str(e)[-2000:]}"
    return None if _has_kernel("CPU") else f"{prebuilt}, and the just-in-time build registered no CPU kernels"


@functools.lru_cache(maxsize=None)
def _load_cuda() -> str | None:
    reason = _load()
    if reason:
        return reason
    if _has_kernel("CUDA"):
        return None
    if not _cuda_toolchain():
        return "gpt1_fast._C has no CUDA kernels and no CUDA toolchain (nvcc, CUDA torch) is available to build them"
    if os.environ.get("GPT1_FAST_NO_JIT"):
        return "gpt1_fast._C was built without CUDA, and GPT1_FAST_NO_JIT is set"
    try:  # the installed _C is CPU-only: add the CUDA kernels beside it
        _jit("gpt1_fast_C_cuda_only", CUDA_SOURCES)
    except Exception as e:
        return f"building the CUDA kernels just in time failed: {type(e).__name__}: {str(e)[-2000:]}"
    return None if _has_kernel("CUDA") else "the just-in-time CUDA build registered no CUDA kernels"


def unavailable_reason(device_type: str = "cpu", op: str | None = None) -> str | None:
    """None when the extension's ops (or the one op `op`) run on `device_type` ("cpu" or "cuda"), else why not."""
    if device_type not in ("cpu", "cuda"):
        return f"no fused kernels for device type {device_type!r}"
    reason = _load_cuda() if device_type == "cuda" else _load()
    if reason is None and op is not None and not _has_kernel(device_type.upper(), (op,)):
        return (f"gpt1_fast._C has no {device_type} kernel for gpt1_fast::{op}: it was built from older sources; "
                "rebuild it (`make venv`, or `pip install --no-build-isolation -e .`)")
    if reason is None:
        _register_fakes()
    return reason


@functools.lru_cache(maxsize=None)
def _register_fakes() -> None:
    """Shape functions, so torch.compile can trace through the ops (they return nothing new but a norm)."""
    try:
        @torch.library.register_fake("gpt1_fast::global_norm")
        def _global_norm_fake(tensors):
            return tensors[0].new_empty((), dtype=torch.float32)

        @torch.library.register_fake("gpt1_fast::openai_adam_")
        def _openai_adam_fake(*args, **kwargs):
            return None
    except Exception:  # already registered (e.g. a second loader) or an older torch without register_fake
        pass
