"""spaCy's rule-based English tokenizer (the one GPT-1's release used), with the same token texts and
less work: `EnglishTokenizer.tokens(text)` for a whole text, `.pieces(pieces)` for many
whitespace-free pieces at once (cached).

- Special cases (1,347 rules) are loaded into spaCy as texts need them: a rule can act on a string only
  if its key is a substring of it once whitespace is taken out (spaCy looks rules up by the exact
  string, what is left after removing affixes, and a token sequence of the matcher whose text joined
  is the key). So every key found in a string is added before spaCy sees it; adding one empties
  spaCy's cache, as it does when all are loaded at once.
- Pieces go through spaCy in one call, joined by NUL tokens (no rule holds NUL; a piece holding one
  goes alone); where the rules are a verified set (`_VERIFIED_RULES`), two shapes skip spaCy with the
  token texts its code gives them: a piece of ASCII letters only (or digits only) that is no rule stays
  whole, and such a run followed by the suffix spaCy splits off first (e.g. "walked." or "Karen's")
  becomes those two tokens when neither part nor the piece is a rule (no prefix may match).
"""
from __future__ import annotations

import hashlib
from itertools import pairwise

_SEP = "\x00"
_SCAN_CHARS = 15_000  # scanning a text for rule keys costs ~3 us a character, loading all 1,347 rules ~50 ms
# sha256 (rules_fingerprint) of the spaCy version and the prefix, suffix and infix patterns and token
# matcher of tokenizers whose prefix, suffix and infix patterns are proven never to match inside a
# string of ASCII letters only, nor inside one of ASCII digits only (tests/test_text_fast.py,
# test_verified_rules_never_split_letters_or_digits, on the installed spaCy). Other rules: no shortcut.
_VERIFIED_RULES = frozenset({
    "743143308b2f93d7315a79beec30802638fb98be7f4b99d394cef29797c56435",  # spaCy 3.8.18
})


def english_defaults():
    """spacy.blank("en")'s tokenizer settings: (rules, prefix_search, suffix_search, infix_finditer,
    token_match, url_match), built as spaCy's tokenizer factory builds them."""
    from spacy.lang.en import English
    from spacy.util import compile_infix_regex, compile_prefix_regex, compile_suffix_regex

    d = English.Defaults
    return (d.tokenizer_exceptions, compile_prefix_regex(d.prefixes).search, compile_suffix_regex(d.suffixes).search,
            compile_infix_regex(d.infixes).finditer, d.token_match, d.url_match)


