"""Fine-tune GPT-1 on one of the paper's tasks (SPEC §4-§6, §8), as the TF release's train.py does
for ROCStories.

    python -m gpt1_fast.train --data_dir data/ --submit --analysis                    # ROCStories, model/ folder
    python -m gpt1_fast.train --dataset sst-2 --data_dir glue/SST-2 --submit --analysis
    python -m gpt1_fast.train --data_dir data/ --from_scratch --n_layer 2 ...         # no checkpoint needed
    torchrun --nproc_per_node 4 -m gpt1_fast.train ...                                # several GPUs (DDP)

Loss: mean(task_losses) + lm_coef * mean(lm_losses), LM loss per sequence = masked sum / mask sum
(DoubleHeadModel.forward). Evaluation after each epoch and at updates 1000, 2000, 4000, ... of the
first epoch, on the first n_valid training examples and the validation split(s); one JSON line each
in log/<desc>.jsonl. --submit keeps the parameters of the best validation score (the task's first
metric; save/<desc>/best_params.pt) and writes, from them, submission/<Task>.tsv for the test
split(s) (GLUE's `index<TAB>prediction` format) and <Task>.<split>.tsv for the validation split(s);
--analysis prints the best validation score and the score of every labelled test split.
Every file is written atomically (temporary file + rename).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import data as rocdata
from . import ops
from .config import GPTConfig
from .distributed import Dist
from .fileio import atomic_write_text
from .model import DoubleHeadModel
from .opt import SCHEDULES, OpenAIAdam
from .pretrained import (LazyTextEncoder, checkpoint_present, missing_checkpoint_message, resolve_cache_dir,
                         resolve_vocab)
from .tasks import describe, get_task, task_names
from .tasks.common import PADDINGS
from .tasks.trainer import JsonlLogger, RunPaths, TrainConfig, Trainer


def _task_args(a):
    a("--dataset", default="rocstories", choices=task_names(),
      help="task, by the paper's name (default rocstories); the files each expects are listed below")
    a("--desc", default=None, help="run name: log/<desc>.jsonl, save/<desc>/ (default: the dataset's name)")
    a("--data_dir", default="data/", help="folder holding the dataset's files (default data/)")
    a("--log_dir", default="log/", help="folder for <desc>.jsonl (default log/)")
    a("--save_dir", default="save/", help="folder for <desc>/best_params.pt with --submit (default save/)")
    a("--submission_dir", default="submission/", help="folder for <Task>.tsv (default submission/)")
    a("--cache_dir", default=None,
      help="cache of encoded datasets, keyed by the hash of the data and vocabulary files "
           "(default $XDG_CACHE_HOME/gpt1_fast or ~/.cache/gpt1_fast; 'none' disables it)")
    a("--submit", action="store_true", help="keep the best-validation parameters and write the predictions")
    a("--analysis", action="store_true", help="print best validation and labelled test scores (needs --submit)")
    a("--n_valid", type=int, default=374,
      help="ROCStories: stories held out of the val file for validation; every task: the first n_valid "
           "training examples are scored at each evaluation (default 374)")
    a("--padding", default="batch", choices=list(PADDINGS),
      help="batch (default): pad each batch to its own longest sequence, rounded up to a multiple of 8 "
           "(torch.compile then traces dynamic shapes); pow2: rounded up to a power of two (at most 7 static "
           "graphs under --compile); global: every batch to the fitted n_ctx, as the release. All exact")


def _model_args(a):
    a("--n_ctx", type=int, default=512, help="context cap; the real one is fitted to the data (default 512)")
    a("--n_embd", type=int, default=768, help="width (default 768)")
    a("--n_head", type=int, default=12, help="attention heads (default 12)")
    a("--n_layer", type=int, default=12, help="blocks (default 12)")
    a("--embd_pdrop", type=float, default=0.1, help="embedding dropout (default 0.1)")
    a("--attn_pdrop", type=float, default=0.1, help="attention-weight dropout (default 0.1)")
    a("--resid_pdrop", type=float, default=0.1, help="residual dropout (default 0.1)")
    a("--clf_pdrop", type=float, default=0.1, help="classifier-input dropout (default 0.1)")
    a("--afn", default="gelu", choices=["gelu", "relu", "swish"], help="MLP activation (default gelu)")
    a("--encoder_path", default=None,
      help="BPE vocabulary json (default <model_dir>/encoder_bpe_40000.json, i.e. model/encoder_bpe_40000.json)")
    a("--bpe_path", default=None, help="BPE merges (default <model_dir>/vocab_40000.bpe)")
    a("--n_transfer", type=int, default=12, help="pretrained blocks to load (default 12; -1: none)")
    a("--model_dir", default="model/",
      help="pretrained checkpoint: the release's model/ folder (params_shapes.json, params_0..9.npy) or a "
           "Hugging Face openai-gpt folder (default model/)")
    a("--from_scratch", action="store_true", help="random initialisation instead of the pretrained weights")


def _optim_args(a):
    a("--seed", type=int, default=42, help="random seed (default 42)")
    a("--n_iter", type=int, default=3, help="epochs (default 3)")
    a("--n_batch", type=int, default=64,
      help="examples per update, over all GPUs (default 64; the TF release used 4 GPUs x 8 = 32, the PyTorch "
           "port 8, and reports +2.5 points going from 8 to 20 on ROCStories)")
    a("--max_grad_norm", type=float, default=1, help="clip gradients by their global norm (default 1; <=0: off)")
    a("--lr", type=float, default=6.25e-5, help="peak learning rate (default 6.25e-5)")
    a("--lr_warmup", type=float, default=0.002, help="warmup, as a fraction of all updates (default 0.002)")
    a("--l2", type=float, default=0.01, help="decoupled weight decay (default 0.01)")
    a("--vector_l2", action="store_true", help="apply l2 to vectors (biases, gains) too")
    a("--opt", default="adam", choices=["adam"], help="optimizer: OpenAI's Adam with the weight-decay fix")
    a("--lr_schedule", default="warmup_linear", choices=sorted(SCHEDULES), help="default warmup_linear")
    a("--lm_coef", type=float, default=0.5, help="weight of the auxiliary LM loss, every task (default 0.5)")
    a("--b1", type=float, default=0.9, help="Adam beta1 (default 0.9)")
    a("--b2", type=float, default=0.999, help="Adam beta2 (default 0.999)")
    a("--e", type=float, default=1e-8, help="Adam epsilon (default 1e-8)")


def _run_args(a):
    a("--device", default=None, help="cpu, cuda or cuda:N (default cuda when available)")
    a("--backend", default="auto", choices=list(ops.BACKENDS),
      help="op implementation: torch (reference), triton (fused kernels), auto (triton on CUDA; default)")
    a("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
      help="compute precision: bf16 autocast or fp32 (default auto: bf16 on CUDA, fp32 on CPU); "
           "parameters and optimizer state stay fp32")
    a("--compile", default=None, action=argparse.BooleanOptionalAction,
      help="torch.compile the training forward (default: on for CUDA, off on CPU)")
    a("--activation_checkpointing", action="store_true",
      help="recompute each block's forward in backward instead of keeping its activations "
           "(torch.utils.checkpoint per block): much less memory for about a third more compute")
    a("--n_batch_eval", type=int, default=None, help="examples per evaluation batch (default 2 x per-rank batch)")
    a("--save_every", type=int, default=0,
      help="checkpoint (model, optimizer, loop state, RNG states) every N updates into save/<desc>/checkpoints/ "
           "(default 0: none)")
    a("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
      help="continue from the latest checkpoint in save/<desc>/checkpoints/ (or from CKPT): same final "
           "parameters and submission as an uninterrupted run")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpt1_fast.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="datasets (--dataset NAME: family, files expected in --data_dir):\n" + describe())
    for group in (_task_args, _model_args, _optim_args, _run_args):
        group(p.add_argument)
    return p


# ------------------------------------------------------------------------------------------ wiring
def load_data(args, task, dist: Dist, vocab_paths, verbose: bool):
    """Read, encode (cached) and transform every split; rank 0 first, so the others read its cache."""
    text_encoder = LazyTextEncoder(*vocab_paths)
    load = lambda: task.load(args.data_dir, text_encoder, vocab_paths, n_ctx=args.n_ctx,  # noqa: E731
                             n_valid=args.n_valid, cache_dir=resolve_cache_dir(args.cache_dir), verbose=verbose)
    data = load() if dist.main else None
    dist.barrier()
    return data if dist.main else load()


def model_config(args) -> GPTConfig:
    return GPTConfig(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, embd_pdrop=args.embd_pdrop,
                     attn_pdrop=args.attn_pdrop, resid_pdrop=args.resid_pdrop, afn=args.afn,
                     clf_pdrop=args.clf_pdrop, backend=args.backend,
                     activation_checkpointing=args.activation_checkpointing)


def build_model(args, cfg: GPTConfig, task, layout) -> DoubleHeadModel:
    """The task's DoubleHeadModel on the layout, with the pretrained weights unless --from_scratch."""
    model = DoubleHeadModel(cfg, layout.clf, task.head_type, layout.size, layout.n_ctx, lm_coef=args.lm_coef)
    if not args.from_scratch:
        from .weights import CheckpointError, load_openai_pretrained_model

        try:
            load_openai_pretrained_model(model.transformer, n_ctx=layout.n_ctx, n_special=layout.n_special,
                                         n_transfer=args.n_transfer, n_embd=args.n_embd, path=args.model_dir)
        except (CheckpointError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}\n{missing_checkpoint_message(args.model_dir)}") from None
    return model


