"""The fast paths of text encoding, each against what it replaces: EnglishTokenizer against spaCy's own
tokenizer (settings, special cases loaded on demand, the shortcuts and their proof), the by-word
pre-tokenization against the whole text (a special case across a space), BPE and the merges file
against the release's code (tests/original_encoder.py)."""
import random
import string

import pytest

spacy = pytest.importorskip("spacy")
pytest.importorskip("ftfy")

from original_encoder import EXTRA, OriginalEncoder  # noqa: E402
from regex_alphabet import may_match  # noqa: E402

import gpt1_fast.spacy_tokenizer as st  # noqa: E402
from gpt1_fast.text import TextEncoder, bpe_pieces, read_merges, read_vocab  # noqa: E402


def spacy_tokens(text, tokenizer=None):
    return [t.text for t in (tokenizer or spacy.blank("en").tokenizer)(text)]


@pytest.fixture(scope="module")
def blank():
    return spacy.blank("en").tokenizer


def test_settings_are_spacy_blank_english(blank):
    rules, prefix, suffix, infix, token_match, url_match = st.english_defaults()
    assert rules == blank.rules
    assert [f.__self__.pattern for f in (prefix, suffix, infix)] == \
        [f.__self__.pattern for f in (blank.prefix_search, blank.suffix_search, blank.infix_finditer)]
    assert token_match == blank.token_match and url_match.__self__.pattern == blank.url_match.__self__.pattern
    assert blank.faster_heuristics


def test_verified_rules_never_split_letters_or_digits():
    """The proof behind the shortcuts, for the installed spaCy: no prefix, suffix or infix pattern can
    match inside a string of ASCII letters only, nor of digits only, so spaCy keeps such a piece whole
    unless it is a special case. A spaCy whose rules are not listed gets no shortcut (next test)."""
    et = st.EnglishTokenizer()
    for f in (et._spacy.prefix_search, et._spacy.suffix_search, et._spacy.infix_finditer):
        assert not may_match(f.__self__, string.ascii_letters) and not may_match(f.__self__, string.digits)
    assert et.shortcuts, (f"spaCy {spacy.__version__}: rules fingerprint {st.rules_fingerprint(et._spacy)} is not "
                          "in _VERIFIED_RULES; add it (the proof above holds for it)")
    import re  # the proof tells matching from non-matching patterns

    assert may_match(re.compile("ing$"), string.ascii_letters) and may_match(re.compile(r"[^a-z]"), string.ascii_letters)
    assert not may_match(re.compile(r"(?<=[0-9])km"), string.ascii_letters)
    assert may_match(re.compile(r"(?<=[0-9])km"), string.ascii_letters + string.digits)
    assert not may_match(re.compile(r"\d+\.?"), string.ascii_letters) and may_match(re.compile(r"\d+\.?"), string.digits)


def _pieces():
    """Pieces every path meets: rule keys alone and with affixes, the shapes the shortcuts take or
    refuse, and random strings over letters, digits, punctuation and unicode."""
    blank = spacy.blank("en").tokenizer
    keys = [k for k in blank.rules if not any(c.isspace() for c in k)]
    out = set(keys) | {k + s for k in keys for s in (".", "'s", ",", "s")} | {p + k for k in keys for p in ("x", "1", "$")}
    out |= {"walked.", "Karen's", "1963.", "10km.", "10km", "5k.", "U.S.", "Dr.", "cannot.", "Calif.", "gonna.",
            "a.m.", "A.", "I.", "ab.", "40's.", "don't.", "it's.", "He's", "x:)", "3:45pm", "$1,000", "e.g.", "'s",
            "''", "'", "ok...", "wow!!", "co-op", "C++", "\u00e9t\u00e9.", "na\u00efve", "x\u00b2", "\u00bd"}
    out |= {w for t in EXTRA for w in t.split()}
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + ".'$%:&;-@#" + "\u00e9\u2019\u00b0\u00b2"
    out |= {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(3000)}
    return sorted(out)


def test_pieces_equal_spacy(blank):
    pieces = _pieces()
    et = st.EnglishTokenizer()
    got = et.pieces(pieces)
    assert all(got[p] == tuple(spacy_tokens(p, blank)) for p in pieces), \
        [(p, got[p], spacy_tokens(p, blank)) for p in pieces if got[p] != tuple(spacy_tokens(p, blank))][:5]
    assert et.pieces(pieces) == got  # cached
    assert len(et._loaded) < len(et.rules)  # rules loaded as needed


def test_pieces_holding_nul_go_alone(blank):
    pieces = ["a\x00b", "\x00", "c.", "x\x00.", "don't"]
    assert st.EnglishTokenizer().pieces(pieces) == {p: tuple(spacy_tokens(p, blank)) for p in pieces}


