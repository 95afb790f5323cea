"""The paper's task families (Figure 1) through one fine-tuning pipeline.

    from gpt1_fast.tasks import get_task, task_names
    task = get_task("sst-2")      # or "rocstories", "mnli", "race", ...

Each family module (classification, entailment, similarity, multiple_choice) gives its input
transform and head; `task.Task` ties a dataset to its family, metrics and submission format;
`trainer.Trainer` is the one training loop.
"""
from __future__ import annotations

from .task import DatasetTask, ROCStories, Task, TaskData

__all__ = ["Task", "TaskData", "ROCStories", "DatasetTask", "get_task", "task_names", "describe"]


def _datasets() -> dict:
    from .readers import DATASETS

    return DATASETS


def task_names() -> list[str]:
    return ["rocstories"] + sorted(n for n in _datasets() if n != "rocstories")


def get_task(name: str, objective: str | None = None, diagnostic=None) -> Task:
    """objective: STS-B's, "soft_labels" (default, the TF release's) or "regression"; diagnostic: MNLI's
    extra test split, GLUE's diagnostic.tsv (its predictions: AX.tsv). Either raises ValueError on
    another dataset."""
    if name == "rocstories":
        if objective is not None or diagnostic is not None:
            raise ValueError("rocstories takes no objective and no diagnostic set")
        return ROCStories()
    specs = _datasets()
    if name not in specs:
        raise KeyError(f"unknown dataset {name!r}; expected one of {task_names()}")
    return DatasetTask(specs[name], objective=objective, diagnostic=diagnostic)


def describe() -> str:
    """One line per dataset: the files --data_dir must hold and the family (for --help)."""
    return "\n".join(f"  {t.files}; {t.family}" for t in map(get_task, task_names()))
