"""The machinery of the option schema (gpt1_fast/options.py declares the options with it).

A `Kind` checks one value: `convert` takes a Python value (an estimator keyword) or, through `parse`,
the text of a command-line flag, and returns the value or raises ValueError("expected ..., got ...").
An `Option` is one declared option (kind, default, help, whether it changes the math); `build_parser`
turns an entry point's options into an argparse parser whose errors are one line on stderr, exit
code 2: `error: argument --n_batch: expected an integer >= 1, got '0' (see ... --help)`.
`check_device` / `check_backend` are the environment checks every entry point makes before it
writes anything.
"""
from __future__ import annotations

import argparse
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable

from .errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (no usage block) and exit with code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------------------ kinds
class Kind:
    """What values an option accepts; `want` names them in errors ("an integer >= 1")."""
    want = "a value"

    def convert(self, value):
        raise NotImplementedError

    def parse(self, text: str):
        return self.convert(text)

    def bad(self, value) -> ValueError:
        return ValueError(f"expected {self.want}, got {value!r}")

    def number(self, value, cast, kind):
        """`value` as a number: command-line text through `cast`, or a Python number of `kind` (not a bool)."""
        if isinstance(value, str):
            try:
                return cast(value)
            except ValueError:
                raise self.bad(value) from None
        if isinstance(value, kind) and not isinstance(value, bool):
            return cast(value)
        raise self.bad(value)


class Int(Kind):
    def __init__(self, lo: int, hi: int | None = None):
        self.lo, self.hi = lo, hi
        self.want = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def convert(self, value):
        n = self.number(value, int, numbers.Integral)
        if n < self.lo or (self.hi is not None and n > self.hi):
            raise self.bad(value)
        return n


class Float(Kind):
    """A finite number in lo..hi, each end closed unless *_open."""

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        if hi == math.inf:
            self.want = f"a number {'>' if lo_open else '>='} {lo:g}"
        else:
            self.want = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def convert(self, value):
        x = self.number(value, float, numbers.Real)
        if not math.isfinite(x) or x < self.lo or x > self.hi or (self.lo_open and x == self.lo) or \
                (self.hi_open and x == self.hi):
            raise self.bad(value)
        return x


class Choice(Kind):
    """One of a list of strings; `values` may be a function (a registry read when first needed)."""

    def __init__(self, values):
        self._values = values

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(self._values() if callable(self._values) else self._values)

    @property
    def want(self):
        return "one of " + ", ".join(self.values)

    def convert(self, value):
        if not isinstance(value, str) or value not in self.values:
            raise self.bad(value)
        return value


class Flag(Kind):
    """True or False (a command-line switch without a value)."""
    want = "True or False"

    def convert(self, value):
        if not isinstance(value, bool):
            raise self.bad(value)
        return value


class Toggle(Flag):
    """True, False or None (automatic): --x / --no-x."""
    want = "True, False or None (automatic)"


class Text(Kind):
    """A non-empty string, optionally checked by `rule(text) -> message or None`."""

    def __init__(self, want: str = "a non-empty string", rule: Callable[[str], str | None] | None = None):
        self.want, self.rule = want, rule

    def convert(self, value):
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise self.bad(value)
        value = str(value) if not isinstance(value, str) else value
        if self.rule is not None and self.rule(value):
            raise ValueError(f"expected {self.want}, got {value!r} ({self.rule(value)})")
        return value


def _plain_name(text: str) -> str | None:
    if text in (".", "..") or "/" in text or os.sep in text or text.startswith("."):
        return "no '/', not starting with '.'"
    return None


RunName = Text("a plain folder name", _plain_name)


def _first_existing(path: str) -> tuple[str, bool]:
    """(the path itself or its nearest existing ancestor, whether that is the path itself)."""
    p = os.path.abspath(path)
    here = True
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p, here = os.path.dirname(p), False
    return p, here


def _folder_to_write(text: str) -> str | None:
    """A folder the run writes into: it, or the ancestor that will hold it, must be a folder."""
    p, here = _first_existing(text)
    if not os.path.isdir(p):
        return f"{text} is a file" if here else f"{os.path.relpath(p)} is a file, not a folder"
    return None


def _file_to_write(text: str) -> str | None:
    """A file the run writes: not a folder, and its nearest existing ancestor is a folder."""
    if text.endswith(("/", os.sep)) or os.path.isdir(text):
        return f"{text} is a folder; give the file's name"
    p, here = _first_existing(text)
    if not here and not os.path.isdir(p):
        return f"{os.path.relpath(p)} is a file, not a folder"
    return None


OutFolder = Text("a folder to write into", _folder_to_write)
OutFile = Text("a file to write", _file_to_write)


