"""ROCStories (Story Cloze Test, spring 2016): reading, the original split, encoding with an on-disk
cache, and the transform into the model's packed input (SPEC §6).

The CSVs are read with the csv module (no pandas) so that every problem names its file and line.
"""
from __future__ import annotations

import csv
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .fileio import atomic_write, update_hash
from .layout import PAPER_SPECIALS, EmbeddingLayout

VAL_FILE = "cloze_test_val__spring2016 - cloze_test_ALL_val.csv"
TEST_FILE = "cloze_test_test__spring2016 - cloze_test_ALL_test.csv"
HEADER = ["InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
          "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"]
SPLIT_SEED = 3535999445  # random_state of the original's train_test_split
N_VALID = 374
SPECIALS = PAPER_SPECIALS  # _start_, _delimiter_, _classify_
DATA_URL = "http://cs.rochester.edu/nlp/rocstories/"
_CACHE_VERSION = b"gpt1_fast-rocstories-v1"


@dataclass
class Split:
    stories: list
    endings1: list
    endings2: list
    labels: np.ndarray  # int64, 0 or 1


def read_rocstories_csv(path) -> Split:
    """One Story Cloze CSV: story = the four sentences joined by spaces, label = AnswerRightEnding - 1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ROCStories file not found: {path}; expected '{VAL_FILE}' and '{TEST_FILE}' in the data "
            f"folder (--data_dir). The Story Cloze Test (spring 2016) is available from {DATA_URL} "
            "(`python -m gpt1_fast.synthetic --out DIR` writes synthetic files in the same layout).")
    try:
        return _read_csv(path)
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


def _read_csv(path: Path) -> Split:
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
    return Split(stories, e1, e2, np.asarray(labels, dtype=np.int64))


def split_indices(n: int, n_valid: int = N_VALID, seed: int = SPLIT_SEED):
    """scikit-learn's train_test_split(test_size=n_valid, random_state=seed) index choice, NumPy only:
    valid = perm[:n_valid], train = perm[n_valid:], each in permutation order."""
    if not 0 < n_valid < n:
        raise DataError(f"cannot hold out {n_valid} validation stories from {n}")
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_valid:], perm[:n_valid]


# ------------------------------------------------------------------------------------------ encoding
def _pack(lists):
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter((i for x in lists for i in x), dtype=np.int32, count=int(lens.sum()))
    return flat, lens


def _unpack(flat, lens):
    if lens.ndim != 1 or (lens < 0).any() or int(lens.sum()) != flat.size:
        raise ValueError(f"lengths sum to {int(lens.sum())} but {flat.size} ids are stored")
    offs = np.concatenate([[0], np.cumsum(lens)])
    return [flat[offs[i]:offs[i + 1]].tolist() for i in range(len(lens))]


def _read_cache(cache_file: Path, n_stories: int):
    """The cached fields, or None when the file is damaged (zip CRC, truncation, wrong arrays): then
    one warning line names it and it is deleted, so the caller encodes again and rewrites it."""
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            fields = [_unpack(z[f"f{k}"], z[f"l{k}"]) for k in range(3)]
        if all(len(f) == n_stories for f in fields):
            return fields
        why = f"{[len(f) for f in fields]} entries for {n_stories} stories"
    except Exception as e:  # zipfile.BadZipFile (CRC, truncation), KeyError, ValueError, EOFError, ...: all mean rebuild
        why = f"{type(e).__name__}: {e}"
    print(f"warning: damaged encoding cache file {cache_file} ({why}); deleting it and encoding again",
          file=sys.stderr, flush=True)
    cache_file.unlink(missing_ok=True)
    return None


def encode_csv(path, text_encoder, vocab_paths, cache_dir=None, verbose=True):
    """Encode a CSV's stories and endings -> (x1, x2, x3, labels), token-id lists per story.

    With `cache_dir`, the result is stored as `<sha256>.npz` keyed by the CSV's bytes and the
    vocabulary files' bytes, so a second run skips encoding (no pickle: plain int arrays). A damaged
    cache file is reported, deleted and rebuilt."""
    split = read_rocstories_csv(path)
    cache_file = None
    if cache_dir:
        h = hashlib.sha256(_CACHE_VERSION)
        for p in (path, *vocab_paths):
            update_hash(h, p)
            h.update(b"\0")
        cache_file = Path(cache_dir) / f"rocstories-{h.hexdigest()[:32]}.npz"
        if cache_file.is_file():
            fields = _read_cache(cache_file, len(split.stories))
            if fields is not None:
                return (*fields, split.labels)
    fields = [text_encoder.encode(texts, verbose=verbose) for texts in (split.stories, split.endings1, split.endings2)]
    if cache_file is not None:
        arrays = {}
        for k, f in enumerate(fields):
            arrays[f"f{k}"], arrays[f"l{k}"] = _pack(f)
        atomic_write(cache_file, lambda fh: np.savez(fh, **arrays), mode="wb")
    return (*fields, split.labels)


def load_rocstories(data_dir, text_encoder, vocab_paths, n_valid=N_VALID, cache_dir=None, verbose=True):
    """-> (train, valid, test): each (x1, x2, x3, y) with token-id lists, split as the original."""
    data_dir = Path(data_dir)
    val = encode_csv(data_dir / VAL_FILE, text_encoder, vocab_paths, cache_dir, verbose)
    test = encode_csv(data_dir / TEST_FILE, text_encoder, vocab_paths, cache_dir, verbose)
    tr_idx, va_idx = split_indices(len(val[0]), n_valid)

    def take(fields, idx):
        return tuple([f[i] for i in idx] for f in fields[:3]) + (fields[3][idx],)

    return take(val, tr_idx), take(val, va_idx), test


# ---------------------------------------------------------------------------------------- transform
def context_length(splits, n_ctx: int) -> tuple[int, int]:
    """(max_len, n_ctx) of the original: max_len = n_ctx // 2 - 2; n_ctx = min(longest
    story[:max_len] + longer ending[:max_len] + 3 over every split, n_ctx)."""
    max_len = n_ctx // 2 - 2
    longest = max(len(x1[:max_len]) + max(len(x2[:max_len]), len(x3[:max_len]))
                  for split in splits for x1, x2, x3 in zip(*split[:3]))
    return max_len, min(longest + 3, n_ctx)


def transform_roc(X1, X2, X3, n_ctx: int, max_len: int, start: int, delimiter: int, clf_token: int,
                  pos_offset: int):
    """Two sequences per story, `[start] story [delimiter] ending [clf]`, zero-padded to n_ctx:
    X [N, 2, n_ctx, 2] int64 (token ids, position ids pos_offset + t), M [N, 2, n_ctx] float32.
    The seed's array form of tasks.multiple_choice's transform (which training uses)."""
    from .tasks.common import Encoded, make_batch
    from .tasks.multiple_choice import transform

    layout = EmbeddingLayout(start, SPECIALS, 2 * max_len + 4)  # n_ctx // 2 - 2 == max_len
    if (layout.delimiter, layout.clf, layout.pos_offset) != (delimiter, clf_token, pos_offset):
        raise ValueError(f"special ids {start}, {delimiter}, {clf_token} and position offset {pos_offset} are not "
                         "the layout tokens | _start_ _delimiter_ _classify_ | positions")
    seqs = transform({"context": X1, "choices": list(zip(X2, X3))}, layout, keep_context_end=False)
    enc = Encoded.from_sequences(seqs, None, range(len(seqs)), n_ctx)
    X, M, _ = make_batch(enc, np.arange(len(seqs)), layout.with_n_ctx(n_ctx), "cpu", padding="global")
    return X.numpy(), M.numpy()
