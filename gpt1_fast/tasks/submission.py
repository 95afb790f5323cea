"""Prediction files and the release's --analysis: what a run writes and prints after training.

A prediction file is GLUE's `index<TAB>prediction` with a header line, labels as the dataset's files
spell them (tasks.Task.format_prediction); one file per split, named as the benchmark's server wants
(tasks.Task.submission_file). --analysis prints the best validation score(s) of the log and the
metrics of every labelled test split's file against its labels.
"""
from __future__ import annotations

import numpy as np

from ..fileio import atomic_write_text
from .common import METRIC_KEYS, METRIC_TITLES, compute_metrics


def write_predictions(path, task, ids, preds) -> None:
    atomic_write_text(path, "index\tprediction\n" + "".join(
        f"{i}\t{task.format_prediction(p)}\n" for i, p in zip(ids, preds)))


def read_predictions(path, task) -> np.ndarray:
    """A prediction file (`index\\tprediction` with a header) -> predictions in the task's ids."""
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return np.asarray([task.parse_prediction(r[1]) for r in rows if r and r[0] != ""])


def analysis(trainer, written: dict[str, str]) -> dict[str, float]:
    """Print the validation score(s) of the best evaluation and the metrics of every labelled test
    split's prediction file (`written`: split -> path) against its labels, the whole and each group
    of examples (RACE: RACE-m, RACE-h; the whole is RACE). -> {key: score}."""
    task, best = trainer.task, trainer.best_record()
    lines, out = [], {}
    for split, prefix in list(trainer.eval_prefixes().items())[1:]:
        title = "Valid" if prefix == "va" else split
        for name in [task.display, *trainer.groups.get(split, {})]:
            suffix = "" if name == task.display else f"_{name}"
            for m in task.metrics:
                key = f"{prefix}_{METRIC_KEYS[m]}{suffix}"
                lines.append((f"{name} {title} {METRIC_TITLES[m]}:", best[key]))
                out[f"valid_{METRIC_KEYS[m]}{suffix}" if prefix == "va" else key] = best[key]
    for split in task.test_splits:
        y = trainer.data[split].labels
        if y is None:
            continue
        preds = read_predictions(written[split], task)
        if len(preds) != len(y):
            raise ValueError(f"{written[split]}: {len(preds)} predictions for {len(y)} examples")
        title, key = ("Test", "test") if split == "test" else (split, split)
        scores = {task.display: compute_metrics(task.metrics, y, preds),
                  **task.group_metrics(y, preds, trainer.groups.get(split, {}))}
        for name, by_metric in scores.items():
            suffix = "" if name == task.display else f"_{name}"
            for m, v in by_metric.items():
                lines.append((f"{name} {title} {METRIC_TITLES[m]}:", v))
                out[f"{key}_{METRIC_KEYS[m]}{suffix}"] = v
    width = max(len(label) for label, _ in lines)
    for label, v in lines:
        print(f"{label.ljust(width)} {v:.2f}")
    return out
