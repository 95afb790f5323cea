"""Text encoding throughput: gpt1_fast's TextEncoder (in process, and with worker processes) against
the original algorithm, on the same texts, ids checked identical.

The original (openai/finetune-transformer-lm text_utils.TextEncoder.encode) is re-implemented here
only, with its structure: per text ftfy.fix_text, its standardize (its own regex, evaluated from the
non-raw literal as it was), spaCy `nlp(text)` (spacy.blank("en"): the same tokenizer), then for every
token bpe(token.text.lower()) with its per-word cache and a dictionary look-up.

Texts: synthetic Story Cloze stories and endings (gpt1_fast.synthetic), plus "real-ish" sentences
built from a word pool with curly quotes, dashes, ellipses, accents, numbers, entities and newlines,
so that ftfy and spaCy do real work and the caches are not trivially hot. Vocabulary: the release's
(../shared/openai-gpt) when present, else one learned from the texts (1,000 merges).
Every implementation starts from cold caches (a fresh encoder) and sees the same texts; the timed
number is one full pass (texts/s, tokens/s), median of 3 passes (1 with --quick), interleaved. CPU
seconds (this process + its joined workers) are reported too: on a loaded machine wall time mostly
measures the other load, CPU time the work done.
"""
from __future__ import annotations

import ast
import os
import random
import re
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from benchmarks.common import write_results
from gpt1_fast.synthetic import story_rows

REAL = Path(__file__).resolve().parents[2] / "shared" / "openai-gpt"


class OriginalEncoder:
    """The release's TextEncoder.encode loop (see module doc)."""

    def __init__(self, encoder_path, bpe_path):
        import ftfy
        import spacy

        from gpt1_fast.text import read_vocab

        self.nlp = spacy.blank("en")
        self.fix_text = ftfy.fix_text
        self.encoder, merges = read_vocab(encoder_path, bpe_path)
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {}
        with warnings.catch_warnings():  # the original's non-raw literal, as Python reads it
            warnings.simplefilter("ignore")
            self.punct = re.compile(ast.literal_eval(
                "'''(-+|~+|!+|\"+|;+|\\?+|\\++|,+|\\)+|\\(+|\\\\+|\\/+|\\*+|\\[+|\\]+|}+|{+|\\|+|_+)'''"))

    def standardize(self, text):
        text = text.replace("—", "-").replace("–", "-").replace("―", "-").replace("…", "...").replace("´", "'")
        text = self.punct.sub(r" \1 ", text)
        text = re.sub("\\s*\n\\s*", " \n ", text)
        text = re.sub("[^\\S\n]+", " ", text)
        return text.strip()

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

    def encode(self, texts):
        out = []
        for text in texts:
            text = self.nlp(self.standardize(self.fix_text(text)))
            ids = []
            for token in text:
                ids.extend(self.encoder.get(t, 0) for t in self.bpe(token.text.lower()).split(" "))
            out.append(ids)
        return out


EXTRA = ["\u201cNo way,\u201d", "she\u2019d", "caf\u00e9", "na\u00efve", "\u2014", "\u2026", "5k.", "10km",
         "3:45pm", "$1,000", "e.g.", "Dr.", "U.S.", "&amp;", "don't", "(really)", "[sic]", "\n", "\n\n",
         "50%", "x\u00b2", "\u00bd", "co-op", "can't", "C++", "a/b", "well...", "!!", "?!", "\u00e2\u0080\u0099s"]


