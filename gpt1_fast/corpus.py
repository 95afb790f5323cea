"""Pretraining data: text files, folders of them or JSONL, encoded once into a uint16 token file per split.

Inputs (`read_documents`, shared with `python -m gpt1_fast.vocab`):
- a `.jsonl` file: one document per non-blank line, a JSON object with a string field `text`;
- any other file: plain UTF-8 text, the whole file is one document (a book, an article);
- a folder: every `*.txt` and `*.jsonl` file under it, recursively, in sorted path order (hidden
  files and folders skipped);
- the most common corpus, ONE plain text file in all: its paragraphs (split at blank lines) are the
  documents; if it has no blank line, the validation share is its last tokens (as nanoGPT holds out
  the tail of one file).
Bad JSON, a missing `text` field and bytes that are not UTF-8 are errors naming file and line.

Output in `out_dir`: `train.bin` / `val.bin`, the ids of all documents of the split concatenated in
input order, uint16, no separator and no padding (the paper's contiguous BooksCorpus text: a training
window may span two documents), and `train.json` / `val.json` beside them:
`{"format": 1, "split", "digest", "vocab_digest", "n_vocab", "tokens", "documents", "dtype": "uint16",
"sha256", "val_fraction", "seed", "vocab": {"encoder", "bpe"}, "sources": [{"path", "files", "documents"}]}`.
Validation documents are `round(n * val_fraction)` (at least 1 when val_fraction > 0) chosen by
`numpy.random.default_rng(seed).permutation(n)`. `digest` hashes the inputs' bytes, the vocabulary's
bytes, val_fraction and seed: a second call with the same inputs finds it in both JSONs and reuses the
files without reading the vocabulary or encoding anything.
Writes are atomic (fileio.atomic_write: temporary in the same folder, fsync, rename); the JSONs are
written last, so a killed run leaves either the previous complete output or a folder that fails the
reuse check and is encoded again (its temporaries removed then). Encoding holds a lock on
`out_dir/.lock`: processes started together (DDP ranks) can all call encode_corpus; one encodes, the
others wait and reuse its files.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from .errors import DataError
from .fileio import TMP_SUFFIX, atomic_write, atomic_write_text, sha256_file, update_hash

FORMAT = 1
DTYPE = np.uint16
SPLITS = ("train", "val")
_DIGEST_VERSION = b"gpt1_fast-corpus-v1"
_BATCH_CHARS = 1 << 20  # about this much text per worker task
_BATCH_DOCS = 512


class CorpusError(DataError):
    """A problem with a corpus input or token file; the message names the file (and line)."""


# ------------------------------------------------------------------------------------------- reading
def list_files(paths) -> list[tuple[Path, list[Path]]]:
    """[(input path, its files)] for each input: a file itself, a folder's *.txt/*.jsonl (sorted)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        if p.is_file():
            out.append((p, [p]))
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".jsonl") and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                raise CorpusError(f"{p}: no *.txt or *.jsonl files in this folder")
            out.append((p, files))
        else:
            raise CorpusError(f"{p}: no such file or folder")
    if not out:
        raise CorpusError("no input files given")
    return out


def _decode_line(raw: bytes, path: Path, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}:{line_no}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None


def _read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise CorpusError(f"{path}:{line}: not UTF-8 (byte {raw[e.start]:#04x} at column {col})") from None


def _iter_jsonl(path: Path):
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            line = _decode_line(raw, path, line_no)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{line_no}: bad JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict) or "text" not in obj:
                raise CorpusError(f"{path}:{line_no}: expected a JSON object with a \"text\" field, "
                                  f"found {line.strip()[:60]!r}")
            if not isinstance(obj["text"], str):
                raise CorpusError(f"{path}:{line_no}: \"text\" must be a string, found {type(obj['text']).__name__}")
            yield obj["text"]


PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")  # a blank line (spaces allowed) ends a paragraph


def iter_file_documents(path: Path, paragraphs: bool = False):
    """The documents of one file: its lines' `text` fields (JSONL), its whole text, or with
    `paragraphs` its text's blank-line-separated paragraphs."""
    if path.suffix == ".jsonl":
        yield from _iter_jsonl(path)
    elif paragraphs:
        yield from (p for p in PARAGRAPH_BREAK.split(_read_text_file(path)) if p.strip())
    else:
        yield _read_text_file(path)


