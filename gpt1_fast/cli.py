"""What every command-line entry point shares: one-line errors, range-checked argument types, and the
device/backend checks made before anything runs.

    p = Parser(prog="python -m gpt1_fast.X", description=...)
    p.add_argument("--n_batch", type=int_at_least(1), default=64, ...)
    args = p.parse_args(argv)        # bad value -> `error: argument --n_batch: expected an integer >= 1, got '0'`
    device = check_device(p, args.device)
    check_backend(p, args.backend, device)
"""
from __future__ import annotations

import argparse
import math
import os

from .errors import UsageError  # noqa: F401  (raised by the entry points: `error: ...`, exit code 2)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (no usage block) and exit with code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def int_at_least(lo: int, hi: int | None = None):
    """argparse type: an integer in [lo, hi] (hi None: no upper bound)."""
    want = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = want  # argparse names the type in its own messages
    return parse


def float_in(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False):
    """argparse type: a finite float in the interval lo..hi, each end closed unless *_open."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    if hi == math.inf:
        want = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        want = f"a number in {left}{lo:g}, {hi:g}{right}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        bad = (not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo)
               or (hi_open and value == hi))
        if bad:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = want
    return parse


positive_int = int_at_least(1)
positive_float = float_in(0.0, lo_open=True)
nonnegative_float = float_in(0.0)
probability = float_in(0.0, 1.0, hi_open=True)  # dropout rates, Adam betas
seed_int = int_at_least(0, 2 ** 32 - 1)  # NumPy's RandomState accepts no more


def check_device(parser: argparse.ArgumentParser, spec: str | None):
    """--device: None -> cuda when available, else cpu; a CUDA device that is not there is an error."""
    import torch

    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        parser.error(f"argument --device: expected cpu, cuda or cuda:N, got {spec!r}")
    if dev.type not in ("cpu", "cuda"):
        parser.error(f"argument --device: expected cpu, cuda or cuda:N, got {spec!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "torch finds no CUDA GPU")
            parser.error(f"argument --device: {spec!r} is not available ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            parser.error(f"argument --device: {spec!r} does not exist: {torch.cuda.device_count()} CUDA "
                         f"device(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return dev


def check_backend(parser: argparse.ArgumentParser, backend: str, device) -> None:
    """--backend triton needs triton, and a CUDA device unless its interpreter runs the kernels on the CPU."""
    if backend != "triton":
        return
    try:
        import triton  # noqa: F401
    except ImportError:
        parser.error("argument --backend: 'triton' needs the triton package (pip install triton), "
                     "or use --backend torch")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error(f"argument --backend: 'triton' on {device} needs a CUDA GPU; to run the kernels on the "
                     "CPU through Triton's interpreter (slow, for testing) set TRITON_INTERPRET=1, "
                     "or use --backend torch")


def run_name(text: str) -> str:
    """argparse type: a run's name, used as one folder name."""
    if not text or text in (".", "..") or "/" in text or os.sep in text or text.startswith("."):
        raise argparse.ArgumentTypeError(f"expected a plain folder name (no '/', not starting with '.'), got {text!r}")
    return text
