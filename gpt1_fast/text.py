"""Text encoding exactly as GPT-1's release (SPEC §2): ftfy -> standardize -> spaCy tokens -> BPE -> ids.

Ids must be identical to the original on real text, quirks included:
- the original's punctuation regex is a non-raw string, so its `\\\\+` alternative reaches the regex
  engine as `\\+` (a literal '+'): backslashes are NOT padded with spaces (transformers' port, which
  uses a raw string, differs there);
- BPE merges the lowest-ranked adjacent pair again and again (a pair created by a merge may rank
  below the merge that created it), scanning with `word.index(first, i)`;
- the piece `\\n  </w>` (spaCy's newline-plus-space token) becomes `\\n</w>`; unknown pieces get id 0.

Speed, with the same ids (tests/test_text.py checks them against the original loop): ftfy is skipped
for segments it cannot change (printable ASCII without '&'), one spaCy call tokenizes a whole batch of
texts (joined by a separator token that no rule touches), ids are cached per spaCy token, and
`encode(texts, workers=N)` spreads batches over N processes (benchmarks/bench_encode.py).

ftfy and spaCy are imported by the constructor only, so importing this module (or gpt1_fast.train)
works on machines without them. `learn_bpe` builds a small vocabulary in the release's two-file format
from any texts (same pre-tokenization), for tests and the demo.
"""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path

# Runs of these characters get a space on each side. Backslash is deliberately absent: see module doc.
# The original writes one alternative per character (`-+|~+|...`); a class plus a back-reference
# matches the same maximal run at the same positions, about 3x faster.
_PUNCT_RUNS = re.compile(r'(([-~!";?+,)(/*\[\]}{|_])\2*)')
_NEWLINE_RUNS = re.compile(r"\s*\n\s*")
_OTHER_SPACE_RUNS = re.compile(r"[^\S\n]+")
# ftfy.fix_text leaves a segment unchanged when it holds only printable ASCII, tab and newline, and no
# '&' (no mojibake, ligature, width, quote, line-break, control or HTML-entity fix can apply).
_FTFY_MAY_CHANGE = re.compile(r"[^\t\n\x20-\x25\x27-\x7e]")
EOW = "</w>"
ENCODE_BATCH = 256  # texts per batch (one worker task)
# Joins a batch of standardized texts into one string for spaCy (one call instead of one per text).
# A NUL never survives ftfy (control character) and is no part of any tokenizer rule; a batch that
# holds one anyway is tokenized text by text.
_SEP = "\x00"


def text_standardize(text: str) -> str:
    """The original's cleanup before spaCy (fixes for BooksCorpus, whitespace standardization)."""
    text = text.replace("—", "-").replace("–", "-").replace("―", "-")
    text = text.replace("…", "...").replace("´", "'")
    text = _PUNCT_RUNS.sub(r" \1 ", text)
    if "\n" in text:
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
        self._fix_and_explain = ftfy.fix_and_explain
        self._ftfy_config = ftfy.TextFixerConfig(explain=False)  # fix_text's default
        # spacy.blank("en") has the same tokenizer as the 'en' model the original loaded (rules and
        # exceptions are language data), without downloading anything.
        self._tokenizer = spacy.blank("en").tokenizer
        from spacy.attrs import ORTH

        self._ORTH = ORTH
        self._strings = self._tokenizer.vocab.strings
        sep_doc = self._tokenizer(f"a {_SEP} b")
        if [t.text for t in sep_doc] != ["a", _SEP, "b"] or any(_SEP in k for k in self._tokenizer.rules):
            raise RuntimeError("this spaCy version tokenizes the batch separator unexpectedly")  # pragma: no cover
        self._sep_orth = sep_doc[1].orth

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

    def __call__(self, text: str) -> list[str]:
        return [tok.text.lower() for tok in self._tokenizer(text_standardize(self.fix_text(text)))]

    def token_text(self, orth: int) -> str:
        """The text of a token hash that orth_batch returned."""
        return self._strings[orth]

    def orth_batch(self, texts) -> list[list[int]]:
        """spaCy's token hashes (ORTH) of each text, fixed and standardized, from one tokenizer call.
        spaCy splits on whitespace first and matches its special cases on token sequences, so a
        separator token between two texts leaves each text's tokens exactly as alone."""
        std = [text_standardize(self.fix_text(t)) for t in texts]
        if any(_SEP in t for t in std):
            return [self._tokenizer(t).to_array(self._ORTH).tolist() for t in std]
        keep = [i for i, t in enumerate(std) if t]  # an empty text would leave a double space
        out: list[list[int]] = [[] for _ in std]
        if not keep:
            return out
        orths = self._tokenizer(f" {_SEP} ".join(std[i] for i in keep)).to_array(self._ORTH).tolist()
        sep, k, cur = self._sep_orth, 0, out[keep[0]]
        for h in orths:
            if h == sep:
                k += 1
                cur = out[keep[k]]
            else:
                cur.append(h)
        if k != len(keep) - 1:  # pragma: no cover - guarded by the constructor's check
            raise RuntimeError("batch separator count mismatch")
        return out