def run_config(cfg: GPTConfig, task, layout, vocab_paths) -> dict:
    """save/<desc>/config.json: what generate.py (and any reader of best_params.pt) needs."""
    return dict(cfg=cfg.to_dict(), layout=layout.to_dict(), task=task.name, head_type=task.head_type,
                label_names=task.label_names, encoder_path=str(vocab_paths[0]), bpe_path=str(vocab_paths[1]),
                # the layout's numbers under their earlier names, for older readers
                n_ctx=layout.n_ctx, n_vocab=layout.n_vocab, n_special=layout.n_special, vocab=layout.size,
                specials=list(layout.specials))


def compiling(args, dist: Dist) -> bool:
    return args.compile if args.compile is not None else dist.device.type == "cuda"


def wrap_for_training(model, args, dist: Dist):
    """What the training step calls: the model, inside DDP with several processes, compiled on CUDA
    (static shapes: the padding gives few widths, see --padding)."""
    train_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    if compiling(args, dist):
        # pow2 / global padding: at most 7 / 1 widths, one static graph each (under dynamo's recompile limit of 8)
        train_model = torch.compile(train_model, dynamic=args.padding == "batch")
    return train_model


# Arguments that change the math: a checkpoint resumes only under the same values (resume.py).
MATH_ARGS = ("dataset", "data_dir", "n_iter", "n_batch", "max_grad_norm", "lr", "lr_warmup", "lr_schedule", "n_ctx",
             "n_embd", "n_head", "n_layer", "embd_pdrop", "attn_pdrop", "resid_pdrop", "clf_pdrop", "l2", "vector_l2",
             "afn", "n_transfer", "lm_coef", "b1", "b2", "e", "n_valid", "from_scratch", "seed", "padding")


