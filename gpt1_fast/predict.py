"""Use a fine-tuned model on new data: predictions, and the task's metrics where the data has labels.

    python -m gpt1_fast.predict --model_dir runs/sst-2/model --data reviews.txt           # one text a line
    python -m gpt1_fast.predict --model_dir runs/mnli --data pairs.jsonl --predictions out.tsv
    python -m gpt1_fast.predict --model_dir runs/sst-2 --data_dir glue/SST-2 --split dev   # a dataset's split

--model_dir: a model folder (a fine-tuning run or its model/, an estimator's save, a checkpoint of a
run). --data: a file in the model's dataset's own format (GLUE TSV, SNLI jsonl, ...; a RACE folder), or
plain inputs of its family: a .jsonl of objects naming the inputs ({"text"}; {"premise",
"hypothesis"}; {"text_a", "text_b"}; {"context", "choices"}), optionally with "label" and "id"; a
.tsv whose header names them; or a text file, one text a line (classifiers). --data_dir/--split
score a split of the model's dataset (--dataset another dataset of the same head). Texts longer than
the model's context are cut by the rule training used; the count is printed. Predictions go to
--predictions (index<TAB>prediction, the dataset's label names) or standard output; the metrics,
where there are labels, to standard output (standard error when the predictions take it).
"""
from __future__ import annotations

import sys

from . import options
from .context import RunContext
from .cli import run_cli
from .errors import UsageError

PROG = "python -m gpt1_fast.predict"
ESTIMATOR_FAMILIES = {"Classifier": "classification", "Entailment": "entailment", "Similarity": "similarity",
                      "MultipleChoice": "multiple_choice"}


def build_parser():
    return options.build_parser(options.PREDICT, PROG, __doc__)


def task_of(info, dataset: str | None):
    """The task the model does: the dataset asked for or trained on (its reader, metrics, label names),
    or, for an estimator's model, its family with the classes it was fitted on."""
    from .tasks import get_task
    from .tasks.readers import DATASETS

    if info.head is None:
        raise UsageError("argument --model_dir: this model has no task head (a language model): predict needs a "
                         "fine-tuned model; python -m gpt1_fast.generate samples from a language model")
    name = dataset or (info.task if info.task in DATASETS else None)
    head = info.head.head_type
    if name is not None:
        soft = isinstance(head, tuple) and head[0] == "similarity_soft_labels"
        objective = ("soft_labels" if soft else "regression") if DATASETS[name].score_range else None
        task = get_task(name, objective=objective)
        if task.head_type != head:
            raise UsageError(f"argument --dataset: {name}'s head is {task.head_type!r}, this model's {head!r}")
        return task
    from .tasks.memory import InMemoryTask

    est = info.extra.get("estimator")
    pairs = bool(info.extra.get("pairs"))
    family = ESTIMATOR_FAMILIES.get(est) or ("similarity" if pairs or info.head.family == "similarity"
                                             else info.head.family if info.head.family != "regression"
                                             else "classification")
    metrics = ("pearson",) if info.head.regression else ("accuracy",)
    labels = None if info.label_names is None else tuple(map(str, info.label_names))
    return InMemoryTask(est or info.task or "model", family, head, metrics, labels)


def read_examples(args, task):
    """(Split, what it is called in the printed lines): the --data file, or the dataset's split."""
    from .tasks.inputs import read_inputs
    from .tasks.readers import read_split

    if args.data:
        return read_inputs(args.data[0], task), args.data[0]
    # default: the first validation split with a file of its own (ROCStories' is carved out of its val
    # file by training's --n_valid: its labelled test file instead)
    split = args.split or next(s for s in (*task.eval_splits, *task.test_splits, "train") if s in task.spec.splits)
    if split not in task.spec.splits:
        raise UsageError(f"argument --split: {task.name} has no split {split!r}; expected one of "
                         f"{', '.join(task.spec.splits)}")
    return read_split(task.spec, args.data_dir, split), split


