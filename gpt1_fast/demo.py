"""`make demo`: the whole ROCStories pipeline on whatever this machine has.

CSV -> encoding -> fine-tuning -> evaluation -> submission -> analysis, through the same entry point
as `python -m gpt1_fast.train` (its main() is called with arguments).

- With the pretrained checkpoint in model/ and a GPU: GPT-1 is fine-tuned with the release's
  settings, on the real Story Cloze files in data/ when they are there (else on synthetic ones).
- Otherwise (a fresh machine, nothing downloaded): synthetic Story Cloze files are generated, a small
  BPE vocabulary is learned from them, and a small model is trained from scratch on the CPU. That
  checks the machinery end to end in about two minutes; it says nothing about GPT-1's accuracy.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from . import synthetic, train
from .pretrained import checkpoint_present
from .tasks import rocstories

# A small model that learns the synthetic task (the story's turn decides the ending) in a few
# hundred updates on a CPU. Dropout is off and the auxiliary LM loss is down-weighted (0.1 instead of
# the release's 0.5): from scratch, both only delay the point where the model starts to use the story
# (under global clipping a large LM gradient shrinks the classifier's). 10 epochs leave a wide margin:
# with seed 42 the validation accuracy jumps after about 4 epochs. Batches padded to the fitted n_ctx
# (as the release): per-batch padding is exact in exact arithmetic but rounds differently, and this
# from-scratch run amplifies any rounding, so the printed accuracies stay those of the release's shapes.
SCRATCH_ARGS = ["--padding", "global", "--n_layer", "2", "--n_embd", "64", "--n_head", "4", "--n_batch", "16", "--n_iter", "10",
                "--lr", "6e-3", "--lm_coef", "0.1", "--embd_pdrop", "0", "--attn_pdrop", "0", "--resid_pdrop", "0",
                "--clf_pdrop", "0", "--device", "cpu"]


def banner(msg: str):
    line = "=" * 78
    print(f"\n{line}\n{msg}\n{line}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpt1_fast.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="folder for data, vocabulary, encoding cache and the run "
                                                     "folder runs/demo/ (default demo_out/; rerunning replaces it)")
    p.add_argument("--mode", default="auto", choices=["auto", "pretrained", "scratch"],
                   help="auto: pretrained when model/ holds the checkpoint and a GPU is present, else scratch")
    p.add_argument("--model_dir", default="model/", help="pretrained checkpoint folder (default model/)")
    p.add_argument("--data_dir", default="data/", help="real Story Cloze CSVs, used in pretrained mode when present")
    p.add_argument("--n_stories", type=int, default=1871, help="synthetic stories per file (default 1871)")
    p.add_argument("--n_merges", type=int, default=1000, help="BPE merges to learn in scratch mode (default 1000)")
    return p


def choose_mode(a) -> str:
    """--mode auto: pretrained when the checkpoint and a GPU are there; a banner says why scratch."""
    have_ckpt = checkpoint_present(a.model_dir)
    mode = a.mode
    if mode == "auto":
        mode = "pretrained" if have_ckpt and torch.cuda.is_available() else "scratch"
    if mode == "scratch":
        why = ("no pretrained checkpoint in " + a.model_dir if not have_ckpt
               else "a pretrained checkpoint is in " + a.model_dir + " but there is no GPU (--mode pretrained forces it)")
        banner(f"DEMO FROM SCRATCH: {why}.\nUsing SYNTHETIC Story Cloze data, a small BPE vocabulary LEARNED here and a "
               "small RANDOMLY\nINITIALISED model: this checks the pipeline, not GPT-1's accuracy. For the real "
               "thing put\nOpenAI's model/ folder and the ROCStories CSVs in data/ and run on a GPU.")
    return mode


def story_files(a, mode: str, out: Path) -> Path:
    """The real Story Cloze files of --data_dir in pretrained mode when present, else synthetic ones."""
    real = Path(a.data_dir)
    if mode == "pretrained" and all((real / f).is_file() for f in (rocstories.VAL_FILE, rocstories.TEST_FILE)):
        print(f"Story Cloze files: {real}")
        return real
    data_dir = synthetic.write_rocstories(out / "data", n=a.n_stories)
    print(f"Synthetic Story Cloze files ({a.n_stories} stories each): {data_dir}")
    return data_dir


def scratch_args(a, data_dir: Path, out: Path) -> list[str]:
    """Learn a small BPE vocabulary from the val file's stories and endings; -> train's flags."""
    from .text import learn_bpe

    enc, bpe = out / "vocab" / "encoder.json", out / "vocab" / "merges.bpe"
    val = rocstories.read_csv(data_dir / rocstories.VAL_FILE)
    t = time.time()
    n = len(learn_bpe(val.stories + val.endings1 + val.endings2, a.n_merges, enc, bpe))
    print(f"Learned a BPE vocabulary of {n} entries in {time.time() - t:.1f}s: {enc}")
    return ["--from_scratch", "--encoder_path", str(enc), "--bpe_path", str(bpe)] + SCRATCH_ARGS


def main(argv=None):
    a, extra = build_parser().parse_known_args(argv)  # anything else goes to gpt1_fast.train
    out = Path(a.out)
    threads = torch.get_num_threads()
    mode = choose_mode(a)
    data_dir = story_files(a, mode, out)
    args = ["--data_dir", str(data_dir), "--desc", "demo", "--runs_dir", str(out / "runs"), "--overwrite",
            "--cache_dir", str(out / "cache"), "--submit", "--analysis"]
    if mode == "scratch":
        args += scratch_args(a, data_dir, out)
        # The model's ops are too small to gain from intra-op threads, and on a shared machine extra
        # threads spin against other processes (several times slower).
        torch.set_num_threads(1)
    else:
        args += ["--model_dir", a.model_dir]
    args += extra

    print("python -m gpt1_fast.train " + " ".join(args), flush=True)
    t = time.time()
    try:
        result = train.main(args)
    finally:
        torch.set_num_threads(threads)
    banner(f"Demo finished in {time.time() - t:.0f}s ({mode}{', synthetic data' if mode == 'scratch' else ''}):\n"
           f"  ROCStories Valid Accuracy: {result['valid_acc']:.2f}\n"
           f"  ROCStories Test Accuracy:  {result['test_acc']:.2f}\n"
           f"  run folder {out / 'runs' / 'demo'}: log.jsonl, config.json, model/ (the best model), submission/,\n"
           f"  predictions/; curves: python -m gpt1_fast.plot {out / 'runs' / 'demo' / 'log.jsonl'}")
    return result


if __name__ == "__main__":
    main()