def rules_fingerprint(tokenizer) -> str:
    import spacy

    parts = [spacy.__version__, repr(tokenizer.token_match)] + [
        f.__self__.pattern for f in (tokenizer.prefix_search, tokenizer.suffix_search, tokenizer.infix_finditer)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _plain(s: str) -> bool:
    return s.isascii() and (s.isalpha() or s.isdigit())


class EnglishTokenizer:
    """Token texts as spacy.blank("en").tokenizer gives them (module doc). `pairs`: every pair of
    adjacent token texts in some special-case pattern (a rule's key tokenized without rules): only there
    can spaCy's matcher join tokens across a space."""

    def __init__(self):
        from spacy.attrs import ORTH
        from spacy.tokenizer import Tokenizer
        from spacy.vocab import Vocab

        self.rules, *settings = english_defaults()
        # A bare vocabulary: the token texts are the same, no lexical attribute is computed.
        self._spacy = Tokenizer(Vocab(), None, *settings)
        self._strings, self._orth = self._spacy.vocab.strings, ORTH
        self._loaded: set = set()
        self._scanned = 0  # characters of whole texts scanned for rule keys
        self._key_len = max(map(len, self.rules), default=0)
        self._prefix, self._suffix = settings[0], settings[1]
        self.shortcuts = rules_fingerprint(self._spacy) in _VERIFIED_RULES
        self.pairs = self._boundary_pairs()
        self._cache: dict[str, tuple] = {}  # piece -> its tokens
        sep = self._orths(f"a {_SEP} b")
        if [self._strings[h] for h in sep] != ["a", _SEP, "b"]:
            raise RuntimeError("this spaCy version tokenizes the batch separator unexpectedly")  # pragma: no cover
        self._sep = sep[1]

    def _orths(self, text: str) -> list:
        return self._spacy(text).to_array(self._orth).tolist()

    def _boundary_pairs(self) -> frozenset:
        """Adjacent token pairs of every rule key tokenized without rules (spaCy's matcher holds those of
        the keys with an affix or a space, a subset). Keys that keep whole (shortcuts) have no pair."""
        keys = [k for k in self.rules if not (self.shortcuts and _plain(k))]
        if any(_SEP in k for k in keys):
            raise RuntimeError("a spaCy rule holds NUL, the batch separator")  # pragma: no cover
        spaced = [k for k in keys if any(c.isspace() for c in k)]
        joined = f" {_SEP} ".join(k for k in keys if k not in spaced)
        pairs = set()
        for text in [joined, *spaced]:  # no rule is loaded yet: tokens without special cases
            toks = [self._strings[h] for h in self._orths(text)]
            pairs.update(p for p in pairwise(toks) if _SEP not in p)
        return frozenset(pairs)

    def _load_rules(self, texts=None) -> None:
        """Add to spaCy every rule whose key is a substring of a text (whitespace in or out); every
        rule for texts=None."""
        if texts is None:
            found = set(self.rules)
        else:
            n, found = self._key_len, set()
            for text in texts:
                for s in {text, "".join(text.split())}:
                    found.update(s[i:j] for i in range(len(s)) for j in range(i + 1, min(len(s), i + n) + 1))
            found.intersection_update(self.rules)
        for k in sorted(found.difference(self._loaded)):
            self._spacy.add_special_case(k, self.rules[k])
            self._loaded.add(k)

    def tokens(self, text: str) -> list[str]:
        """spaCy's token texts of a whole text. Texts are scanned for rule keys until _SCAN_CHARS
        characters were, then every rule is loaded (as cheap as scanning that much)."""
        if len(self._loaded) < len(self.rules):
            if self._scanned + len(text) <= _SCAN_CHARS:
                self._scanned += len(text)
                self._load_rules((text,))
            else:
                self._load_rules()
        return [self._strings[h] for h in self._orths(text)]

    def pieces(self, pieces) -> dict[str, tuple]:
        """{piece: its token texts} for pieces without whitespace (cached; see module doc)."""
        cache, rules = self._cache, self.rules
        if len(cache) > 1 << 20:  # a pure cache: bounded
            cache.clear()
        out, batch = {}, []
        for p in pieces:
            toks = cache.get(p)
            if toks is None and self.shortcuts:
                toks = (p,) if _plain(p) and p not in rules else self._peel(p)
            if toks is None and _SEP in p:
                toks = tuple(self.tokens(p))
            if toks is None:
                batch.append(p)
            else:
                out[p] = cache[p] = toks
        if batch:
            self._load_rules(batch)
            toks = [[]]
            for h in self._orths(f" {_SEP} ".join(batch)):
                if h == self._sep:
                    toks.append([])
                else:
                    toks[-1].append(self._strings[h])
            if len(toks) != len(batch):  # pragma: no cover - guarded by the constructor's check
                raise RuntimeError("batch separator count mismatch")
            for p, t in zip(batch, toks):
                out[p] = cache[p] = tuple(t)
        return out

    def _peel(self, p: str):
        """(run, suffix) where spaCy's first affix step splits the suffix off a plain run (module doc):
        no prefix, the piece, the run and the suffix no rule. None otherwise."""
        if p in self.rules:
            return None
        m = self._prefix(p)
        if m is not None and m.end() > m.start():
            return None
        m = self._suffix(p)
        if m is None or m.end() == m.start():
            return None
        k = m.end() - m.start()
        run, suffix = p[:-k], p[-k:]
        if run and _plain(run) and run not in self.rules and suffix not in self.rules:
            return run, suffix
        return None
