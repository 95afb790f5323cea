"""TextEncoder: ids identical to GPT-1's release on tricky text (real vocabulary, when present), the
original's quirks, and the learned-BPE path (always). The release's loop is tests/original_encoder.py;
the fast paths' own proofs are in tests/test_text_fast.py."""
import json
import random
from pathlib import Path

import pytest

pytest.importorskip("spacy")
pytest.importorskip("ftfy")

from original_encoder import OriginalEncoder, original_punct_regex, original_standardize, sample_texts  # noqa: E402

from gpt1_fast.text import TextEncoder, learn_bpe, text_standardize  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "openai-gpt"


@pytest.fixture(scope="module")
def real():
    enc, bpe = REAL / "encoder_bpe_40000.json", REAL / "vocab_40000.bpe"
    if not (enc.is_file() and bpe.is_file()):
        pytest.skip(f"real GPT-1 vocabulary not found in {REAL}")
    return TextEncoder(enc, bpe)


# (text, expected BPE pieces, expected ids) derived by applying the BPE rules to the spaCy tokens.
CASES = [
    # spaCy splits the final period off "5k." and splits "10km" into number + unit; no merge
    # ('5', 'k</w>') exists, so "5k" stays two pieces.
    ("He ran 5k. Then 10km.",
     ["he</w>", "ran</w>", "5", "k</w>", ".</w>", "then</w>", "10</w>", "km</w>", ".</w>"],
     [487, 1542, 46, 265, 239, 674, 5895, 35677, 239]),
    # Curly quotes -> '"' (ftfy), em dash -> '-', ellipsis -> '...', right single quote -> "'".
    ("\u201cHello,\u201d she said \u2014 \u201cit\u2019s fine\u2026\u201d",
     ['"</w>', "hello</w>", ",</w>", '"</w>', "she</w>", "said</w>", "-</w>", '"</w>', "it</w>", "'s</w>",
      "fine</w>", "...</w>", '"</w>'],
     [244, 3570, 240, 244, 520, 603, 260, 244, 507, 535, 1614, 749, 244]),
    # Any whitespace run holding a newline -> one '\n' token, whose piece '\n  </w>' becomes '\n</w>'.
    ("line one\n\n  line two", ["line</w>", "one</w>", "\n</w>", "line</w>", "two</w>"],
     [1584, 566, 40477, 1584, 867]),
    ("", [], []),
    ("   ", [], []),
    # En dash and horizontal bar -> '-', padded; "3.5kg" -> "3.5" + "kg", "3.5" -> '3.' '5</w>'.
    ("2010\u20132012 \u2015 3.5kg", ["2010</w>", "-</w>", "2012</w>", "-</w>", "3.", "5</w>", "k", "g</w>"], None),
    # Contractions are spaCy exceptions.
    ("don't can't", ["do</w>", "n't</w>", "ca</w>", "n't</w>"], [587, 538, 993, 538]),
]


@pytest.mark.parametrize("text,pieces,ids", CASES, ids=[repr(c[0])[:24] for c in CASES])
def test_real_vocab_ids(real, text, pieces, ids):
    assert real.tokenize(text) == pieces
    got = real.encode([text])[0]
    assert got == [real.encoder[p] for p in pieces]
    if ids is not None:
        assert got == ids


def test_real_vocab_bpe_derivation(real):
    # The hand derivations above rely on these merge-table facts.
    assert ("5", "k</w>") not in real.bpe_ranks
    assert ("k", "m</w>") in real.bpe_ranks and ("k", "g</w>") not in real.bpe_ranks
    assert real.bpe("5k") == "5 k</w>"
    assert real.bpe("10") == "10</w>"


def test_quirks_against_naive(real):
    # (1) spaCy sees the original casing ("Dr." is a tokenizer exception) and lower() comes after;
    # lower-casing first (as transformers' port does) splits it.
    import spacy

    assert real.tokenize("Dr. Smith")[:1] == ["dr.</w>"]
    assert [real.bpe(t.text) for t in spacy.blank("en").tokenizer("dr. smith")][:2] == ["dr</w>", ".</w>"]
    # (2) a whitespace-split "5k." BPE'd as one word differs from the spaCy path.
    assert real.bpe("5k.") == "5 k.</w>"
    assert real.tokenize("5k.") == ["5", "k</w>", ".</w>"]
    # (3) the original's regex string is not raw: backslash runs are NOT padded ("a\\b" stays one
    # token), while "+" runs are.
    assert real.tokenize("a\\b") == ["a", "\\", "b</w>"]
    assert real.tokenize("c++") == ["c</w>", "+</w>", "+</w>"]
    # Unknown pieces map to 0.
    assert real.encode(["\uf8ff"])[0] == [0]