def read_vocab(encoder_path, bpe_path):
    for p, what in ((encoder_path, "BPE encoder (token -> id json)"), (bpe_path, "BPE merges")):
        if not Path(p).is_file():
            raise FileNotFoundError(
                f"{what} file not found: {p}. It is in the model/ folder of OpenAI's release "
                "(https://github.com/openai/finetune-transformer-lm: encoder_bpe_40000.json, "
                "vocab_40000.bpe); `python -m gpt1_fast.vocab --data FILES --merges N --out DIR` learns one "
                "from your own texts (then --model_dir DIR).")
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
        self._ids_by_orth: dict[int, tuple] = {}  # spaCy token hash -> its ids
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
        """One list of ids per text. workers > 1 encodes batches in that many processes (same ids;
        worth it from a few thousand texts on)."""
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
        """encode() of one batch in this process: one spaCy call for the batch, then ids per spaCy
        token hash from a cache (the BPE and the dictionary look-ups run once per distinct token)."""
        ids_of = self._ids_by_orth
        out = []
        for orths in self.pretokenize.orth_batch(texts):
            ids: list[int] = []
            for h in orths:
                t = ids_of.get(h)
                if t is None:
                    t = ids_of[h] = self._token_ids(self.pretokenize.token_text(h))
                ids.extend(t)
            out.append(ids)
        return out

    def _token_ids(self, token_text: str) -> tuple:
        get = self.encoder.get
        return tuple(get(p, 0) for p in self.bpe(token_text.lower()).split(" "))

    def encode_batches(self, batches, workers: int = 1, start_method: str | None = None):
        """Yield encode_batch(b) for each batch of an iterable, in order. workers > 1: in a process
        pool, at most 2 batches per worker in flight (a long stream is never read ahead into memory).
        start_method: "fork" (default where available: the workers start with this encoder, spaCy
        loaded, in no time; they run no torch or OpenMP code) or "spawn" (each worker builds its own
        TextEncoder from the same files: seconds of start-up)."""
        if workers <= 1:
            for b in batches:
                yield self.encode_batch(b)
            return
        import collections
        import multiprocessing

        if start_method is None:
            start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(start_method)
        init = self if start_method == "fork" else self.paths  # fork: inherited, nothing pickled
        with ctx.Pool(workers, initializer=_worker_init, initargs=(init,)) as pool:
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


def _worker_init(encoder_or_paths):
    global _WORKER_ENCODER
    _WORKER_ENCODER = (encoder_or_paths if isinstance(encoder_or_paths, TextEncoder)
                       else TextEncoder(*encoder_or_paths))


def _worker_encode(texts):
    return _WORKER_ENCODER.encode_batch(texts)


