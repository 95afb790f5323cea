"""Pre-tokenization exactly as GPT-1's release: ftfy.fix_text -> standardize -> spaCy's English tokenizer.

The release runs spaCy once per text. Here a text is cut into its whitespace-separated words, and each
distinct word is standardized and tokenized once (its tokens cached by the caller), which gives the
release's tokens because:
- standardization never joins or splits across whitespace: the punctuation padding acts on runs of one
  character inside a word, and a whitespace run becomes " " or, when it holds a newline, " \\n " (the
  NEWLINE word here, whose tokens are those spaCy makes of the whitespace "\\n ");
- spaCy splits on whitespace first and tokenizes each piece alone (its own cache is keyed by the
  piece); the one step that looks across pieces is its special-case matcher, and a match across a
  space changes nothing itself but can hide a shorter match inside one piece. A text where two tokens
  of some special-case pattern meet across a space (EnglishTokenizer.pairs) is tokenized whole, as the
  release does (rare: emoticons, some quotes and abbreviations).
ftfy is skipped on line segments it cannot change. tests/test_text.py checks all of it against the
release's loop (tests/original_encoder.py), on real and unicode-heavy text.
"""
from __future__ import annotations

import re
from itertools import chain, pairwise

# Runs of these characters get a space on each side. Backslash is deliberately absent: the release's
# regex is a non-raw string, so its `\\\\+` alternative reaches the engine as `\\+` (a literal '+').
# The release writes one alternative per character (`-+|~+|...`); a class plus a back-reference matches
# the same maximal run at the same positions, about 3x faster.
_PUNCT_RUNS = re.compile(r'(([-~!";?+,)(/*\[\]}{|_])\2*)')
_NEWLINE_RUNS = re.compile(r"\s*\n\s*")
_OTHER_SPACE_RUNS = re.compile(r"[^\S\n]+")
# A word without these characters (it holds no whitespace) is its own standardization.
_STANDARDIZE_MAY_CHANGE = re.compile(r'[-~!";?+,)(/*\[\]}{|_—–―…´]')
# ftfy.fix_text leaves a segment unchanged when it holds only printable ASCII, tab and newline, and no
# '&' (no mojibake, ligature, width, quote, line-break, control or HTML-entity fix can apply).
_FTFY_MAY_CHANGE = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")
NEWLINE = "\n"  # the word standing for a whitespace run that holds a newline (no other word has space)


def text_standardize(text: str) -> str:
    """The release's cleanup before spaCy (fixes for BooksCorpus, whitespace standardization)."""
    text = text.replace("—", "-").replace("–", "-").replace("―", "-")
    text = text.replace("…", "...").replace("´", "'")
    text = _PUNCT_RUNS.sub(r" \1 ", text)
    if "\n" in text:
        text = _NEWLINE_RUNS.sub(" \n ", text)
    text = _OTHER_SPACE_RUNS.sub(" ", text)
    return text.strip()


def _require_text_deps():
    from .deps import require

    require("text", "encoding text")  # one line naming what is missing and its extra (MissingPackage)
    import ftfy
    import spacy

    return ftfy, spacy


