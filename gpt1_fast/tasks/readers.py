"""Readers for the paper's fine-tuning datasets (Radford et al. 2018, Tables 2-4), in their public formats.

Every reader returns a `Split` (the texts by field, the class ids, the row ids a submission writes) and
raises `DataError("file:line: expected ..., found ...")` on anything it does not understand. Formats, as
the distributed files have them (checked against the GLUE download script, transformers' GLUE
processors and published samples of each file):

- GLUE TSV (sst-2, cola test, mnli, qnli, rte, qqp, mrpc, sts-b): one header line, tab separated, read
  with quoting off (`csv.QUOTE_NONE` in the reference readers): a `"` is literal text and a row is one
  physical line. Columns are found by their header names and every row must have the header's width.
  Test files have no label column; their `index` (QQP: `id`) column is the id a submission writes;
  train/dev rows without such a column get their 0-based row number as id.
- CoLA train/dev: no header, 4 columns `source  label  original_label  sentence`.
- SNLI 1.0 jsonl: one JSON object a line; rows whose `gold_label` is "-" (no annotator majority) are
  dropped, as the format defines.
- SciTail `tsv_format`: no header, `premise  hypothesis  label`, labels `entails`/`neutral`.
- RACE: one JSON file per article under `{train,dev,test}/{middle,high}/*.txt`, holding
  `article`, `questions`, `options` (4 per question), `answers` (A-D) and `id`; each question keeps
  its level (`Split.groups`: the rows of "middle" and of "high").
- GLUE's diagnostic set (AX, `diagnostic.tsv`): `index  sentence1  sentence2`, no labels; scored by
  an MNLI model (`DIAGNOSTIC`, read as MNLI's split "test_ax").
- DPRD (Rahman & Ng 2012, `train.c.txt` / `test.c.txt`): examples of four lines, sentence, pronoun,
  the two candidates separated by a comma, the right candidate, each followed by a blank line
  (`read_dprd`; zero-shot only, not a fine-tuning dataset).
- Story Cloze Test 2016 CSVs (rocstories, the release's task; tasks.rocstories reads them): the val
  file is "train", the test file "test"; "valid" is held out of "train" (`DatasetSpec.held_out`).

Two things are dropped besides SNLI's "-": blank lines (they hold no row), and, in QQP's labelled
files only, rows with fewer columns than the header: the pre-2019 GLUE `QQP.zip` has questions broken
across lines (GLUE now serves `QQP-clean.zip`; transformers skips such rows too). Both SNLI's and
QQP's drops are counted in `Split.notes`, never silent.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError  # one DataError for every dataset file of the project
from . import rocstories

__all__ = ["Split", "DatasetSpec", "DATASETS", "DataError", "read_split", "describe", "get_spec"]


@dataclass
class Split:
    fields: dict[str, list]  # classification {"text"}; entailment {"premise", "hypothesis"};
    # similarity {"text_a", "text_b"}; multiple_choice {"context", "choices"} (RACE: context = the article, + "question")
    labels: np.ndarray | None  # int64 class ids (float32 for STS-B); None for unlabelled test files
    ids: list[str]  # the row id a submission writes (GLUE `index` column, RACE `<id>-<question>`)
    notes: list[str] = field(default_factory=list)  # rows the format drops, counted ("file: N rows ...")
    groups: dict[str, list[int]] = field(default_factory=dict)  # named subsets of the rows (RACE: its levels)

    def __len__(self):
        return len(self.ids)


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # "sst-2", "mnli", ...
    family: str  # "classification" | "entailment" | "similarity" | "multiple_choice"
    label_names: tuple[str, ...] | None  # as spelled in the files, index = class id; None: the label is
    # a number (STS-B: a score, a regression; rocstories: the index of the right ending)
    splits: dict[str, str]  # split name -> file (or folder) under data_dir
    eval_splits: tuple[str, ...]  # the dev splits the paper reports
    metrics: tuple[str, ...]  # names metrics.compute understands; metrics[0] is the one the paper reports
    n_choices: int | None = None  # multiple choice (RACE 4)
    format: str = "glue"  # "glue" | "cola" | "snli" | "scitail" | "race": which reader
    columns: tuple[tuple[str, str], ...] = ()  # GLUE: (field, header name) per text field
    label_column: str | None = None  # GLUE: header name of the label (absent from test files)
    levels: tuple[str, ...] = ()  # RACE: the subfolders read ("middle", "high")
    folder: str = ""  # the public folder name, for --help ("SST-2", "RACE", ...)
    score_range: tuple[float, float] | None = None  # a score's range (STS-B 0-5), when label_names is None
    submit_label: str | None = None  # a test submission of this one label for every row (WNLI)
    source: str = ""  # where the public files are: said when one is missing
    held_out: str | None = None  # a split of --n_valid rows carved out of "train" (rocstories' "valid",
    # drawn as the original drew it: rocstories.split_indices)
    transform_options: dict = field(default_factory=dict)  # keywords of the family's transform

    @property
    def test_splits(self) -> tuple[str, ...]:
        """The splits a submission is written for ("test"; MNLI "test_matched", "test_mismatched")."""
        return tuple(s for s in self.splits if s.startswith("test"))


_NLI3 = ("contradiction", "entailment", "neutral")
_BIN = ("0", "1")
_GLUE_SPLITS = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


def _glue(name, folder, family, columns, label_column, label_names, metrics, splits=_GLUE_SPLITS,
          eval_splits=("dev",), **kw):
    return DatasetSpec(name, family, label_names, dict(splits), eval_splits, metrics, columns=columns,
                       label_column=label_column, folder=folder, **kw)


def _race(name, levels):
    return DatasetSpec(name, "multiple_choice", ("A", "B", "C", "D"),
                       {"train": "train", "dev": "dev", "test": "test"}, ("dev",), ("accuracy",),
                       n_choices=4, format="race", levels=levels, folder="RACE")


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    # the release's task: story and ending each keep their first n_ctx // 2 - 2 tokens, as the original
    DatasetSpec("rocstories", "multiple_choice", None, {"train": rocstories.VAL_FILE, "test": rocstories.TEST_FILE},
                ("valid",), ("accuracy",), n_choices=2, format="rocstories", source=rocstories.SOURCE,
                held_out="valid", transform_options={"keep_context_end": False}),
    # entailment
    DatasetSpec("snli", "entailment", _NLI3, {s: f"snli_1.0_{s}.jsonl" for s in ("train", "dev", "test")},
                ("dev",), ("accuracy",), format="snli", folder="snli_1.0"),
    _glue("mnli", "MNLI", "entailment", (("premise", "sentence1"), ("hypothesis", "sentence2")), "gold_label",
          _NLI3, ("accuracy",),
          {"train": "train.tsv", "dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
           "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"},
          ("dev_matched", "dev_mismatched")),
    _glue("qnli", "QNLI", "entailment", (("premise", "question"), ("hypothesis", "sentence")), "label",
          ("entailment", "not_entailment"), ("accuracy",)),
    _glue("rte", "RTE", "entailment", (("premise", "sentence1"), ("hypothesis", "sentence2")), "label",
          ("entailment", "not_entailment"), ("accuracy",)),
    # WNLI: GLUE's majority-class baseline, "0" (not_entailment) for every test row, 65.1 accuracy on the
    # server (its dev and test sets are adversarial to its training set: models score below it)
    _glue("wnli", "WNLI", "entailment", (("premise", "sentence1"), ("hypothesis", "sentence2")), "label",
          _BIN, ("accuracy",), submit_label="0"),
    DatasetSpec("scitail", "entailment", ("entails", "neutral"),
                {s: f"scitail_1.0_{s}.tsv" for s in ("train", "dev", "test")}, ("dev",), ("accuracy",),
                format="scitail", folder="SciTailV1.1/tsv_format"),
    # similarity
    _glue("qqp", "QQP", "similarity", (("text_a", "question1"), ("text_b", "question2")), "is_duplicate",
          _BIN, ("f1", "accuracy")),
    _glue("mrpc", "MRPC", "similarity", (("text_a", "#1 String"), ("text_b", "#2 String")), "Quality",
          _BIN, ("f1", "accuracy")),
    _glue("sts-b", "STS-B", "similarity", (("text_a", "sentence1"), ("text_b", "sentence2")), "score",
          None, ("pearson", "spearman"), score_range=(0.0, 5.0)),
    # classification
    _glue("sst-2", "SST-2", "classification", (("text", "sentence"),), "label", _BIN, ("accuracy",)),
    DatasetSpec("cola", "classification", _BIN, dict(_GLUE_SPLITS), ("dev",), ("mcc",), format="cola",
                columns=(("text", "sentence"),), folder="CoLA"),
    # multiple choice
    _race("race", ("middle", "high")),
    _race("race-m", ("middle",)),
    _race("race-h", ("high",)),
]}

# GLUE's diagnostic set: the MNLI model's test split "test_ax" (file AX.tsv of a submission)
DIAGNOSTIC = DatasetSpec("ax", "entailment", _NLI3, {"test_ax": "diagnostic.tsv"}, (), ("accuracy",),
                         columns=DATASETS["mnli"].columns, folder="diagnostic")

_ID_COLUMNS = ("index", "id")  # GLUE test files: QQP calls it `id`, the others `index`
_COLA_COLUMNS = 4  # source, label, original_label (the author's "*"), sentence


def get_spec(spec_or_name) -> DatasetSpec:
    if isinstance(spec_or_name, DatasetSpec):
        return spec_or_name
    spec = DATASETS.get(str(spec_or_name).lower())
    if spec is None:
        raise DataError(f"unknown dataset {spec_or_name!r}; expected one of {', '.join(DATASETS)}")
    return spec


def describe(spec) -> str:
    """One line for --help: the files the dataset expects under --data_dir."""
    spec = get_spec(spec)
    if spec.format == "race":
        levels = spec.levels[0] if len(spec.levels) == 1 else "{" + ",".join(spec.levels) + "}"
        where = ", ".join(f"{s}/{levels}/*.txt" for s in spec.splits.values())
        return f"{spec.name}: {where} (RACE: one JSON file per article; folder {spec.folder}/)"
    kind = {"glue": "GLUE TSV with a header", "cola": "GLUE TSV; train/dev without header",
            "snli": "SNLI 1.0 jsonl", "scitail": "SciTail TSV, no header",
            "rocstories": "Story Cloze Test 2016 CSVs"}[spec.format]
    files = ", ".join(f"'{f}'" if " " in f else f for f in spec.splits.values())
    return f"{spec.name}: {files} ({kind}{f'; folder {spec.folder}/' if spec.folder else ''})"


def read_split(spec_or_name, data_dir, split: str) -> Split:
    """Read one split ("train", "dev", "test"; MNLI "dev_matched", ...) of a dataset from its folder."""
    spec = get_spec(spec_or_name)
    if split not in spec.splits:
        raise DataError(f"{spec.name} has no split {split!r}; expected one of {', '.join(spec.splits)}")
    path = Path(data_dir) / spec.splits[split]
    if not path.exists():
        raise DataError(f"{path}: not found; expected {describe(spec)}{'. ' + spec.source if spec.source else ''}")
    return READERS[spec.format](spec, path, split)


# ----------------------------------------------------------------------------------------- text lines
def _lines(path):
    """(line number, text) for each line of a UTF-8 file, without its line ending; a leading BOM
    (MRPC's files keep the one of msr_paraphrase_train.txt) is dropped. Bad bytes name their line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{n}: expected UTF-8 text, found byte {raw[e.start:e.start + 1]!r} "
                                f"at column {e.start + 1}") from None
            if n == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield n, text.rstrip("\r\n")