def one_text_file(sources) -> bool:
    """The inputs are a single plain text file: its paragraphs are the documents."""
    files = [f for _, fs in sources for f in fs]
    return len(files) == 1 and files[0].suffix != ".jsonl"


def iter_documents(sources):
    """Every document of listed inputs (list_files), in order."""
    paragraphs = one_text_file(sources)
    for _, files in sources:
        for f in files:
            yield from iter_file_documents(f, paragraphs)


def read_documents(paths):
    """Every document of the inputs (see the module doc), in order."""
    yield from iter_documents(list_files(paths))


# ------------------------------------------------------------------------------------------ digests
def _hash_file(h, path) -> None:
    update_hash(h, path)
    h.update(b"\0")


def vocab_digest(encoder_path, bpe_path) -> str:
    """sha256 of the two vocabulary files' bytes."""
    h = hashlib.sha256()
    for p in (encoder_path, bpe_path):
        if not Path(p).is_file():
            raise CorpusError(f"{p}: vocabulary file not found")
        _hash_file(h, p)
    return h.hexdigest()


def inputs_digest(sources, vocab_dig: str, val_fraction: float, seed: int) -> str:
    h = hashlib.sha256(_DIGEST_VERSION)
    h.update(f"{vocab_dig} {val_fraction!r} {seed}\0".encode())
    for _, files in sources:
        for f in files:
            h.update(f"{f.suffix == '.jsonl'} {f.stat().st_size}\0".encode())
            _hash_file(h, f)
    return h.hexdigest()


# -------------------------------------------------------------------------------------- token files
class TokenFile:
    """One split's tokens (`tokens`, a read-only uint16 memmap) and the JSON beside it (`meta`).

    TokenFile(out_dir / "train.bin") checks the pair (format, dtype, size = tokens x 2 bytes, and the
    vocabulary digest when `vocab_digest` is given; the content's sha256 too with verify=True) and
    raises CorpusError naming the file otherwise."""

    def __init__(self, path, vocab_digest: str | None = None, verify: bool = False):
        self.path = Path(path)
        self.meta_path = self.path.with_suffix(".json")
        self.meta = _read_meta(self.meta_path)
        m = self.meta
        if not self.path.is_file():
            raise CorpusError(f"{self.path}: token file missing (its description {self.meta_path.name} exists); "
                              "encode the corpus again")
        size = self.path.stat().st_size
        if size != m["tokens"] * np.dtype(DTYPE).itemsize:
            raise CorpusError(f"{self.path}: damaged: {size} bytes, expected {m['tokens']} tokens x 2 = "
                              f"{m['tokens'] * 2} bytes ({self.meta_path.name}); encode the corpus again")
        if vocab_digest is not None and m["vocab_digest"] != vocab_digest:
            raise CorpusError(f"{self.path}: encoded with another vocabulary (digest {m['vocab_digest'][:12]}, "
                              f"expected {vocab_digest[:12]}); encode the corpus again with this vocabulary")
        self.tokens = (np.memmap(self.path, dtype=DTYPE, mode="r") if m["tokens"]
                       else np.zeros(0, dtype=DTYPE))  # an empty file cannot be mapped
        if verify and sha256_file(self.path) != m["sha256"]:
            raise CorpusError(f"{self.path}: damaged: content does not match the sha256 in {self.meta_path.name}")

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r}, tokens={self.meta['tokens']}, documents={self.meta['documents']})"


