"""gpt1_fast.tasks.readers on files in the exact public layout of each dataset.

The literal rows below are copied from the distributed files (GLUE's TSVs as the GLUE download
script writes them, SNLI 1.0 jsonl, SciTail's tsv_format, RACE's per-article JSON), so a reader
that reads the wrong column, skips no header, or shifts a label fails here.
"""
import json
import re

import numpy as np
import pytest

from fixtures_tasks import NLI_MARKERS, NUMBERS, POSITIVE, write_fixture
from gpt1_fast.tasks.readers import DATASETS, DataError, describe, read_split

T = "\t"


def write(folder, name, text, encoding="utf-8"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def tsv(*rows):
    return "".join(T.join(r) + "\n" for r in rows)


def error(spec, folder, split, pattern):
    with pytest.raises(DataError) as e:
        read_split(spec, folder, split)
    assert re.search(pattern, str(e.value)), str(e.value)
    return str(e.value)


# ------------------------------------------------------------------------------------ classification
def test_sst2_train_and_unlabelled_test(tmp_path):
    write(tmp_path, "train.tsv", tsv(("sentence", "label"),
                                     ("hide new secretions from the parental units ", "0"),
                                     ("that loves its characters and communicates something rather beautiful ", "1"),
                                     ('" a sometimes tedious film . ', "0")))
    s = read_split("sst-2", tmp_path, "train")
    assert s.fields["text"] == ["hide new secretions from the parental units ",
                                "that loves its characters and communicates something rather beautiful ",
                                '" a sometimes tedious film . ']  # a leading quote is text: quoting is off
    assert s.labels.tolist() == [0, 1, 0] and s.labels.dtype == np.int64
    assert s.ids == ["0", "1", "2"] and s.notes == []
    write(tmp_path, "test.tsv", tsv(("index", "sentence"), ("0", "uneasy mishmash of styles and genres ."),
                                    ("1", "this film 's relationship to actual tension is the same .")))
    t = read_split("sst-2", tmp_path, "test")
    assert t.labels is None and t.ids == ["0", "1"]
    assert t.fields["text"] == ["uneasy mishmash of styles and genres .",
                                "this film 's relationship to actual tension is the same ."]


def test_cola_train_has_no_header_its_test_has_one(tmp_path):
    write(tmp_path, "train.tsv", tsv(("gj04", "1", "", "Our friends won't buy this analysis, let alone the next one."),
                                     ("gj04", "0", "*", "They drank the pub."),
                                     ("gj04", "1", "", "The pond froze solid.")))
    s = read_split("cola", tmp_path, "train")
    assert s.fields["text"] == ["Our friends won't buy this analysis, let alone the next one.",
                                "They drank the pub.", "The pond froze solid."]
    assert s.labels.tolist() == [1, 0, 1] and s.ids == ["0", "1", "2"]
    write(tmp_path, "test.tsv", tsv(("index", "sentence"), ("0", "Bill whistled past the house."),
                                    ("1", "The car honked its way down the road.")))
    t = read_split("cola", tmp_path, "test")
    assert t.labels is None and t.ids == ["0", "1"]
    assert t.fields["text"] == ["Bill whistled past the house.", "The car honked its way down the road."]


def test_cola_train_with_a_header_is_an_error(tmp_path):
    write(tmp_path, "dev.tsv", tsv(("sentence", "label"), ("The pond froze solid.", "1")))
    error("cola", tmp_path, "dev", r"dev\.tsv:1: expected 4 tab-separated columns .*found 2")
    write(tmp_path, "dev.tsv", tsv(("source", "label", "judgement", "sentence"), ("gj04", "1", "", "Ok.")))
    error("cola", tmp_path, "dev", r"dev\.tsv:1: expected a label in \{0, 1\}, found 'label'")


# ---------------------------------------------------------------------------------------- entailment
MNLI_HEAD = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
MNLI_ROW = ("0", "31193", "31193n", "government", "( ( Conceptually ( cream skimming ) ) ... )",
            "( ( ( Product and ) geography ) ... )", "(ROOT (S (NP (JJ Conceptually) ...)))",
            "(ROOT (S (NP (NN Product) ...)))",
            "Conceptually cream skimming has two basic dimensions - product and geography.",
            "Product and geography are what make cream skimming work. ")


def test_mnli_train_dev_and_test_widths(tmp_path):
    write(tmp_path, "train.tsv", tsv(MNLI_HEAD + ("label1", "gold_label"), MNLI_ROW + ("neutral", "neutral"),
                                     ("1",) + MNLI_ROW[1:8] + ("P two.", "H two.", "entailment", "contradiction")))
    s = read_split("mnli", tmp_path, "train")
    assert s.fields["premise"] == [MNLI_ROW[8], "P two."]
    assert s.fields["hypothesis"] == [MNLI_ROW[9], "H two."]
    assert s.labels.tolist() == [2, 0]  # gold_label (last), not label1; contradiction, entailment, neutral
    assert s.ids == ["0", "1"]
    dev_head = MNLI_HEAD + ("label1", "label2", "label3", "label4", "label5", "gold_label")
    write(tmp_path, "dev_mismatched.tsv", tsv(dev_head, ("7",) + MNLI_ROW[1:] + ("neutral", "entailment",
                                              "entailment", "entailment", "neutral", "entailment")))
    d = read_split("mnli", tmp_path, "dev_mismatched")
    assert d.labels.tolist() == [1] and d.ids == ["7"] and d.fields["premise"] == [MNLI_ROW[8]]
    write(tmp_path, "test_matched.tsv", tsv(MNLI_HEAD, ("12",) + MNLI_ROW[1:]))
    t = read_split("mnli", tmp_path, "test_matched")
    assert t.labels is None and t.ids == ["12"] and t.fields["hypothesis"] == [MNLI_ROW[9]]
    assert DATASETS["mnli"].eval_splits == ("dev_matched", "dev_mismatched")
    assert DATASETS["mnli"].test_splits == ("test_matched", "test_mismatched")


def test_qnli_and_rte(tmp_path):
    q = tmp_path / "QNLI"
    write(q, "dev.tsv", tsv(("index", "question", "sentence", "label"),
                            ("0", "What came into force after the new constitution was herald?",
                             "As of that day, the new constitution heralding the Second Republic came into force.",
                             "entailment"),
                            ("1", "What is the first major city in the stream of the Rhine?",
                             "The most important tributaries in this area are the Ill below of Strasbourg.",
                             "not_entailment")))
    s = read_split("qnli", q, "dev")
    assert s.fields["premise"][1] == "What is the first major city in the stream of the Rhine?"
    assert s.fields["hypothesis"][0].startswith("As of that day")
    assert s.labels.tolist() == [0, 1] and s.ids == ["0", "1"]
    r = tmp_path / "RTE"
    write(r, "train.tsv", tsv(("index", "sentence1", "sentence2", "label"),
                              ("0", "No Weapons of Mass Destruction Found in Iraq Yet.",
                               "Weapons of Mass Destruction Found in Iraq.", "not_entailment"),
                              ("1", "A place of sorrow, after Pope John Paul II died, became a place of celebration.",
                               "Pope Benedict XVI is the new leader of the Roman Catholic Church.", "entailment")))
    s = read_split("rte", r, "train")
    assert s.labels.tolist() == [1, 0]
    assert s.fields["hypothesis"][0] == "Weapons of Mass Destruction Found in Iraq."
    write(r, "test.tsv", tsv(("index", "sentence1", "sentence2"), ("0", "Mangla was an Indian singer.", "She sang.")))
    t = read_split("rte", r, "test")
    assert t.labels is None and t.fields["premise"] == ["Mangla was an Indian singer."]


def test_scitail_tsv_has_no_header(tmp_path):
    write(tmp_path, "scitail_1.0_dev.tsv", tsv(
        ("Pluto rotates once on its axis every 6.39 Earth days.", "Earth rotates on its axis once times in one day.",
         "neutral"),
        ("Moon, which orbits Earth once a month.", "The moon revolves around the earth.", "entails")))
    s = read_split("scitail", tmp_path, "dev")
    assert s.fields["premise"][0].startswith("Pluto") and s.fields["hypothesis"][1].startswith("The moon")
    assert s.labels.tolist() == [1, 0] and s.ids == ["0", "1"]
    write(tmp_path, "scitail_1.0_test.tsv", tsv(("premise", "hypothesis", "label"), ("a", "b", "entails")))
    error("scitail", tmp_path, "test", r"scitail_1\.0_test\.tsv:1: expected a label in \{entails, neutral\}, "
                                       r"found 'label'")


def _snli(label, pair, s1="A person on a horse jumps over a broken down airplane.",
          s2="A person is training his horse for a competition."):
    return json.dumps({"annotator_labels": [label], "captionID": "3416050480.jpg#4", "gold_label": label,
                       "pairID": pair, "sentence1": s1, "sentence1_binary_parse": "( ( ( A person ) ... )",
                       "sentence1_parse": "(ROOT (S ...))", "sentence2": s2,
                       "sentence2_binary_parse": "( ( A person ) ... )", "sentence2_parse": "(ROOT (S ...))"})


def test_snli_drops_gold_label_dash_and_says_so(tmp_path):
    write(tmp_path, "snli_1.0_train.jsonl", "\n".join([
        _snli("neutral", "3416050480.jpg#4r1n"), _snli("-", "3416050480.jpg#4r1x"),
        _snli("contradiction", "3416050480.jpg#4r1c", s2="A person is at a diner, ordering an omelette."),
        _snli("entailment", "3416050480.jpg#4r1e", s2="A person is outdoors, on a horse.")]) + "\n")
    s = read_split("snli", tmp_path, "train")
    assert s.ids == ["3416050480.jpg#4r1n", "3416050480.jpg#4r1c", "3416050480.jpg#4r1e"]
    assert s.labels.tolist() == [2, 0, 1]
    assert s.fields["hypothesis"][1] == "A person is at a diner, ordering an omelette."
    assert s.fields["premise"][0] == "A person on a horse jumps over a broken down airplane."
    assert len(s.notes) == 1 and "dropped 1 rows with gold_label '-'" in s.notes[0]


def test_snli_malformed_lines(tmp_path):
    write(tmp_path, "snli_1.0_dev.jsonl", _snli("neutral", "a") + "\n{not json\n")
    error("snli", tmp_path, "dev", r"snli_1\.0_dev\.jsonl:2: expected one JSON object a line, found invalid JSON")
    write(tmp_path, "snli_1.0_dev.jsonl", _snli("neutral", "a") + "\n" + json.dumps({"sentence1": "x"}) + "\n")
    error("snli", tmp_path, "dev", r"snli_1\.0_dev\.jsonl:2: expected an object with the keys sentence1, "
                                   r"sentence2, gold_label, pairID, found \['sentence1'\]")
    write(tmp_path, "snli_1.0_dev.jsonl", _snli("entails", "a") + "\n")
    error("snli", tmp_path, "dev", r"snli_1\.0_dev\.jsonl:1: expected a label in \{contradiction, entailment, "
                                   r"neutral\}, found 'entails'")


# ---------------------------------------------------------------------------------------- similarity
MRPC_HEAD = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")


def test_mrpc_bom_quotes_and_test_index(tmp_path):
    write(tmp_path, "train.tsv", "\ufeff" + tsv(
        MRPC_HEAD,
        ("1", "702876", "702977", 'Amrozi accused his brother , whom he called " the witness " , of deliberately '
         'distorting his evidence .', 'Referring to him as only " the witness " , Amrozi accused his brother .'),
        ("0", "2108705", "2108831", '"Yucaipa owned Dominick \'s before selling the chain',
         "Yucaipa bought Dominick 's in 1995 for $ 693 million .")))
    s = read_split("mrpc", tmp_path, "train")
    assert s.labels.tolist() == [1, 0] and s.ids == ["0", "1"]
    assert s.fields["text_a"][1] == '"Yucaipa owned Dominick \'s before selling the chain'
    assert s.fields["text_b"][0] == 'Referring to him as only " the witness " , Amrozi accused his brother .'
    write(tmp_path, "test.tsv", tsv(("index",) + MRPC_HEAD[1:],
                                    ("0", "1089874", "1089925", "PCCW 's chief operating officer will report .",
                                     "Current Chief Operating Officer Mike Butcher will report to So .")))
    t = read_split("mrpc", tmp_path, "test")
    assert t.labels is None and t.ids == ["0"] and t.fields["text_a"] == ["PCCW 's chief operating officer will report ."]
    assert DATASETS["mrpc"].metrics == ("f1", "accuracy")


QQP_HEAD = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")


def test_qqp_columns_and_broken_rows(tmp_path):
    write(tmp_path, "train.tsv", tsv(
        QQP_HEAD,
        ("201359", "303345", "303346", "Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", "0"),
        ("172974", "266948", "175089", "Is there a reason why we should travel alone?",
         "What are some reasons to travel alone?", "1"),
        ("15329", "29298", "29299", "Why are people so obsessed with having a girlfriend"),  # broken across lines
        ("boyfriend?", "How can a single male have a child?", "0"),
        ("209794", "314169", "314170", "Good baby girl names starting with D?", "Starting with D or H?", "0")))
    s = read_split("qqp", tmp_path, "train")
    assert s.ids == ["201359", "172974", "209794"] and s.labels.tolist() == [0, 1, 0]
    assert s.fields["text_a"][1] == "Is there a reason why we should travel alone?"
    assert s.fields["text_b"][0] == "Why are hispanics so beautiful?"
    assert len(s.notes) == 1 and "dropped 2 rows with fewer than 6 columns" in s.notes[0] and "lines 4, 5" in s.notes[0]
    write(tmp_path, "test.tsv", tsv(("id", "question1", "question2"),
                                    ("0", "How does the Surface Pro himself 4 compare with iPad Pro?",
                                     "Why did Microsoft choose core m3 and not core i3 home Surface Pro 4?"),
                                    ("1", "Should I have a hair transplant at age 24?")))
    error("qqp", tmp_path, "test", r"test\.tsv:3: expected 3 tab-separated columns \(id, question1, question2\), "
                                   r"found 2")  # a submission needs every test row: nothing dropped there
    write(tmp_path, "dev.tsv", tsv(QQP_HEAD, ("1", "2", "3", "a?", "b?", "0", "extra")))
    error("qqp", tmp_path, "dev", r"dev\.tsv:2: expected 6 tab-separated columns .*found 7")


STSB_HEAD = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")


def test_stsb_scores_are_float_regression_targets(tmp_path):
    write(tmp_path, "train.tsv", tsv(
        STSB_HEAD + ("score",),
        ("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
         "An air plane is taking off.", "5.000"),
        ("1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a large flute.",
         "A man is playing a flute.", "3.800"),
        ("2", "main-news", "MSRpar", "2012train", "0695", "none", "none", "The economy has yet to grow.",
         "But the economy has not grown.", "0.000")))
    s = read_split("sts-b", tmp_path, "train")
    assert s.labels.dtype == np.float32 and s.labels.tolist() == pytest.approx([5.0, 3.8, 0.0])
    assert s.fields["text_a"][1] == "A man is playing a large flute." and s.fields["text_b"][0] == "An air plane is taking off."
    assert s.ids == ["0", "1", "2"] and DATASETS["sts-b"].label_names is None
    write(tmp_path, "dev.tsv", tsv(STSB_HEAD + ("score",), ("0",) + STSB_HEAD[1:7] + ("a", "b", "5.2")))
    error("sts-b", tmp_path, "dev", r"dev\.tsv:2: expected a score between 0 and 5, found '5.2'")
    write(tmp_path, "dev.tsv", tsv(STSB_HEAD + ("score",), ("0",) + STSB_HEAD[1:7] + ("a", "b", "high")))
    error("sts-b", tmp_path, "dev", r"dev\.tsv:2: expected a score between 0 and 5, found 'high'")
    write(tmp_path, "test.tsv", tsv(STSB_HEAD, ("9",) + STSB_HEAD[1:7] + ("a man", "a woman")))
    t = read_split("sts-b", tmp_path, "test")
    assert t.labels is None and t.ids == ["9"] and t.fields["text_b"] == ["a woman"]


# ------------------------------------------------------------------------------------ multiple choice
def _race_file(folder, split, level, number, questions, options, answers, article="An article."):
    obj = {"answers": answers, "options": options, "questions": questions, "article": article,
           "id": f"{level}{number}.txt"}
    return write(folder / split / level, f"{number}.txt", json.dumps(obj))


def test_race_articles_questions_and_levels(tmp_path):
    opts = [["a kite", "a bike", "a book", "a cat"], ["Monday", "Tuesday", "Friday", "Sunday"]]
    _race_file(tmp_path, "dev", "middle", 10, ["What did Tom buy?", "When did he buy it _ ."], opts, ["C", "A"],
               article="Tom bought a book on Monday.")
    _race_file(tmp_path, "dev", "middle", 2, ["Who?"], [["w", "x", "y", "z"]], ["D"])
    _race_file(tmp_path, "dev", "high", 1, ["Why?"], [["p", "q", "r", "s"]], ["B"])
    s = read_split("race", tmp_path, "dev")
    assert s.ids == ["middle2.txt-0", "middle10.txt-0", "middle10.txt-1", "high1.txt-0"]  # natural file order
    assert s.labels.tolist() == [3, 2, 0, 1]
    assert s.fields["context"][1] == "Tom bought a book on Monday." and s.fields["question"][1] == "What did Tom buy?"
    assert s.fields["context"][2] == "Tom bought a book on Monday." and s.fields["question"][2] == "When did he buy it _ ."
    assert s.groups == {"middle": [0, 1, 2], "high": [3]}  # each question keeps its level
    assert s.fields["choices"][2] == opts[1]
    m = read_split("race-m", tmp_path, "dev")
    h = read_split("race-h", tmp_path, "dev")
    assert m.ids == s.ids[:3] and h.ids == ["high1.txt-0"] and DATASETS["race"].n_choices == 4


def test_race_malformed(tmp_path):
    (tmp_path / "test" / "high").mkdir(parents=True)
    _race_file(tmp_path, "test", "middle", 1, ["Q?"], [["a", "b", "c"]], ["A"])
    error("race", tmp_path, "test", r"middle/1\.txt: questions\[0\]: expected 4 options, found 3")
    _race_file(tmp_path, "test", "middle", 1, ["Q?"], [["a", "b", "c", "d"]], ["E"])
    error("race", tmp_path, "test", r"middle/1\.txt: questions\[0\]: expected a label in \{A, B, C, D\}, found 'E'")
    _race_file(tmp_path, "test", "middle", 1, ["Q?", "R?"], [["a", "b", "c", "d"]], ["A"])
    error("race", tmp_path, "test", r"middle/1\.txt: expected lists .* of one length, found 2, 1 and 1")
    _race_file(tmp_path, "test", "middle", 1, 3, [["a", "b", "c", "d"]], ["A"])  # `questions` not a list
    error("race", tmp_path, "test", r"middle/1\.txt: expected lists .* of one length, found int \(not a list\), 1 and 1")
    _race_file(tmp_path, "test", "middle", 1, [["Q?"]], [["a", "b", "c", "d"]], ["A"])
    error("race", tmp_path, "test", r"middle/1\.txt: questions\[0\]: expected the question and its options as strings, "
                                    r"found \['Q\?'\]")
    _race_file(tmp_path, "test", "middle", 1, ["Q?"], [["a", "b", None, "d"]], ["A"])
    error("race", tmp_path, "test", r"questions\[0\]: expected the question and its options as strings, found None")
    _race_file(tmp_path, "test", "middle", 1, ["Q?"], [["a", "b", "c", "d"]], ["A"], article=["An", "article"])
    error("race", tmp_path, "test", r"middle/1\.txt: expected the article as a string, found list")
    write(tmp_path / "test" / "middle", "1.txt", '{"article": "x",\n "questions": [}')
    error("race", tmp_path, "test", r"middle/1\.txt:2: expected a JSON object, found invalid JSON")
    (tmp_path / "test" / "middle" / "1.txt").unlink()
    (tmp_path / "test" / "high").rmdir()
    error("race", tmp_path, "test", r"test/high: not found; expected race: train/\{middle,high\}/\*\.txt")
    error("race-m", tmp_path, "test", r"test: expected at least one row, found none")  # middle/ is empty


# ------------------------------------------------------------------------------- malformed, any file
def test_every_error_names_file_and_line(tmp_path):
    head = ("sentence", "label")
    write(tmp_path, "train.tsv", tsv(head, ("fine .", "1"), ("no tab here",)))
    error("sst-2", tmp_path, "train", r"train\.tsv:3: expected 2 tab-separated columns \(sentence, label\), found 1")
    write(tmp_path, "train.tsv", tsv(head, ("fine .", "1"), ("bad .", "2")))
    error("sst-2", tmp_path, "train", r"train\.tsv:3: expected a label in \{0, 1\}, found '2'")
    write(tmp_path, "train.tsv", tsv(("text", "label"), ("fine .", "1")))
    error("sst-2", tmp_path, "train", r"train\.tsv:1: expected a header with the columns sentence, label, "
                                      r"found 'text\\tlabel'")
    write(tmp_path, "dev.tsv", tsv(("sentence",), ("fine .",)))  # a dev file must carry its labels
    error("sst-2", tmp_path, "dev", r"dev\.tsv:1: expected a header with the columns sentence, label")
    write(tmp_path, "train.tsv", "sentence\tlabel\nfine .\t1\n".encode() + b"caf\xe9 .\t1\n")
    error("sst-2", tmp_path, "train", r"train\.tsv:3: expected UTF-8 text, found byte b'\\xe9' at column 4")
    write(tmp_path, "train.tsv", "")
    error("sst-2", tmp_path, "train", r"train\.tsv: expected a header line, found an empty file")
    write(tmp_path, "train.tsv", tsv(head))
    error("sst-2", tmp_path, "train", r"train\.tsv: expected at least one row, found none")
    error("sst-2", tmp_path, "test", r"test\.tsv: not found; expected sst-2: train\.tsv, dev\.tsv, test\.tsv")
    error("sst-2", tmp_path, "dev_matched", r"sst-2 has no split 'dev_matched'; expected one of train, dev, test")
    error("glue", tmp_path, "train", r"unknown dataset 'glue'; expected one of rocstories, snli, mnli")


def test_crlf_and_blank_lines(tmp_path):
    write(tmp_path, "train.tsv", "sentence\tlabel\r\nfine . \t1\r\n\r\nbad .\t0\r\n")
    s = read_split("sst-2", tmp_path, "train")
    assert s.fields["text"] == ["fine . ", "bad ."] and s.labels.tolist() == [1, 0]


def test_specs_and_describe():
    families = {n: s.family for n, s in DATASETS.items()}
    assert families == {"rocstories": "multiple_choice", "snli": "entailment", "mnli": "entailment", "qnli": "entailment", "rte": "entailment",
                        "scitail": "entailment", "qqp": "similarity", "mrpc": "similarity",
                        "sts-b": "similarity", "sst-2": "classification", "cola": "classification",
                        "race": "multiple_choice", "race-m": "multiple_choice", "race-h": "multiple_choice",
                        "wnli": "entailment"}
    for spec in DATASETS.values():
        line = describe(spec)
        assert line.startswith(spec.name + ":") and "\n" not in line
        assert set(spec.eval_splits) <= {*spec.splits, spec.held_out}
    assert "snli_1.0_train.jsonl" in describe("snli") and "dev_mismatched.tsv" in describe("mnli")
    assert describe("rocstories") == ("rocstories: 'cloze_test_val__spring2016 - cloze_test_ALL_val.csv', "
                                      "'cloze_test_test__spring2016 - cloze_test_ALL_test.csv' (Story Cloze Test 2016 CSVs)")


# ------------------------------------------------------------------------------------------ fixtures
def _rule(name, split):
    """The one word that decides each fixture label (tests/fixtures_tasks.py)."""
    spec = DATASETS[name]
    if spec.family == "classification":
        return [int(any(w in t.split() for w in POSITIVE)) for t in split.fields["text"]]
    if spec.family == "entailment":
        marker = {v: k for k, v in NLI_MARKERS.items() if k in spec.label_names}
        return [spec.label_names.index(marker[h.split()[0]]) for h in split.fields["hypothesis"]]
    if name == "sts-b":
        return [NUMBERS.index(b.split()[0]) for b in split.fields["text_b"]]
    if spec.family == "similarity":
        return [int(b.split()[0] == "same") for b in split.fields["text_b"]]
    if name == "rocstories":  # the right ending is the one that follows the story's turn (gpt1_fast.synthetic)
        return [_right_ending(story, choices) for story, choices in zip(split.fields["context"], split.fields["choices"])]
    return [next(i for i, o in enumerate(c) if o in a.split()) for c, a in
            zip(split.fields["choices"], split.fields["context"])]


def _matches(text, templates):
    return any(re.fullmatch(re.sub(r"\\\{\w+\\\}", r"\\w+", re.escape(t)), text) for t in templates)


def _right_ending(story, choices):
    """gpt1_fast.synthetic's rule: the ending that reacts to the fourth sentence's news; None when
    the fourth sentence brings none (a coin flip)."""
    from gpt1_fast import synthetic

    turn = story[story.rstrip(".").rindex(".") + 2:]  # the fourth sentence
    for good in (True, False):
        if _matches(turn, synthetic.S4[good]):
            return next(i for i, c in enumerate(choices) if _matches(c, synthetic.ENDINGS[good]))
    assert _matches(turn, synthetic.S4_NEUTRAL), turn
    return None


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_fixture_writer_round_trips_every_split(tmp_path, name):
    spec = DATASETS[name]
    folder = write_fixture(name, tmp_path / "a", n_rows=24, seed=3)
    write_fixture(name, tmp_path / "b", n_rows=24, seed=3)
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert files and all((folder / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    for split in spec.splits:
        s = read_split(spec, folder, split)
        assert len(s) == len(set(s.ids)) and all(len(v) == len(s) for v in s.fields.values())
        if split == "train" and not name.startswith("race-"):
            assert len(s) == 24
        if s.labels is None:
            assert split.startswith("test")
            continue
        rule = np.asarray(_rule(name, s))
        if name == "rocstories":
            turned = np.array([r is not None for r in rule])
            assert turned.mean() > 0.6 and (s.labels[turned] == rule[turned].astype(int)).all()
        elif name == "sts-b":
            assert np.abs(s.labels - rule).max() <= 0.31
        else:
            assert (s.labels == rule).all()
            if split == "train":
                assert len(set(s.labels.tolist())) > 1  # more than one class: learnable, not constant