# ------------------------------------------------------------------------------------------- learner
def count_words(texts, verbose: bool = False) -> collections.Counter:
    """How often each lower-cased token occurs, pre-tokenized exactly as TextEncoder does (batched)."""
    pre = Pretokenizer()
    bar = None
    if verbose:
        from tqdm import tqdm

        bar = tqdm(ncols=80, leave=False, desc="counting words", unit="text")
    by_orth: collections.Counter = collections.Counter()
    batch: list = []

    def flush():
        for orths in pre.orth_batch(batch):
            by_orth.update(orths)
        if bar is not None:
            bar.update(len(batch))
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= ENCODE_BATCH:
            flush()
    flush()
    if bar is not None:
        bar.close()
    counts: collections.Counter = collections.Counter()
    for h, n in by_orth.items():
        counts[pre.token_text(h).lower()] += n
    return counts


def learn_bpe(texts, n_merges: int, encoder_path, bpe_path, verbose: bool = False) -> dict:
    """Learn `n_merges` BPE merges from `texts` (pre-tokenized exactly as TextEncoder does) and write
    the release's two files: encoder json (`<unk>` = 0, every seen character alone and as `c</w>`,
    then each merge's result, then `\\n</w>`) and the merges file (version line, one `a b` per line in
    rank order, trailing empty line). Deterministic: ties go to the lexicographically smallest pair.
    Fewer merges are written when no pair is left. Returns the encoder dict."""
    counts = count_words(texts, verbose)
    merges = learn_merges(counts, n_merges, verbose)
    chars: collections.Counter = collections.Counter()
    for w, f in counts.items():
        for c in w:
            chars[c] += f
    char_order = sorted(chars, key=lambda c: (-chars[c], c))
    encoder: dict[str, int] = {"<unk>": 0}
    for tok in char_order + [c + EOW for c in char_order] + [a + b for a, b in merges] + ["\n" + EOW]:
        encoder.setdefault(tok, len(encoder))
    from .fileio import atomic_write_text

    atomic_write_text(encoder_path, json.dumps(encoder, ensure_ascii=False))
    atomic_write_text(bpe_path, "#version: gpt1_fast learn_bpe\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return encoder


def _mergeable(a: str, b: str) -> bool:
    # Pairs with whitespace can't be written in the merges file (lines are split on whitespace).
    return not any(ch.isspace() for ch in a + b.replace(EOW, ""))


def learn_merges(counts, n_merges: int, verbose: bool = False) -> list[tuple[str, str]]:
    """The merges, most frequent adjacent pair first (ties: smallest pair). A heap with lazy deletion
    finds each best pair (a stale entry, whose count has changed since, is skipped when popped): the
    same choice as a full min() over all pairs, in log time."""
    import heapq

    words = [tuple(w[:-1]) + (w[-1] + EOW,) for w in counts]
    freqs = [counts[w] for w in counts]
    pair_counts: collections.Counter = collections.Counter()
    where: dict[tuple, set] = collections.defaultdict(set)
    for wi, (w, f) in enumerate(zip(words, freqs)):
        for p in zip(w[:-1], w[1:]):
            if _mergeable(*p):
                pair_counts[p] += f
                where[p].add(wi)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    bar = None
    if verbose:
        from tqdm import tqdm

        bar = tqdm(total=n_merges, ncols=80, leave=False, desc="learning BPE merges", unit="merge")
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges and heap:
        neg, best = heapq.heappop(heap)
        if pair_counts.get(best) != -neg:
            continue  # stale
        merges.append(best)
        a, b = best
        changed = set()
        for wi in sorted(where.pop(best, ())):
            w, f = words[wi], freqs[wi]
            for p in zip(w[:-1], w[1:]):  # remove the word's old pairs
                if p in pair_counts:
                    pair_counts[p] -= f
                    changed.add(p)
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
                if _mergeable(*p):
                    pair_counts[p] += f
                    changed.add(p)
                    where[p].add(wi)
        pair_counts.pop(best, None)
        for p in changed:
            if p in pair_counts:
                heapq.heappush(heap, (-pair_counts[p], p))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return merges