_META_KEYS = {"format": int, "split": str, "digest": str, "vocab_digest": str, "n_vocab": int, "tokens": int,
              "documents": int, "dtype": str, "sha256": str}


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        raise CorpusError(f"{path}: not found (no encoded corpus here; encode it first)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorpusError(f"{path}: damaged token-file description ({e}); encode the corpus again") from None
    if not isinstance(meta, dict):
        raise CorpusError(f"{path}: damaged token-file description (not a JSON object)")
    for k, t in _META_KEYS.items():
        if not isinstance(meta.get(k), t):
            raise CorpusError(f"{path}: damaged token-file description ({k!r} missing or not {t.__name__})")
    if meta["format"] != FORMAT or meta["dtype"] != np.dtype(DTYPE).name:
        raise CorpusError(f"{path}: format {meta['format']} / dtype {meta['dtype']}, this version reads "
                          f"format {FORMAT} / {np.dtype(DTYPE).name}; encode the corpus again")
    return meta


def open_split(out_dir, split: str, vocab_digest: str | None = None, verify: bool = False) -> TokenFile:
    """The token file of `split` ("train" or "val") in `out_dir` (see TokenFile)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return TokenFile(Path(out_dir) / f"{split}.bin", vocab_digest=vocab_digest, verify=verify)


def _reusable(out_dir: Path, digest: str) -> dict | None:
    try:
        files = {s: open_split(out_dir, s) for s in SPLITS}
    except CorpusError:
        return None
    if all(f.meta["digest"] == digest for f in files.values()):
        return {s: f.meta for s, f in files.items()}
    return None


# ------------------------------------------------------------------------------------------ encoding
def split_documents(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over n documents: True = validation."""
    if not 0 <= val_fraction < 1:
        raise CorpusError(f"val_fraction must be in [0, 1), got {val_fraction}")
    is_val = np.zeros(n, dtype=bool)
    if val_fraction == 0:
        return is_val
    if n < 2:
        raise CorpusError(f"{n} document(s) in the inputs: the validation share is held out by document; "
                          "give several files, a folder or JSONL (one document per line), or val_fraction 0")
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return is_val


def _batches(sources, is_val):
    """(texts, their is_val flags) batches of about _BATCH_CHARS characters, in document order."""
    texts, flags, chars = [], [], 0
    for i, text in enumerate(iter_documents(sources)):
        texts.append(text)
        flags.append(bool(is_val[i]))
        chars += len(text)
        if chars >= _BATCH_CHARS or len(texts) >= _BATCH_DOCS:
            yield texts, flags
            texts, flags, chars = [], [], 0
    if texts:
        yield texts, flags


def default_workers(sources) -> int:
    """All usable cores for inputs over 4 MB; one (in-process, no start-up cost) below."""
    size = sum(f.stat().st_size for _, files in sources for f in files)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if size > (4 << 20) else 1


def encode_corpus(paths, out_dir, text_encoder_paths: tuple[str, str], *, val_fraction: float = 0.01,
                  workers: int | None = None, seed: int = 0, verbose: bool = True) -> dict:
    """Encode the documents of `paths` into out_dir/{train,val}.{bin,json} (module doc); reuse them when
    they hold these inputs already. Returns {"train": meta, "val": meta}."""
    out_dir = Path(out_dir)
    encoder_path, bpe_path = map(str, text_encoder_paths)
    sources = list_files(paths)
    vdig = vocab_digest(encoder_path, bpe_path)
    digest = inputs_digest(sources, vdig, val_fraction, seed)
    with _exclusive(out_dir):  # several processes (DDP ranks): one encodes, the others then reuse
        found = _reusable(out_dir, digest)
        if found is not None:
            if verbose:
                print(f"reusing the encoded corpus in {out_dir} ({found['train']['tokens']:,} train tokens, "
                      f"{found['val']['tokens']:,} val tokens)")
            return found
        _remove_stale_temporaries(out_dir)
        return _encode(sources, out_dir, encoder_path, bpe_path, vdig, digest, val_fraction, workers, seed, verbose)


@contextlib.contextmanager
def _exclusive(out_dir: Path):
    """Hold an advisory lock on out_dir/.lock (POSIX; elsewhere no lock)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "a") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """What a killed encode left (fileio's temporary names of our four files); safe under the lock."""
    for p in out_dir.iterdir():
        if p.name.endswith(TMP_SUFFIX) and p.name.startswith(tuple(f".{s}.{e}." for s in SPLITS for e in ("bin", "json"))):
            p.unlink(missing_ok=True)


def _encode(sources, out_dir, encoder_path, bpe_path, vdig, digest, val_fraction, workers, seed, verbose) -> dict:
    # First pass: count documents and validate every input before anything is encoded or written.
    paragraphs = one_text_file(sources)
    counts = [[sum(1 for _ in iter_file_documents(f, paragraphs)) for f in files] for _, files in sources]
    n_docs = sum(map(sum, counts))
    if n_docs == 0:
        raise CorpusError("the inputs hold no documents (every JSONL line blank?)")
    tail = val_fraction if n_docs == 1 else 0.0  # one document: its last tokens are the validation share
    is_val = split_documents(n_docs, 0.0 if tail else val_fraction, seed)
    te, n_vocab = _text_encoder(encoder_path, bpe_path)
    workers = default_workers(sources) if workers is None else max(1, int(workers))
    stats = _write_token_files(sources, is_val, te, workers, out_dir, n_docs, verbose, tail)

    metas = {}
    for s in SPLITS:
        st = stats[s]
        metas[s] = {"format": FORMAT, "split": s, "digest": digest, "vocab_digest": vdig, "n_vocab": n_vocab,
                    "tokens": st["tokens"], "documents": st["documents"], "dtype": np.dtype(DTYPE).name,
                    "sha256": st["sha256"].hexdigest(), "val_fraction": val_fraction, "seed": seed,
                    "vocab": {"encoder": os.path.abspath(encoder_path), "bpe": os.path.abspath(bpe_path)},
                    "sources": [{"path": os.path.abspath(p), "files": len(files), "documents": sum(c)}
                                for (p, files), c in zip(sources, counts)]}
    for s in ("val", "train"):  # train.json last: the reuse check needs both
        atomic_write_text(out_dir / f"{s}.json", json.dumps(metas[s], indent=1) + "\n")
    if verbose:
        print(f"encoded {n_docs:,} documents into {out_dir}: {metas['train']['tokens']:,} train tokens "
              f"({metas['train']['documents']:,} documents), {metas['val']['tokens']:,} val tokens "
              f"({metas['val']['documents']:,} documents)")
    return metas


def _text_encoder(encoder_path, bpe_path):
    """-> (TextEncoder, n_vocab); its ids must fit the token file's dtype."""
    from .text import TextEncoder

    te = TextEncoder(encoder_path, bpe_path)
    n_vocab = max(te.encoder.values()) + 1
    if n_vocab > np.iinfo(DTYPE).max + 1:
        raise CorpusError(f"{encoder_path}: {n_vocab:,} ids do not fit the token file's uint16 "
                          f"(at most {np.iinfo(DTYPE).max + 1:,})")
    return te, n_vocab


def _tail_split(ids, fraction: float):
    """One document's ids -> (train part, val part): its last `fraction` of tokens held out (at least
    one token, and one left for training)."""
    n_val = min(max(1, round(len(ids) * fraction)), len(ids) - 1)
    return [("train", ids[:len(ids) - n_val]), ("val", ids[len(ids) - n_val:])]


def _write_token_files(sources, is_val, te, workers, out_dir, n_docs, verbose, tail: float = 0.0) -> dict:
    """Encode every document into out_dir/train.bin and val.bin (atomically, both or neither);
    tail > 0: the (one) document's last share of tokens goes to val.bin.
    -> {split: {"tokens", "documents", "sha256"}}."""
    stats = {s: {"tokens": 0, "documents": 0, "sha256": hashlib.sha256()} for s in SPLITS}
    bar = None
    if verbose:
        from tqdm import tqdm

        bar = tqdm(total=n_docs, unit="doc", desc="encoding corpus", dynamic_ncols=True)

    def write_both(f_train, f_val):
        outs = {"train": f_train, "val": f_val}
        batches = _batches(sources, is_val)
        flags_seen = []  # the flags of each batch in flight, in order (the pool returns in order)

        def texts_only():
            for texts, flags in batches:
                flags_seen.append(flags)
                yield texts

        for ids_list in te.encode_batches(texts_only(), workers):
            flags = flags_seen.pop(0)
            for ids, val in zip(ids_list, flags):
                parts = _tail_split(ids, tail) if tail and len(ids) > 1 else [("val" if val else "train", ids)]
                for s, part in parts:
                    b = np.asarray(part, dtype=DTYPE).tobytes()
                    outs[s].write(b)
                    st = stats[s]
                    st["sha256"].update(b)
                    st["tokens"] += len(part)
                    st["documents"] += 1
            if bar is not None:
                bar.update(len(ids_list))
                bar.set_postfix(tokens=f"{stats['train']['tokens'] + stats['val']['tokens']:,}")

    try:
        atomic_write(out_dir / "train.bin",
                     lambda ft: atomic_write(out_dir / "val.bin", lambda fv: write_both(ft, fv), "wb"), "wb")
    finally:
        if bar is not None:
            bar.close()
    return stats
