"""gpt1_fast.corpus: token files equal TextEncoder.encode of each document, in order, split by the
documented permutation; the worker path equals the in-process path; reuse; clear errors."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("spacy")
pytest.importorskip("ftfy")

from gpt1_fast import corpus  # noqa: E402
from gpt1_fast.corpus import CorpusError, encode_corpus, open_split, read_documents  # noqa: E402
from gpt1_fast.synthetic import story_rows  # noqa: E402
from gpt1_fast.text import TextEncoder, learn_bpe  # noqa: E402


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory):
    """A folder: nested .txt files (one document each), a JSONL file, and files that must be skipped."""
    root = tmp_path_factory.mktemp("corpus")
    rows = story_rows(40, seed=5)
    (root / "b").mkdir()
    for i, r in enumerate(rows[:6]):
        (root / "b" / f"s{i}.txt").write_text(" ".join(r[1:5]) + "\n\u201cWell,\u201d he said \u2014 fine\u2026\n",
                                              encoding="utf-8")
    with open(root / "a.jsonl", "w", encoding="utf-8") as f:
        for r in rows[6:]:
            f.write(json.dumps({"text": " ".join(r[1:6]), "id": r[0]}) + "\n")
        f.write("\n")  # blank lines are skipped
    (root / "notes.csv").write_text("not,a,document\n", encoding="utf-8")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.txt").write_text("hidden", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def vocab(tmp_path_factory, docs_dir):
    d = tmp_path_factory.mktemp("vocab")
    enc, bpe = d / "encoder_bpe_40000.json", d / "vocab_40000.bpe"
    learn_bpe(list(read_documents([docs_dir])), 200, enc, bpe)
    return str(enc), str(bpe)


def expected_documents(docs_dir):
    """The documented order: sorted recursive paths, a .txt file = one document, a JSONL line = one."""
    docs = [json.loads(line)["text"] for line in (docs_dir / "a.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    docs += [(docs_dir / "b" / f"s{i}.txt").read_text(encoding="utf-8") for i in range(6)]
    return docs


def test_reader_order_and_skips(docs_dir):
    assert list(read_documents([docs_dir])) == expected_documents(docs_dir)
    files = corpus.list_files([docs_dir])[0][1]
    assert [f.name for f in files] == ["a.jsonl"] + [f"s{i}.txt" for i in range(6)]


def test_token_files_equal_encode_of_each_document(tmp_path, docs_dir, vocab):
    metas = encode_corpus([docs_dir], tmp_path, vocab, val_fraction=0.2, workers=1, seed=3, verbose=False)
    te = TextEncoder(*vocab)
    docs = expected_documents(docs_dir)
    ids = te.encode(docs)
    is_val = np.zeros(len(docs), bool)
    is_val[np.random.default_rng(3).permutation(len(docs))[:round(0.2 * len(docs))]] = True
    for split, want_val in (("train", False), ("val", True)):
        tf = open_split(tmp_path, split, vocab_digest=corpus.vocab_digest(*vocab), verify=True)
        want = [i for doc, v in zip(ids, is_val) if v == want_val for i in doc]
        assert tf.tokens.dtype == np.uint16 and tf.tokens.tolist() == want
        assert tf.meta == metas[split] and tf.meta["documents"] == int((is_val == want_val).sum())
        assert tf.meta["tokens"] == len(want) and tf.meta["n_vocab"] == len(te.encoder)
    assert metas["val"]["documents"] == 8 and metas["train"]["sources"][0]["documents"] == len(docs)
    # Another seed holds out other documents.
    other = encode_corpus([docs_dir], tmp_path / "o", vocab, val_fraction=0.2, workers=1, seed=4, verbose=False)
    assert open_split(tmp_path / "o", "val").tokens.tolist() != open_split(tmp_path, "val").tokens.tolist()
    assert other["val"]["documents"] == 8


def test_worker_processes_equal_in_process(tmp_path, docs_dir, vocab, monkeypatch):
    monkeypatch.setattr(corpus, "_BATCH_DOCS", 3)  # many batches in flight, so order matters
    encode_corpus([docs_dir], tmp_path / "one", vocab, val_fraction=0.1, workers=1, verbose=False)
    encode_corpus([docs_dir], tmp_path / "two", vocab, val_fraction=0.1, workers=2, verbose=False)
    for name in ("train.bin", "val.bin", "train.json", "val.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_second_run_reuses_the_files(tmp_path, docs_dir, vocab, monkeypatch):
    encode_corpus([docs_dir], tmp_path, vocab, verbose=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    def no_encoder(*a, **k):
        raise AssertionError("re-encoded although the inputs are unchanged")

    monkeypatch.setattr("gpt1_fast.text.TextEncoder", no_encoder)
    again = encode_corpus([docs_dir], tmp_path, vocab, verbose=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes
    assert again == {s: open_split(tmp_path, s).meta for s in ("train", "val")}
    monkeypatch.undo()
    # Changed inputs (another seed, another file's bytes) encode again.
    encode_corpus([docs_dir], tmp_path, vocab, seed=1, verbose=False)
    assert open_split(tmp_path, "train").meta["seed"] == 1
    extra = tmp_path / "extra.txt"
    extra.write_text("One more document.", encoding="utf-8")
    before = open_split(tmp_path, "train").meta["documents"] + open_split(tmp_path, "val").meta["documents"]
    m = encode_corpus([docs_dir, extra], tmp_path, vocab, seed=1, verbose=False)
    assert m["train"]["documents"] + m["val"]["documents"] == before + 1


def test_damaged_files_are_clear_errors(tmp_path, docs_dir, vocab):
    encode_corpus([docs_dir], tmp_path, vocab, verbose=False)
    train = tmp_path / "train.bin"
    data = train.read_bytes()
    train.write_bytes(data[:-2])
    with pytest.raises(CorpusError, match=r"train\.bin: damaged: .*expected"):
        open_split(tmp_path, "train")
    train.write_bytes(data[:-2] + bytes([data[-2] ^ 1, data[-1]]))
    open_split(tmp_path, "train")  # same size: only verify=True reads the content
    with pytest.raises(CorpusError, match=r"train\.bin: damaged: content"):
        open_split(tmp_path, "train", verify=True)
    # A damaged file is never reused: the next run encodes again and repairs it.
    encode_corpus([docs_dir], tmp_path, vocab, verbose=False)
    assert train.read_bytes() != data[:-2]
    with pytest.raises(CorpusError, match="another vocabulary"):
        open_split(tmp_path, "train", vocab_digest="0" * 64)
    (tmp_path / "val.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"val\.json: damaged"):
        open_split(tmp_path, "val")
    meta = json.loads((tmp_path / "train.json").read_text())
    (tmp_path / "train.json").write_text(json.dumps({**meta, "tokens": "many"}), encoding="utf-8")
    with pytest.raises(CorpusError, match="'tokens' missing or not int"):
        open_split(tmp_path, "train")
    with pytest.raises(CorpusError, match=r"nothing/train\.json: not found"):
        open_split(tmp_path / "nothing", "train")
    os.remove(tmp_path / "val.bin")
    (tmp_path / "val.json").write_text(json.dumps({**meta, "split": "val"}), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"val\.bin: token file missing"):
        open_split(tmp_path, "val")


def test_input_errors_name_file_and_line(tmp_path, vocab):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"text": "broken"\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:3: bad JSON"):
        encode_corpus([bad], tmp_path / "o", vocab, verbose=False)
    bad.write_text('{"text": "ok"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: expected a JSON object with a \"text\" field"):
        encode_corpus([bad], tmp_path / "o", vocab, verbose=False)
    bad.write_text('{"text": "ok"}\n{"text": 5}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: \"text\" must be a string"):
        encode_corpus([bad], tmp_path / "o", vocab, verbose=False)
    bad.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: not UTF-8"):
        encode_corpus([bad], tmp_path / "o", vocab, verbose=False)
    txt = tmp_path / "bad.txt"
    txt.write_bytes(b"line one\nline two\nthree \xff here\n")
    with pytest.raises(CorpusError, match=r"bad\.txt:3: not UTF-8 \(byte 0xff at column 7\)"):
        encode_corpus([txt], tmp_path / "o", vocab, verbose=False)
    with pytest.raises(CorpusError, match=r"missing\.txt: no such file"):
        encode_corpus([tmp_path / "missing.txt"], tmp_path / "o", vocab, verbose=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"empty: no \*\.txt or \*\.jsonl"):
        encode_corpus([tmp_path / "empty"], tmp_path / "o", vocab, verbose=False)
    one = tmp_path / "one.txt"
    one.write_text("a single document", encoding="utf-8")
    m = encode_corpus([one], tmp_path / "o", vocab, val_fraction=0, verbose=False)
    assert m["val"]["tokens"] == 0 and len(open_split(tmp_path / "o", "val")) == 0
    assert m["train"]["documents"] == 1 and m["val"]["documents"] == 0


def test_vocabulary_beyond_uint16_is_an_error(tmp_path, docs_dir, vocab):
    enc = json.loads(open(vocab[0], encoding="utf-8").read())
    enc["zzz_big"] = 70_000
    big = tmp_path / "big.json"
    big.write_text(json.dumps(enc), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"70,001 ids do not fit the token file's uint16"):
        encode_corpus([docs_dir], tmp_path / "o", (big, vocab[1]), verbose=False)
    assert not list((tmp_path / "o").glob("*.bin")) and not list((tmp_path / "o").glob("*.json"))


def test_split_documents():
    m = corpus.split_documents(1000, 0.01, 7)
    assert m.sum() == 10 and (m == corpus.split_documents(1000, 0.01, 7)).all()
    assert corpus.split_documents(3, 0.01, 0).sum() == 1  # at least one
    assert corpus.split_documents(2, 0.9, 0).sum() == 1  # at most n - 1
    with pytest.raises(CorpusError, match="val_fraction"):
        corpus.split_documents(10, 1.0, 0)


def test_concurrent_calls_encode_once(tmp_path, docs_dir, vocab, monkeypatch):
    """DDP ranks may all call encode_corpus: the lock lets one encode, the others reuse its files."""
    import threading

    import gpt1_fast.text as text_mod

    built = []
    real_cls = text_mod.TextEncoder

    def counting(*a, **k):
        built.append(1)
        return real_cls(*a, **k)

    monkeypatch.setattr(text_mod, "TextEncoder", counting)
    results = [None] * 3

    def one(i):
        results[i] = encode_corpus([docs_dir], tmp_path, vocab, workers=1, verbose=False)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and results[0] == results[1] == results[2] is not None


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path, docs_dir, vocab):
    tmp_path.mkdir(exist_ok=True)
    stale = [tmp_path / ".train.bin.abc123.tmp", tmp_path / ".val.json.x.tmp"]
    other = tmp_path / ".checkpoint.pt.q.tmp"  # not ours: kept
    for p in stale + [other]:
        p.write_bytes(b"partial")
    encode_corpus([docs_dir], tmp_path, vocab, workers=1, verbose=False)
    assert not any(p.exists() for p in stale) and other.exists()


# ------------------------------------------------------------------------------- one text file
def _encode_one_file(tmp_path, text, fraction=0.2):
    f = tmp_path / "book.txt"
    f.write_text(text, encoding="utf-8")
    enc, bpe = tmp_path / "v" / "enc.json", tmp_path / "v" / "merges.bpe"
    learn_bpe(list(read_documents([f])), 40, enc, bpe)
    metas = encode_corpus([f], tmp_path / "tok", (enc, bpe), val_fraction=fraction, workers=1, seed=3, verbose=False)
    return metas, TextEncoder(str(enc), str(bpe))


def test_one_text_file_is_split_into_documents_at_blank_lines(tmp_path):
    paras = [f"the cat number {i} sat on the mat .\nit was happy ." for i in range(10)]
    text = "\n\n".join(paras[:5]) + "\n \n\n" + "\n\n".join(paras[5:]) + "\n"  # a blank line may hold spaces
    metas, te = _encode_one_file(tmp_path, text)
    assert metas["train"]["documents"] + metas["val"]["documents"] == 10 and metas["val"]["documents"] == 2
    assert len(list(read_documents([tmp_path / "book.txt"]))) == 10  # the vocabulary learner sees the same
    train, val = open_split(tmp_path / "tok", "train").tokens, open_split(tmp_path / "tok", "val").tokens
    want = sorted(te.encode(paras))
    got_val = [list(val[:len(val) // 2]), list(val[len(val) // 2:])]
    assert all(g in want for g in got_val) and len(train) + len(val) == sum(map(len, want))


def test_one_paragraph_holds_out_its_tail(tmp_path):
    text = " ".join(f"word{i % 7} and more" for i in range(200))  # no blank line: one document
    metas, te = _encode_one_file(tmp_path, text, fraction=0.1)
    ids = te.encode([text])[0]
    train, val = open_split(tmp_path / "tok", "train").tokens, open_split(tmp_path / "tok", "val").tokens
    n_val = round(len(ids) * 0.1)
    assert list(train) == ids[:-n_val] and list(val) == ids[-n_val:]  # the end, as nanoGPT holds out
    assert metas["val"]["tokens"] == n_val and metas["train"]["tokens"] == len(ids) - n_val
