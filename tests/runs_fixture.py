"""The small world the bad-input tables share (tests/conftest.py's `tiny_runs`, built once a session):
Story Cloze files, a vocabulary learned from them, an earlier fine-tuning run (runs/earlier/, its
model and predictions), a 2-update pretraining run on one text file (pre/, with checkpoints), SST-2
files, a plain file where a folder is expected (a_file). Every bad input is tried against it; its
files must be byte-identical afterwards."""
from __future__ import annotations

from pathlib import Path

TINY = ["--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--device", "cpu", "--backend", "torch"]


def vocab_args(d) -> list[str]:
    return ["--encoder_path", str(d / "vocab" / "enc.json"), "--bpe_path", str(d / "vocab" / "merges.bpe")]


def base_args(d, data_dir=None) -> list[str]:
    """train's flags for a tiny from-scratch ROCStories run in d."""
    return ["--data_dir", str(data_dir or d / "data"), "--from_scratch", *vocab_args(d), "--cache_dir", str(d / "cache"),
            "--n_valid", "40", "--runs_dir", str(d / "runs")] + TINY


def pretrain_args(d, out) -> list[str]:
    return ["--data", str(d / "book.txt"), "--out", str(out), *vocab_args(d), *TINY, "--n_ctx", "16", "--n_batch", "4",
            "--max_steps", "2", "--warmup_steps", "1", "--eval_every", "2", "--save_every", "1", "--workers", "1"]


def build(d: Path) -> Path:
    from fixtures_tasks import story_cloze_with_vocab, write_fixture
    from gpt1_fast import pretrain, train

    val = story_cloze_with_vocab(d, n=120, n_test=50, seed=7, merges=300, vocab_dir=d / "vocab")
    train.main(base_args(d) + ["--desc", "earlier", "--n_batch", "16", "--n_iter", "1", "--submit"])
    (d / "book.txt").write_text("\n\n".join(" ".join(s) for s in zip(val.stories, val.endings1)), encoding="utf-8")
    pretrain.main(pretrain_args(d, d / "pre"))
    write_fixture("sst-2", d / "SST-2", n_rows=16, seed=0, n_eval=8)
    (d / "a_file").write_text("a file, not a folder\n")
    return d


def snapshot(folder: Path, skip=("cache",)) -> dict:
    """Every file's bytes and every folder (None) under folder, but those under `skip`."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))
            if p.relative_to(folder).parts[0] not in skip}