def _tsv_rows(path):
    """(line number, cells) per non-blank line. Quoting is off: splitting on tabs is the whole format."""
    for n, text in _lines(path):
        if text.strip():
            yield n, text.split("\t")


def _label_id(spec, value, where):
    value = value.strip()
    if spec.label_names is None:  # STS-B: a similarity score on 0-5
        try:
            score = float(value)
        except ValueError:
            score = float("nan")
        lo, hi = spec.score_range
        if not lo <= score <= hi:
            raise DataError(f"{where}: expected a score between {lo:g} and {hi:g}, found {value!r}")
        return score
    try:
        return spec.label_names.index(value)
    except ValueError:
        raise DataError(f"{where}: expected a label in {{{', '.join(spec.label_names)}}}, "
                        f"found {value!r}") from None


def _labels(spec, values):
    return np.asarray(values, dtype=np.float32 if spec.label_names is None else np.int64)


def _nonempty(spec, path, fields, ids, labels, notes=()):
    if not ids:
        raise DataError(f"{path}: expected at least one row, found none")
    return Split(fields, None if labels is None else _labels(spec, labels), ids, list(notes))


# ------------------------------------------------------------------------------------------- readers
def _read_glue(spec, path, split):
    rows = _tsv_rows(path)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: expected a header line, found an empty file")
    _, header = first
    col = {name: i for i, name in enumerate(header)}
    wanted = [name for _, name in spec.columns] + ([] if split.startswith("test") else [spec.label_column])
    if any(name not in col for name in wanted):
        raise DataError(f"{path}:1: expected a header with the columns {', '.join(wanted)}, "
                        f"found {chr(9).join(header)!r}")
    labelled = spec.label_column in col  # test files have no label column
    id_col = next((col[c] for c in _ID_COLUMNS if c in col), None)
    fields = {f: [] for f, _ in spec.columns}
    ids, labels, short = [], [], []
    for n, cells in rows:
        where = f"{path}:{n}"
        if len(cells) != len(header):
            if spec.name == "qqp" and labelled and len(cells) < len(header):
                short.append(n)
                continue
            raise DataError(f"{where}: expected {len(header)} tab-separated columns ({', '.join(header)}), "
                            f"found {len(cells)}")
        for f, name in spec.columns:
            fields[f].append(cells[col[name]])
        if labelled:
            labels.append(_label_id(spec, cells[col[spec.label_column]], where))
        ids.append(cells[id_col] if id_col is not None else str(len(ids)))
    notes = []
    if short:
        notes.append(f"{path}: dropped {len(short)} rows with fewer than {len(header)} columns "
                     f"(questions broken across lines), lines {', '.join(map(str, short[:10]))}"
                     f"{' ...' if len(short) > 10 else ''}")
    return _nonempty(spec, path, fields, ids, labels if labelled else None, notes)


