"""Fine-tune GPT-1 on one of the paper's tasks, as the TF release's train.py does for ROCStories.

    python -m gpt1_fast.train --data_dir data/ --submit --analysis                    # ROCStories, model/ folder
    python -m gpt1_fast.train --dataset sst-2 --data_dir glue/SST-2 --submit --analysis
    python -m gpt1_fast.train --data_dir data/ --from_scratch --n_layer 2 ...         # no checkpoint needed
    torchrun --nproc_per_node 4 -m gpt1_fast.train ...                                # several GPUs (DDP)

Loss: mean(task losses) + lm_coef * mean(LM losses), the LM loss of a sequence its masked sum over
its mask's sum. Evaluation after each epoch and at updates 1000, 2000, 4000, ... of the first epoch,
on the first n_valid training examples and the validation split(s): one `key=value` line printed and
one JSON line in the log; the parameters of the best validation score (the task's first metric) are
kept.

A run owns its folder runs/<desc>/: log.jsonl, config.json, best_params.pt (the best parameters with
the configuration that reads them), checkpoints/ (--save_every), and with --submit the predictions
of the best parameters: submission/<Task>.tsv for the test split(s) (GLUE's `index<TAB>prediction`),
predictions/<Task>.<split>.tsv for the validation split(s). --analysis prints the best validation
score and the score of every labelled test split. A --desc whose files exist is refused unless
--overwrite (or --resume, to continue it); every flag, file and the vocabulary are checked before
anything is written. Ctrl-C stops with exit code 130 and names the last complete checkpoint.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from . import options
from .checkpoint import load_model, save_model
from .config import GPTConfig
from .context import RunContext
from .errors import CheckpointError, DataError, ResumeError, UsageError
from .fileio import atomic_write_text
from .logs import JsonlLog
from .model import DoubleHeadModel
from .pretrained import (LazyTextEncoder, checkpoint_present, missing_checkpoint_message, resolve_cache_dir,
                         resolve_vocab)
from .resume import Checkpointing
from .runfolder import RunPaths
from .tasks import describe, get_task
from .tasks.submission import analysis, write_predictions
from .tasks.trainer import TrainConfig, Trainer, updates_per_epoch

PROG = "python -m gpt1_fast.train"


def build_parser():
    return options.build_parser(options.TRAIN, PROG, __doc__,
                                "datasets (--dataset NAME: the files expected in --data_dir; family):\n" + describe())


# ------------------------------------------------------------------------------------------ wiring
def load_data(args, task, ctx: RunContext, vocab_paths, verbose: bool):
    """Read, encode (cached) and transform every split; rank 0 first, so the others read its cache."""
    try:
        text_encoder = LazyTextEncoder(*vocab_paths)
    except ValueError as e:  # bad JSON, a malformed merge, bytes that are not UTF-8: name both files
        raise DataError(f"the vocabulary ({vocab_paths[0]}, {vocab_paths[1]}) cannot be read: {e}") from None

    def load():
        return task.load(args.data_dir, text_encoder, vocab_paths, n_ctx=args.n_ctx, n_valid=args.n_valid,
                         cache_dir=resolve_cache_dir(args.cache_dir), verbose=verbose)

    data = load() if ctx.main else None
    ctx.barrier()
    return data if ctx.main else load()


def build_model(args, task, layout) -> DoubleHeadModel:
    """The task's DoubleHeadModel on the layout, with the pretrained weights unless --from_scratch."""
    model = DoubleHeadModel(GPTConfig.from_options(args), layout.clf, task.head_type, layout.size, layout.n_ctx,
                            lm_coef=args.lm_coef)
    if not args.from_scratch:
        from .weights import load_openai_pretrained_model

        load_openai_pretrained_model(model.transformer, n_ctx=layout.n_ctx, n_special=layout.n_special,
                                     n_transfer=args.n_transfer, n_embd=args.n_embd, path=args.model_dir)
    return model


def run_config(args, task, layout, vocab_paths) -> dict:
    """What reads best_params.pt (generate.py): stored inside it, and in config.json. Paths absolute."""
    return dict(cfg=GPTConfig.from_options(args).to_dict(), layout=layout.to_dict(), task=task.name,
                head_type=task.head_type, label_names=task.label_names, encoder_path=str(vocab_paths[0]),
                bpe_path=str(vocab_paths[1]))


