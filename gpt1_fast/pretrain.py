"""Pretrain GPT-1 on a corpus: the paper's first stage (Radford et al. 2018, sections 3.1 and 4.1).

    python -m gpt1_fast.pretrain --data books/ --out runs/books                 # the release's BPE (model/)
    python -m gpt1_fast.pretrain --data corpus.jsonl --merges 40000 --out runs/mine  # BPE learned here
    python -m gpt1_fast.pretrain --data papers/ --init_from model/ --out runs/cont   # continued pretraining
    python -m gpt1_fast.pretrain --data books/ --out runs/books --resume        # after a crash or kill
    torchrun --nproc_per_node 8 -m gpt1_fast.pretrain --data books/ --out runs/books   # DDP, several nodes too

--data: text files, folders of them, or JSONL files with a "text" field. They are encoded once into
<out>/data/{train,val}.bin (uint16 memmaps, documents contiguous) by gpt1_fast.corpus.
Each update takes --n_batch random contiguous windows of n_ctx + 1 tokens (an epoch: a random shift,
then every non-overlapping window once, in random order) and predicts every position; the softmax
covers the vocabulary's tokens (not the position rows of the embedding table). Defaults are the
paper's: Adam max lr 2.5e-4, linear warm-up over 2000 updates then cosine to 0, 64 x 512 tokens, L2
0.01 on non-bias/gain weights, dropout 0.1, N(0, 0.02) initialisation, GELU, learned positions, 100
epochs (--max_steps to stop sooner; raised on --resume, a finished run trains on, its schedule
stretched to the new total from the update it had reached).

<out>/ afterwards: model/ (a model folder: config.json, model.safetensors, vocab.json, merges.txt;
`gpt1_fast.train --model_dir <out>`, `gpt1_fast.generate --model_dir <out>` and transformers read it),
log.jsonl, loss.png, checkpoints/step_<N>.pt (every --save_every updates and at the end; --resume
continues from the latest, bit for bit on CPU; each reads as a model too, e.g. in generate).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from . import corpus, options
from .cli import resume_command, run_cli
from .context import RunContext
from .errors import DataError, UsageError
from .folder import init_from, model_section, save_pretrained
from .layout import EmbeddingLayout
from .logs import JsonlLog
from .model import LMModel
from .pretraining import LMConfig, LMTrainer
from .resume import Checkpointing
from .sources import Source, model_source

PROG = "python -m gpt1_fast.pretrain"
VOCAB_OUT = ("vocab.json", "merges.txt")  # the vocabulary's names in the output folder (HF's)


def build_parser():
    return options.build_parser(options.PRETRAIN, PROG, __doc__)


# ----------------------------------------------------------------------------------------- setup
def model_start(args, out: Path, ctx: RunContext) -> Source:
    """The shapes and the vocabulary: --init_from's (the shape flags checked against it), or GPT-1's
    under the flags with the vocabulary of the flags, of --model_dir, or learned from the corpus into
    <out> with --merges (rank 0 learns, the others wait). Written back into the options (log,
    config, fingerprint hold what the run computes with)."""
    if args.init_from:
        src = model_source(args, path=args.init_from, scratch=False)
    else:
        src = model_source(args, path=args.model_dir, scratch=True)
    if args.merges is not None:
        enc, bpe = out / VOCAB_OUT[0], out / VOCAB_OUT[1]
        if ctx.main and not (enc.is_file() and bpe.is_file()):
            from .text import learn_bpe

            learn_bpe(corpus.read_documents(args.data), args.merges, enc, bpe, verbose=sys.stderr.isatty())
        ctx.barrier()
        src.vocab = (str(enc), str(bpe))
    for k in ("n_embd", "n_head", "n_layer", "afn"):
        setattr(args, k, getattr(src.cfg, k))
    args.n_ctx = src.n_ctx
    return src


def fingerprint(args, vocab_digest: str) -> dict:
    """The options that change the math, the vocabulary's and the corpus's bytes: a checkpoint resumes
    only under these (checked before anything is encoded). The number of updates is not part of it."""
    data_digest = corpus.inputs_digest(corpus.list_files(args.data), vocab_digest, args.val_fraction, args.seed)
    return dict(options.fingerprint(options.PRETRAIN, args), vocab_digest=vocab_digest, data_digest=data_digest,
                init_from=str(Path(args.init_from).resolve()) if args.init_from else None)


def check_inputs(args, ctx: RunContext, out: Path, vocab, data_digest: str) -> None:
    """What the run reads, before it writes anything: the vocabulary, and the packages it needs
    (spaCy and ftfy unless the corpus is encoded already; matplotlib for loss.png, else a warning)."""
    from .deps import message, require
    from .text import read_vocab

    read_vocab(*vocab)  # a DataError naming the file
    if not encoded_already(Path(args.tokens_dir or out / "data"), data_digest):
        if not any(doc.strip() for doc in corpus.read_documents(args.data)):  # stops at the first text
            raise DataError(f"{', '.join(args.data)}: no text to pretrain on (empty, or only blank lines)")
        require("text", "encoding the corpus")
    why = message("plot", "the loss plot (loss.png)")
    if why and ctx.main:
        print(f"warning: {why}; the run goes on without it", file=sys.stderr, flush=True)


def encoded_already(tokens_dir: Path, data_digest: str) -> bool:
    """Whether tokens_dir holds the token files of these inputs (then nothing is encoded)."""
    try:
        return all(corpus.open_split(tokens_dir, s).meta["digest"] == data_digest for s in ("train", "val"))
    except (DataError, OSError, KeyError):
        return False


def token_files(args, ctx: RunContext, out: Path, vocab) -> tuple:
    """The train and val token files (rank 0 encodes them, the others wait and read)."""
    tokens_dir = Path(args.tokens_dir or out / "data")
    if ctx.main:
        corpus.encode_corpus(list(args.data), tokens_dir, vocab, val_fraction=args.val_fraction, workers=args.workers,
                             seed=args.seed, verbose=sys.stderr.isatty())
    ctx.barrier()
    digest = corpus.vocab_digest(*vocab)
    return corpus.open_split(tokens_dir, "train", digest), corpus.open_split(tokens_dir, "val", digest)


def build_lm(args, src: Source, n_vocab: int) -> tuple[LMModel, EmbeddingLayout]:
    """The LM on the layout tokens | positions (no special tokens), from --init_from or N(0, 0.02)."""
    layout = EmbeddingLayout(n_vocab, (), src.n_ctx)
    lm = LMModel(src.cfg, layout.size, src.n_ctx)
    if args.init_from:
        init_from(lm, args.init_from, layout=layout)
    return lm, layout


# ------------------------------------------------------------------------------------------ recipe
def main(argv=None) -> dict:
    args = options.parse(options.PRETRAIN, build_parser(), argv)  # --out and --tokens_dir: folders, or new
    ctx = RunContext(args)
    command = resume_command(PROG, argv)
    try:
        return run(args, ctx, command)
    except KeyboardInterrupt:  # before training started (run() reports one during training)
        if ctx.main:
            print("interrupted before training started; " + way_out(args, command), file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        ctx.close()


def way_out(args, command: str) -> str:
    """How to go on after an interrupt: the last complete checkpoint and the --resume command, or none."""
    from .resume import CheckpointDir

    steps = CheckpointDir(Path(args.out) / "checkpoints").list()
    if steps:
        return f"the last complete checkpoint is {steps[-1][1]}; continue with: {command}"
    return "no checkpoint was written yet: run the command again to start over (an encoded corpus is reused)"


def resume_checkpoint(args, ckpts: Checkpointing) -> dict | None:
    """--resume: the checkpoint, read and checked against this run's fingerprint before anything is
    encoded or written; without it, an earlier run's checkpoints are a refusal."""
    if args.resume is not None:
        return ckpts.load(args.resume)
    if ckpts.latest() is not None:
        raise UsageError(f"argument --out: {args.out} holds the checkpoints of an earlier run "
                         f"({ckpts.latest().name}): pass --resume to continue it, or choose a new --out")
    return None


