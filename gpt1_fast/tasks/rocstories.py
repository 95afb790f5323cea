"""ROCStories (Story Cloze Test, spring 2016), the release's task: its CSV files and the original's split.

The dataset itself is `readers.DATASETS["rocstories"]`, read and fine-tuned like every other: the val
file is "train", out of which `--n_valid` stories (374 by default: 1497 train, 374 valid, as the
original) are held out as "valid"; the test file is "test". A story keeps its first n_ctx // 2 - 2
tokens, as the original cuts it. The CSVs are read with the csv module (no pandas) so that every
problem names its file and line.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

VAL_FILE = "cloze_test_val__spring2016 - cloze_test_ALL_val.csv"
TEST_FILE = "cloze_test_test__spring2016 - cloze_test_ALL_test.csv"
HEADER = ["InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
          "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"]
SPLIT_SEED = 3535999445  # random_state of the original's train_test_split
N_VALID = 374
DATA_URL = "http://cs.rochester.edu/nlp/rocstories/"
SOURCE = (f"The Story Cloze Test (spring 2016) is available from {DATA_URL} "
          "(`python -m gpt1_fast.synthetic --out DIR` writes synthetic files in the same layout)")


@dataclass
class Stories:
    stories: list[str]      # the four sentences joined by spaces
    endings1: list[str]
    endings2: list[str]
    labels: np.ndarray      # int64: 0 when the first ending is the right one, 1 the second


def read_csv(path) -> Stories:
    """One Story Cloze CSV: story = the four sentences joined by spaces, label = AnswerRightEnding - 1."""
    path = Path(path)
    try:
        return _read(path)
    except UnicodeDecodeError:
        raise DataError(_utf8_error(path)) from None


def _utf8_error(path: Path) -> str:
    """Where the first byte that is not UTF-8 is: `file:line: ...` (the csv reader cannot tell)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line, line_start = raw.count(b"\n", 0, e.start) + 1, raw.rfind(b"\n", 0, e.start) + 1
        return (f"{path}:{line}: expected UTF-8 text, found byte "
                f"{raw[e.start:e.start + 1]!r} at column {e.start - line_start + 1} (save the file as UTF-8)")
    return f"{path}: expected UTF-8 text"


def _read(path: Path) -> Stories:
    stories, e1, e2, labels = [], [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: the file is empty; expected a header line {','.join(HEADER)}")
        if len(header) != len(HEADER):  # the original skips the header unread; only its width is checked
            raise DataError(f"{path}:1: expected a header of {len(HEADER)} columns ({','.join(HEADER)}), "
                            f"found {len(header)}: {','.join(header)}")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(HEADER):
                raise DataError(f"{path}:{line}: expected {len(HEADER)} columns ({','.join(HEADER)}), "
                                f"found {len(row)}: {row!r}")
            answer = row[7].strip()
            if answer not in ("1", "2"):
                raise DataError(f"{path}:{line}: AnswerRightEnding must be 1 or 2, found {row[7]!r}")
            stories.append(" ".join(row[1:5]))
            e1.append(row[5])
            e2.append(row[6])
            labels.append(int(answer) - 1)
    if not stories:
        raise DataError(f"{path}: no stories after the header")
    return Stories(stories, e1, e2, np.asarray(labels, dtype=np.int64))


def split_indices(n: int, n_valid: int = N_VALID, seed: int = SPLIT_SEED):
    """-> (train, valid) indices: scikit-learn's train_test_split(test_size=n_valid, random_state=seed)
    choice, NumPy only: valid = perm[:n_valid], train = perm[n_valid:], each in permutation order."""
    if not 0 < n_valid < n:
        raise DataError(f"cannot hold out {n_valid} validation stories from {n}")
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_valid:], perm[:n_valid]
