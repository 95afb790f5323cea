"""The paper's task families (Figure 1) through one fine-tuning pipeline.

    from gpt1_fast.tasks import get_task, task_names
    task = get_task("sst-2")      # or "rocstories", "mnli", "race", ...

Every dataset is an entry of `readers.DATASETS` (the one table: files, format, family, metrics);
each family module (classification, entailment, similarity, multiple_choice; the table `FAMILIES`)
gives its input transform and head; `task.DatasetTask` ties a dataset to its family, metrics and
submission format; `cache` stores the encoded splits; `trainer.Trainer` is the one training loop.
"""
from __future__ import annotations

from .readers import DATASETS
from .task import FAMILIES, DatasetTask, Task, TaskData

__all__ = ["Task", "TaskData", "DatasetTask", "FAMILIES", "get_task", "task_names", "describe"]


def task_names() -> list[str]:
    """The release's task first, then the others alphabetically."""
    return ["rocstories"] + sorted(n for n in DATASETS if n != "rocstories")


def get_task(name: str, objective: str | None = None, diagnostic=None) -> Task:
    """objective: STS-B's, "soft_labels" (default, the TF release's) or "regression"; diagnostic: MNLI's
    extra test split, GLUE's diagnostic.tsv (its predictions: AX.tsv). Either raises ValueError on
    another dataset."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; expected one of {task_names()}")
    return DatasetTask(DATASETS[name], objective=objective, diagnostic=diagnostic)


def describe() -> str:
    """One line per dataset: the files --data_dir must hold and the family (for --help)."""
    return "\n".join(f"  {t.files}; {t.family}" for t in map(get_task, task_names()))
