"""A task = a dataset + its family: how its splits are read, encoded and transformed, its head, its
metrics, its predictions and its submission files. `DatasetTask` wraps a DatasetSpec of tasks.readers
(every dataset, the release's ROCStories included); `FAMILIES` is the one table of task families."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..layout import PAPER_SPECIALS, EmbeddingLayout
from . import classification, entailment, multiple_choice, readers, similarity
from .cache import encode_texts
from .common import Encoded, compute_metrics, flat_texts, longest, regroup_choices
from .rocstories import split_indices

FAMILIES = {"classification": classification, "entailment": entailment, "similarity": similarity,
            "multiple_choice": multiple_choice}
# The names the GLUE server and the papers use (submission files are <display>.tsv).
DISPLAY = {"rocstories": "ROCStories", "snli": "SNLI", "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE",
           "scitail": "SciTail", "qqp": "QQP", "mrpc": "MRPC", "sts-b": "STS-B", "sst-2": "SST-2",
           "cola": "CoLA", "race": "RACE", "race-m": "RACE-m", "race-h": "RACE-h", "wnli": "WNLI"}
SHORT_SPLITS = {"matched": "m", "mismatched": "mm"}  # GLUE's MNLI-m.tsv, MNLI-mm.tsv
GLUE_FILES = {"test_ax": "AX.tsv"}  # the diagnostic set, scored by the MNLI model


@dataclass
class TaskData:
    layout: EmbeddingLayout             # n_ctx fitted to the longest sequence of every split
    splits: dict[str, Encoded]
    cut: tuple[int, int, int] = (0, 0, 0)  # (tokens the n_ctx cap cut, tokens in all, longest uncut sequence)
    # split -> {group: example indices}: the named subsets a split is also scored on (RACE: "RACE-m", "RACE-h")
    groups: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def truncation(kept: list, full: list) -> tuple[int, int, int]:
    """(tokens cut, tokens in all, longest sequence) of sequences transformed with the cap (kept) and
    without it (full): what --n_ctx costs."""
    n_kept = sum(len(s) for seqs in kept for example in seqs for s in example)
    n_full = sum(len(s) for seqs in full for example in seqs for s in example)
    return n_full - n_kept, n_full, max(longest(seqs) for seqs in full)


UNCAPPED = 1 << 30  # an n_ctx no data reaches: the transform then cuts nothing


class Task:
    name: str
    family: str
    head_type = None
    metrics: tuple[str, ...] = ("accuracy",)
    label_names: tuple[str, ...] | None = None
    score_range: tuple[float, float] | None = None  # the task predicts a score in this range (STS-B)
    objective: str | None = None        # a score's training objective (tasks.similarity.OBJECTIVES)
    specials: tuple[str, ...] = PAPER_SPECIALS
    eval_splits: tuple[str, ...] = ()   # model selection: the first metric on the first of these
    submit_label: str | None = None     # test predictions: this label for every row (WNLI)
    test_splits: tuple[str, ...] = ()
    files: str = ""                     # one line for --help: the files --data_dir must hold

    @property
    def display(self) -> str:
        return DISPLAY.get(self.name, self.name)

    @property
    def regression(self) -> bool:
        """The predictions are scores (STS-B, whichever its objective), not class ids."""
        return self.score_range is not None

    def load(self, data_dir, text_encoder, vocab_paths, n_ctx=512, n_valid=374, cache_dir=None,
             verbose=False) -> TaskData:
        raise NotImplementedError

    transform_options: dict = {}  # the family transform's options (ROCStories: keep the story's start)

    def transform(self, ids: dict[str, list], layout) -> list:
        """The family's input transform (Figure 1 of the paper) of tokenised fields on a layout."""
        return self.module.transform(ids, layout, **self.transform_options)

    def predict(self, logits: np.ndarray) -> np.ndarray:
        """Task-head outputs -> predictions: the class id, or a score clipped to the task's range: the
        output itself (regression) or the expected class sum_k p_k k (soft labels)."""
        if not self.regression:
            return logits.argmax(-1)
        score = logits.astype(np.float64)
        if self.objective == "soft_labels":
            p = np.exp(score - score.max(-1, keepdims=True))
            score = (p / p.sum(-1, keepdims=True)) @ np.arange(score.shape[-1], dtype=np.float64)
        return np.clip(score, *self.score_range)

    def submission_predictions(self, split: str, preds: np.ndarray) -> np.ndarray:
        """What a split's prediction file holds: the model's predictions, or for a test split of a task
        submitted by one label (WNLI: GLUE's majority-class baseline) that label everywhere."""
        if self.submit_label is None or split not in self.test_splits:
            return preds
        return np.full(len(preds), self.label_names.index(self.submit_label))

    def group_metrics(self, y: np.ndarray, preds: np.ndarray, groups: dict[str, np.ndarray]) -> dict[str, dict]:
        """{group: {metric: value in percent}}: the task's metrics on each group's examples."""
        return {g: compute_metrics(self.metrics, y[idx], preds[idx]) for g, idx in groups.items()}

    def format_prediction(self, p) -> str:
        if self.regression:
            return f"{float(p):.9g}"  # a float32 output, written back exactly
        return self.label_names[int(p)] if self.label_names else str(int(p))

    def parse_prediction(self, s: str):
        if self.regression:
            return float(s)
        return self.label_names.index(s) if self.label_names else int(s)

    def submission_file(self, split: str) -> str:
        """GLUE's names for test splits (SST-2.tsv, MNLI-m.tsv, AX.tsv), <display>.<split>.tsv for the others."""
        if split in GLUE_FILES:
            return GLUE_FILES[split]
        if split == "test":
            return f"{self.display}.tsv"
        if split.startswith("test_"):
            rest = split[len("test_"):]
            return f"{self.display}-{SHORT_SPLITS.get(rest, rest)}.tsv"
        return f"{self.display}.{split}.tsv"


