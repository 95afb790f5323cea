"""Fine-tune GPT-1 on one of the paper's tasks (SPEC §4-§6, §8), as the TF release's train.py does
for ROCStories.

    python -m gpt1_fast.train --data_dir data/ --submit --analysis                    # ROCStories, model/ folder
    python -m gpt1_fast.train --dataset sst-2 --data_dir glue/SST-2 --submit --analysis
    python -m gpt1_fast.train --data_dir data/ --from_scratch --n_layer 2 ...         # no checkpoint needed
    torchrun --nproc_per_node 4 -m gpt1_fast.train ...                                # several GPUs (DDP)

Loss: mean(task_losses) + lm_coef * mean(lm_losses), LM loss per sequence = masked sum / mask sum
(DoubleHeadModel.forward). Evaluation after each epoch and at updates 1000, 2000, 4000, ... of the
first epoch, on the first n_valid training examples and the validation split(s): one `key=value`
line printed and one JSON line in the log.

A run owns its folder runs/<desc>/: log.jsonl (the arguments, then one line per evaluation),
config.json, and with --submit best_params.pt (the parameters of the best validation score, the
task's first metric, with the configuration that reads them: one file) and the predictions made
from them: <Task>.tsv for the test split(s) (GLUE's `index<TAB>prediction` format), <Task>.<split>.tsv
for the validation split(s). --analysis prints the best validation score and the score of every
labelled test split. A --desc whose files exist is refused unless --overwrite; every flag, file and
the vocabulary are checked before anything is written. Ctrl-C stops with exit code 130 and names
the last complete checkpoint.
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

from . import ops
from .cli import (Parser, UsageError, check_backend, check_device, float_in, int_at_least, nonnegative_float,
                  positive_float, positive_int, probability, run_name, seed_int)
from .config import GPTConfig
from .distributed import Dist
from .errors import DataError
from .fileio import atomic_write_text
from .model import DoubleHeadModel
from .opt import SCHEDULES, OpenAIAdam
from .pretrained import (LazyTextEncoder, checkpoint_present, missing_checkpoint_message, resolve_cache_dir,
                         resolve_vocab)
from .tasks import describe, get_task, task_names
from .tasks.common import PADDINGS
from .tasks.trainer import JsonlLogger, RunPaths, TrainConfig, Trainer


MIN_N_CTX = 6  # ROCStories cuts story and ending to n_ctx // 2 - 2 tokens each: at least one


def _task_args(a):
    a("--dataset", default="rocstories", choices=task_names(),
      help="task, by the paper's name (default rocstories); the files each expects are listed below")
    a("--desc", default=None, type=run_name,
      help="run name: every file of the run goes to its own folder <runs_dir>/<desc>/ (default: the dataset's name)")
    a("--runs_dir", default="runs/",
      help="where run folders live (default runs/): <desc>/ holds log.jsonl, config.json, best_params.pt "
           "(parameters + their configuration, one file) and the submission files")
    a("--overwrite", action="store_true",
      help="reuse a --desc whose files exist: they are deleted once every input has been checked "
           "(without it such a run is refused before anything is written)")
    a("--data_dir", default="data/", help="folder holding the dataset's files (default data/)")
    a("--log_dir", default=None, help="seed's layout: the log at <log_dir>/<desc>.jsonl instead of the run folder")
    a("--save_dir", default=None,
      help="seed's layout: config.json and best_params.pt in <save_dir>/<desc>/ instead of the run folder")
    a("--submission_dir", default=None,
      help="seed's layout: <Task>.tsv in this folder instead of the run folder (shared by runs: an existing "
           "file there needs --overwrite)")
    a("--cache_dir", default=None,
      help="cache of encoded datasets, keyed by the hash of the data and vocabulary files "
           "(default $XDG_CACHE_HOME/gpt1_fast or ~/.cache/gpt1_fast; 'none' disables it)")
    a("--submit", action="store_true", help="keep the best-validation parameters and write the predictions")
    a("--analysis", action="store_true", help="print best validation and labelled test scores (needs --submit)")
    a("--n_valid", type=positive_int, default=374,
      help="ROCStories: stories held out of the val file for validation; every task: the first n_valid "
           "training examples are scored at each evaluation (default 374)")
    a("--padding", default="batch", choices=list(PADDINGS),
      help="batch (default): pad each batch to its own longest sequence, rounded up to a multiple of 8 "
           "(torch.compile then traces dynamic shapes); pow2: rounded up to a power of two (at most 7 static "
           "graphs under --compile); global: every batch to the fitted n_ctx, as the release. All exact")


def _model_args(a):
    a("--n_ctx", type=int_at_least(MIN_N_CTX), default=512,
      help=f"context cap (>= {MIN_N_CTX}); the real one is fitted to the data, a warning says how many tokens "
           "a smaller cap cuts (default 512)")
    a("--n_embd", type=positive_int, default=768, help="width, a multiple of --n_head (default 768)")
    a("--n_head", type=positive_int, default=12, help="attention heads, dividing --n_embd (default 12)")
    a("--n_layer", type=positive_int, default=12, help="blocks (default 12)")
    a("--embd_pdrop", type=probability, default=0.1, help="embedding dropout, in [0, 1) (default 0.1)")
    a("--attn_pdrop", type=probability, default=0.1, help="attention-weight dropout, in [0, 1) (default 0.1)")
    a("--resid_pdrop", type=probability, default=0.1, help="residual dropout, in [0, 1) (default 0.1)")
    a("--clf_pdrop", type=probability, default=0.1, help="classifier-input dropout, in [0, 1) (default 0.1)")
    a("--afn", default="gelu", choices=["gelu", "relu", "swish"], help="MLP activation (default gelu)")
    a("--encoder_path", default=None,
      help="BPE vocabulary json (default <model_dir>/encoder_bpe_40000.json, i.e. model/encoder_bpe_40000.json)")
    a("--bpe_path", default=None, help="BPE merges (default <model_dir>/vocab_40000.bpe)")
    a("--n_transfer", type=int_at_least(-1), default=12, help="pretrained blocks to load (default 12; -1: none)")
    a("--model_dir", default="model/",
      help="pretrained checkpoint: the release's model/ folder (params_shapes.json, params_0..9.npy) or a "
           "Hugging Face openai-gpt folder (default model/)")
    a("--from_scratch", action="store_true", help="random initialisation instead of the pretrained weights")


def _optim_args(a):
    a("--seed", type=seed_int, default=42, help="random seed, in [0, 2**32 - 1] (default 42)")
    a("--n_iter", type=positive_int, default=3, help="epochs, >= 1 (default 3)")
    a("--n_batch", type=positive_int, default=64,
      help="examples per update, over all GPUs (default 64; the TF release used 4 GPUs x 8 = 32, the PyTorch "
           "port 8, and reports +2.5 points going from 8 to 20 on ROCStories)")
    a("--max_grad_norm", type=float, default=1, help="clip gradients by their global norm (default 1; <=0: off)")
    a("--lr", type=nonnegative_float, default=6.25e-5, help="peak learning rate, >= 0 (0: the weights stay) (default 6.25e-5)")
    a("--lr_warmup", type=float_in(0, 1), default=0.002,
      help="warmup, as a fraction of all updates, in [0, 1] (default 0.002)")
    a("--l2", type=nonnegative_float, default=0.01, help="decoupled weight decay, >= 0 (default 0.01)")
    a("--vector_l2", action="store_true", help="apply l2 to vectors (biases, gains) too")
    a("--opt", default="adam", choices=["adam"], help="optimizer: OpenAI's Adam with the weight-decay fix")
    a("--lr_schedule", default="warmup_linear", choices=sorted(SCHEDULES), help="default warmup_linear")
    a("--lm_coef", type=nonnegative_float, default=0.5, help="weight of the auxiliary LM loss, every task (default 0.5)")
    a("--b1", type=probability, default=0.9, help="Adam beta1, in [0, 1) (default 0.9)")
    a("--b2", type=probability, default=0.999, help="Adam beta2, in [0, 1) (default 0.999)")
    a("--e", type=positive_float, default=1e-8, help="Adam epsilon, > 0 (default 1e-8)")


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
    a("--n_batch_eval", type=positive_int, default=None, help="examples per evaluation batch (default 2 x per-rank batch)")
    a("--save_every", type=int_at_least(0), default=0,
      help="checkpoint (model, optimizer, loop state, RNG states) every N updates into <run folder>/checkpoints/ "
           "(default 0: none)")
    a("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
      help="continue from the latest checkpoint in <run folder>/checkpoints/ (or from CKPT): same final "
           "parameters and submission as an uninterrupted run")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m gpt1_fast.train", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="datasets (--dataset NAME: family, files expected in --data_dir):\n" + describe())
    for group in (_task_args, _model_args, _optim_args, _run_args):
        group(p.add_argument)
    return p


# ------------------------------------------------------------------------------------------ wiring
def load_data(args, task, dist: Dist, vocab_paths, verbose: bool):
    """Read, encode (cached) and transform every split; rank 0 first, so the others read its cache."""
    try:
        text_encoder = LazyTextEncoder(*vocab_paths)
    except ValueError as e:  # bad JSON, a malformed merge, bytes that are not UTF-8: name both files
        raise DataError(f"the vocabulary ({vocab_paths[0]}, {vocab_paths[1]}) cannot be read: {e}") from None
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
        except (CheckpointError, FileNotFoundError) as e:  # the checkpoint is there (main checked): no advice to get one
            raise SystemExit(f"error: {e}") from None
    return model


def run_config(cfg: GPTConfig, task, layout, vocab_paths) -> dict:
    """What reads best_params.pt (generate.py): stored inside it, and in config.json. Paths absolute."""
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
    checkpoint after every N-th update (<run folder>/checkpoints/step_<N>.pt, the newest 2 kept)."""
    from .corpus import vocab_digest
    from .resume import CheckpointDir, all_rng_states, restore_rng_states

    ckpts = CheckpointDir(trainer.paths.checkpoints)
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
    if args.save_every > 0:
        def save(t: Trainer):
            if t.n_updates % args.save_every == 0:
                rngs = all_rng_states(dist.world)
                if dist.main:
                    ckpts.save(t.n_updates, {"model": t.model.state_dict(), "optimizer": t.opt.state_dict(),
                                             "trainer": t.state_dict(), "rng": rngs}, fp)
                dist.barrier()

        trainer.after_update = save