def make_texts(n_stories: int, seed: int = 0, mixed: bool = True) -> list[str]:
    """Story Cloze-like texts (stories, both endings); mixed: plus n_stories sentences of the same
    words with EXTRA pieces (unicode, entities, newlines) sprinkled in, shuffled together."""
    rows = story_rows(n_stories, seed=seed)
    texts = [" ".join(r[1:5]) for r in rows] + [r[5] for r in rows] + [r[6] for r in rows]
    rng = random.Random(seed)
    if mixed:
        words = " ".join(texts).split()
        for _ in range(n_stories):
            k = rng.randint(8, 60)
            texts.append(" ".join(rng.choice(EXTRA) if rng.random() < 0.15 else rng.choice(words) for _ in range(k)))
    rng.shuffle(texts)
    return texts


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers, once joined)."""
    import resource

    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime


def vocab_paths(texts, tmp):
    if (REAL / "encoder_bpe_40000.json").is_file() and (REAL / "vocab_40000.bpe").is_file():
        return str(REAL / "encoder_bpe_40000.json"), str(REAL / "vocab_40000.bpe"), "openai-gpt (40,000 merges)"
    from gpt1_fast.text import learn_bpe

    enc, bpe = os.path.join(tmp, "e.json"), os.path.join(tmp, "m.bpe")
    learn_bpe(texts, 1000, enc, bpe)
    return enc, bpe, "learned from the texts (1,000 merges)"


def measure(case, texts, impls, reps):
    """Rows for one set of texts: every implementation, interleaved, ids checked against the first."""
    times = {k: [] for k in impls}
    cpu = {k: [] for k in impls}
    ref = None
    for _ in range(reps):
        for name, make in impls.items():
            fn = make()  # fresh encoder: cold caches; worker start-up counted
            c0, t0 = cpu_seconds(), time.perf_counter()
            ids = fn(texts)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(cpu_seconds() - c0)
            if ref is None:
                ref = ids
            elif ids != ref:
                bad = next(i for i, (a, b) in enumerate(zip(ids, ref)) if a != b)
                raise SystemExit(f"error: {name} gives other ids than the original on text {bad}: {texts[bad]!r}")
    n_tok = sum(map(len, ref))
    base = statistics.median(times[next(iter(impls))])
    base_cpu = statistics.median(cpu[next(iter(impls))])
    rows = []
    for name, ts in times.items():
        s, c = statistics.median(ts), statistics.median(cpu[name])
        rows.append({"case": f"{case}: {len(texts)} texts, {n_tok} tokens", "shape": [len(texts)], "dtype": "ids",
                     "impl": name, "ms": round(s * 1e3, 1), "texts_per_s": round(len(texts) / s),
                     "tokens_per_s": round(n_tok / s), "baseline": "original", "ratio": round(s / base, 3),
                     "speedup": round(base / s, 2), "cpu_s": round(c, 3), "cpu_speedup": round(base_cpu / c, 2),
                     "ids_identical": True})
    return rows


def main(quick: bool = False):
    from gpt1_fast.text import TextEncoder

    n_stories = 600 if quick else 4000
    reps = 1 if quick else 3
    cases = {"stories": make_texts(n_stories, mixed=False), "mixed": make_texts(n_stories)}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(2, min(cores, 8))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        enc, bpe, vocab_name = vocab_paths(cases["mixed"], tmp)
        impls = {
            "original (per text: ftfy, standardize, nlp(), bpe)": lambda: OriginalEncoder(enc, bpe).encode,
            "gpt1_fast TextEncoder, 1 process": lambda: TextEncoder(enc, bpe).encode,
            f"gpt1_fast TextEncoder, workers={workers}":
                lambda: (lambda te: (lambda t: te.encode(t, workers=workers)))(TextEncoder(enc, bpe)),
        }
        for case, texts in cases.items():
            rows += measure(case, texts, impls, reps)
    notes = ("speedup = wall-clock ratio; cpu_speedup = CPU-seconds ratio (this process + joined workers; "
             f"less sensitive to other load). vocabulary {vocab_name}; {cores} usable cores (shared with other "
             f"work: noisy); median of {reps} pass(es), each from cold caches; worker start-up included.")
    write_results("encode", rows, {}, torch.device("cpu"), notes=notes)
    for r in rows:
        print(f"{r['case']:<38} {r['impl']:<52} {r['texts_per_s']:>7} texts/s {r['tokens_per_s']:>8} tokens/s "
              f"x{r['speedup']:<5} (CPU {r['cpu_s']} s: x{r['cpu_speedup']})")


if __name__ == "__main__":
    main()
