"""The paper's task families (Figure 1) through one fine-tuning pipeline.

    from gpt1_fast.tasks import get_task, task_names
    task = get_task("sst-2")      # or "rocstories", "mnli", "race", ...

Each family module (classification, entailment, similarity, multiple_choice) gives its input
transform and head; `task.Task` ties a dataset to its family, metrics and submission format;
`trainer.Trainer` is the one training loop.
"""
from __future__ import annotations

from .task import ROCStories, DatasetTask, Task, TaskData  # noqa: F401


def _datasets() -> dict:
    try:
        from .readers import DATASETS
    except ImportError:  # TEMPORARY, until the readers branch (tasks/readers.py) is merged
        return {}
    return DATASETS


def task_names() -> list[str]:
    return ["rocstories"] + sorted(n for n in _datasets() if n != "rocstories")


def get_task(name: str) -> Task:
    if name == "rocstories":
        return ROCStories()
    specs = _datasets()
    if name not in specs:
        raise KeyError(f"unknown dataset {name!r}; expected one of {task_names()}")
    return DatasetTask(specs[name])


def describe() -> str:
    """One line per dataset: family and the files --data_dir must hold (for --help)."""
    lines = []
    for n in task_names():
        t = get_task(n)
        lines.append(f"  {n:<11} {t.family:<16} {t.files}")
    return "\n".join(lines)
