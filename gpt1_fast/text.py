"""Text encoding exactly as GPT-1's release: ftfy -> standardize -> spaCy tokens -> BPE -> ids.

Ids must be identical to the release on real text, quirks included (the pre-tokenization's are in
gpt1_fast.pretokenize):
- BPE merges the lowest-ranked adjacent pair again and again (a pair created by a merge may rank
  below the merge that created it), every occurrence left to right;
- the piece `\\n  </w>` (spaCy's newline-plus-space token) becomes `\\n</w>`; unknown pieces get id 0.

Speed, with the same ids (tests/test_text.py checks them against the release's loop, kept in
tests/original_encoder.py): each distinct word of the texts is pre-tokenized once and its ids cached
(`Pretokenizer.word_tokens`), a text's ids are its words' ids joined; in the release's vocabulary a
token whose whole `t</w>` is an entry is that piece (`_WHOLE_WORD_VOCABS`); BPE keeps the ranks of the
word's pairs in a list and updates the two neighbours of a single merge; `encode(texts, workers=N)`
spreads batches over N processes (benchmarks/bench_encode.py measures it; benchmarks/NOTES.md).

ftfy and spaCy are imported by the constructor only, so importing this module (or gpt1_fast.train)
works on machines without them. `learn_bpe` builds a small vocabulary in the release's two-file format
from any texts (same pre-tokenization), for tests and the demo.
"""
from __future__ import annotations

import collections
import hashlib
import json
import re
from functools import cached_property
from itertools import chain, pairwise, repeat
from pathlib import Path

from .errors import DataError
from .pretokenize import Pretokenizer, text_standardize  # noqa: F401 - text_standardize: public here too

EOW = "</w>"
# sha256 of the encoder json's then the merges file's bytes, for vocabularies where BPE makes every
# whole-word entry `t</w>` of `t` itself (all 32,581 checked: tests/test_text.py,
# test_whole_word_entries_are_their_own_bpe): there a token whose `t</w>` is an entry skips BPE.
_WHOLE_WORD_VOCABS = frozenset({
    "30a9fd6f40f6aae698f3b8db1515a41af096d401191cb09a6f971e8858e90610",  # OpenAI's GPT-1 release (40,000 merges)
})
ENCODE_BATCH = 256  # texts per batch (one worker task)
WORD_CACHE = 1 << 20  # cached words (their ids) before that cache starts over: memory stays bounded


# A merges-file line that is not two symbols separated by one space.
_BAD_MERGE_LINE = re.compile(r"^(?![^\s]+ [^\s]+$)", re.MULTILINE)


def _check_files(encoder_path, bpe_path) -> None:
    for p, what in ((encoder_path, "BPE encoder (token -> id json)"), (bpe_path, "BPE merges")):
        if not Path(p).is_file():
            raise FileNotFoundError(
                f"{what} file not found: {p}. It is in the model/ folder of OpenAI's release "
                "(https://github.com/openai/finetune-transformer-lm: encoder_bpe_40000.json, "
                "vocab_40000.bpe); `python -m gpt1_fast.vocab --data FILES --merges N --out DIR` learns one "
                "from your own texts (then --model_dir DIR).")


def read_merges(bpe_path) -> list[str]:
    """The merges in rank order, each as "a b"."""
    with open(bpe_path, encoding="utf-8") as f:
        return parse_merges(f.read(), bpe_path)


def parse_merges(text: str, bpe_path="merges") -> list[str]:
    """Lines as the release reads them: the version line first and whatever follows the last newline
    are no merges."""
    first, last = text.find("\n") + 1, text.rfind("\n")
    if not 0 < first <= last:
        return []
    body = text[first:last]
    if _BAD_MERGE_LINE.search(body) is None:
        return body.split("\n")
    merges = []  # other whitespace between the two symbols, or a bad line
    for n, line in enumerate(body.split("\n"), start=2):
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{bpe_path}:{n}: expected a merge 'a b', found {line!r}")
        merges.append(" ".join(parts))
    return merges


def read_vocab(encoder_path, bpe_path):
    """(encoder {piece: id}, merges [(a, b)] in rank order) of the release's two files."""
    encoder, merges, _ = _read_files(encoder_path, bpe_path)
    return encoder, [tuple(m.split(" ")) for m in merges]


def _read_files(encoder_path, bpe_path):
    """(encoder, merges as "a b", sha256 of the two files' bytes)."""
    _check_files(encoder_path, bpe_path)
    with open(encoder_path, "rb") as f:
        enc_bytes = f.read()
    with open(bpe_path, "rb") as f:
        bpe_bytes = f.read()
    digest = hashlib.sha256(enc_bytes)
    digest.update(bpe_bytes)
    try:
        text = bpe_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{bpe_path}: expected a UTF-8 BPE merges file, found byte {bpe_bytes[e.start:e.start + 1]!r} "
                        f"at offset {e.start}") from None
    if "\r" in text:  # what reading in text mode does (the release's open())
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _encoder_json(enc_bytes, encoder_path), parse_merges(text, bpe_path), digest.hexdigest()