class DatasetTask(Task):
    """A dataset of tasks.readers (Story Cloze CSV, GLUE TSV, SNLI jsonl, SciTail TSV, RACE JSON), by its spec.

    objective: a score's (STS-B's) training objective, "soft_labels" (default) or "regression".
    diagnostic: MNLI only, GLUE's diagnostic.tsv: read as the test split "test_ax" (AX.tsv)."""

    def __init__(self, spec, read_split=None, objective: str | None = None, diagnostic=None):
        if objective is not None and spec.score_range is None:
            raise ValueError(f"an objective applies to a score (sts-b), not to {spec.name}")
        if diagnostic is not None:
            if spec.name != "mnli":
                raise ValueError(f"the diagnostic set (AX) is scored by the MNLI model, not by {spec.name}")
            spec = dataclasses.replace(spec, splits={**spec.splits, "test_ax": str(Path(diagnostic).resolve())})
        self.spec = spec
        self._read_split = read_split or readers.read_split
        self.name, self.family = spec.name, spec.family
        self.module = FAMILIES[spec.family]
        self.transform_options = dict(spec.transform_options)
        self.score_range, self.submit_label = spec.score_range, spec.submit_label
        self.objective = None if spec.score_range is None else objective or similarity.OBJECTIVES[0]
        self.head_type = self.module.head_type(spec, self.objective) if self.objective else self.module.head_type(spec)
        self.metrics, self.label_names = tuple(spec.metrics), spec.label_names
        self.eval_splits = tuple(spec.eval_splits)
        self.test_splits = tuple(spec.test_splits)
        self.files = readers.describe(spec)

    def load(self, data_dir, text_encoder, vocab_paths, n_ctx=512, n_valid=374, cache_dir=None,
             verbose=False) -> TaskData:
        cap = EmbeddingLayout(text_encoder.n_vocab, self.specials, n_ctx)
        groups = {}
        encoded = self._encoded_splits(data_dir, text_encoder, vocab_paths, n_valid, cache_dir, verbose, groups)
        raw = {}
        for split, (ids, labels, row_ids) in encoded.items():
            raw[split] = (self.transform(ids, cap), labels, row_ids, self.transform(ids, cap.with_n_ctx(UNCAPPED)))
        n_fit = max(longest(seqs) for seqs, _, _, _ in raw.values())
        cut = truncation([r[0] for r in raw.values()], [r[3] for r in raw.values()])
        return TaskData(cap.with_n_ctx(n_fit),
                        {k: Encoded.from_sequences(seqs, y, ids, n_fit) for k, (seqs, y, ids, _) in raw.items()}, cut,
                        groups)

    def _encoded_splits(self, data_dir, text_encoder, vocab_paths, n_valid, cache_dir, verbose, groups):
        """{split: (ids by field, labels, row ids)} for train, the eval and the test splits; a held-out
        split is carved out of train after encoding (one cache file per source file). Fills `groups`
        (TaskData.groups) from the readers' groups of a split with several (RACE's levels)."""
        out = {}
        for split in ("train", *self.eval_splits, *self.test_splits):
            if split == self.spec.held_out:
                continue
            s = self._read_split(self.spec, data_dir, split)
            ids = self._encode(s.fields, text_encoder, Path(data_dir) / self.spec.splits[split], vocab_paths,
                               cache_dir, verbose)
            out[split] = (ids, s.labels, s.ids)
            if len(s.groups) > 1:  # RACE's levels: "RACE-m" (middle), "RACE-h" (high)
                groups[split] = {f"{self.display}-{g[0]}": np.asarray(idx, dtype=np.int64) for g, idx in s.groups.items()}
        if self.spec.held_out:
            ids, labels, _ = out["train"]
            tr, va = split_indices(len(labels), n_valid)
            out["train"], out[self.spec.held_out] = (_take(ids, labels, tr), _take(ids, labels, va))
        return {split: out[split] for split in ("train", *self.eval_splits, *self.test_splits)}

    def _encode(self, fields, text_encoder, source, vocab_paths, cache_dir, verbose):
        """Every text field through the BPE (cached); multiple choice's choice lists flattened and regrouped."""
        texts = flat_texts(fields, self.module.FIELDS)
        ids = encode_texts(texts, text_encoder, [source], vocab_paths, cache_dir, tag=self.name, verbose=verbose)
        return regroup_choices(ids, fields)


def _take(ids: dict[str, list], labels: np.ndarray, idx) -> tuple[dict[str, list], np.ndarray, list[str]]:
    """Rows `idx` of an encoded split, in that order, numbered 0.. (the ids a submission writes)."""
    return {k: [v[i] for i in idx] for k, v in ids.items()}, labels[idx], [str(i) for i in range(len(idx))]