def fingerprint(args, vocab_paths) -> dict:
    """The options that change the math, and the bytes of the vocabulary: a checkpoint resumes only under these."""
    from .corpus import vocab_digest

    return dict(options.fingerprint(options.TRAIN, args), vocab_digest=vocab_digest(*vocab_paths),
                data_dir=str(Path(args.data_dir).resolve()),
                model_dir=None if args.from_scratch else str(Path(args.model_dir).resolve()))


class BestModel:
    """Keeps the parameters of the best validation score in one file (checkpoint.save_model)."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = path, meta
        self.saved: tuple[int, float] | None = None  # (n_updates, score) of the newest complete file

    def __call__(self, trainer: Trainer) -> None:
        save_model(self.path, trainer.model.state_dict(),
                   dict(self.meta, n_updates=trainer.n_updates, score=trainer.best_score))
        self.saved = (trainer.n_updates, trainer.best_score)


def check_batch(args, n_train: int, world: int) -> None:
    if args.n_batch % world:
        raise UsageError(f"argument --n_batch: {args.n_batch} must be divisible by the number of processes {world}")
    if n_train < args.n_batch:
        raise UsageError(f"argument --n_batch: expected at most the {n_train} training examples, got {args.n_batch}")


def warn_if_cut(data, n_ctx: int) -> None:
    cut, total, longest = data.cut
    if cut:
        print(f"warning: --n_ctx {n_ctx} cuts {cut} of {total} tokens ({100 * cut / total:.1f} %) from the data; "
              f"its longest example needs {longest} positions", file=sys.stderr, flush=True)


def absolute_args(args, vocab_paths) -> dict:
    """The run's arguments as the log and config.json store them: every path absolute."""
    out = dict(vars(args), encoder_path=vocab_paths[0], bpe_path=vocab_paths[1])
    for k in ("data_dir", "model_dir", "runs_dir", "log_dir", "save_dir", "submission_dir", "cache_dir",
              "encoder_path", "bpe_path"):
        if out.get(k) and not (k == "cache_dir" and out[k].lower() == "none"):
            out[k] = str(Path(out[k]).resolve())
    return out


# ------------------------------------------------------------------------------------------ recipe
def main(argv=None) -> dict:
    args = options.parse(options.TRAIN, build_parser(), argv)
    args.desc = args.desc or args.dataset
    task = get_task(args.dataset)
    paths = RunPaths(args.desc, args.runs_dir, args.log_dir, args.save_dir, args.submission_dir)
    refuse_earlier_results(paths, task, args)
    vocab_paths = tuple(str(Path(p).resolve()) for p in resolve_vocab(args.model_dir, args.encoder_path, args.bpe_path))
    if not args.from_scratch and not checkpoint_present(args.model_dir):
        raise CheckpointError(missing_checkpoint_message(args.model_dir))
    ctx = RunContext(args)
    try:
        return run(args, task, ctx, vocab_paths, paths)
    finally:
        ctx.close()


