"""ROCStories, the release's task, as an entry of the task layer: reading, the original split, the
fitted n_ctx, where an over-long story is cut, the encoding cache, errors naming file and line."""
import csv

import numpy as np
import pytest

from fixtures_tasks import CountingEncoder
from gpt1_fast import synthetic
from gpt1_fast.errors import DataError
from gpt1_fast.tasks import get_task, rocstories
from gpt1_fast.tasks.readers import read_split
from roc_helpers import context_length, transform_roc


def write_rows(path, rows, header=rocstories.HEADER):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def parts(layout, seq):
    assert seq[0] == layout.start and seq[-1] == layout.clf and seq.count(layout.delimiter) == 1
    d = seq.index(layout.delimiter)
    return seq[1:d], seq[d + 1:-1]


def sequence(split, i, choice):
    return split.tokens[i, choice, :split.lengths[i, choice]].tolist()


def test_split_is_sklearns(tmp_path):
    """1871 stories -> 1497 train / 374 valid in the order train_test_split(test_size=374,
    random_state=3535999445) gives: valid = perm[:374], train = perm[374:]; rows numbered 0.. per split."""
    synthetic.write_rocstories(tmp_path, n=1871, n_test=10)
    tr_idx, va_idx = rocstories.split_indices(1871)
    assert len(tr_idx) == 1497 and len(va_idx) == 374
    # NumPy's legacy RandomState stream is frozen; these are its first values for this seed.
    assert va_idx[:6].tolist() == [1058, 198, 1174, 806, 127, 918]
    assert tr_idx[:6].tolist() == [187, 1591, 1646, 169, 1870, 1416]
    assert sorted(np.concatenate([tr_idx, va_idx]).tolist()) == list(range(1871))

    enc = CountingEncoder()
    data = get_task("rocstories").load(tmp_path, enc, (), cache_dir=None)
    tr, va, te = (data.splits[k] for k in ("train", "valid", "test"))
    assert list(data.splits) == ["train", "valid", "test"] and (len(tr), len(va), len(te)) == (1497, 374, 10)
    assert tr.ids == [str(i) for i in range(1497)] and va.ids == [str(i) for i in range(374)] and te.ids[-1] == "9"
    with open(tmp_path / rocstories.VAL_FILE, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    for split, i, row in ((va, 0, va_idx[0]), (tr, 0, tr_idx[0]), (tr, 5, tr_idx[5]), (va, 373, va_idx[373])):
        for k in (0, 1):
            story, ending = parts(data.layout, sequence(split, i, k))
            assert enc.decode(story) == " ".join(rows[row][1:5]) and enc.decode(ending) == rows[row][5 + k]
        assert split.labels[i] == int(rows[row][7]) - 1
    assert tr.labels.dtype == np.int64


def test_fitted_n_ctx_is_the_releases(tmp_path):
    """n_ctx = min(longest story[:n_ctx // 2 - 2] + longer ending[:n_ctx // 2 - 2] + 3, n_ctx) over
    every split (the original's rule), for caps that cut and one that does not."""
    synthetic.write_rocstories(tmp_path, n=60, n_test=20, seed=5)
    enc = CountingEncoder()
    files = [rocstories.read_csv(tmp_path / f) for f in (rocstories.VAL_FILE, rocstories.TEST_FILE)]
    splits = [[[w.split() for w in texts] for texts in (s.stories, s.endings1, s.endings2)] for s in files]
    for cap in (512, 40, 30, 12):
        data = get_task("rocstories").load(tmp_path, enc, (), n_ctx=cap, n_valid=10, cache_dir=None)
        assert data.layout.n_ctx == context_length(splits, cap)[1], cap
    assert context_length(splits, 512)[1] < 512 and context_length(splits, 12)[1] == 11


def test_context_length_and_transform():
    x1 = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2]]
    x2 = [[11, 12], [11, 12, 13, 14, 15, 16, 17]]
    x3 = [[21], [21, 22]]
    splits = [(x1, x2, x3, None)]
    # n_ctx 12 -> max_len 4: story[:4] + longer ending[:4] + 3 = 4 + 2 + 3 (first), 2 + 4 + 3 (second).
    assert context_length(splits, 12) == (4, 9)
    assert context_length(splits, 512) == (254, 10 + 2 + 3)
    assert context_length(splits, 8) == (2, 7)  # max_len 2: 2 + 2 + 3
    assert context_length(splits, 6) == (1, 5)  # 2 * max_len + 3 < n_ctx: the min() never binds
    X, M = transform_roc(x1, x2, x3, 9, 4, start=100, delimiter=101, clf_token=102, pos_offset=103)
    assert X.shape == (2, 2, 9, 2) and M.shape == (2, 2, 9)
    assert X[0, 0, :, 0].tolist() == [100, 1, 2, 3, 4, 101, 11, 12, 102]
    assert X[0, 1, :, 0].tolist() == [100, 1, 2, 3, 4, 101, 21, 102, 0]
    assert X[1, 0, :, 0].tolist() == [100, 1, 2, 101, 11, 12, 13, 14, 102]
    assert M[0, 1].tolist() == [1] * 8 + [0]
    assert (X[..., 1] == np.arange(103, 112)).all()


