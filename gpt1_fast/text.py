"""Text encoding exactly as GPT-1's release (SPEC §2): ftfy -> standardize -> spaCy tokens -> BPE -> ids.

Ids must be identical to the original on real text, quirks included:
- the original's punctuation regex is a non-raw string, so its `\\\\+` alternative reaches the regex
  engine as `\\+` (a literal '+'): backslashes are NOT padded with spaces (transformers' port, which
  uses a raw string, differs there);
- BPE merges the lowest-ranked adjacent pair again and again (a pair created by a merge may rank
  below the merge that created it), scanning with `word.index(first, i)`;
- the piece `\\n  </w>` (spaCy's newline-plus-space token) becomes `\\n</w>`; unknown pieces get id 0.

ftfy and spaCy are imported by the constructor only, so importing this module (or gpt1_fast.train)
works on machines without them. `learn_bpe` builds a small vocabulary in the release's two-file format
from any texts (same pre-tokenization), for tests and the demo.
"""
from __future__ import annotations

import collections
import json
import os
import re
from pathlib import Path

# Runs of these characters get a space on each side. Backslash is deliberately absent: see module doc.
_PUNCT_RUNS = re.compile(r'(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\+|/+|\*+|\[+|\]+|}+|{+|\|+|_+)')
_NEWLINE_RUNS = re.compile(r"\s*\n\s*")
_OTHER_SPACE_RUNS = re.compile(r"[^\S\n]+")
EOW = "</w>"
ENCODE_BATCH = 256  # texts per batch (one worker task)


def text_standardize(text: str) -> str:
    """The original's cleanup before spaCy (fixes for BooksCorpus, whitespace standardization)."""
    text = text.replace("—", "-").replace("–", "-").replace("―", "-")
    text = text.replace("…", "...").replace("´", "'")
    text = _PUNCT_RUNS.sub(r" \1 ", text)
    text = _NEWLINE_RUNS.sub(" \n ", text)
    text = _OTHER_SPACE_RUNS.sub(" ", text)
    return text.strip()


def get_pairs(word: tuple) -> set:
    """The set of adjacent symbol pairs of a word (a tuple of strings)."""
    return set(zip(word[:-1], word[1:]))


def _require_text_deps():
    try:
        import ftfy
        import spacy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError(
            f"text encoding needs ftfy and spaCy ({exc.name} is missing): "
            "pip install 'gpt1_fast[text]' (or: pip install ftfy spacy)") from exc
    return ftfy, spacy


class Pretokenizer:
    """ftfy.fix_text -> text_standardize -> spaCy's rule-based English tokenizer -> lower-cased tokens."""

    def __init__(self):
        ftfy, spacy = _require_text_deps()
        self._fix_text = ftfy.fix_text
        # spacy.blank("en") has the same tokenizer as the 'en' model the original loaded (rules and
        # exceptions are language data), without downloading anything.
        self._tokenizer = spacy.blank("en").tokenizer

    def __call__(self, text: str) -> list[str]:
        return [tok.text.lower() for tok in self._tokenizer(text_standardize(self._fix_text(text)))]


def read_vocab(encoder_path, bpe_path):
    for p, what in ((encoder_path, "BPE encoder (token -> id json)"), (bpe_path, "BPE merges")):
        if not Path(p).is_file():
            raise FileNotFoundError(
                f"{what} file not found: {p}. It is in the model/ folder of OpenAI's release "
                "(https://github.com/openai/finetune-transformer-lm: encoder_bpe_40000.json, "
                "vocab_40000.bpe); gpt1_fast.text.learn_bpe writes a small one from your own texts.")
    with open(encoder_path, encoding="utf-8") as f:
        encoder = json.load(f)
    with open(bpe_path, encoding="utf-8") as f:
        lines = f.read().split("\n")[1:-1]  # version line first, empty line last (as the original)
    merges = [tuple(line.split()) for line in lines]
    for n, m in enumerate(merges, start=2):
        if len(m) != 2:
            raise ValueError(f"{bpe_path}:{n}: expected a merge 'a b', found {lines[n - 2]!r}")
    return encoder, merges


