"""The one way the project writes a file: atomically.

`atomic_write(path, fn)` writes through a temporary file in the same folder (so the rename never
crosses a file system), flushes and fsyncs it, renames it over `path`, and fsyncs the folder so the
rename itself survives a crash. On any failure (an exception, Ctrl-C) the temporary file is removed
and `path` keeps its previous content; after a SIGKILL a reader sees either the old file or the
new one, never half of one. Temporary names start with `.` and end with `.tmp`, so
`remove_stale_temporaries(folder)` can clean what a killed process left behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, IO

TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file_mode(path: Path) -> int:
    """The mode a plain open() would give: the existing file's, else 0o666 less the umask
    (mkstemp's temporaries are 0o600, which would make every written file owner-only)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path, write_fn: Callable[[IO], None], mode: str = "w") -> Path:
    """Call `write_fn(f)` on a temporary file beside `path`, then rename it over `path`.

    mode: "w" (text, UTF-8) or "wb" (binary). Returns `path` as a Path."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, _new_file_mode(path))
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, RuntimeError) and isinstance(e.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # Ctrl-C inside torch.save's writer comes out as a RuntimeError
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), mode="wb")


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporary files that a killed `atomic_write` left in `folder` (not recursive).
    Call it only where no other process is writing into the same folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def update_hash(h, path, chunk: int = 1 << 20) -> None:
    """Feed a file's bytes into the hashlib object `h`, in chunks (a corpus can be gigabytes)."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)


def sha256_file(path) -> str:
    """The hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    update_hash(h, path)
    return h.hexdigest()


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C (SIGINT) during the block waits until it ends, then goes to the handler that was there
    before (Python's: KeyboardInterrupt; ignored where the process ignores SIGINT, as a job started in
    the background does): for writes of several files that are only consistent together (a model
    folder's weights and config). In the main thread only (signals are delivered there); elsewhere the
    block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        signal.raise_signal(signal.SIGINT)
