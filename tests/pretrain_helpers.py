"""Shared by test_pretrain.py and test_resume.py: a small generated corpus, a tiny model's arguments,
and a way to run `gpt1_fast.pretrain` in a subprocess (to kill it)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path


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

    from gpt1_fast.corpus import read_documents

    docs = list(read_documents([corpus / "texts", corpus / "more.jsonl"]))
    enc, bpe = out / "enc.json", out / "merges.bpe"
    learn_bpe(docs, n_merges, enc, bpe)
    return str(enc), str(bpe)


# --------------------------------------------------------------------------------------- running
def pretrain_cmd(args, launcher=(), module="gpt1_fast.pretrain", slow_checkpoints=None) -> list[str]:
    """`python -m gpt1_fast.pretrain ARGS`, optionally under a launcher (torchrun's `-m` form), or with
    every checkpoint write slowed by `slow_checkpoints` seconds before its rename (tests/slow_writes.py)."""
    if launcher:
        return [*launcher, "-m", module, *map(str, args)]
    if slow_checkpoints is not None:
        return [sys.executable, str(REPO / "tests" / "slow_writes.py"), str(slow_checkpoints), "-m", module,
                *map(str, args)]
    return [sys.executable, "-m", module, *map(str, args)]


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_pretrain(args, timeout=300, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run(pretrain_cmd(args), cwd=REPO, env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout)


def popen_pretrain(args, module="gpt1_fast.pretrain", slow_checkpoints=None) -> subprocess.Popen:
    return subprocess.Popen(pretrain_cmd(args, module=module, slow_checkpoints=slow_checkpoints), cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_weights(folder: Path) -> dict:
    from gpt1_fast.weights import read_safetensors

    return read_safetensors(Path(folder) / "model.safetensors")
