"""A run's log: one JSON object a line (`log.jsonl`), for people, `python -m gpt1_fast.plot` and resume.

`JsonlLog(path, header, keep=...)` starts the file: `header` (the run's options), then the records of
an earlier log that `keep(record)` accepts (a resumed run keeps what it logged up to its checkpoint;
the rest will be logged again), written atomically; then every `log(**record)` appends one line
and flushes it, so a killed run loses at most its last line, and readers skip a half-written one.
Every record gets a `time` (seconds since the epoch).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from .fileio import atomic_write_text


def read_records(path) -> list[dict]:
    """The log's records (JSON objects), skipping lines that do not parse (a killed writer's last line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: log not found")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


class JsonlLog:
    def __init__(self, path, header: dict, keep: Callable[[dict], bool] | None = None):
        self.path = Path(path)
        kept = [json.dumps(r) for r in read_records(self.path)
                if keep is not None and keep(r)] if self.path.is_file() and keep is not None else []
        atomic_write_text(self.path, "\n".join([json.dumps(dict(header, time=time.time()))] + kept) + "\n")
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, **record) -> None:
        self._f.write(json.dumps(dict(record, time=time.time())) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()
