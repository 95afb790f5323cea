"""The encoding cache of every dataset: a split's text fields through the BPE once, then from disk.

A cache file `<tag>-<key>.npz` holds, per field, the ids of all texts concatenated (`f_<field>`, int32)
and the length of each text (`l_<field>`, int64): plain arrays, no pickle. The key hashes the bytes
of the split's source (a file, or every file of a folder) and of the vocabulary files, and the field
names, so a changed file or vocabulary is a new key and a later run with the same inputs skips
encoding (and needs no spaCy/ftfy). A damaged file (truncated, a failed zip CRC, missing or
inconsistent arrays) is reported in one warning line naming it, deleted, encoded again and rewritten.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from ..fileio import atomic_write, update_hash

CACHE_VERSION = b"gpt1_fast-encoded-v2"


def cache_file(cache_dir, tag: str, sources, vocab_paths, fields) -> Path:
    """Where the ids of `fields` of `sources` under this vocabulary are stored."""
    h = hashlib.sha256(CACHE_VERSION + b"\0" + tag.encode() + b"\0")
    for p in (*sources, *vocab_paths):
        _digest(h, Path(p))
    h.update(",".join(sorted(fields)).encode())
    return Path(cache_dir) / f"{tag}-{h.hexdigest()[:32]}.npz"


def _digest(h, path: Path) -> None:
    """Hash a file's bytes, or every file of a folder (sorted relative names and bytes)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path)).encode() if path.is_dir() else b"")
        update_hash(h, f)
        h.update(b"\0")


def pack(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Id lists -> (all ids concatenated, int32; the length of each list, int64)."""
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter((i for x in lists for i in x), dtype=np.int32, count=int(lens.sum()))
    return flat, lens


def unpack(flat: np.ndarray, lens: np.ndarray) -> list[list[int]]:
    """pack's inverse; ValueError when the lengths do not describe the ids."""
    if flat.ndim != 1 or lens.ndim != 1 or (lens < 0).any() or int(lens.sum()) != flat.size:
        raise ValueError(f"lengths sum to {int(lens.sum())} but {flat.size} ids are stored")
    offs = np.concatenate([[0], np.cumsum(lens)])
    return [flat[offs[i]:offs[i + 1]].tolist() for i in range(len(lens))]


def read(path: Path, sizes: dict[str, int]) -> dict[str, list[list[int]]] | None:
    """The cached ids of each field (sizes: field -> number of texts), or None when the file is
    damaged: then one warning line names it and it is deleted, so the caller encodes again."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: unpack(z[f"f_{k}"], z[f"l_{k}"]) for k in sizes}
        wrong = [k for k, n in sizes.items() if len(out[k]) != n]
        if not wrong:
            return out
        why = f"{len(out[wrong[0]])} entries of {wrong[0]} for {sizes[wrong[0]]} texts"
    except Exception as e:  # zipfile.BadZipFile (CRC, truncation), KeyError, ValueError, EOFError, ...: all mean rebuild
        why = f"{type(e).__name__}: {e}"
    print(f"warning: damaged encoding cache file {path} ({why}); deleting it and encoding again",
          file=sys.stderr, flush=True)
    path.unlink(missing_ok=True)
    return None


def write(path: Path, ids: dict[str, list[list[int]]]) -> None:
    arrays = {}
    for k, lists in ids.items():
        arrays[f"f_{k}"], arrays[f"l_{k}"] = pack(lists)
    atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")


def encode_texts(texts: dict[str, list[str]], text_encoder, sources, vocab_paths, cache_dir=None,
                 tag: str = "task", verbose: bool = False) -> dict[str, list[list[int]]]:
    """BPE-encode each field's texts, once: with `cache_dir` the ids are stored under a key of the
    bytes of `sources` (the split's file or folder) and of the vocabulary files (module doc)."""
    path = None
    if cache_dir:
        path = cache_file(cache_dir, tag, sources, vocab_paths, texts)
        if path.is_file():
            out = read(path, {k: len(v) for k, v in texts.items()})
            if out is not None:
                return out
    out = {k: text_encoder.encode(v, verbose=verbose) for k, v in texts.items()}
    if path is not None:
        write(path, out)
    return out
