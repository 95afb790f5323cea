"""The release's text encoding (openai/finetune-transformer-lm, text_utils.py), re-implemented with its
structure, as the reference gpt1_fast.text.TextEncoder must equal: per text ftfy.fix_text, its
standardize (its own regex, evaluated from the non-raw literal as Python reads it), spaCy `nlp(text)`
(spacy.blank("en"): the same tokenizer as the 'en' model it loaded), then for every token
bpe(token.text.lower()) with its per-word cache and a dictionary look-up (unknown pieces: 0).

Test-only code: tests/test_text.py compares against it, and benchmarks/bench_encode.py times it.
"""
from __future__ import annotations

import ast
import re
import warnings

# The release's punctuation regex, as written in its source (a non-raw string literal).
PUNCT_LITERAL = "'''(-+|~+|!+|\"+|;+|\\?+|\\++|,+|\\)+|\\(+|\\\\+|\\/+|\\*+|\\[+|\\]+|}+|{+|\\|+|_+)'''"


def original_punct_regex() -> re.Pattern:
    """The regex the release's literal compiles to (its `\\\\+` reaches the engine as `\\+`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return re.compile(ast.literal_eval(PUNCT_LITERAL))


def original_standardize(text: str, punct: re.Pattern | None = None) -> str:
    punct = punct or original_punct_regex()
    text = text.replace("—", "-").replace("–", "-").replace("―", "-").replace("…", "...").replace("´", "'")
    text = punct.sub(r" \1 ", text)
    text = re.sub("\\s*\n\\s*", " \n ", text)
    text = re.sub("[^\\S\n]+", " ", text)
    return text.strip()


class OriginalEncoder:
    """The release's TextEncoder: construction (vocabulary files, spaCy) and its encode loop."""

    def __init__(self, encoder_path, bpe_path):
        import ftfy
        import spacy

        from gpt1_fast.text import read_vocab

        self.nlp = spacy.blank("en")
        self.fix_text = ftfy.fix_text
        self.encoder, merges = read_vocab(encoder_path, bpe_path)
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {}
        self.punct = original_punct_regex()

    def bpe(self, token):
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        if token in self.cache:
            return self.cache[token]
        pairs = set(zip(word[:-1], word[1:]))
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = set(zip(word[:-1], word[1:]))
        word = " ".join(word)
        if word == "\n  </w>":
            word = "\n</w>"
        self.cache[token] = word
        return word

    def tokens(self, text):
        """spaCy's tokens of one text, lower-cased: what the loop below gives bpe()."""
        return [t.text.lower() for t in self.nlp(original_standardize(self.fix_text(text), self.punct))]

    def encode(self, texts):
        out = []
        for text in texts:
            doc = self.nlp(original_standardize(self.fix_text(text), self.punct))
            ids = []
            for token in doc:
                ids.extend(self.encoder.get(t, 0) for t in self.bpe(token.text.lower()).split(" "))
            out.append(ids)
        return out


# Pieces that make ftfy and the standardization work: curly quotes, dashes, ellipses, accents,
# mojibake, entities, numbers with units, abbreviations, contractions, newlines.
UNICODE_PIECES = ["\u201cNo way,\u201d", "she\u2019d", "caf\u00e9", "na\u00efve", "\u2014", "\u2026", "5k.", "10km",
                  "3:45pm", "$1,000", "e.g.", "Dr.", "U.S.", "&amp;", "don't", "(really)", "[sic]", "\n", "\n\n",
                  "50%", "x\u00b2", "\u00bd", "co-op", "can't", "C++", "a/b", "well...", "!!", "?!", "\u00e2\u0080\u0099s"]
# And spaCy's special cases at their edges: emoticons, quotes and abbreviations split by spaces.
EXTRA = UNICODE_PIECES + [
    ":)", "(:", ": )", "x:)", "<3", "o.O", "a.m.", "10a.m.", "Calif.", "'cause", "' s", "'s", "''", "I'm", "walked.",
    "Karen's", "1963.", "40's.", "\u00a0", "\t", "gonna", "Gonna", "cannot", "it's", "It's"]


def story_texts(n_stories: int, seed: int = 0) -> list[str]:
    """Synthetic Story Cloze texts (gpt1_fast.synthetic): each story's four sentences, then each ending."""
    from gpt1_fast.synthetic import story_rows

    rows = story_rows(n_stories, seed=seed)
    return [t for r in rows for t in (" ".join(r[1:5]), r[5], r[6])]


def unicode_texts(n: int, seed: int = 0, pieces=UNICODE_PIECES) -> list[str]:
    """n sentences of the synthetic stories' words with `pieces` sprinkled in (about 1 word in 6)."""
    import random

    rng = random.Random(seed)
    words = " ".join(story_texts(max(n // 10, 10), seed)).split()
    return [" ".join(rng.choice(pieces) if rng.random() < 0.15 else rng.choice(words)
                     for _ in range(rng.randint(8, 60))) for _ in range(n)]


def sample_texts(n_stories: int, seed: int = 0) -> list[str]:
    """story_texts(n_stories) and unicode_texts(n_stories) with all EXTRA pieces, shuffled together."""
    import random

    texts = story_texts(n_stories, seed) + unicode_texts(n_stories, seed, EXTRA)
    random.Random(seed).shuffle(texts)
    return texts