def setup_checkpoints(args, trainer: Trainer, dist: Dist, vocab_paths):
    """--resume: restore model, optimizer, the trainer's loop state and every RNG; --save_every:
    checkpoint after every N-th update (save/<desc>/checkpoints/step_<N>.pt, the newest 2 kept)."""
    from .corpus import vocab_digest
    from .resume import CheckpointDir, all_rng_states, restore_rng_states

    ckpts = CheckpointDir(trainer.paths.run_dir / "checkpoints")
    fp = {k: getattr(args, k) for k in MATH_ARGS if hasattr(args, k)}
    fp.update(vocab_digest=vocab_digest(*vocab_paths), data_dir=str(Path(args.data_dir).resolve()),
              model_dir=None if args.from_scratch else str(Path(args.model_dir).resolve()))
    if args.resume is None and ckpts.latest() is not None:
        raise SystemExit(f"error: {ckpts.folder} already holds checkpoints ({ckpts.latest().name}): pass --resume "
                         "to continue that run, or choose another --desc")
    if args.resume is not None:
        ckpt = ckpts.load(None if args.resume == "latest" else args.resume, fp)
        trainer.model.load_state_dict(ckpt["model"])
        trainer.opt.load_state_dict(ckpt["optimizer"])
        trainer.load_state_dict(ckpt["trainer"])
        if not restore_rng_states(ckpt["rng"], dist.rank, dist.world) and dist.main:
            print(f"warning: checkpoint written by {len(ckpt['rng'])} processes, resuming with {dist.world}: "
                  "dropout masks differ from an uninterrupted run", file=sys.stderr)
        if trainer.logger is not None:  # the log again holds every evaluation so far
            for rec in trainer.history:
                trainer.logger.log(**rec)
    if args.save_every > 0:
        def save(t: Trainer):
            if t.n_updates % args.save_every == 0:
                rngs = all_rng_states(dist.world)
                if dist.main:
                    ckpts.save(t.n_updates, {"model": t.model.state_dict(), "optimizer": t.opt.state_dict(),
                                             "trainer": t.state_dict(), "rng": rngs}, fp)
                dist.barrier()

        trainer.after_update = save


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    args.desc = args.desc or args.dataset
    if args.analysis and not args.submit:
        raise SystemExit("--analysis reads the submission file: pass --submit too")
    vocab_paths = resolve_vocab(args.model_dir, args.encoder_path, args.bpe_path)
    if not args.from_scratch and not checkpoint_present(args.model_dir):
        raise SystemExit("error: " + missing_checkpoint_message(args.model_dir))
    dist = Dist(args.device)
    try:
        return run(args, get_task(args.dataset), dist, vocab_paths)
    finally:
        dist.close()