def _read_cola(spec, path, split):
    if split == "test":  # CoLA's test file alone has a header, `index  sentence`, like SST-2's
        return _read_glue(spec, path, split)
    texts, labels, ids = [], [], []
    for n, cells in _tsv_rows(path):
        where = f"{path}:{n}"
        if len(cells) != _COLA_COLUMNS:
            raise DataError(f"{where}: expected {_COLA_COLUMNS} tab-separated columns (source, label, "
                            f"original label, sentence; no header), found {len(cells)}")
        labels.append(_label_id(spec, cells[1], where))
        texts.append(cells[3])
        ids.append(str(len(ids)))
    return _nonempty(spec, path, {"text": texts}, ids, labels)


def _read_scitail(spec, path, split):
    premise, hypothesis, labels, ids = [], [], [], []
    for n, cells in _tsv_rows(path):
        where = f"{path}:{n}"
        if len(cells) != 3:
            raise DataError(f"{where}: expected 3 tab-separated columns (premise, hypothesis, label; "
                            f"no header), found {len(cells)}")
        labels.append(_label_id(spec, cells[2], where))
        premise.append(cells[0])
        hypothesis.append(cells[1])
        ids.append(str(len(ids)))
    return _nonempty(spec, path, {"premise": premise, "hypothesis": hypothesis}, ids, labels)