class TextEncoder:
    """The release's BPE text encoder. `encode(texts)` -> one list of ids per text."""

    def __init__(self, encoder_path, bpe_path):
        self.paths = (str(encoder_path), str(bpe_path))
        self.encoder, merges = read_vocab(encoder_path, bpe_path)
        self.decoder = {v: k for k, v in self.encoder.items()}
        # dict(zip(...)): a merge listed twice would keep its last rank, as the original.
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache: dict[str, str] = {}
        self.pretokenize = Pretokenizer()

    def bpe(self, token: str) -> str:
        """Space-separated BPE pieces of one lower-cased token (the original's algorithm)."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + EOW,)
        pairs = get_pairs(word)
        if not pairs:
            return token + EOW
        inf = float("inf")
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, inf))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        if word == "\n  </w>":
            word = "\n</w>"
        self.cache[token] = word
        return word

    def tokenize(self, text: str) -> list[str]:
        """BPE pieces of one text (strings, as looked up in the encoder)."""
        return [p for tok in self.pretokenize(text) for p in self.bpe(tok).split(" ")]

    def encode(self, texts, verbose: bool = False, workers: int = 1) -> list[list[int]]:
        """One list of ids per text. workers > 1 encodes batches in that many processes (same ids)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts; wrap a single text in a list")
        texts = list(texts)
        batches = [texts[i:i + ENCODE_BATCH] for i in range(0, len(texts), ENCODE_BATCH)]
        bar = None
        if verbose:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), ncols=80, leave=False, desc="encoding", unit="text")
        out: list[list[int]] = []
        for ids in self.encode_batches(batches, workers):
            out.extend(ids)
            if bar is not None:
                bar.update(len(ids))
        if bar is not None:
            bar.close()
        return out

    def encode_batch(self, texts) -> list[list[int]]:
        """encode() of one batch in this process."""
        get = self.encoder.get
        return [[get(p, 0) for p in self.tokenize(text)] for text in texts]

    def encode_batches(self, batches, workers: int = 1):
        """Yield encode_batch(b) for each batch of an iterable, in order. workers > 1: in a pool of
        spawned processes (each builds its own TextEncoder from the same files), at most 2 batches
        per worker in flight, so a long stream of batches is never read ahead into memory."""
        if workers <= 1:
            for b in batches:
                yield self.encode_batch(b)
            return
        import collections
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # fork-safe: no torch/OpenMP state copied
        with ctx.Pool(workers, initializer=_worker_init, initargs=(self.paths,)) as pool:
            pending: collections.deque = collections.deque()
            for b in batches:
                pending.append(pool.apply_async(_worker_encode, (b,)))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()

    def decode(self, ids, skip_special: bool = False) -> str:
        """Ids back to text: pieces joined, `</w>` -> word break. Ids outside the vocabulary (special
        tokens, positions) read as `<id>` unless skip_special."""
        out = []
        for i in ids:
            i = int(i)
            piece = self.decoder.get(i)
            if piece is None:
                if not skip_special:
                    out.append(f"<{i}> ")
                continue
            out.append(piece.replace(EOW, " "))
        return "".join(out).strip()


# A worker process's encoder, built once by the pool's initializer (spawned processes share nothing).
_WORKER_ENCODER: TextEncoder | None = None


def _worker_init(paths):
    global _WORKER_ENCODER
    _WORKER_ENCODER = TextEncoder(*paths)


def _worker_encode(texts):
    return _WORKER_ENCODER.encode_batch(texts)


# ------------------------------------------------------------------------------------------- learner
def learn_bpe(texts, n_merges: int, encoder_path, bpe_path, verbose: bool = False) -> dict:
    """Learn `n_merges` BPE merges from `texts` (pre-tokenized exactly as TextEncoder does) and write
    the release's two files: encoder json (`<unk>` = 0, every seen character alone and as `c</w>`,
    then each merge's result, then `\\n</w>`) and the merges file (version line, one `a b` per line in
    rank order, trailing empty line). Deterministic: ties go to the lexicographically smallest pair.
    Returns the encoder dict."""
    pre = Pretokenizer()
    it = texts
    if verbose:
        from tqdm import tqdm

        it = tqdm(texts, ncols=80, leave=False, desc="learning BPE")
    counts = collections.Counter(tok for text in it for tok in pre(text))
    words = [tuple(w[:-1]) + (w[-1] + EOW,) for w in counts]
    freqs = [counts[w] for w in counts]

    chars = collections.Counter()
    for w, f in counts.items():
        for c in w:
            chars[c] += f
    char_order = sorted(chars, key=lambda c: (-chars[c], c))

    # Pairs with whitespace can't be written in the merges file (lines are split on whitespace).
    def mergeable(a, b):
        return not any(ch.isspace() for ch in a + b.replace(EOW, ""))

    pair_counts: collections.Counter = collections.Counter()
    where: dict[tuple, set] = collections.defaultdict(set)
    for wi, (w, f) in enumerate(zip(words, freqs)):
        for p in zip(w[:-1], w[1:]):
            if mergeable(*p):
                pair_counts[p] += f
                where[p].add(wi)

    merges = []
    while len(merges) < n_merges and pair_counts:
        best = min(pair_counts, key=lambda p: (-pair_counts[p], p))
        if pair_counts[best] < 1:
            break
        merges.append(best)
        a, b = best
        for wi in sorted(where.pop(best, ())):
            w, f = words[wi], freqs[wi]
            for p in zip(w[:-1], w[1:]):  # remove the word's old pairs
                if p in pair_counts:
                    pair_counts[p] -= f
                    if pair_counts[p] <= 0:
                        del pair_counts[p]
                    if p != best and p in where:
                        where[p].discard(wi)
            new, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and w[i] == a and w[i + 1] == b:
                    new.append(a + b)
                    i += 2
                else:
                    new.append(w[i])
                    i += 1
            words[wi] = w = tuple(new)
            for p in zip(w[:-1], w[1:]):
                if mergeable(*p):
                    pair_counts[p] += f
                    where[p].add(wi)
        pair_counts.pop(best, None)

    encoder: dict[str, int] = {"<unk>": 0}
    for tok in char_order + [c + EOW for c in char_order] + [a + b for a, b in merges] + ["\n" + EOW]:
        encoder.setdefault(tok, len(encoder))
    for path in (encoder_path, bpe_path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _atomic_write_text(encoder_path, json.dumps(encoder, ensure_ascii=False))
    _atomic_write_text(bpe_path, "#version: gpt1_fast learn_bpe\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return encoder


def _atomic_write_text(path, text: str):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