def _encoder_json(data: bytes, path) -> dict:
    """The encoder file's {token: id}: a JSON object of integers, or a DataError naming the file."""
    try:
        encoder = json.loads(data)
    except ValueError as e:  # bad JSON, or bytes that are not UTF-8
        raise DataError(f"{path}: expected a BPE encoder (a JSON object token -> id), found invalid JSON ({e})") from None
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise DataError(f"{path}: expected a BPE encoder (a JSON object token -> id), found "
                        f"{type(encoder).__name__ if not isinstance(encoder, dict) else 'values that are not ids'}")
    return encoder


def _join_pieces(pieces: list[str]) -> str:
    word = " ".join(pieces)
    return "\n</w>" if word == "\n  </w>" else word  # spaCy's newline token, as the release


def bpe_pieces(token: str, ranks: dict, none: int) -> list[str]:
    """The release's BPE of one lower-cased token: while some adjacent pair has a rank, merge every
    occurrence of the lowest-ranked one, left to right. `ranks` maps "a b" to a merge's rank, `none`
    is above every rank. `rs`
    holds the rank of each adjacent pair (ranks are unique, so the positions of the lowest are that
    pair's occurrences); a single occurrence is merged in place and only its two neighbours' ranks are
    looked up again."""
    word = list(token[:-1])
    word.append(token[-1] + EOW)
    get = ranks.get
    rs = [get(a + " " + b, none) for a, b in pairwise(word)]
    while rs:
        r = min(rs)
        if r == none:
            break
        i = rs.index(r)
        first, second = word[i], word[i + 1]
        if rs.count(r) == 1:
            word[i:i + 2] = [first + second]
            del rs[i]
            if i:
                rs[i - 1] = get(word[i - 1] + " " + word[i], none)
            if i < len(rs):
                rs[i] = get(word[i] + " " + word[i + 1], none)
            continue
        new, n = word[:i], len(word)
        while i < n:
            if i < n - 1 and word[i] == first and word[i + 1] == second:
                new.append(first + second)
                i += 2
            else:
                new.append(word[i])
                i += 1
        word = new
        rs = [get(a + " " + b, none) for a, b in pairwise(word)]
    return word