def run(args, task, dist: Dist, vocab_paths) -> dict:
    device = dist.device
    verbose = sys.stderr.isatty() and dist.main
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    data = load_data(args, task, dist, vocab_paths, verbose)
    config = TrainConfig(n_iter=args.n_iter, n_batch=args.n_batch, n_batch_eval=args.n_batch_eval,
                         n_valid=args.n_valid, seed=args.seed, padding=args.padding, submit=args.submit,
                         bf16=args.dtype == "bf16" or (args.dtype == "auto" and device.type == "cuda"),
                         verbose=verbose)
    n_train = len(data.splits["train"])
    if args.n_batch % dist.world:
        raise SystemExit(f"--n_batch {args.n_batch} must be divisible by the number of processes {dist.world}")
    if n_train < args.n_batch:
        raise SystemExit(f"{n_train} training examples make no batch of {args.n_batch}: lower --n_batch")
    cfg = model_config(args)
    model = build_model(args, cfg, task, data.layout).to(device)
    opt = OpenAIAdam(model.parameters(), lr=args.lr, schedule=args.lr_schedule, warmup=args.lr_warmup,
                     t_total=(n_train // args.n_batch) * args.n_iter, b1=args.b1, b2=args.b2, e=args.e,
                     l2=args.l2, vector_l2=args.vector_l2, max_grad_norm=args.max_grad_norm)
    train_model = wrap_for_training(model, args, dist)
    torch.manual_seed(args.seed + dist.rank)  # same init everywhere (DDP broadcasts), own dropout masks

    paths = RunPaths(args.desc, args.log_dir, args.save_dir, args.submission_dir)
    logger = JsonlLogger(paths.log, **vars(args)) if dist.main else None
    if dist.main and args.submit:
        atomic_write_text(paths.config, json.dumps(run_config(cfg, task, data.layout, vocab_paths), indent=2))
    trainer = Trainer(task, data, model, opt, config, paths, logger, train_model, dist.rank, dist.world, dist.barrier)
    setup_checkpoints(args, trainer, dist, vocab_paths)
    t0 = time.time()
    trainer.fit()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t0
    result = dict(n_ctx=data.layout.n_ctx, n_updates=trainer.n_updates, train_seconds=train_s,
                  history=trainer.history, tokens=dict(trainer.tokens))
    if dist.main:
        print(f"{trainer.n_updates} updates of {args.n_batch} examples in {train_s:.1f}s, evaluations included "
              f"({trainer.n_updates * args.n_batch / train_s:.1f} examples/s)", flush=True)
        if args.submit:
            written = trainer.submit()
            result.update(submission=written[task.test_splits[0]] if task.test_splits else None,
                          submissions=written, best_params=str(paths.best_params))
            if args.analysis:
                result.update(trainer.analysis(written))
    dist.barrier()
    return result


def cli(argv=None):
    """Command-line entry: bad input (a missing or malformed file) is one clear line, no traceback."""
    from .weights import CheckpointError

    from .resume import ResumeError

    try:
        main(argv)
    except (FileNotFoundError, rocdata.DataError, CheckpointError, ResumeError) as e:  # readers raise data.DataError
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    cli()