_SNLI_KEYS = ("sentence1", "sentence2", "gold_label", "pairID")


def _read_snli(spec, path, split):
    premise, hypothesis, labels, ids, dropped = [], [], [], [], 0
    for n, text in _lines(path):
        if not text.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: expected one JSON object a line, found invalid JSON ({e.msg} at "
                            f"column {e.colno})") from None
        if not isinstance(row, dict) or any(k not in row for k in _SNLI_KEYS):
            found = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise DataError(f"{where}: expected an object with the keys {', '.join(_SNLI_KEYS)}, found {found}")
        if row["gold_label"] == "-":  # no majority among the annotators: not part of the task
            dropped += 1
            continue
        labels.append(_label_id(spec, str(row["gold_label"]), where))
        premise.append(str(row["sentence1"]))
        hypothesis.append(str(row["sentence2"]))
        ids.append(str(row["pairID"]))
    notes = [f"{path}: dropped {dropped} rows with gold_label '-' (no annotator majority)"] if dropped else []
    return _nonempty(spec, path, {"premise": premise, "hypothesis": hypothesis}, ids, labels, notes)


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _race_article(spec, path):
    """-> list of (id, article, question, options, answer id) for one RACE article file."""
    text = "\n".join(t for _, t in _lines(path))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: expected a JSON object, found invalid JSON ({e.msg} at column "
                        f"{e.colno})") from None
    keys = ("article", "questions", "options", "answers", "id")
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{path}: expected an object with the keys {', '.join(keys)}, found {found}")
    qs, opts, answers = obj["questions"], obj["options"], obj["answers"]
    shape = [str(len(v)) if isinstance(v, list) else f"{type(v).__name__} (not a list)" for v in (qs, opts, answers)]
    if not (isinstance(qs, list) and isinstance(opts, list) and isinstance(answers, list)) \
            or not len(qs) == len(opts) == len(answers):
        raise DataError(f"{path}: expected lists questions, options and answers of one length, found "
                        f"{shape[0]}, {shape[1]} and {shape[2]}")
    if not isinstance(obj["article"], str):
        raise DataError(f"{path}: expected the article as a string, found {type(obj['article']).__name__}")
    out = []
    for q, (question, options, answer) in enumerate(zip(qs, opts, answers)):
        where = f"{path}: questions[{q}]"
        if not isinstance(options, list) or len(options) != spec.n_choices:
            raise DataError(f"{where}: expected {spec.n_choices} options, found "
                            f"{len(options) if isinstance(options, list) else type(options).__name__}")
        bad = [v for v in (question, *options) if not isinstance(v, str)]
        if bad:
            raise DataError(f"{where}: expected the question and its options as strings, found {bad[0]!r}")
        label = _label_id(spec, str(answer), where)
        out.append((f"{obj['id']}-{q}", obj["article"], question, list(options), label))
    return out