def test_standardize_matches_original_regex():
    """Our pattern against the release's non-raw literal, evaluated by Python exactly as it was."""
    samples = ["a\\\\b--c~~d!!e\"f;g??h++i,j)k(l/m*n[o]p}q{r|s_t", "x \t y\n\n z", "one´s — two…",
               "C:\\path\\to", "", "  lead and trail  ", "a+b-c", "(((nested)))"]
    for s in samples:
        assert text_standardize(s) == original_standardize(s), s


def test_whole_word_entries_are_their_own_bpe(real):
    """The proof behind the whole-word shortcut for the release's vocabulary: BPE makes each of its
    32,581 entries `t</w>` of the token `t`, so a token with such an entry is that piece."""
    from gpt1_fast.text import bpe_pieces

    assert real._whole_words
    entries = [k for k in real.encoder if k.endswith("</w>") and len(k) > 4]
    assert len(entries) == 32581
    assert all(bpe_pieces(k[:-4], real._ranks, real._no_rank) == [k] for k in entries)


def test_whole_word_shortcut_only_for_verified_vocabularies(tmp_path):
    """An entry "ab</w>" that no merge builds: BPE gives "a b</w>", and so must encode."""
    te = write_vocab(tmp_path, {"a": 1, "b</w>": 2, "ab</w>": 5, "c": 3, "cb</w>": 4}, [("c", "b</w>")])
    assert not te._whole_words
    assert te.encode(["ab cb"]) == [[1, 2, 4]]