def test_rules_are_loaded_before_spacy_sees_a_text(blank, monkeypatch):
    """Every rule whose key is in a text (whitespace in or out) is loaded first; texts built around
    each key tokenize as with all rules loaded."""
    et = st.EnglishTokenizer()
    assert not et._loaded
    text = "I'm sure it's fine, isn't it? Dr. Who'll say: cannot... " * 3
    assert st.EnglishTokenizer().tokens(text) == spacy_tokens(text, blank)  # the rules found in it
    monkeypatch.setattr(st, "_SCAN_CHARS", 10)  # past the scanning budget: every rule
    everything = st.EnglishTokenizer()
    assert everything.tokens(text) == spacy_tokens(text, blank) and everything._loaded == set(everything.rules)
    monkeypatch.undo()
    for text in ["I'm gonna go.", "a.m. 10a.m.", "x :) (: o.O", "can not cannot"]:
        fresh = st.EnglishTokenizer()
        assert fresh.tokens(text) == spacy_tokens(text, blank)
        squeezed = "".join(text.split())
        assert {k for k in et.rules if k in text or k in squeezed} <= fresh._loaded
    rng = random.Random(1)
    keys = sorted(et.rules)
    for k in keys:
        text = rng.choice([k, f"a {k} b", f"{k}.", f"({k}", f"x{k}", f"{k} {rng.choice(keys)}"])
        assert et.tokens(text) == spacy_tokens(text, blank), text


def _with_rules(monkeypatch, *, rules=None, prefixes=(), suffixes=(), verified=False):
    """EnglishTokenizer's settings changed as given, and the same change made to a spaCy tokenizer."""
    from spacy.lang.en import English
    from spacy.util import compile_prefix_regex, compile_suffix_regex

    d = English.Defaults
    all_rules = {**d.tokenizer_exceptions, **(rules or {})}
    prefix = compile_prefix_regex(list(d.prefixes) + list(prefixes)).search
    suffix = compile_suffix_regex(list(d.suffixes) + list(suffixes)).search
    real = st.english_defaults()
    monkeypatch.setattr(st, "english_defaults", lambda: (all_rules, prefix, suffix, *real[3:]))
    from spacy.tokenizer import Tokenizer

    reference = Tokenizer(spacy.blank("en").vocab, all_rules, prefix, suffix, *real[3:])
    if verified:  # a rule set the proof holds for
        for f in (prefix, suffix):
            assert not may_match(f.__self__, string.ascii_letters) and not may_match(f.__self__, string.digits)
        monkeypatch.setattr(st, "_VERIFIED_RULES", st._VERIFIED_RULES | {st.rules_fingerprint(reference)})
    return reference


def test_unverified_rules_take_no_shortcut(monkeypatch):
    reference = _with_rules(monkeypatch, suffixes=["ing"])  # splits letters: the proof fails
    et = st.EnglishTokenizer()
    assert not et.shortcuts
    pieces = ["walking", "sing.", "ing", "walked."]
    assert et.pieces(pieces) == {p: tuple(spacy_tokens(p, reference)) for p in pieces}
    assert et.pieces(["walking"])["walking"] == ("walk", "ing")


def test_shortcut_conditions(monkeypatch):
    """Each condition of the shortcuts matters for some rule set: a prefix that takes the suffix too,
    a suffix that is a rule splitting it, a suffix of a non-ASCII letter (the proof is for ASCII);
    the run and the piece being rules, and a run that is not plain, are real cases."""
    from spacy.attrs import ORTH

    reference = _with_rules(monkeypatch, prefixes=[r"ab\."], suffixes=["\u00e9"], verified=True,
                            rules={"...": [{ORTH: "."}, {ORTH: ".."}]})
    et = st.EnglishTokenizer()
    assert et.shortcuts
    pieces = ["ab.", "word...", "cannot.", "Calif.", "10km.", "walked.", "caf\u00e9", "caf\u00e9."]
    want = {p: tuple(spacy_tokens(p, reference)) for p in pieces}
    assert want["ab."] == ("ab.",) and want["word..."] == ("word", ".", "..") and want["caf\u00e9"] == ("caf", "\u00e9")
    assert want["cannot."] == ("can", "not", ".") and want["Calif."] == ("Calif.",)
    assert et.pieces(pieces) == want