def _read_race(spec, path, split):
    fields = {"context": [], "question": [], "choices": []}  # the paper: context = article + question
    labels, ids, groups = [], [], {}
    for level in spec.levels:
        folder = path / level
        if not folder.is_dir():
            raise DataError(f"{folder}: not found; expected {describe(spec)}")
        groups[level] = []
        for file in sorted(folder.glob("*.txt"), key=_natural_key):
            for qid, article, question, options, label in _race_article(spec, file):
                groups[level].append(len(ids))
                fields["context"].append(article)
                fields["question"].append(question)
                fields["choices"].append(options)
                labels.append(label)
                ids.append(qid)
    split = _nonempty(spec, path, fields, ids, labels)
    split.groups = groups
    return split


def _read_rocstories(spec, path, split):
    s = rocstories.read_csv(path)
    return Split({"context": s.stories, "choices": [list(c) for c in zip(s.endings1, s.endings2)]}, s.labels,
                 [str(i) for i in range(len(s.labels))])


# ----------------------------------------------------------------------------------- zero-shot only
DPRD_FILES = {"train": "train.c.txt", "test": "test.c.txt"}  # Rahman & Ng 2012, as distributed


READERS = {"glue": _read_glue, "cola": _read_cola, "snli": _read_snli, "scitail": _read_scitail,
           "race": _read_race, "rocstories": _read_rocstories}  # format -> reader(spec, path, split)


def read_dprd(path) -> Split:
    """The Definite Pronoun Resolution Dataset: blocks of 4 lines (sentence, pronoun, `a,b`, the right
    one) separated by blank lines. The pronoun resolved is its first occurrence as a word (any case);
    fields "before" and "after" are the sentence around it, "candidates" the two; label: the right one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; expected DPRD's {' or '.join(DPRD_FILES.values())}")
    blocks, block = [], []
    for n, text in _lines(path):
        if text.strip():
            block.append((n, text.strip()))
        elif block:
            blocks.append(block)
            block = []
    blocks += [block] if block else []
    fields = {"before": [], "after": [], "candidates": []}
    labels = []
    for block in blocks:
        (n, sentence), (n_pron, pronoun), (n_cand, cands), (n_ans, answer) = _dprd_lines(path, block)
        candidates = [c.strip() for c in cands.split(",")]
        if len(candidates) != 2 or not all(candidates):
            raise DataError(f"{path}:{n_cand}: expected two candidates separated by a comma, found {cands!r}")
        if answer not in candidates:
            raise DataError(f"{path}:{n_ans}: expected one of the candidates {candidates[0]!r} or "
                            f"{candidates[1]!r}, found {answer!r}")
        m = re.search(rf"(?<!\w){re.escape(pronoun)}(?!\w)", sentence, flags=re.IGNORECASE)
        if m is None:
            raise DataError(f"{path}:{n_pron}: expected a pronoun that is a word of the sentence on line {n}, "
                            f"found {pronoun!r}")
        fields["before"].append(sentence[:m.start()])
        fields["after"].append(sentence[m.end():])
        fields["candidates"].append(candidates)
        labels.append(candidates.index(answer))
    if not labels:
        raise DataError(f"{path}: expected at least one example, found none")
    return Split(fields, np.asarray(labels, dtype=np.int64), [str(i) for i in range(len(labels))])


def _dprd_lines(path, block):
    if len(block) != 4:
        raise DataError(f"{path}:{block[0][0]}: expected an example of 4 lines (sentence, pronoun, candidates, "
                        f"answer) then a blank line, found {len(block)} lines")
    return block
