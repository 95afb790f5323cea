"""Small synthetic datasets in the exact public layout of each of the paper's datasets, for tests.

    write_fixture("sst-2", tmp_path / "SST-2", n_rows=64, seed=0) -> the folder

writes every split the dataset has (train: `n_rows` rows; dev and test: `n_eval`, default
max(8, n_rows // 4)), with the headers, column order, label spelling and unlabelled test files of
the real distribution (GLUE TSV, SNLI jsonl, SciTail TSV, RACE JSON files). The labels follow from
one word of the text, so a tiny model trained from scratch beats chance in a few steps:

- classification: the sentence holds a positive (label 1) or a negative (label 0) adjective;
- entailment: the hypothesis holds a marker word per label ("indeed" / "never" / "perhaps");
- similarity: the second text holds "same" (label 1) or "other" (label 0); STS-B's score is the
  number word it holds ("zero" ... "five") plus a little noise;
- multiple choice (RACE): the right option is a colour named in the article, the others are animals;
  (rocstories) gpt1_fast.synthetic's stories: the right ending follows the story's turn.

RACE fixtures (race, race-m, race-h alike) hold both levels, `n_rows` questions in all, two an article.
Deterministic: the same arguments write the same bytes. `CountingEncoder` stands in for the BPE.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from gpt1_fast import synthetic
from gpt1_fast.tasks import rocstories

POSITIVE = ("good", "great", "fine", "happy", "nice", "lovely")
NEGATIVE = ("bad", "awful", "poor", "sad", "ugly", "dull")
SUBJECTS = ("the movie", "a story", "this film", "the plot", "an actor", "the music", "a scene", "the cast")
VERBS = ("is playing", "is reading", "is watching", "is eating", "is holding", "is painting")
OBJECTS = ("a guitar", "the book", "a ball", "the bread", "a flower", "the picture", "a letter")
NLI_MARKERS = {"entailment": "indeed", "contradiction": "never", "neutral": "perhaps",
               "not_entailment": "never", "entails": "indeed", "1": "indeed", "0": "never"}  # WNLI: 1 entails
NUMBERS = ("zero", "one", "two", "three", "four", "five")
COLOURS = ("red", "blue", "green", "yellow", "white", "black")
ANIMALS = ("dog", "cat", "horse", "bird", "fish", "mouse")

GLUE_DIRS = {"sst-2": "SST-2", "cola": "CoLA", "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "qqp": "QQP",
             "mrpc": "MRPC", "sts-b": "STS-B", "snli": "snli_1.0", "scitail": "SciTailV1.1/tsv_format",
             "race": "RACE", "race-m": "RACE", "race-h": "RACE", "wnli": "WNLI"}


# ------------------------------------------------------------------------------------------ sentences
def _sentence(rng, label):
    return f"{rng.choice(SUBJECTS)} was {rng.choice(POSITIVE if label else NEGATIVE)} ."


def _premise(rng):
    return f"a man {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."


def _hypothesis(rng, label_name):
    return f"{NLI_MARKERS[label_name]} someone {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."


def _pair(rng, label):
    a = f"how do i find {rng.choice(OBJECTS)} ?"
    return a, f"{'same' if label else 'other'} way to find {rng.choice(OBJECTS)} ?"


# ---------------------------------------------------------------------------------------------- files
def _write(path: Path, lines, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "".join(line + "\n" for line in lines), encoding="utf-8")


def _tsv(path, header, rows, bom=False):
    _write(path, (["\t".join(header)] if header else []) + ["\t".join(map(str, r)) for r in rows], bom)


def _labels(rng, names, n):
    return [rng.randrange(len(names)) for _ in range(n)]


def _sst2(folder, split, rng, n, test):
    if test:
        return _tsv(folder / "test.tsv", ["index", "sentence"], [(i, _sentence(rng, rng.randrange(2))) for i in range(n)])
    # the real SST-2 has a space before the tab
    _tsv(folder / f"{split}.tsv", ["sentence", "label"], [(_sentence(rng, y) + " ", y) for y in _labels(rng, "01", n)])


def _cola(folder, split, rng, n, test):
    if test:
        return _tsv(folder / "test.tsv", ["index", "sentence"], [(i, _sentence(rng, rng.randrange(2))) for i in range(n)])
    rows = [("gj04", y, "" if y else "*", _sentence(rng, y)) for y in _labels(rng, "01", n)]
    _tsv(folder / f"{split}.tsv", None, rows)  # CoLA train/dev: no header


_MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
_NLI3 = ("contradiction", "entailment", "neutral")


def _mnli_row(rng, i, label):
    p, h = _premise(rng), _hypothesis(rng, label or rng.choice(_NLI3))
    parse = lambda s: "( " + s + " )"  # noqa: E731
    return [i, 1000 + i, f"{1000 + i}{(label or 'x')[0]}", "fiction", parse(p), parse(h),
            f"(ROOT {parse(p)})", f"(ROOT {parse(h)})", p, h]


def _mnli(folder, split, rng, n, test):
    if test:
        return _tsv(folder / f"{split}.tsv", _MNLI_HEAD, [_mnli_row(rng, i, None) for i in range(n)])
    labels = [_NLI3[y] for y in _labels(rng, _NLI3, n)]
    if split == "train":  # train: label1, gold_label; dev: label1..label5, gold_label
        head, rows = _MNLI_HEAD + ["label1", "gold_label"], [_mnli_row(rng, i, y) + [y, y] for i, y in enumerate(labels)]
    else:
        head = _MNLI_HEAD + [f"label{k}" for k in range(1, 6)] + ["gold_label"]
        rows = [_mnli_row(rng, i, y) + [y] * 6 for i, y in enumerate(labels)]
    _tsv(folder / f"{split}.tsv", head, rows)


def _two_class_nli(columns, names=("entailment", "not_entailment")):
    def write(folder, split, rng, n, test):
        labels = [names[y] for y in _labels(rng, names, n)] if not test else [rng.choice(names) for _ in range(n)]
        rows = [[i, _premise(rng), _hypothesis(rng, y)] + ([] if test else [y]) for i, y in enumerate(labels)]
        _tsv(folder / f"{split}.tsv", ["index", *columns] + ([] if test else ["label"]), rows)
    return write


def _qqp(folder, split, rng, n, test):
    if test:
        return _tsv(folder / "test.tsv", ["id", "question1", "question2"],
                    [(i, *_pair(rng, rng.randrange(2))) for i in range(n)])
    rows = [(i, 2 * i + 1, 2 * i + 2, *_pair(rng, y), y) for i, y in enumerate(_labels(rng, "01", n))]
    _tsv(folder / f"{split}.tsv", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], rows)


def _mrpc(folder, split, rng, n, test):
    strings = ["#1 ID", "#2 ID", "#1 String", "#2 String"]
    if test:
        return _tsv(folder / "test.tsv", ["index", *strings],
                    [(i, 100 + i, 200 + i, *_pair(rng, rng.randrange(2))) for i in range(n)])
    rows = [(y, 100 + i, 200 + i, *_pair(rng, y)) for i, y in enumerate(_labels(rng, "01", n))]
    # train/dev keep the UTF-8 BOM of msr_paraphrase_train.txt, whose header line the GLUE script copies
    _tsv(folder / f"{split}.tsv", ["Quality", *strings], rows, bom=True)


def _stsb(folder, split, rng, n, test):
    head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
    rows = []
    for i in range(n):
        k = rng.randrange(len(NUMBERS))
        a = f"a man {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
        b = f"{NUMBERS[k]} men {rng.choice(VERBS)} {rng.choice(OBJECTS)} ."
        score = min(5.0, max(0.0, k + rng.uniform(-0.3, 0.3)))
        rows.append([i, "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b]
                    + ([] if test else [f"{score:.3f}"]))
    _tsv(folder / f"{split}.tsv", head + ([] if test else ["score"]), rows)


def _snli(folder, split, rng, n, test):
    lines = []
    for i, y in enumerate(_labels(rng, _NLI3, n)):
        p, h = _premise(rng), _hypothesis(rng, _NLI3[y])
        lines.append(json.dumps({"annotator_labels": [_NLI3[y]], "captionID": f"{i}.jpg#0",
                                 "gold_label": _NLI3[y], "pairID": f"{i}.jpg#0r1{_NLI3[y][0]}",
                                 "sentence1": p, "sentence1_binary_parse": f"( {p} )",
                                 "sentence1_parse": f"(ROOT ( {p} ))", "sentence2": h,
                                 "sentence2_binary_parse": f"( {h} )", "sentence2_parse": f"(ROOT ( {h} ))"}))
        if i % 10 == 3:  # no annotator majority: the format marks it "-", the reader drops it
            lines.append(json.dumps({"annotator_labels": ["neutral", "entailment"], "captionID": f"{i}.jpg#1",
                                     "gold_label": "-", "pairID": f"{i}.jpg#1r1x", "sentence1": p,
                                     "sentence2": _hypothesis(rng, "neutral")}))
    _write(folder / f"snli_1.0_{split}.jsonl", lines)


def _scitail(folder, split, rng, n, test):
    names = ("entails", "neutral")
    rows = [(_premise(rng), _hypothesis(rng, names[y]), names[y]) for y in _labels(rng, names, n)]
    _tsv(folder / f"scitail_1.0_{split}.tsv", None, rows)  # no header


def _race(folder, split, rng, n, test):
    k = 0
    while k < n:  # articles of two questions (the last may have one), alternately middle and high
        level = ("middle", "high")[(k // 2) % 2]
        number = k // 2 + 1
        questions, options, answers = [], [], []
        facts = []
        for _ in range(min(2, n - k)):
            thing, colour = rng.choice(OBJECTS).split()[-1], rng.choice(COLOURS)
            facts.append(f"the {thing} was {colour} .")
            right = rng.randrange(4)
            opts = rng.sample(ANIMALS, 4)
            opts[right] = colour
            questions.append(f"what colour was the {thing} ?")
            options.append(opts)
            answers.append("ABCD"[right])
            k += 1
        article = " ".join(facts + [f"{rng.choice(SUBJECTS)} was {rng.choice(POSITIVE)} ."])
        obj = {"answers": answers, "options": options, "questions": questions, "article": article,
               "id": f"{level}{number}.txt"}
        _write(folder / split / level / f"{number}.txt", [json.dumps(obj)])


def _rocstories(folder, split, rng, n, test):
    name = rocstories.VAL_FILE if split == "train" else rocstories.TEST_FILE
    synthetic.write_csv(Path(folder) / name, synthetic.story_rows(n, seed=rng.getrandbits(32)))


_WRITERS = {"rocstories": _rocstories, "sst-2": _sst2, "cola": _cola, "mnli": _mnli, "qnli": _two_class_nli(["question", "sentence"]),
            "rte": _two_class_nli(["sentence1", "sentence2"]), "qqp": _qqp, "mrpc": _mrpc, "sts-b": _stsb,
            "snli": _snli, "scitail": _scitail, "race": _race, "race-m": _race, "race-h": _race,
            "wnli": _two_class_nli(["sentence1", "sentence2"], ("0", "1"))}
_SPLITS = {"mnli": ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched"),
           "rocstories": ("train", "test")}
_LABELLED_TEST = {"rocstories", "snli", "scitail", "race", "race-m", "race-h"}  # their test files carry labels


class WordEncoder:
    """A text encoder for tests: one id per whitespace-separated word (no spaCy, no BPE)."""
    n_vocab = 1000

    def __init__(self):
        self.table = {}

    def encode(self, texts, verbose=False):
        return [[self.table.setdefault(w, len(self.table) + 1) for w in t.split()] for t in texts]


def write_fixture(name, folder, n_rows, seed, n_eval=None) -> Path:
    """Write dataset `name` (a key of gpt1_fast.tasks.readers.DATASETS) under `folder`; -> folder."""
    folder = Path(folder)
    n_eval = max(8, n_rows // 4) if n_eval is None else n_eval
    for k, split in enumerate(_SPLITS.get(name, ("train", "dev", "test"))):
        rng = random.Random(f"{name}:{seed}:{split}")
        test = split.startswith("test") and name not in _LABELLED_TEST
        _WRITERS[name](folder, split, rng, n_rows if split == "train" else n_eval, test)
    return folder


class CountingEncoder:
    """Stand-in text encoder: one id per whitespace word (ids from a growing table, below n_vocab);
    counts its calls, so a test sees what came from the encoding cache."""

    def __init__(self, n_vocab: int = 1000):
        self.calls, self.table, self.n_vocab = 0, {}, n_vocab

    def encode(self, texts, verbose=False):
        self.calls += 1
        out = [[self.table.setdefault(w, len(self.table) + 1) for w in t.split()] for t in texts]
        assert len(self.table) < self.n_vocab, "more words than the stand-in vocabulary holds"
        return out

    def decode(self, ids) -> str:
        words = {v: k for k, v in self.table.items()}
        return " ".join(words[i] for i in ids)


def story_cloze_with_vocab(folder: Path, n: int, n_test: int, seed: int, merges: int, vocab_dir: Path | None = None):
    """Synthetic Story Cloze files in folder/data and a BPE vocabulary learned from the val file's
    stories and endings (vocab_dir/enc.json, vocab_dir/merges.bpe; default: folder). -> the val Stories."""
    from gpt1_fast.text import learn_bpe

    vocab_dir = vocab_dir or folder
    synthetic.write_rocstories(folder / "data", n=n, n_test=n_test, seed=seed)
    val = rocstories.read_csv(folder / "data" / rocstories.VAL_FILE)
    learn_bpe(val.stories + val.endings1 + val.endings2, merges, vocab_dir / "enc.json", vocab_dir / "merges.bpe")
    return val