def check(args) -> None:
    if bool(args.data) == bool(args.data_dir):
        raise UsageError("argument --data: give a file (--data FILE) or a dataset's folder (--data_dir DIR, with "
                         "--split), one of the two")
    if args.data and len(args.data) > 1:
        raise UsageError(f"argument --data: one file or folder, got {len(args.data)}")
    if args.data and args.split:
        raise UsageError("argument --split: it names a split of --data_dir's dataset, not of a --data file")


def main(argv=None) -> dict:
    from .deps import require

    args = options.parse(options.PREDICT, build_parser(), argv)
    check(args)
    require("text", "encoding the inputs")
    from .folder import load_pretrained, read_config

    info = read_config(args.model_dir)
    task = task_of(info, args.dataset)
    if args.data_dir and not hasattr(task, "spec"):
        raise UsageError("argument --data_dir: this model was not trained on a dataset; give --dataset, or --data")
    split, where = read_examples(args, task)
    if split.labels is not None:  # before the predictions are written
        require("metrics", f"scoring the labelled examples of {where}")
    ctx = RunContext(argparse_namespace(args), distributed=False)
    model, info = load_pretrained(args.model_dir, backend=args.backend, device=ctx.device)
    return predict(args, task, split, where, model, info, ctx)


def argparse_namespace(args):
    """The run context's view of the options (one process; no seed needed: nothing is random)."""
    import argparse

    return argparse.Namespace(**vars(args), seed=0)


def predict(args, task, split, where, model, info, ctx) -> dict:
    from .inference import task_logits
    from .pretrained import LazyTextEncoder
    from .tasks.common import compute_metrics
    from .tasks.memory import encode_new, tokenize

    if args.limit:
        split = _head(split, args.limit)
    encoder = LazyTextEncoder(*info.require_vocab())
    fields = {k: v for k, v in split.fields.items() if k in task.module.FIELDS}
    ids = tokenize(fields, encoder)
    cap = info.options.get("n_ctx") or info.extra.get("n_ctx_cap") or max(512, info.layout.n_ctx)
    enc, n_cut = encode_new(task, ids, split.labels, split.ids, info.layout, cap)
    if n_cut:
        print(f"note: {n_cut} of {len(enc)} examples are longer than the model's context ({info.layout.n_ctx} "
              "positions): cut as in training", file=sys.stderr)
    logits = task_logits(model, enc, info.layout, batch_size=args.n_batch_eval or 32,
                         settings=ctx.inference)
    preds = task.predict(logits.numpy())
    write_predictions(args.predictions, task, split.ids, preds)
    scores = {}
    if split.labels is not None:
        groups = {f"{task.display}-{g[0]}": idx for g, idx in split.groups.items()} if len(split.groups) > 1 else {}
        scores = {task.display: compute_metrics(task.metrics, split.labels, preds),
                  **task.group_metrics(split.labels, preds, groups)}
        show(scores, where, sys.stdout if args.predictions else sys.stderr)
    return {"predictions": preds, "scores": scores, "cut": n_cut}


def _head(split, n: int):
    """The first n examples of a Split."""
    from .tasks.readers import Split

    return Split({k: v[:n] for k, v in split.fields.items()}, None if split.labels is None else split.labels[:n],
                 split.ids[:n], groups={g: [i for i in idx if i < n] for g, idx in split.groups.items()})


def write_predictions(path, task, ids, preds) -> None:
    from .tasks.submission import write_predictions as write_file

    if path:
        write_file(path, task, ids, preds)
        return
    sys.stdout.write("index\tprediction\n" + "".join(f"{i}\t{task.format_prediction(p)}\n"
                                                     for i, p in zip(ids, preds)))
    sys.stdout.flush()


def show(scores: dict, where, out) -> None:
    from .tasks.common import METRIC_TITLES

    for name, by_metric in scores.items():
        for m, v in by_metric.items():
            print(f"{name} {where} {METRIC_TITLES[m]}: {v:.2f}", file=out)


def cli(argv=None):
    """Command-line entry: bad input is one `error:` line, no traceback (2: a flag, 1: a file or a
    missing package)."""
    run_cli(main, argv, PROG)


if __name__ == "__main__":
    cli()