# ----------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """One option of the schema, declared once. `math`: changing it changes what training computes,
    so a resume checkpoint must match it (the fingerprint)."""
    name: str
    kind: Kind
    default: Any
    help: str
    math: bool = False
    aliases: tuple[str, ...] = ()
    nargs: str | None = None      # "+" (one or more), "?" (an optional value, `const` when absent)
    const: Any = None
    append: bool = False          # repeatable flag, a list of values
    metavar: str | None = None

    def convert(self, value, default=None):
        """A Python value for this option (an estimator keyword) -> the checked value."""
        if value is None and (default is None or self.kind.__class__ is Toggle):
            return None
        if self.append or self.nargs == "+":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"expected a list of {self.kind.want.removeprefix('a ').removeprefix('an ')}, "
                                 f"got {value!r}")
            return [self.kind.convert(v) for v in value]
        return self.kind.convert(value)

    def flag(self) -> str:
        return f"--{self.name}"


def _argparse_type(kind: Kind):
    def parse(text):
        try:
            return kind.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = kind.want  # argparse names the type in its own messages
    return parse


def _default_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "" if value is False else " (default: on)"
    return f" (default {value:g})" if isinstance(value, float) else f" (default {value})"


def add_option(group, opt: Option, default, required: bool = False) -> None:
    """One argparse argument for `opt` with this entry point's default."""
    kw: dict[str, Any] = dict(dest=opt.name, default=default, help=opt.help + _default_text(default))
    if isinstance(opt.kind, Toggle):
        kw.update(action=argparse.BooleanOptionalAction)
    elif isinstance(opt.kind, Flag):
        kw.update(action="store_true")
    else:
        kw.update(type=_argparse_type(opt.kind), metavar=opt.metavar)
        if isinstance(opt.kind, Choice):
            kw.update(choices=opt.kind.values, metavar=opt.metavar or "{" + ",".join(opt.kind.values) + "}")
        if opt.append:
            kw.update(action="append", default=list(default or []))
        if opt.nargs:
            kw.update(nargs=opt.nargs, const=opt.const)
        if opt.nargs == "+":  # a flag given twice adds to the list (argparse's default keeps the last)
            kw.update(action="extend")
        if required:
            kw.update(required=True)
    group.add_argument(opt.flag(), *opt.aliases, **kw)


# ------------------------------------------------------------------------------------ environment
def check_device(spec: str | None, name: Callable[[str], str] = lambda n: f"--{n}"):
    """--device: None -> cuda when available, else cpu; a CUDA device that is not there is an error
    (UsageError naming the option)."""
    import torch

    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise UsageError(f"{name('device')}: expected cpu, cuda or cuda:N, got {spec!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "torch finds no CUDA GPU"
            raise UsageError(f"{name('device')}: {spec!r} is not available ({why}); use {name('device')} cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{name('device')}: {spec!r} does not exist: {torch.cuda.device_count()} CUDA "
                             f"device(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return dev


def check_backend(backend: str, device, name: Callable[[str], str] = lambda n: f"--{n}") -> None:
    """backend 'triton' needs triton, and a CUDA device unless its interpreter runs the kernels on the CPU;
    backend 'cpu' needs the CPU."""
    if backend == "cpu" and device.type != "cpu":
        raise UsageError(f"{name('backend')}: 'cpu' runs on the CPU, not on {device}; use {name('backend')} auto "
                         f"or {name('device')} cpu")
    if backend != "triton":
        return
    try:
        import triton  # noqa: F401
    except ImportError:
        raise UsageError(f"{name('backend')}: 'triton' needs the triton package (pip install triton), "
                         f"or use {name('backend')} torch") from None
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise UsageError(f"{name('backend')}: 'triton' on {device} needs a CUDA GPU; to run the kernels on the "
                         f"CPU through Triton's interpreter (slow, for testing) set TRITON_INTERPRET=1, or use "
                         f"{name('backend')} torch")


# ------------------------------------------------------------------------------------- interrupts
def resume_command(prog: str, argv=None) -> str:
    """The command that continues an interrupted run: its arguments (sys.argv's when argv is None),
    without --overwrite (which would delete the checkpoints) or a --resume CKPT, then --resume (the
    latest checkpoint)."""
    import shlex
    import sys

    args, out = [str(a) for a in (sys.argv[1:] if argv is None else argv)], []
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif a == "--resume":
            skip = i + 1 < len(args) and not args[i + 1].startswith("-")
        elif a != "--overwrite" and not a.startswith("--resume="):
            out.append(a)
    return " ".join(shlex.quote(a) for a in [*prog.split(), *out, "--resume"])


# ------------------------------------------------------------------------------------ entry points
def run_cli(main: Callable, argv, prog: str, file_errors: tuple = (), interrupted: str = "interrupted") -> None:
    """An entry point's command line: main(argv), every mistake one `error:` line on stderr, no
    traceback. Exit codes: 2 a flag (UsageError), 1 a file, a folder or a missing package (DataError,
    CheckpointError, ResumeError, FileNotFoundError, MissingPackage, and `file_errors`), 130 Ctrl-C
    (`interrupted` says what was kept; an entry point that knows more says it and exits itself)."""
    import sys

    from .errors import CheckpointError, DataError, MissingPackage, ResumeError

    try:
        main(argv)
    except UsageError as e:
        print(f"error: {e} (see {prog} --help)", file=sys.stderr)
        raise SystemExit(2) from None
    except (DataError, CheckpointError, ResumeError, FileNotFoundError, MissingPackage, *file_errors) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        raise SystemExit(130) from None