def test_special_case_across_a_space_tokenizes_the_text_whole(monkeypatch, tmp_path):
    """A rule whose pattern spans a space can hide a shorter one inside a word: with the rules "b:c"
    and "'a:b", "a:b:c" alone gives "b:c" but "' a:b:c" keeps "b" ":" "c" apart. The by-word path must
    see it and tokenize such a text whole."""
    from spacy.attrs import ORTH

    from gpt1_fast.text import learn_bpe

    rules = {"b:c": [{ORTH: "b:c"}], "'a:b": [{ORTH: "'a:b"}], "'_a:b": [{ORTH: "'_a:b"}]}
    reference = _with_rules(monkeypatch, rules=rules)
    assert spacy_tokens("a:b:c", reference) == ["a", ":", "b:c"]
    assert spacy_tokens("' a:b:c", reference) == ["'", "a", ":", "b", ":", "c"]
    assert spacy_tokens("' _ a:b:c", reference) == ["'", "_", "a", ":", "b", ":", "c"]  # "'_a:b:c" standardized
    enc, bpe = tmp_path / "e.json", tmp_path / "m.bpe"
    learn_bpe(["a:b:c ' x"], 5, enc, bpe)
    te, orig = TextEncoder(enc, bpe), OriginalEncoder(enc, bpe)
    for key, tokens in rules.items():
        orig.nlp.tokenizer.add_special_case(key, tokens)
    texts = ["' a:b:c", "x ' a:b:c y", "a:b:c", "'a:b:c", "' a:b:c\n' a:b:c", "'  a:b:c", "'_a:b:c"]
    assert te.encode(texts) == orig.encode(texts)
    from collections import Counter

    from gpt1_fast.text import count_words

    assert count_words(texts) == Counter(t for text in texts for t in orig.tokens(text))
    assert not te.pretokenize.concatenates(te.pretokenize.words("x ' a:b:c y"))
    assert not te.pretokenize.concatenates(te.pretokenize.words("'_a:b:c"))  # across pieces of one word
    assert te.pretokenize.concatenates(te.pretokenize.words("' x a:b:c"))
    assert te.encode(["' a:b:c"]) != te.encode(["'"])[0:1] + te.encode(["a:b:c"])[0:1]


# ------------------------------------------------------------------------------------------------ BPE
def test_bpe_pieces_equal_the_release(tmp_path):
    """Random merge tables over a small alphabet (ties, repeats, merges that create lower-ranked
    pairs, a merge listed twice): every word's pieces as the release's bpe()."""
    rng = random.Random(4)
    for trial in range(30):
        symbols = list("abc") + ["c</w>", "a</w>", "b</w>"]
        merges = []
        for _ in range(rng.randint(1, 25)):
            a, b = rng.choice(symbols), rng.choice([s for s in symbols if not s.endswith("</w>")] + symbols)
            if a.endswith("</w>"):
                continue
            merges.append((a, b))
            symbols.append(a + b)
        merges += rng.sample(merges, k=min(2, len(merges)))  # listed twice: the last rank counts
        bpe_file = tmp_path / f"m{trial}.bpe"
        bpe_file.write_text("#version\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        enc_file = tmp_path / "e.json"
        enc_file.write_text("{}", encoding="utf-8")
        orig = OriginalEncoder.__new__(OriginalEncoder)
        orig.bpe_ranks, orig.cache = dict(zip(merges, range(len(merges)))), {}
        ranks = {f"{a} {b}": r for (a, b), r in orig.bpe_ranks.items()}
        for _ in range(200):
            word = "".join(rng.choice("abc") for _ in range(rng.randint(1, 12)))
            assert " ".join(bpe_pieces(word, ranks, len(merges))) == orig.bpe(word), (merges, word)
        te = TextEncoder(enc_file, bpe_file)
        assert te.bpe("aaaa") == orig.bpe("aaaa") and te.bpe_ranks == orig.bpe_ranks


def test_read_merges_as_the_release(tmp_path):
    f = tmp_path / "m.bpe"
    f.write_text("#version 0.2\na b\nab\tc\r\nx  y\nlast line", encoding="utf-8")  # no final newline: dropped
    assert read_merges(f) == ["a b", "ab c", "x y"]
    (tmp_path / "e.json").write_text("{}", encoding="utf-8")
    assert read_vocab(tmp_path / "e.json", f)[1] == [tuple(line.split()) for line in
                                                     f.read_text(encoding="utf-8").split("\n")[1:-1]]
    for text in ("#v\n", "#v", ""):
        f.write_text(text, encoding="utf-8")
        assert read_merges(f) == []
    for bad, line in (("#v\na b\nabc\n", 3), ("#v\na b c\n", 2), ("#v\na b\n\nc d\n", 3)):
        f.write_text(bad, encoding="utf-8")
        with pytest.raises(ValueError, match=f"m.bpe:{line}: expected a merge"):
            read_merges(f)
