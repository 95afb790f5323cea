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

The model to fine-tune is --model_dir: the release's model/ folder, a transformers openai-gpt folder,
or a model folder this project wrote (pretrain's output, another run's model/); its config gives
the shapes (a shape flag that contradicts it is an error), --from_scratch a random GPT-1 instead.

A run owns its folder runs/<desc>/: log.jsonl, config.json, model/ (the model of the best validation
score: a model folder that predict, generate, the estimators and transformers read),
checkpoints/ (--save_every), and with --submit the predictions of the best model:
submission/<Task>.tsv for the test split(s) (GLUE's `index<TAB>prediction`),
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
from .cli import resume_command, run_cli
from .context import RunContext
from .errors import DataError, UsageError
from .fileio import atomic_write_text
from .logs import JsonlLog
from .folder import init_from, load_pretrained, model_section, read_config, save_pretrained
from .model import DoubleHeadModel
from .pretrained import LazyTextEncoder, resolve_cache_dir
from .resume import Checkpointing
from .sources import Source, model_source, transferred_blocks
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
    except DataError:  # names the file (and line)
        raise
    except ValueError as e:  # anything else the two files hold: name both
        raise DataError(f"the vocabulary ({vocab_paths[0]}, {vocab_paths[1]}) cannot be read: {e}") from None

    def load():
        return task.load(args.data_dir, text_encoder, vocab_paths, n_ctx=args.n_ctx, n_valid=args.n_valid,
                         cache_dir=resolve_cache_dir(args.cache_dir), verbose=verbose)

    data = load() if ctx.main else None
    ctx.barrier()
    return data if ctx.main else load()


def build_model(args, task, layout, src: Source) -> DoubleHeadModel:
    """The task's DoubleHeadModel on the layout, started from the model path unless --from_scratch."""
    model = DoubleHeadModel(src.cfg, layout.clf, task.head_type, layout.size, layout.n_ctx, lm_coef=args.lm_coef)
    if src.info is not None:
        init_from(model, args.model_dir, layout=layout, n_transfer=transferred_blocks(args.n_transfer, src.cfg.n_layer))
    return model


def run_config(args, task, layout, src: Source) -> dict:
    """What the run computed with, in config.json. Paths absolute."""
    return dict(cfg=src.cfg.to_dict(), layout=layout.to_dict(), task=task.name, head_type=task.head_type,
                label_names=task.label_names, encoder_path=src.vocab[0], bpe_path=src.vocab[1])


def fingerprint(args, vocab_paths) -> dict:
    """The options that change the math, and the bytes of the vocabulary: a checkpoint resumes only under these."""
    from .corpus import vocab_digest

    return dict(options.fingerprint(options.TRAIN, args), vocab_digest=vocab_digest(*vocab_paths),
                data_dir=str(Path(args.data_dir).resolve()),
                model_dir=None if args.from_scratch else str(Path(args.model_dir).resolve()))


class BestModel:
    """Keeps the model of the best validation score as a model folder (gpt1_fast.folder)."""

    def __init__(self, folder: Path, layout, task, src: Source, options: dict):
        self.folder, self.layout, self.task, self.src, self.options = folder, layout, task, src, options
        self.saved: tuple[int, float] | None = None  # (n_updates, score) of the newest complete model

    def describe(self, model, **extra) -> dict:
        """The model folder's description, as resume checkpoints store it (they read as models too)."""
        return model_section(model, layout=self.layout, vocab_paths=self.src.vocab, task=self.task.name,
                             head_type=self.task.head_type, label_names=self.task.label_names, options=self.options,
                             extra=extra)

    def __call__(self, trainer: Trainer) -> None:
        try:
            save_pretrained(trainer.model, self.folder, layout=self.layout, vocab_paths=self.src.vocab,
                            task=self.task.name, head_type=self.task.head_type, label_names=self.task.label_names,
                            options=self.options, extra=dict(n_updates=trainer.n_updates, score=trainer.best_score))
        except KeyboardInterrupt:  # Ctrl-C waits for a started save to end: the folder holds one model, whole
            self.read_saved()
            raise
        self.saved = (trainer.n_updates, trainer.best_score)

    def read_saved(self) -> None:
        """What the folder holds now (a resumed run's earlier best model, or none)."""
        extra = read_config(self.folder).extra if (self.folder / "config.json").exists() else None
        self.saved = None if extra is None else (extra["n_updates"], extra["score"])


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
    from .deps import require

    args = options.parse(options.TRAIN, build_parser(), argv)
    args.desc = args.desc or args.dataset
    task = get_task(args.dataset, objective=args.stsb_objective if args.dataset == "sts-b" else None,
                    diagnostic=args.diagnostic)
    paths = RunPaths(args.desc, args.runs_dir, args.log_dir, args.save_dir, args.submission_dir)
    refuse_earlier_results(paths, task, args)
    require("metrics", f"scoring {task.display}")  # spaCy and ftfy: when text is encoded (not cached)
    src = resolve_source(args)
    ctx = RunContext(args)
    command = resume_command(PROG, argv)
    try:
        return run(args, task, ctx, src, paths, command)
    except KeyboardInterrupt:  # before training started (run() reports one during training)
        if ctx.main:
            print("interrupted before training started; " + way_out(paths.checkpoint_files(), command,
                                                                   "run the command again to start over"),
                  file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        ctx.close()


def way_out(checkpoints: list, command: str, again: str = "pass --overwrite to start again") -> str:
    """How to go on after an interrupt: the last complete checkpoint and the --resume command, or none."""
    if checkpoints:
        return f"the last complete checkpoint is {checkpoints[-1]}; continue with: {command}"
    return f"no checkpoint to resume from (--save_every N writes them); {again}"


def resolve_source(args) -> Source:
    """The model path's shapes and vocabulary (or GPT-1's, from scratch), written back into the options
    so that the log, config.json and the resume fingerprint hold what the run computes with."""
    src = model_source(args)
    src.vocab = tuple(str(Path(p).resolve()) for p in src.vocab)
    for k in ("n_embd", "n_head", "n_layer", "afn"):
        setattr(args, k, getattr(src.cfg, k))
    args.n_ctx, (args.encoder_path, args.bpe_path) = src.n_ctx, src.vocab
    return src


def run(args, task, ctx: RunContext, src: Source, paths: RunPaths, command: str = "") -> dict:
    """Read and check everything, then claim the run's files, then train. Nothing is written (but the
    encoding cache) before every input has been read and checked."""
    verbose = ctx.main  # progress: a bar on a terminal, else a line every 30 s
    ctx.seed()
    data = load_data(args, task, ctx, src.vocab, verbose and sys.stderr.isatty())
    check_batch(args, len(data.splits["train"]), ctx.dist.world)
    if ctx.main:
        warn_if_cut(data, args.n_ctx)
    model = build_model(args, task, data.layout, src).to(ctx.device)
    t_total = updates_per_epoch(len(data.splits["train"]), args.n_batch) * args.n_iter
    opt = ctx.optimizer(model, t_total=t_total, schedule=args.lr_schedule, warmup=args.lr_warmup)
    meta = run_config(args, task, data.layout, src)
    best = BestModel(paths.model, data.layout, task, src, absolute_args(args, src.vocab))
    trainer = Trainer(task, data, model, opt, TrainConfig.from_args(args, verbose), ctx, on_best=best if ctx.main else None)
    ctx.seed(offset=ctx.dist.rank)  # the same initial weights everywhere (DDP broadcasts), own dropout masks
    ckpts = Checkpointing(paths.checkpoints, fingerprint(args, src.vocab), ctx, keep=args.keep,
                          describe=lambda t: best.describe(t.model, n_updates=t.n_updates))
    if args.resume is not None:  # read and checked before anything is written
        ckpts.restore(trainer, args.resume)
        best.read_saved()
    trainer.after_update.append(ckpts.every(args.save_every))
    if ctx.main:
        start_files(args, paths, task, trainer, meta, src.vocab)
        if args.resume is None:
            best(trainer)  # as the release: the initial parameters stand until an evaluation beats them
    ctx.barrier()
    try:
        return train_and_report(args, trainer, paths, best, ctx)
    except KeyboardInterrupt:
        if ctx.main:
            print(interrupted_message(trainer, paths, best, ckpts, command), file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def start_files(args, paths: RunPaths, task, trainer: Trainer, meta: dict, vocab_paths) -> None:
    """Claim the run folder, write config.json and start the log (a resumed run keeps its evaluations)."""
    paths.claim(task, overwrite=args.overwrite)
    header = absolute_args(args, vocab_paths)
    atomic_write_text(paths.config, json.dumps(dict(meta, args=header), indent=2))
    done = trainer.n_updates
    trainer.logger = JsonlLog(paths.log, header, keep=(lambda r: r.get("n_updates", -1) <= done and "args" not in r
                                                       and "desc" not in r) if args.resume is not None else None)


def train_and_report(args, trainer: Trainer, paths: RunPaths, best: BestModel, ctx: RunContext) -> dict:
    t0 = time.time()
    trainer.fit()
    if ctx.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    train_s = time.time() - t0
    result = dict(n_ctx=trainer.layout.n_ctx, n_updates=trainer.n_updates, train_seconds=train_s,
                  history=trainer.history, tokens=dict(trainer.tokens), model=str(paths.model))
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
    """Load the best model and write the predictions of every split but train. -> {split: path}."""
    best, _ = load_pretrained(paths.model)
    trainer.model.load_state_dict(best.state_dict())
    written = {}
    for split in (*trainer.task.eval_splits, *trainer.task.test_splits):
        path = paths.prediction(trainer.task, split)
        preds = trainer.task.submission_predictions(split, trainer.predict(split))  # WNLI: GLUE's baseline
        write_predictions(path, trainer.task, trainer.data[split].ids, preds)
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


def interrupted_message(trainer: Trainer, paths: RunPaths, best: BestModel, ckpts: Checkpointing,
                        command: str) -> str:
    latest = ckpts.latest()
    msg = f"interrupted at update {trainer.n_updates}: " + way_out([latest] if latest else [], command)
    if best.saved is not None:
        n, score = best.saved
        at = "the initial parameters" if n == 0 else f"update {n}, {trainer.selection_key} {score:.2f}"
        msg += f"; the best model so far is {paths.model} ({at})"
    return msg


def cli(argv=None):
    """Command-line entry: bad input is one `error:` line, no traceback. Exit codes: 2 a bad flag,
    1 a bad file or a missing package, 130 Ctrl-C."""
    run_cli(main, argv, PROG, interrupted="interrupted before training started: nothing of this run was written")


if __name__ == "__main__":
    cli()