class Pretokenizer:
    """ftfy.fix_text -> text_standardize -> spaCy's English tokenizer, by words (see module doc).

    `tokens(text)` is the release's path for one text; `words(text)` cuts a fixed text into words,
    `word_tokens(words)` tokenizes words (remembering those that may meet a neighbour in a special
    case) and `concatenates(words)` says whether a text's tokens are its words' tokens in order."""

    def __init__(self):
        ftfy, _ = _require_text_deps()
        from .spacy_tokenizer import EnglishTokenizer

        self._fix_and_explain = ftfy.fix_and_explain
        self._ftfy_config = ftfy.TextFixerConfig(explain=False)  # fix_text's default
        self.spacy = EnglishTokenizer()
        pairs = self.spacy.pairs
        self._lefts, self._rights = {a for a, _ in pairs}, {b for _, b in pairs}
        self._opens: dict[str, str] = {}  # word -> its last token, where some pattern goes on after it
        self._closes: dict[str, str | None] = {}  # word -> its first token, where a pattern comes to it
        self._newline = self._note(NEWLINE, tuple(self.spacy.tokens("\n ")), False)

    def fix_text(self, text: str) -> str:
        """ftfy.fix_text(text), skipping the segments it leaves unchanged. The loop is fix_text's own:
        one segment per line (at most max_decode_length), HTML unescaping off from the first segment
        that holds '<' on."""
        if _FTFY_MAY_CHANGE.search(text) is None:
            return text
        config, out, pos, n = self._ftfy_config, [], 0, len(text)
        while pos < n:
            end = text.find("\n", pos) + 1 or n
            end = min(end, pos + config.max_decode_length)
            segment = text[pos:end]
            if config.unescape_html == "auto" and "<" in segment:
                config = config._replace(unescape_html=False)
            out.append(segment if _FTFY_MAY_CHANGE.search(segment) is None
                       else self._fix_and_explain(segment, config).text)
            pos = end
        return "".join(out)

    def tokens(self, text: str) -> list[str]:
        """The release's path for one text: spaCy's token texts (original case)."""
        return self.spacy.tokens(text_standardize(self.fix_text(text)))

    def __call__(self, text: str) -> list[str]:
        return [t.lower() for t in self.tokens(text)]

    def words(self, text: str) -> list[str]:
        """The whitespace-separated words of ftfy.fix_text(text), NEWLINE for a run holding a newline."""
        text = self.fix_text(text)
        if "\n" not in text:
            return text.split()
        out: list[str] = []
        for line in _NEWLINE_RUNS.split(text):
            ws = line.split()
            if ws and out:
                out.append(NEWLINE)
            out += ws
        return out

    def word_tokens(self, words) -> dict[str, tuple]:
        """{word: its tokens (original case)} for words of `words()`: each standardized, its pieces
        tokenized alone (EnglishTokenizer.pieces, one spaCy call for all)."""
        changes = _STANDARDIZE_MAY_CHANGE.search
        pieces = {w: text_standardize(w).split(" ") if changes(w) else (w,) for w in words if w != NEWLINE}
        known = self.spacy.pieces({p for ps in pieces.values() for p in ps})
        out, note, pairs = {}, self._note, self.spacy.pairs
        for w, ps in pieces.items():
            if len(ps) == 1:
                out[w] = note(w, known[ps[0]], False)
                continue
            toks = [known[p] for p in ps]
            inside = any((a[-1], b[0]) in pairs for a, b in pairwise(toks))
            out[w] = note(w, tuple(chain.from_iterable(toks)), inside)
        if NEWLINE in words:
            out[NEWLINE] = self._newline
        return out

    def _note(self, word: str, tokens: tuple, inside: bool) -> tuple:
        """Remember a word whose tokens may take part in a special case with a neighbour's: its last
        token where patterns go on after it (opens), its first where one comes to it, or None for a
        pattern pair inside the word (closes)."""
        if inside or tokens[0] in self._rights:
            self._closes[word] = None if inside else tokens[0]
        if tokens[-1] in self._lefts:
            self._opens[word] = tokens[-1]
        return tokens

    def concatenates(self, words) -> bool:
        """True when no special-case pattern can span two of these adjacent words (nor two pieces of
        one): then the text's tokens are its words' tokens, in order. The words must have been through
        word_tokens (which notes the words a pattern may span)."""
        closes = self._closes
        if closes.keys().isdisjoint(words):
            return True
        opens, pairs, prev = self._opens, self.spacy.pairs, None
        for w in words:
            first = closes.get(w, "")
            if first is None or (first and prev in opens and (opens[prev], first) in pairs):
                return False
            prev = w
        return True