def validate(parser, args) -> None:
    """Every check that needs no file: one `error:` line naming the flag, before anything is read or written."""
    if args.analysis and not args.submit:
        parser.error("argument --analysis: it reads the submission file: pass --submit too")
    if args.n_embd % args.n_head:
        parser.error(f"argument --n_head: {args.n_head} does not divide --n_embd {args.n_embd} "
                     f"(the width is split evenly over the heads)")
    check_backend(parser, args.backend, check_device(parser, args.device))


def refuse_earlier_results(paths: RunPaths, task, args) -> None:
    earlier = paths.earlier_results(task)
    if earlier and not (args.overwrite or getattr(args, "resume", None)):
        names = ", ".join(str(p) for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise UsageError(f"argument --desc: {args.desc!r} already has results ({names}); pass --overwrite to "
                         "replace them, or choose another --desc")


def absolute_args(args, vocab_paths) -> dict:
    """The run's arguments as the log and config.json store them: every path absolute."""
    out = dict(vars(args), encoder_path=vocab_paths[0], bpe_path=vocab_paths[1])
    for k in ("data_dir", "model_dir", "runs_dir", "log_dir", "save_dir", "submission_dir", "cache_dir",
              "encoder_path", "bpe_path"):
        if out.get(k) and not (k == "cache_dir" and out[k].lower() == "none"):
            out[k] = str(Path(out[k]).resolve())
    return out


def warn_if_cut(data, n_ctx: int) -> None:
    cut, total, longest = data.cut
    if cut:
        print(f"warning: --n_ctx {n_ctx} cuts {cut} of {total} tokens ({100 * cut / total:.1f} %) from the data; "
              f"its longest example needs {longest} positions", file=sys.stderr, flush=True)


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.desc = args.desc or args.dataset
    validate(parser, args)
    task = get_task(args.dataset)
    paths = RunPaths(args.desc, args.log_dir, args.save_dir, args.submission_dir, args.runs_dir)
    refuse_earlier_results(paths, task, args)
    vocab_paths = tuple(str(Path(p).resolve()) for p in resolve_vocab(args.model_dir, args.encoder_path, args.bpe_path))
    if not args.from_scratch and not checkpoint_present(args.model_dir):
        raise SystemExit("error: " + missing_checkpoint_message(args.model_dir))
    dist = Dist(args.device)
    try:
        return run(args, task, dist, vocab_paths, paths)
    finally:
        dist.close()


def run(args, task, dist: Dist, vocab_paths, paths: RunPaths) -> dict:
    """Read and check everything, then claim the run's files, then train. Nothing is written (but the
    encoding cache) before every input has been read and checked."""
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
        raise UsageError(f"argument --n_batch: {args.n_batch} must be divisible by the number of processes {dist.world}")
    if n_train < args.n_batch:
        raise UsageError(f"argument --n_batch: expected at most the {n_train} training examples, got {args.n_batch}")
    if dist.main:
        warn_if_cut(data, args.n_ctx)
    cfg = model_config(args)
    model = build_model(args, cfg, task, data.layout).to(device)
    opt = OpenAIAdam(model.parameters(), lr=args.lr, schedule=args.lr_schedule, warmup=args.lr_warmup,
                     t_total=(n_train // args.n_batch) * args.n_iter, b1=args.b1, b2=args.b2, e=args.e,
                     l2=args.l2, vector_l2=args.vector_l2, max_grad_norm=args.max_grad_norm)
    train_model = wrap_for_training(model, args, dist)
    torch.manual_seed(args.seed + dist.rank)  # same init everywhere (DDP broadcasts), own dropout masks

    meta = run_config(cfg, task, data.layout, vocab_paths)
    trainer = Trainer(task, data, model, opt, config, paths, None, train_model, dist.rank, dist.world, dist.barrier)
    trainer.checkpoint_config = meta
    setup_checkpoints(args, trainer, dist, vocab_paths)  # --resume reads and checks its checkpoint here
    # ---- everything is checked: from here on the run writes its files
    if dist.main:
        paths.claim(task, overwrite=args.overwrite)
        header = absolute_args(args, vocab_paths)
        atomic_write_text(paths.config, json.dumps(dict(meta, args=header), indent=2))
        trainer.logger = JsonlLogger(paths.log, **header)
        for rec in trainer.history:  # resumed: the log again holds every evaluation so far
            trainer.logger.log(**rec)
    dist.barrier()
    t0 = time.time()
    try:
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
    except KeyboardInterrupt:
        if dist.main:
            print(interrupted_message(trainer, paths), file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    dist.barrier()
    return result


def interrupted_message(trainer: Trainer, paths: RunPaths) -> str:
    if trainer.last_saved is None:
        return f"interrupted at update {trainer.n_updates}: no checkpoint was written (it needs --submit)"
    n, score = trainer.last_saved
    at = "the initial parameters" if n == 0 else f"update {n}, {trainer.selection_key} {score:.2f}"
    return f"interrupted at update {trainer.n_updates}: the last complete checkpoint is {paths.best_params} ({at})"


def cli(argv=None):
    """Command-line entry: bad input is one `error:` line, no traceback. Exit codes: 2 a bad flag,
    1 a bad file, 130 Ctrl-C."""
    from .resume import ResumeError
    from .weights import CheckpointError

    try:
        main(argv)
    except UsageError as e:
        print(f"error: {e} (see python -m gpt1_fast.train --help)", file=sys.stderr)
        raise SystemExit(2) from None
    except (FileNotFoundError, DataError, CheckpointError, ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted before training started: nothing of this run was written", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit as e:
        if isinstance(e.code, str):  # main()'s `raise SystemExit("error: ...")`: print it ourselves, exit 1
            print(e.code, file=sys.stderr)
            raise SystemExit(1) from None
        raise


if __name__ == "__main__":
    cli()
