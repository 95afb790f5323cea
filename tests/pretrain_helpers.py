"""Shared by test_pretrain.py and test_resume.py: a small generated corpus, a tiny model's arguments,
and a way to run `gpt1_fast.pretrain` in a subprocess (to kill it).

Until gpt1_fast.corpus is merged, `install_corpus_standin()` provides its interface (encode_corpus,
open_split, read_documents) with uint16 memmaps, so these tests run either way."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--n_ctx", "16", "--n_batch", "8",
        "--device", "cpu", "--backend", "torch", "--log_every", "2", "--eval_every", "5", "--warmup_steps", "4"]
SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the bird", "a small child"]
VERBS = ["sat on", "looked at", "ran to", "sang near", "jumped over", "found"]
OBJECTS = ["the mat", "a tree", "the red door", "the river", "a green box", "the hill"]


def write_corpus(folder: Path, n_docs: int = 160, seed: int = 0) -> Path:
    """Documents of patterned sentences: text files in a folder plus one JSONL file."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    docs = []
    for _ in range(n_docs):
        k = rng.randrange(3, 7)
        docs.append(" ".join(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(k)))
    (folder / "texts").mkdir(exist_ok=True)
    for i, d in enumerate(docs[: n_docs // 2]):
        (folder / "texts" / f"doc{i:03d}.txt").write_text(d + "\n", encoding="utf-8")
    with open(folder / "more.jsonl", "w", encoding="utf-8") as f:
        for d in docs[n_docs // 2:]:
            f.write(json.dumps({"text": d}) + "\n")
    return folder


def learn_vocab(corpus: Path, out: Path, n_merges: int = 120) -> tuple[str, str]:
    from gpt1_fast.text import learn_bpe

    docs = _read_documents([corpus / "texts", corpus / "more.jsonl"])
    enc, bpe = out / "enc.json", out / "merges.bpe"
    learn_bpe(docs, n_merges, enc, bpe)
    return str(enc), str(bpe)


# ------------------------------------------------------------------- stand-in for gpt1_fast.corpus
def _read_documents(paths):
    docs = []
    for p in map(Path, paths):
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.suffix == ".jsonl":
                docs += [json.loads(line)["text"] for line in f.read_text(encoding="utf-8").splitlines() if line]
            elif f.is_file():
                docs.append(f.read_text(encoding="utf-8"))
    return docs


class _TokenFile:
    def __init__(self, path):
        path = Path(path)
        self.meta = json.loads(path.with_suffix(".json").read_text())
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r")


def _encode_corpus(paths, out_dir, text_encoder_paths, *, val_fraction=0.01, workers=None, seed=0, verbose=True):
    from gpt1_fast.text import TextEncoder

    out_dir = Path(out_dir)
    if (out_dir / "val.json").is_file():
        return {s: json.loads((out_dir / f"{s}.json").read_text()) for s in ("train", "val")}
    docs = _read_documents(paths)
    te = TextEncoder(*text_encoder_paths)
    ids = te.encode(docs)
    order = np.random.default_rng(seed).permutation(len(docs))
    n_val = max(1, round(val_fraction * len(docs)))
    out_dir.mkdir(parents=True, exist_ok=True)
    metas = {}
    for split, sel in (("val", order[:n_val]), ("train", order[n_val:])):
        toks = np.asarray([t for i in sorted(sel) for t in ids[i]], dtype=np.uint16)
        toks.tofile(out_dir / f"{split}.bin")
        metas[split] = {"format": 1, "vocab_digest": "standin", "n_vocab": len(te.encoder), "tokens": len(toks),
                        "documents": len(sel), "dtype": "uint16"}
        (out_dir / f"{split}.json").write_text(json.dumps(metas[split]))
    return metas


def install_corpus_standin() -> bool:
    """Put the stand-in at gpt1_fast.corpus when the real module is absent; True if installed."""
    try:
        import gpt1_fast.corpus  # noqa: F401
        return False
    except ImportError:
        pass
    import gpt1_fast

    mod = types.ModuleType("gpt1_fast.corpus")
    mod.encode_corpus = _encode_corpus
    mod.open_split = lambda out_dir, split: _TokenFile(Path(out_dir) / f"{split}.bin")
    mod.read_documents = _read_documents
    mod.TokenFile = _TokenFile
    sys.modules["gpt1_fast.corpus"] = mod
    gpt1_fast.corpus = mod
    return True


# --------------------------------------------------------------------------------------- running
RUNNER = ("import sys; sys.path.insert(0, {tests!r}); import pretrain_helpers as h; h.install_corpus_standin(); "
          "from gpt1_fast.pretrain import cli; cli(sys.argv[1:])")


def pretrain_cmd(args, launcher=()) -> list[str]:
    code = RUNNER.format(tests=str(Path(__file__).parent))
    return [*launcher, sys.executable, "-c", code, *map(str, args)] if not launcher else \
        [*launcher, "--no-python", sys.executable, "-c", code, *map(str, args)]


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_pretrain(args, timeout=300, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run(pretrain_cmd(args), cwd=REPO, env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout)


def popen_pretrain(args, **extra_env) -> subprocess.Popen:
    return subprocess.Popen(pretrain_cmd(args), cwd=REPO, env=env(**extra_env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_weights(folder: Path) -> dict:
    from gpt1_fast.weights import read_safetensors

    return read_safetensors(Path(folder) / "model.safetensors")