def test_bpe_cache_and_hf_agreement(real):
    """The BPE step agrees with transformers' independent implementation of the same algorithm on
    every token of a paragraph (its pre-tokenization differs, see test_quirks_against_naive)."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.OpenAIGPTTokenizer(str(REAL / "encoder_bpe_40000.json"), str(REAL / "vocab_40000.bpe"))
    text = ("Karen was assigned a roommate her first year of college. Their first meeting went well! "
            "They watched reruns, e.g. 'Friends', until 3:45am... She'd 1,000,000 reasons; mississippi "
            "antidisestablishmentarianism 12.5% naïve café ½ x²")
    tokens = real.pretokenize(text)
    for t in tokens:
        assert real.bpe(t) == hf.bpe(t), t
    assert all(t in real.cache or len(t) == 1 for t in tokens)


# ------------------------------------------------------------------------------- learned vocabulary
def write_vocab(tmp_path, encoder, merges):
    enc, bpe = tmp_path / "enc.json", tmp_path / "merges.bpe"
    enc.write_text(json.dumps(encoder), encoding="utf-8")
    bpe.write_text("#version: test\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return TextEncoder(enc, bpe)


def test_bpe_merges_lowest_rank_repeatedly(tmp_path):
    """('b','c</w>') (rank 1) creates ('a','bc</w>'), which ranks 0: the original merges it next.
    Applying each merge once in rank order would stop at 'a bc</w>'."""
    te = write_vocab(tmp_path, {"a": 1, "b": 2, "bc</w>": 3, "abc</w>": 4}, [("a", "bc</w>"), ("b", "c</w>")])
    assert te.bpe("abc") == "abc</w>"
    assert te.encode(["abc"]) == [[4]]


def test_bpe_scan_with_repeats(tmp_path):
    """Left-to-right scan with word.index: 'a a a a</w>' merging ('a','a') -> 'aa a a</w>'."""
    te = write_vocab(tmp_path, {"a": 1, "aa": 2, "a</w>": 3}, [("a", "a")])
    assert te.bpe("aaaa") == "aa a a</w>"
    assert te.encode(["aaaa"]) == [[2, 1, 3]]
    assert te.bpe("a") == "a</w>"


def test_learned_bpe_roundtrip(tmp_path):
    texts = ["The quick brown fox jumps over the lazy dog.", "The dog sleeps; the fox runs!",
             "Foxes and dogs \u2014 friends?\nMaybe\u2026", "Numbers: 10km, 5k. (a) [b] {c}"] * 3
    encoder = learn_bpe(texts, 40, tmp_path / "e.json", tmp_path / "m.bpe")
    lines = (tmp_path / "m.bpe").read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#version") and lines[-1] == "" and len(lines) - 2 == 40
    assert all(len(line.split()) == 2 for line in lines[1:-1])
    assert encoder["<unk>"] == 0 and "\n</w>" in encoder and "t" in encoder and "t</w>" in encoder
    te = TextEncoder(tmp_path / "e.json", tmp_path / "m.bpe")
    ids = te.encode(texts, verbose=True)
    assert all(0 not in seq for seq in ids)  # every piece of the training text is in the vocabulary
    assert te.decode(ids[0]) == "the quick brown fox jumps over the lazy dog ."
    assert len(ids[0]) < len("".join(te.pretokenize(texts[0])))  # merges happened
    # The first merge is the most frequent adjacent pair (ties: smallest pair), counted here anew.
    counts = {}
    for text in texts:
        for tok in te.pretokenize(text):
            word = list(tok[:-1]) + [tok[-1] + "</w>"]
            for pair in zip(word[:-1], word[1:]):
                counts[pair] = counts.get(pair, 0) + 1
    first = min(counts, key=lambda p: (-counts[p], p))
    assert lines[1] == " ".join(first) and "".join(first) in encoder
    assert te.decode([len(te.encoder) + 5]) == f"<{len(te.encoder) + 5}>"


def test_count_words_counts_the_release_tokens(learned):
    from collections import Counter

    from gpt1_fast.text import count_words

    texts = _tricky_texts()
    orig = OriginalEncoder(*learned)
    want = Counter(t for text in texts for t in orig.tokens(text))
    assert count_words(texts) == want
    assert count_words(texts * 2) == want + want  # known words counted again


def test_encode_rejects_a_bare_string(tmp_path):
    te = write_vocab(tmp_path, {"a</w>": 1}, [])
    with pytest.raises(TypeError):
        te.encode("a")


def test_missing_vocab_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder"):
        TextEncoder(tmp_path / "nope.json", tmp_path / "nope.bpe")


# ------------------------------------------------------------------- fast paths: ids never change
def _original_ids(encoder_path, bpe_path, texts):
    return OriginalEncoder(encoder_path, bpe_path).encode(texts)


def _tricky_texts():
    return sample_texts(60, seed=2) + [
        "", "  ", "\n", "a\n\n  b", "Dr. Smith said: \u201cno\u201d.", "x \u2014 y\u2026 z", "caf\u00e9 &amp; bar",
        "<b>bold</b> &amp; more\nsecond &amp; line", "first &amp; line\n<i>then</i> &amp;", "ÃƒÂ©t\u00e9 mojibake",
        "line\r\nbreaks\rhere", "tab\there", "\u00bd \u00b2 \ufb01ne", "\uff2c\uff2f\uff35\uff24", "C:\\path\\to",
        "o.O :) :-) (: ^_^", "e.g. i.e. U.S.A. etc.", "10km 5k. 3:45am $1,000,000 50%", "'s n't 've 'll",
        "\n leading newline", "trailing newline \n", " \u2028 line\u2029sep \x1c\x1f", "a\xa0b \u3000c",
        "He 's here . She ' s not", "x :) ( : < 3 > : ( = )", "don't. Can't! won't? 'cause 'Cause", "\u00b4twas"]


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    d = tmp_path_factory.mktemp("learned")
    learn_bpe(_tricky_texts(), 300, d / "e.json", d / "m.bpe")
    return str(d / "e.json"), str(d / "m.bpe")


def test_batched_encode_equals_the_original_loop(learned):
    texts = _tricky_texts()
    te = TextEncoder(*learned)
    want = _original_ids(*learned, texts)
    assert te.encode(texts) == want
    assert te.encode(texts) == want  # warm caches
    assert [te.encode([t])[0] for t in texts] == want  # batches of one
    assert te.encode(texts[::-1]) == want[::-1]
    assert sum(map(len, want)) > 1000


def test_real_vocab_batched_equals_the_original_loop(real):
    texts = _tricky_texts()
    assert real.encode(texts) == _original_ids(*real.paths, texts)


def test_random_word_soup_equals_the_original_loop(learned):
    """Texts glued from the tricky pieces and words, any spacing (spaces, tabs, newlines, no-break
    spaces): every word boundary the by-word path relies on, against the release's loop."""
    rng = random.Random(5)
    vocab = sorted({w for t in _tricky_texts() for w in t.split()})
    spaces = [" ", " ", " ", "  ", "\t", "\n", " \n ", "\n\n", "\xa0", "\u2003"]
    texts = ["".join(rng.choice(vocab) + rng.choice(spaces) for _ in range(rng.randint(0, 25))) for _ in range(600)]
    assert TextEncoder(*learned).encode(texts) == _original_ids(*learned, texts)