class TextEncoder:
    """The release's BPE text encoder. `encode(texts)` -> one list of ids per text."""

    def __init__(self, encoder_path, bpe_path):
        self.paths = (str(encoder_path), str(bpe_path))
        self.encoder, merges, digest = _read_files(encoder_path, bpe_path)
        self._whole_words = digest in _WHOLE_WORD_VOCABS
        # dict(zip(...)): a merge listed twice keeps its last rank, as the release.
        self._ranks, self._no_rank = dict(zip(merges, range(len(merges)))), len(merges)
        self.cache: dict[str, str] = {}  # lower-cased token -> its BPE pieces, space-separated
        self._token_ids: dict[str, tuple] = {}  # spaCy token text -> its ids
        self._word_ids: dict[str, tuple] = {}  # word (Pretokenizer.words) -> its ids
        self.pretokenize = Pretokenizer()

    @cached_property
    def decoder(self) -> dict:
        return {v: k for k, v in self.encoder.items()}

    @cached_property
    def bpe_ranks(self) -> dict:
        """{(a, b): rank} of the merges, as the release holds them."""
        return {tuple(m.split(" ")): r for m, r in self._ranks.items()}

    def bpe(self, token: str) -> str:
        """Space-separated BPE pieces of one lower-cased token (the release's algorithm and cache)."""
        word = self.cache.get(token)
        if word is None:
            word = self.cache[token] = _join_pieces(bpe_pieces(token, self._ranks, self._no_rank))
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
        """encode() of one batch in this process: the new words of the batch are pre-tokenized together,
        each text's ids are its words' cached ids, joined (or its own tokens' where a special case of
        spaCy may span two words: Pretokenizer.concatenates)."""
        pre, word_ids = self.pretokenize, self._word_ids
        if len(word_ids) > WORD_CACHE:
            word_ids.clear()
            self._token_ids.clear()
        words_of = [pre.words(t) for t in texts]
        new = set(chain.from_iterable(words_of)).difference(word_ids)
        if new:
            tokens = pre.word_tokens(new)
            ids = self._ids_of_tokens(chain.from_iterable(tokens.values()))
            for w, toks in tokens.items():
                word_ids[w] = ids[toks[0]] if len(toks) == 1 else tuple(chain.from_iterable(map(ids.get, toks)))
        ids_of = word_ids.__getitem__
        return [list(chain.from_iterable(map(ids_of, words))) if pre.concatenates(words) else self._text_ids(text)
                for text, words in zip(texts, words_of)]

    def _text_ids(self, text: str) -> list[int]:
        """The release's path for one text: its own spaCy tokens, each token's ids."""
        tokens = self.pretokenize.tokens(text)
        ids = self._ids_of_tokens(tokens)
        return [i for t in tokens for i in ids[t]]

    def _ids_of_tokens(self, tokens) -> dict:
        """{spaCy token text: its ids} (BPE of the lower-cased token, pieces looked up, unknown 0),
        the dictionary of all tokens seen. In a vocabulary of _WHOLE_WORD_VOCABS, a token whose whole
        `t</w>` is an entry is that one piece."""
        cache, encoder, bpe, ranks, none = self._token_ids, self.encoder, self.cache, self._ranks, self._no_rank
        get, whole = encoder.get, self._whole_words
        for t in set(tokens).difference(cache):
            low = t.lower()
            if whole and low + EOW in encoder:
                cache[t] = (encoder[low + EOW],)
                continue
            word = bpe.get(low)
            if word is None:
                word = bpe[low] = _join_pieces(bpe_pieces(low, ranks, none))
            cache[t] = tuple(map(get, word.split(" "), repeat(0)))
        return cache

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
    """How often each lower-cased token occurs, pre-tokenized exactly as TextEncoder does (by words)."""
    pre = Pretokenizer()
    bar = None
    if verbose:
        from tqdm import tqdm

        bar = tqdm(ncols=80, leave=False, desc="counting words", unit="text")
    word_tokens: dict[str, tuple] = {}
    words: collections.Counter = collections.Counter()
    tokens: collections.Counter = collections.Counter()
    batch: list = []

    def flush():
        words_of = [pre.words(t) for t in batch]
        word_tokens.update(pre.word_tokens(set(chain.from_iterable(words_of)).difference(word_tokens)))
        for text, ws in zip(batch, words_of):
            if pre.concatenates(ws):
                words.update(ws)
            else:
                tokens.update(pre.tokens(text))
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
    for w, n in words.items():
        for t in word_tokens[w]:
            tokens[t] += n
    counts: collections.Counter = collections.Counter()
    for t, n in tokens.items():
        counts[t.lower()] += n
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


def _merge_pair(w: tuple, a: str, b: str) -> tuple:
    """`w` with every occurrence of the pair (a, b) merged, left to right."""
    new, i = [], 0
    while i < len(w):
        if i < len(w) - 1 and w[i] == a and w[i + 1] == b:
            new.append(a + b)
            i += 2
        else:
            new.append(w[i])
            i += 1
    return tuple(new)


def learn_merges(counts, n_merges: int, verbose: bool = False) -> list[tuple[str, str]]:
    """The merges, most frequent adjacent pair first (ties: smallest pair). A heap with lazy deletion
    finds each best pair (a stale entry, whose count has changed since, is skipped when popped): the
    same choice as a full min() over all pairs, in log time."""
    import heapq

    from tqdm import tqdm

    words = [tuple(w[:-1]) + (w[-1] + EOW,) for w in counts]
    freqs = [counts[w] for w in counts]
    pair_counts: collections.Counter = collections.Counter()
    where: dict[tuple, set] = collections.defaultdict(set)
    for wi, (w, f) in enumerate(zip(words, freqs)):
        for p in pairwise(w):
            if _mergeable(*p):
                pair_counts[p] += f
                where[p].add(wi)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    with tqdm(total=n_merges, ncols=80, leave=False, desc="learning BPE merges", unit="merge",
              disable=not verbose) as bar:
        while len(merges) < n_merges and heap:
            neg, best = heapq.heappop(heap)
            if pair_counts.get(best) != -neg:
                continue  # stale
            merges.append(best)
            changed = set()
            for wi in sorted(where.pop(best, ())):
                w, f = words[wi], freqs[wi]
                for p in pairwise(w):  # remove the word's old pairs
                    if p in pair_counts:
                        pair_counts[p] -= f
                        changed.add(p)
                        if pair_counts[p] <= 0:
                            del pair_counts[p]
                        if p != best and p in where:
                            where[p].discard(wi)
                words[wi] = w = _merge_pair(w, *best)
                for p in pairwise(w):
                    if _mergeable(*p):
                        pair_counts[p] += f
                        changed.add(p)
                        where[p].add(wi)
            pair_counts.pop(best, None)
            for p in changed:
                if p in pair_counts:
                    heapq.heappush(heap, (-pair_counts[p], p))
            bar.update(1)
    return merges
