"""New examples for a trained model, from a file (gpt1_fast.predict): the dataset's own format, or
plain inputs in the model's family.

Plain inputs name the family's fields (tasks.<family>.FIELDS):
- `.jsonl`: one object a line, {"text": ...} (classification), {"premise", "hypothesis"} (entailment),
  {"text_a", "text_b"} (similarity), {"context", "choices": [...]} (multiple choice), and optionally
  "label" (a label name, an answer's index, or a score) and "id";
- `.tsv`: a header naming those columns (and optionally `label`, `id`), tab separated, quoting off;
- any other file (`.txt`): one text a line (classification only).
A file in the dataset's own format (a GLUE TSV with its header, SNLI jsonl, ...; a RACE folder) is read
by the dataset's reader when the model was trained on that dataset. Every problem is one DataError
naming the file and line.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import readers

ID_COLUMN, LABEL_COLUMN = "id", "label"


def read_inputs(path, task) -> readers.Split:
    """The examples of `path` for `task` (a DatasetTask or the estimators' InMemoryTask)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    fields = [f for f in task.module.FIELDS if f != "question"]
    spec = getattr(task, "spec", None)
    if path.is_dir() or (spec is not None and not _plain(path, fields)):
        if spec is None:
            raise DataError(f"{path}: expected {_plain_formats(fields)}")
        return readers.READERS[spec.format](spec, path, _split_kind(spec, path))
    if path.suffix == ".jsonl":
        return _jsonl(path, task, fields)
    if path.suffix == ".tsv":
        return _tsv(path, task, fields)
    if fields != ["text"]:
        raise DataError(f"{path}: one text a line is for classifiers; this model's inputs are "
                        f"{', '.join(fields)}: expected {_plain_formats(fields)}")
    texts = [t for _, t in readers._lines(path) if t.strip()]
    return _split(path, {"text": texts}, None, [str(i) for i in range(len(texts))], task)


def _plain_formats(fields) -> str:
    return (f"a .jsonl file of objects with {', '.join(fields)} (and optionally label), or a .tsv file whose "
            f"header names them" + (", or one text a line" if list(fields) == ["text"] else ""))


def _split_kind(spec, path: Path) -> str:
    """The split name a dataset's reader needs for a file of unknown split: a GLUE TSV's header says
    itself whether it has labels (read as "test": the label column optional); CoLA's labelled files
    have no header, its test file one."""
    if spec.format == "glue":
        return "test"
    if spec.format == "cola":
        first = next((t for _, t in readers._lines(path) if t.strip()), "")
        return "test" if "sentence" in first.split("\t") else "dev"
    return "dev"


def _plain(path: Path, fields) -> bool:
    """Whether the file names the family's fields itself (plain inputs) rather than a dataset's columns."""
    if path.suffix == ".jsonl":
        first = next((t for _, t in readers._lines(path) if t.strip()), "{}")
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            return False
        return isinstance(obj, dict) and set(fields) <= obj.keys()
    if path.suffix == ".tsv":
        first = next((t for _, t in readers._lines(path) if t.strip()), "")
        return set(fields) <= set(first.split("\t"))
    return path.suffix not in (".csv",)


def _jsonl(path: Path, task, fields) -> readers.Split:
    cols, labels, ids = {f: [] for f in fields}, [], []
    for n, text in readers._lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: expected one JSON object a line, found invalid JSON ({e.msg} at column "
                            f"{e.colno})") from None
        if not isinstance(obj, dict) or not set(fields) <= obj.keys():
            found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise DataError(f"{path}:{n}: expected an object with the keys {', '.join(fields)}, found {found}")
        for f in fields:
            cols[f].append(_field(obj[f], f, f"{path}:{n}"))
        labels.append(obj.get(LABEL_COLUMN))
        ids.append(str(obj.get(ID_COLUMN, len(ids))))
    return _split(path, cols, labels, ids, task)


def _tsv(path: Path, task, fields) -> readers.Split:
    rows = readers._tsv_rows(path)
    _, header = next(rows, (1, []))
    col = {name: i for i, name in enumerate(header)}
    if not set(fields) <= col.keys():
        raise DataError(f"{path}:1: expected a header naming {', '.join(fields)}, found {chr(9).join(header)!r}")
    if "choices" in fields:
        raise DataError(f"{path}: multiple choice takes a .jsonl file ({{\"context\", \"choices\": [...]}})")
    cols, labels, ids = {f: [] for f in fields}, [], []
    for n, cells in rows:
        if len(cells) != len(header):
            raise DataError(f"{path}:{n}: expected {len(header)} tab-separated columns, found {len(cells)}")
        for f in fields:
            cols[f].append(cells[col[f]])
        labels.append(cells[col[LABEL_COLUMN]] if LABEL_COLUMN in col else None)
        ids.append(cells[col[ID_COLUMN]] if ID_COLUMN in col else str(len(ids)))
    return _split(path, cols, labels, ids, task)


def _field(value, name: str, where: str):
    if name == "choices":
        if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise DataError(f"{where}: expected \"choices\" to be a list of strings, found {value!r}")
        return value
    if not isinstance(value, str):
        raise DataError(f"{where}: expected \"{name}\" to be a string, found {type(value).__name__}")
    return value


def _split(path, cols, labels, ids, task) -> readers.Split:
    if not ids:
        raise DataError(f"{path}: expected at least one example, found none")
    if labels is None or all(v is None for v in labels):
        return readers.Split(cols, None, ids)
    if any(v is None for v in labels):
        raise DataError(f"{path}:{1 + labels.index(None)}: a label is missing (give every example one, or none)")
    return readers.Split(cols, np.asarray([_label(task, v, f"{path}: example {i + 1}") for i, v in
                                           enumerate(labels)]), ids)


def _label(task, value, where: str):
    if task.regression:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: expected a score, found {value!r}") from None
    names = [str(n) for n in (task.label_names or [])]
    if str(value) in names:
        return names.index(str(value))
    if task.family == "multiple_choice" and str(value).isdigit():
        return int(value)
    raise DataError(f"{where}: expected a label in {{{', '.join(names)}}}, found {value!r}")