def test_overlong_story_keeps_its_start(tmp_path):
    """The release cuts story and ending each to their first n_ctx // 2 - 2 tokens (RACE keeps a
    context's end instead: its question is there)."""
    long_story = [f"s{i}" for i in range(30)]
    rows = synthetic.story_rows(6)
    rows[2][1:5] = [" ".join(long_story[:10]), " ".join(long_story[10:20]), " ".join(long_story[20:25]),
                    " ".join(long_story[25:])]
    rows[2][5], rows[2][6] = " ".join(f"a{i}" for i in range(9)), "b0 b1"
    write_rows(tmp_path / rocstories.VAL_FILE, rows)
    write_rows(tmp_path / rocstories.TEST_FILE, rows)
    enc = CountingEncoder()
    data = get_task("rocstories").load(tmp_path, enc, (), n_ctx=16, n_valid=2, cache_dir=None)  # 6 tokens each
    test = data.splits["test"]
    for k, ending in ((0, [f"a{i}" for i in range(6)]), (1, ["b0", "b1"])):
        story, end = parts(data.layout, sequence(test, 2, k))
        assert enc.decode(story).split() == long_story[:6] and enc.decode(end).split() == ending
    assert data.layout.n_ctx == 6 + 6 + 3


def test_encoding_cache(tmp_path):
    synthetic.write_rocstories(tmp_path / "d", n=40, n_test=12)
    vocab = tmp_path / "vocab.json"
    vocab.write_text("{}")
    cache = tmp_path / "cache"
    enc, task = CountingEncoder(), get_task("rocstories")
    first = task.load(tmp_path / "d", enc, (vocab,), n_valid=10, cache_dir=cache)
    assert enc.calls == 4  # story and endings x 2 files
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["rocstories", "rocstories"]
    again = task.load(tmp_path / "d", enc, (vocab,), n_valid=10, cache_dir=cache)
    assert enc.calls == 4  # all from the cache
    for k, split in first.splits.items():
        assert np.array_equal(split.tokens, again.splits[k].tokens) and np.array_equal(split.labels, again.splits[k].labels)
    vocab.write_text('{"changed": 1}')  # new vocabulary bytes -> new key
    task.load(tmp_path / "d", enc, (vocab,), n_valid=10, cache_dir=cache)
    assert enc.calls == 8


def test_missing_file_is_one_line_naming_where_to_get_it(tmp_path):
    with pytest.raises(DataError) as e:
        get_task("rocstories").load(tmp_path, CountingEncoder(), ())
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / rocstories.VAL_FILE}: not found; expected rocstories: '{rocstories.VAL_FILE}', "
                          f"'{rocstories.TEST_FILE}'") and "\n" not in msg
    assert "rochester.edu/nlp/rocstories" in msg and "python -m gpt1_fast.synthetic" in msg


def test_too_few_stories_to_hold_out(tmp_path):
    synthetic.write_rocstories(tmp_path, n=10, n_test=4)
    with pytest.raises(DataError, match="cannot hold out 10 validation stories from 10"):
        get_task("rocstories").load(tmp_path, CountingEncoder(), (), n_valid=10)


def test_malformed_row_names_file_and_line(tmp_path):
    rows = synthetic.story_rows(5)
    rows[3] = rows[3][:6]  # 6 columns instead of 8 on file line 5 (header is line 1)
    write_rows(tmp_path / rocstories.VAL_FILE, rows)
    with pytest.raises(DataError, match=r"_val\.csv:5: expected 8 columns .* found 6"):
        read_split("rocstories", tmp_path, "train")


def test_bad_label(tmp_path):
    rows = synthetic.story_rows(4)
    rows[1][7] = "3"
    write_rows(tmp_path / "x.csv", rows)
    with pytest.raises(DataError, match=r"x\.csv:3: AnswerRightEnding must be 1 or 2, found '3'"):
        rocstories.read_csv(tmp_path / "x.csv")


def test_header_and_empty(tmp_path):
    write_rows(tmp_path / "h.csv", synthetic.story_rows(2), header=["a", "b"])
    with pytest.raises(DataError, match=r"h\.csv:1: expected a header of 8 columns"):
        rocstories.read_csv(tmp_path / "h.csv")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        rocstories.read_csv(tmp_path / "e.csv")
    write_rows(tmp_path / "n.csv", [])
    with pytest.raises(DataError, match=r"n\.csv: no stories after the header"):
        rocstories.read_csv(tmp_path / "n.csv")


def test_quoted_multiline_field_keeps_line_numbers(tmp_path):
    rows = synthetic.story_rows(3)
    rows[0][1] = "first line\nsecond line"
    rows[2][7] = "x"
    write_rows(tmp_path / "q.csv", rows)
    with pytest.raises(DataError, match=r"q\.csv:5:"):  # header 1, row 1 spans 2-3, row 3 is line 5
        rocstories.read_csv(tmp_path / "q.csv")


def test_reader_fields(tmp_path):
    synthetic.write_rocstories(tmp_path, n=20, n_test=3)
    s, raw = read_split("rocstories", tmp_path, "train"), rocstories.read_csv(tmp_path / rocstories.VAL_FILE)
    assert s.fields["context"] == raw.stories and s.fields["choices"][4] == [raw.endings1[4], raw.endings2[4]]
    assert s.ids == [str(i) for i in range(20)] and np.array_equal(s.labels, raw.labels)
    assert len(read_split("rocstories", tmp_path, "test")) == 3


def test_synthetic_layout_is_deterministic(tmp_path):
    a = synthetic.story_rows(20, seed=3)
    assert a == synthetic.story_rows(20, seed=3) and a != synthetic.story_rows(20, seed=4)
    assert all(len(r) == 8 and r[7] in ("1", "2") for r in a)
    s = rocstories.read_csv(synthetic.write_rocstories(tmp_path, n=20) / rocstories.VAL_FILE)
    assert len(s.stories) == 20 and set(s.labels.tolist()) <= {0, 1}