def run(args, ctx: RunContext, command: str = "") -> dict:
    out = Path(args.out)
    src = model_start(args, out, ctx)
    vocab = src.vocab
    ckpts = Checkpointing(out / "checkpoints", fingerprint(args, corpus.vocab_digest(*vocab)), ctx, keep=args.keep)
    ckpt = resume_checkpoint(args, ckpts)
    check_inputs(args, ctx, out, vocab, ckpts.fingerprint["data_digest"])
    train_tf, val_tf = token_files(args, ctx, out, vocab)
    ctx.seed()
    lm, layout = build_lm(args, src, int(train_tf.meta["n_vocab"]))
    ckpts.describe = lambda t: model_section(t.model, layout=layout, vocab_paths=vocab, options=vars(args),
                                             extra=dict(n_updates=t.n_updates))
    lm.to(ctx.device)
    opt = ctx.optimizer(lm, t_total=1, schedule="warmup_then_cosine", warmup=0.0)  # LMTrainer sets the schedule
    ctx.seed(offset=ctx.dist.rank)  # the same initial weights everywhere, own dropout masks per process
    config = LMConfig(args.n_ctx, args.n_batch, 1, args.warmup_steps, args.seed, args.micro_batch, args.eval_every,
                      args.eval_windows, args.log_every, cuda_graphs=args.cuda_graphs, verbose=True)
    trainer = LMTrainer(lm, opt, train_tf.tokens, val_tf.tokens, config, ctx)
    total = args.max_steps or max(1, math.ceil(args.epochs * trainer.sampler.steps_per_epoch))
    trainer.set_schedule(total)
    if ckpt is not None:
        ckpts.restore(trainer, ckpt)
        del ckpt
    trainer.after_update.append(lambda t: ckpts.save(t) if (args.save_every and t.n_updates % args.save_every == 0)
                                or t.n_updates == total else None)
    if ctx.main:
        trainer.logger = start_log(args, out, trainer, lm, len(train_tf), len(val_tf))
    try:
        val_loss = trainer.fit()
    except KeyboardInterrupt:
        if ctx.main:
            print(f"interrupted at update {trainer.n_updates}: {way_out(args, command)}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    result = {"steps": trainer.n_updates, "total_steps": total, "tokens_seen": trainer.tokens_seen,
              "val_loss": val_loss, "out": str(out)}
    if ctx.main:
        trainer.logger.close()
        save_pretrained(lm, out / "model", layout=layout, vocab_paths=vocab, options=vars(args),
                        extra=dict(steps=trainer.n_updates, tokens_seen=trainer.tokens_seen, val_loss=val_loss,
                                   fingerprint=ckpts.fingerprint))
        result.update(model=str(out / "model"), plot=draw_loss(out))
    ctx.barrier()
    return result