def run(args, task, ctx: RunContext, vocab_paths, paths: RunPaths) -> dict:
    """Read and check everything, then claim the run's files, then train. Nothing is written (but the
    encoding cache) before every input has been read and checked."""
    verbose = sys.stderr.isatty() and ctx.main
    ctx.seed()
    data = load_data(args, task, ctx, vocab_paths, verbose)
    check_batch(args, len(data.splits["train"]), ctx.dist.world)
    if ctx.main:
        warn_if_cut(data, args.n_ctx)
    model = build_model(args, task, data.layout).to(ctx.device)
    t_total = updates_per_epoch(len(data.splits["train"]), args.n_batch) * args.n_iter
    opt = ctx.optimizer(model, t_total=t_total, schedule=args.lr_schedule, warmup=args.lr_warmup)
    meta = run_config(args, task, data.layout, vocab_paths)
    best = BestModel(paths.best_params, meta)
    trainer = Trainer(task, data, model, opt, TrainConfig.from_args(args, verbose), ctx, on_best=best if ctx.main else None)
    ctx.seed(offset=ctx.dist.rank)  # the same initial weights everywhere (DDP broadcasts), own dropout masks
    ckpts = Checkpointing(paths.checkpoints, fingerprint(args, vocab_paths), ctx, keep=args.keep)
    if args.resume is not None:  # read and checked before anything is written
        ckpts.restore(trainer, args.resume)
    trainer.after_update.append(ckpts.every(args.save_every))
    if ctx.main:
        start_files(args, paths, task, trainer, meta, vocab_paths)
        if args.resume is None:
            best(trainer)  # as the release: the initial parameters stand until an evaluation beats them
    ctx.barrier()
    try:
        return train_and_report(args, trainer, paths, best, ctx)
    except KeyboardInterrupt:
        if ctx.main:
            print(interrupted_message(trainer, paths, best, ckpts), file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def start_files(args, paths: RunPaths, task, trainer: Trainer, meta: dict, vocab_paths) -> None:
    """Claim the run folder, write config.json and start the log (a resumed run keeps its evaluations)."""
    paths.claim(task, overwrite=args.overwrite)
    header = absolute_args(args, vocab_paths)
    atomic_write_text(paths.config, json.dumps(dict(meta, args=header), indent=2))
    done = trainer.n_updates
    trainer.logger = JsonlLog(paths.log, header, keep=(lambda r: r.get("n_updates", -1) <= done and "n_epochs" in r)
                              if args.resume is not None else None)


def train_and_report(args, trainer: Trainer, paths: RunPaths, best: BestModel, ctx: RunContext) -> dict:
    t0 = time.time()
    trainer.fit()
    if ctx.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    train_s = time.time() - t0
    result = dict(n_ctx=trainer.layout.n_ctx, n_updates=trainer.n_updates, train_seconds=train_s,
                  history=trainer.history, tokens=dict(trainer.tokens), best_params=str(paths.best_params))
    if ctx.main:
        print(f"{trainer.n_updates} updates of {args.n_batch} examples in {train_s:.1f}s, evaluations included "
              f"({trainer.n_updates * args.n_batch / max(train_s, 1e-9):.1f} examples/s)", flush=True)
        if args.submit:
            written = submit(trainer, paths)
            test = trainer.task.test_splits
            result.update(submission=written[test[0]] if test else None, submissions=written)
            if args.analysis:
                result.update(analysis(trainer, written))
    ctx.barrier()
    return result


def submit(trainer: Trainer, paths: RunPaths) -> dict[str, str]:
    """Load the best parameters and write the predictions of every split but train. -> {split: path}."""
    trainer.model.load_state_dict(load_model(paths.best_params, map_location=trainer.device)[1])
    written = {}
    for split in (*trainer.task.eval_splits, *trainer.task.test_splits):
        path = paths.prediction(trainer.task, split)
        write_predictions(path, trainer.task, trainer.data[split].ids, trainer.predict(split))
        written[split] = str(path)
    return written


def refuse_earlier_results(paths: RunPaths, task, args) -> None:
    if args.resume is not None or args.overwrite:
        return
    ckpts, earlier = paths.checkpoint_files(), paths.earlier_results(task)
    if ckpts:
        raise UsageError(f"argument --desc: {args.desc!r} has checkpoints ({ckpts[-1]}): pass --resume to continue "
                         "that run, or --overwrite to delete its files and start again, or choose another --desc")
    if earlier:
        names = ", ".join(str(p) for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise UsageError(f"argument --desc: {args.desc!r} already has results ({names}); pass --overwrite to "
                         "replace them, or choose another --desc")


def interrupted_message(trainer: Trainer, paths: RunPaths, best: BestModel, ckpts: Checkpointing) -> str:
    msg = f"interrupted at update {trainer.n_updates}"
    latest = ckpts.latest()
    if latest is not None:
        msg += f": the last complete checkpoint is {latest}; continue with the same command and --resume"
    else:
        msg += ": no checkpoint to resume from (--save_every N writes them)"
    if best.saved is not None:
        n, score = best.saved
        at = "the initial parameters" if n == 0 else f"update {n}, {trainer.selection_key} {score:.2f}"
        msg += f"; the best parameters so far are {paths.best_params} ({at})"
    return msg


def cli(argv=None):
    """Command-line entry: bad input is one `error:` line, no traceback. Exit codes: 2 a bad flag,
    1 a bad file, 130 Ctrl-C."""
    try:
        main(argv)
    except UsageError as e:
        print(f"error: {e} (see {PROG} --help)", file=sys.stderr)
        raise SystemExit(2) from None
    except (FileNotFoundError, DataError, CheckpointError, ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted before training started: nothing of this run was written", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    cli()