def test_worker_processes_equal_in_process(learned, monkeypatch):
    import gpt1_fast.text as text_mod

    monkeypatch.setattr(text_mod, "ENCODE_BATCH", 7)  # many batches in flight: order matters
    texts = _tricky_texts()
    te = TextEncoder(*learned)
    want = te.encode(texts)
    assert te.encode(texts, workers=2) == want
    batches = [texts[i:i + 11] for i in range(0, len(texts), 11)]
    assert list(te.encode_batches(iter(batches), workers=2, start_method="spawn")) == \
        [want[i:i + 11] for i in range(0, len(texts), 11)]


def test_word_cache_starts_over_when_full(learned, monkeypatch):
    import gpt1_fast.text as text_mod

    monkeypatch.setattr(text_mod, "WORD_CACHE", 10)
    monkeypatch.setattr(text_mod, "ENCODE_BATCH", 5)
    texts = _tricky_texts()
    te = TextEncoder(*learned)
    assert te.encode(texts) == _original_ids(*learned, texts)
    last = {w for t in texts[-5:] for w in te.pretokenize.words(t)}
    assert len(te._word_ids) < len(last) + 10 < len({w for t in texts for w in te.pretokenize.words(t)})


def test_fix_text_equals_ftfy():
    import ftfy

    from gpt1_fast.pretokenize import Pretokenizer

    pre = Pretokenizer()
    rng = random.Random(0)
    alphabet = list("ab <>&;#\n\r\t.") + ["&amp;", "&lt;", "\u201c", "\u00e9", "Ã©", "\x00", "\x1b[31m", "\ufb01"]
    samples = _tricky_texts() + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(400)]
    for s in samples:
        assert pre.fix_text(s) == ftfy.fix_text(s), repr(s)


def test_standardize_equals_the_original_regex_on_random_text():
    original = original_punct_regex()
    rng = random.Random(1)
    alphabet = list("-~!\";?+,)(\\/*[]}{|_ \n\tab\u2014\u2013\u2015\u2026\u00b4\u00a0")
    for _ in range(2000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert text_standardize(s) == original_standardize(s, original), repr(s)


def test_learn_merges_equals_recounting_every_pair():
    """The heap-based learner against the definition: recount every pair after each merge, take the
    most frequent (ties: smallest pair), merge it left to right in every word."""
    from gpt1_fast.text import learn_merges

    rng = random.Random(3)
    counts = {"".join(rng.choice("abcab d") for _ in range(rng.randint(1, 9))).strip() or "a": rng.randint(1, 5)
              for _ in range(300)}
    words = {tuple(w[:-1]) + (w[-1] + "</w>",): f for w, f in counts.items()}
    want = []
    for _ in range(120):
        pairs = {}
        for w, f in words.items():
            for p in zip(w[:-1], w[1:]):
                if not any(ch.isspace() for ch in p[0] + p[1].replace("</w>", "")):
                    pairs[p] = pairs.get(p, 0) + f
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        want.append(best)
        merged = {}
        for w, f in words.items():
            new, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    new.append(w[i] + w[i + 1])
                    i += 2
                else:
                    new.append(w[i])
                    i += 1
            merged[tuple(new)] = merged.get(tuple(new), 0) + f
        words = merged
    assert len(want) > 50
    assert learn_merges(counts, 120) == want