def start_log(args, out: Path, trainer: LMTrainer, lm, n_train: int, n_val: int) -> JsonlLog:
    n_params = sum(p.numel() for p in lm.parameters())
    step, total = trainer.n_updates, trainer.config.total_steps
    header = dict(kind="pretrain", step=step, args=vars(args), n_params=n_params, total_steps=total,
                  steps_per_epoch=trainer.sampler.steps_per_epoch, train_tokens=n_train, val_tokens=n_val,
                  world=trainer.ctx.dist.world, resumed=args.resume is not None)
    out.mkdir(parents=True, exist_ok=True)
    log = JsonlLog(out / "log.jsonl", header, keep=(lambda r: "kind" not in r and r.get("step", -1) <= step)
                   if args.resume is not None else None)
    print(f"{n_params / 1e6:.1f}M parameters, {n_train} training tokens, {trainer.sampler.steps_per_epoch} updates "
          f"per epoch, {total} updates from {step}", flush=True)
    return log


def draw_loss(out: Path) -> str | None:
    """loss.png from the log (without matplotlib, warned about at the start, or from an empty log
    there is none: the model is written)."""
    from .deps import missing

    if missing("plot"):
        return None
    try:
        from .plot import plot_log

        return str(plot_log(out / "log.jsonl", out / "loss.png"))
    except ValueError as e:
        print(f"warning: no loss plot ({e})", file=sys.stderr)
    return None


def cli(argv=None):
    """Command-line entry: bad input is one `error:` line, no traceback (2: a flag, 1: a file or a
    missing package, 130: Ctrl-C)."""
    run_cli(main, argv, PROG, file_errors=(ValueError,),
            interrupted="interrupted before training started: no checkpoint of this run was written")


if __name__ == "__main__":
    cli()
