"""Text encoding throughput: gpt1_fast's TextEncoder against the release's encoder, same texts, ids
checked identical on every pass.

    python -m benchmarks encode [--quick] [--data FILE ...]

The release's encoder (openai/finetune-transformer-lm text_utils.TextEncoder: ftfy, its standardize,
spaCy per text, cached BPE) is re-implemented in tests/original_encoder.py, the reference the tests
compare against; it is imported from there (test-only code, not part of the package).

Texts: --data FILE (one or more): a Story Cloze / ROCStories CSV (InputSentence1-4 and
RandomFifthSentenceQuiz1/2 columns: the four sentences joined, then each ending, 3 texts a story, as
fine-tuning encodes them), or any other file, one text per line. Without --data, two cases: synthetic
Story Cloze stories and endings (ASCII, like the real ones), and unicode-heavy sentences (curly quotes,
accents, mojibake, entities: ftfy works on nearly every text, the same for both encoders).
Vocabulary: the release's (../shared/openai-gpt) when present, else one learned from the texts.

Cold: a new encoder, built and encoding every text once (its caches empty); warm: the same encoder
encoding them again. spaCy and ftfy are imported and each encoder was built once before timing (lazy
imports and regex compilation paid). Implementations alternate within each of >= 5 passes; medians of
wall and CPU seconds (this process: on a shared machine CPU time is the steadier measure).
"""
from __future__ import annotations

import csv
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the release's encoder (test-only)
from original_encoder import OriginalEncoder, story_texts, unicode_texts  # noqa: E402

from gpt1_fast.text import TextEncoder, learn_bpe  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "openai-gpt"
STORY_COLUMNS = [f"InputSentence{i}" for i in range(1, 5)] + ["RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2"]


def read_texts(path) -> list[str]:
    """Texts of a Story Cloze CSV (story, ending 1, ending 2 per row) or of a file, one per line."""
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline()
        f.seek(0)
        if all(c in header for c in STORY_COLUMNS):
            rows = list(csv.DictReader(f))
            return [t for r in rows for t in (" ".join(r[c] for c in STORY_COLUMNS[:4]), r[STORY_COLUMNS[4]],
                                              r[STORY_COLUMNS[5]])]
        return [line.rstrip("\n") for line in f if line.strip()]


def vocab_paths(texts, tmp):
    if (REAL / "encoder_bpe_40000.json").is_file() and (REAL / "vocab_40000.bpe").is_file():
        return str(REAL / "encoder_bpe_40000.json"), str(REAL / "vocab_40000.bpe"), "openai-gpt (40,000 merges)"
    enc, bpe = os.path.join(tmp, "e.json"), os.path.join(tmp, "m.bpe")
    learn_bpe(texts, 1000, enc, bpe)
    return enc, bpe, "learned from the texts (1,000 merges)"


def built_and_encoded(make, texts):
    enc = make()
    return enc, enc.encode(texts)


def timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def measure(texts, impls, reps):
    """{impl: {"cold"/"warm": [(wall s, cpu s)]}}, impls alternating within each pass; every pass's ids
    against the first implementation's."""
    times = {name: {"cold": [], "warm": []} for name in impls}
    ref = None
    for _ in range(reps):
        for name, make in impls.items():
            enc = ids = ids_warm = None  # the last encoder freed and collected outside the timings
            gc.collect()
            (enc, ids), wall, cpu = timed(lambda: built_and_encoded(make, texts))
            times[name]["cold"].append((wall, cpu))
            gc.collect()
            ids_warm, wall, cpu = timed(lambda: enc.encode(texts))
            times[name]["warm"].append((wall, cpu))
            for got in (ids, ids_warm):
                if ref is None:
                    ref = got
                elif got != ref:
                    bad = next(i for i, (a, b) in enumerate(zip(got, ref)) if a != b)
                    raise SystemExit(f"error: {name} gives other ids than the original on text {bad}: {texts[bad]!r}")
    return times, ref


def rows_for(case, texts, times, ref, base):
    n_tok, rows = sum(map(len, ref)), []
    for mode in ("cold", "warm"):
        b_wall = statistics.median(w for w, _ in times[base][mode])
        b_cpu = statistics.median(c for _, c in times[base][mode])
        for name, t in times.items():
            wall, cpu = statistics.median(w for w, _ in t[mode]), statistics.median(c for _, c in t[mode])
            rows.append({"case": f"{case}, {mode}", "shape": [len(texts)], "dtype": "ids", "impl": name,
                         "ms": round(wall * 1e3, 1), "cpu_ms": round(cpu * 1e3, 1),
                         "texts_per_s": round(len(texts) / wall), "tokens_per_s": round(n_tok / wall),
                         "baseline": base, "ratio": round(wall / b_wall, 3), "speedup": round(b_wall / wall, 2),
                         "cpu_speedup": round(b_cpu / cpu, 2), "tokens": n_tok, "ids_identical": True})
    return rows


def main(quick: bool = False, data=None):
    import ftfy  # noqa: F401 - imported before timing, as in any run that encodes
    import spacy  # noqa: F401

    if data:
        texts = [t for path in data for t in read_texts(path)]
        cases = {f"{', '.join(Path(p).name for p in data)}: {len(texts)} texts": texts}
    else:
        n = 200 if quick else 2000
        cases = {f"synthetic Story Cloze: {3 * n} texts": story_texts(n),
                 f"unicode-heavy sentences: {n // 2} texts": unicode_texts(n // 2)}
    reps, rows = 5, []
    with tempfile.TemporaryDirectory() as tmp:
        enc, bpe, vocab_name = vocab_paths([t for ts in cases.values() for t in ts], tmp)
        impls = {"original (per text: ftfy, standardize, spaCy, cached BPE)": lambda: OriginalEncoder(enc, bpe),
                 "gpt1_fast TextEncoder": lambda: TextEncoder(enc, bpe)}
        for make in impls.values():  # lazy imports, compiled regexes: paid before timing
            make().encode(next(iter(cases.values()))[:20])
        for case, texts in cases.items():
            times, ref = measure(texts, impls, reps)
            rows += rows_for(case, texts, times, ref, next(iter(impls)))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    notes = (f"vocabulary {vocab_name}; {cores} usable cores, one process; load average "
             f"{os.getloadavg()[0]:.1f} at the end (other work on the machine inflates wall times); median of "
             f"{reps} interleaved passes. cold = new encoder built + every text encoded once; warm = the "
             "same encoder again. speedup: wall-clock ratio, cpu_speedup: CPU-seconds ratio.")
    write_results("encode", rows, {}, torch.device("cpu"), notes=notes)
    for r in rows:
        print(f"{r['case']:<60.60} {r['impl']:<40.40} {r['texts_per_s']:>7} texts/s  x{r['speedup']:<6} "
              f"(CPU {r['cpu_ms']} ms: x{r['cpu_speedup']})")


if __name__ == "__main__":
    main()
