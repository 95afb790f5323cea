"""Progress of a training loop a person can follow, on a terminal or not.

On a terminal: a tqdm bar (loss shown beside it). Elsewhere (a log file, a batch job, a notebook's
captured stderr): one line every `interval` seconds, and one at the end:

    train: update 120/900 (13 %), loss 3.412, 4,310 tokens/s, ETA 6m12s

The loss is read from the device only when a line is written (one sync per line, none per update).
"""
from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    def __init__(self, total: int, initial: int = 0, desc: str = "train", enabled: bool = True,
                 interval: float = 30.0, stream=None, tty: bool | None = None):
        self.total, self.done, self.desc, self.enabled, self.interval = total, initial, desc, enabled, interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = self.t_line = time.time()
        self.start, self.tokens, self.loss = initial, 0, None
        self.bar = None
        if enabled and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, ncols=90, desc=desc, file=self.stream, leave=False)

    def update(self, done: int, tokens: int = 0, loss=None) -> None:
        """`done` updates so far; `tokens` processed by this update; `loss` a tensor or float (kept lazily)."""
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done, self.tokens = done, self.tokens + tokens
        if loss is not None:
            self.loss = loss
        if not self.enabled:
            return
        now = time.time()
        if self.bar is not None and done % 10 == 0 and self.loss is not None:
            self.bar.set_postfix(loss=f"{float(self.loss):.3f}")
        if self.bar is None and now - self.t_line >= self.interval:
            self.t_line = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self.t0, 1e-9)
        parts = [f"{self.desc}: update {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f} %)"]
        if self.loss is not None:
            parts.append(f"loss {float(self.loss):.3f}")
        if self.tokens:
            parts.append(f"{self.tokens / elapsed:,.0f} tokens/s")
        rate = (self.done - self.start) / elapsed
        if rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        print(", ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.done > self.start:
            self._line(time.time())
