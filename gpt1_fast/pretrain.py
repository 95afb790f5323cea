"""Pretrain GPT-1 on a corpus: the paper's first stage (Radford et al. 2018, §3.1, §4.1).

    python -m gpt1_fast.pretrain --data books/ --out runs/books                 # the release's BPE (model/)
    python -m gpt1_fast.pretrain --data corpus.jsonl --merges 40000 --out runs/mine  # BPE learned here
    python -m gpt1_fast.pretrain --data papers/ --init_from model/ --out runs/cont   # continued pretraining
    python -m gpt1_fast.pretrain --data books/ --out runs/books --resume        # after a crash or kill
    torchrun --nproc_per_node 8 -m gpt1_fast.pretrain --data books/ --out runs/books   # DDP, several nodes too

--data: text files, folders of them, or JSONL files with a "text" field. They are encoded once into
<out>/data/{train,val}.bin (uint16 memmaps, documents contiguous) by gpt1_fast.corpus.
Each update takes --n_batch random contiguous windows of n_ctx + 1 tokens (an epoch: a random shift,
then every non-overlapping window once, in random order) and predicts every position. Defaults are
the paper's: Adam max lr 2.5e-4, linear warm-up over 2000 updates then cosine to 0, 64 x 512 tokens,
L2 0.01 on non-bias/gain weights, dropout 0.1, N(0, 0.02) initialisation, GELU, learned positions,
100 epochs (--max_steps to stop sooner).

<out>/ afterwards: config.json + model.safetensors (a Hugging Face openai-gpt folder, loadable by
`gpt1_fast.train --model_dir`, `gpt1_fast.generate --model_dir` and transformers), vocab.json +
merges.txt (the vocabulary, copied), log.jsonl, loss.png, checkpoints/step_<N>.pt (every
--save_every updates; --resume continues from the latest, bit for bit on CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import ops
from .config import GPTConfig
from .distributed import Dist
from .fileio import atomic_write, atomic_write_text
from .layout import EmbeddingLayout
from .model import LMModel
from .opt import OpenAIAdam, warmup_cosine_after
from .pretrained import resolve_vocab as find_vocab
from .resume import CheckpointDir, ResumeError, all_rng_states, restore_rng_states

VOCAB_OUT = ("vocab.json", "merges.txt")  # the vocabulary's names in the output folder (HF's)
# Arguments that change the math: a checkpoint resumes only under the same values.
MATH_ARGS = ("n_ctx", "n_embd", "n_head", "n_layer", "embd_pdrop", "attn_pdrop", "resid_pdrop", "afn", "n_batch",
             "lr", "warmup_steps", "l2", "vector_l2", "b1", "b2", "e", "max_grad_norm", "seed", "merges",
             "val_fraction")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpt1_fast.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", nargs="+", required=True, metavar="PATH",
      help="text files, folders of them, or JSONL files with a 'text' field")
    a("--out", required=True, metavar="DIR", help="output folder (model, vocabulary, log, checkpoints)")
    a("--data_dir", default=None, help="where the encoded token files go (default <out>/data)")
    a("--val_fraction", type=float, default=0.01, help="share of documents held out for validation (default 0.01)")
    a("--workers", type=int, default=None, help="encoding processes (default: one per CPU core)")
    g = p.add_argument_group("vocabulary and initial weights")
    g.add_argument("--model_dir", default="model/",
                   help="folder with the release's vocabulary (encoder_bpe_40000.json, vocab_40000.bpe) or a HF "
                        "folder's (vocab.json, merges.txt) (default model/)")
    g.add_argument("--encoder_path", default=None, help="BPE vocabulary json (overrides --model_dir)")
    g.add_argument("--bpe_path", default=None, help="BPE merges file (overrides --model_dir)")
    g.add_argument("--merges", type=int, default=None,
                   help="learn a BPE vocabulary with this many merges from the training corpus instead "
                        "(the paper: 40000)")
    g.add_argument("--init_from", default=None, metavar="DIR",
                   help="start from these weights (the release's model/ folder, a HF folder, or an earlier "
                        "pretraining --out); its vocabulary is used. Default: random N(0, 0.02) initialisation")
    g = p.add_argument_group("model (defaults: GPT-1)")
    g.add_argument("--n_ctx", type=int, default=512, help="tokens per sequence (default 512)")
    g.add_argument("--n_embd", type=int, default=768, help="width (default 768)")
    g.add_argument("--n_head", type=int, default=12, help="attention heads (default 12)")
    g.add_argument("--n_layer", type=int, default=12, help="blocks (default 12)")
    g.add_argument("--embd_pdrop", type=float, default=0.1, help="embedding dropout (default 0.1)")
    g.add_argument("--attn_pdrop", type=float, default=0.1, help="attention dropout (default 0.1)")
    g.add_argument("--resid_pdrop", type=float, default=0.1, help="residual dropout (default 0.1)")
    g.add_argument("--afn", default="gelu", choices=["gelu", "relu", "swish"], help="MLP activation (default gelu)")
    g = p.add_argument_group("optimisation (defaults: the paper's)")
    g.add_argument("--n_batch", type=int, default=64, help="sequences per update, over all processes (default 64)")
    g.add_argument("--micro_batch", type=int, default=None,
                   help="sequences per forward pass per process; gradients are accumulated up to the batch "
                        "(default: the whole per-process batch)")
    g.add_argument("--epochs", type=float, default=100, help="passes over the training tokens (default 100)")
    g.add_argument("--max_steps", type=int, default=None, help="updates in all (overrides --epochs)")
    g.add_argument("--lr", type=float, default=2.5e-4, help="maximum learning rate (default 2.5e-4)")
    g.add_argument("--warmup_steps", type=int, default=2000,
                   help="linear warm-up from 0 over this many updates, then cosine to 0 (default 2000)")
    g.add_argument("--l2", type=float, default=0.01, help="decoupled L2 on weights with >1 dimension (default 0.01)")
    g.add_argument("--vector_l2", action="store_true", help="apply L2 to biases and gains too")
    g.add_argument("--b1", type=float, default=0.9, help="Adam beta1 (default 0.9)")
    g.add_argument("--b2", type=float, default=0.999, help="Adam beta2 (default 0.999)")
    g.add_argument("--e", type=float, default=1e-8, help="Adam epsilon (default 1e-8)")
    g.add_argument("--max_grad_norm", type=float, default=1.0,
                   help="clip gradients by their global norm (default 1, the release's; <= 0: off)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g = p.add_argument_group("evaluation, logs, checkpoints")
    g.add_argument("--eval_every", type=int, default=1000, help="validate every N updates and at the end (default 1000)")
    g.add_argument("--eval_windows", type=int, default=256,
                   help="fixed validation windows, spread evenly over the val split (default 256; 0: all)")
    g.add_argument("--log_every", type=int, default=10, help="log the train loss every N updates (default 10)")
    g.add_argument("--save_every", type=int, default=1000, help="checkpoint every N updates (default 1000; 0: only at the end)")
    g.add_argument("--keep", type=int, default=2, help="checkpoints kept (default 2)")
    g.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                   help="continue from the latest checkpoint in <out>/checkpoints (or from CKPT)")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default cuda when available)")
    g.add_argument("--backend", default="auto", choices=list(ops.BACKENDS),
                   help="op implementation: torch (reference), triton (fused kernels), auto (triton on CUDA; default)")
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="compute precision: bf16 autocast or fp32 (default auto: bf16 on CUDA); parameters and "
                        "optimizer state stay fp32")
    g.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                   help="torch.compile the forward + loss (default: on for CUDA, off on CPU)")
    return p


# ------------------------------------------------------------------------------------------ data
class WindowSampler:
    """Window starts of every update, a pure function of (seed, step): epoch e draws a random shift
    in [0, n_ctx) and a permutation of the n_windows non-overlapping windows after it from
    default_rng([seed, e]); update b of the epoch takes windows b*n_batch ... (b+1)*n_batch - 1.
    Being stateless, the data position of a resumed run is its step and nothing can drift."""

    def __init__(self, n_tokens: int, n_ctx: int, n_batch: int, seed: int):
        self.n_ctx, self.n_batch, self.seed = n_ctx, n_batch, seed
        self.n_windows = (n_tokens - n_ctx) // n_ctx  # windows of n_ctx + 1 tokens fit after any shift
        self.steps_per_epoch = self.n_windows // n_batch
        if self.steps_per_epoch < 1:
            raise ValueError(f"the training split has {n_tokens} tokens: {self.n_windows} windows of "
                             f"{n_ctx} + 1 tokens, fewer than one batch of {n_batch}; lower --n_batch or --n_ctx")
        self._epoch, self._order = None, None

    def starts(self, step: int) -> np.ndarray:
        epoch, b = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            shift = int(rng.integers(self.n_ctx))
            self._epoch, self._order = epoch, shift + rng.permutation(self.n_windows) * self.n_ctx
        return self._order[b * self.n_batch:(b + 1) * self.n_batch]

    def state_dict(self, step: int) -> dict:
        epoch, b = divmod(step, self.steps_per_epoch)
        return {"seed": self.seed, "n_windows": self.n_windows, "epoch": epoch, "batch_in_epoch": b}


def windows(tokens: np.ndarray, starts, n_ctx: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [B, n_ctx] and next-token targets [B, n_ctx] of the windows starting at `starts`."""
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(n_ctx + 1)
    w = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64)).to(device, non_blocking=True)
    return w[:, :-1], w[:, 1:]


def val_starts(n_tokens: int, n_ctx: int, n_windows: int) -> np.ndarray:
    """Fixed validation windows: n_windows of the non-overlapping ones, evenly spread (0: all)."""
    total = (n_tokens - 1) // n_ctx
    if total < 1:
        raise ValueError(f"the validation split has {n_tokens} tokens, fewer than n_ctx + 1 = {n_ctx + 1}; "
                         "raise --val_fraction or lower --n_ctx")
    idx = np.arange(total) if n_windows <= 0 or n_windows >= total else \
        np.unique(np.linspace(0, total - 1, n_windows).round().astype(np.int64))
    return idx * n_ctx


# ------------------------------------------------------------------------------------------ loss
def lm_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Mean next-token cross-entropy over every position (float32), logits over the whole tied
    table (positions included, as the original), through ops.lm_head_loss (fused where available)."""
    rows = h.reshape(-1, h.size(-1))
    mask = torch.ones(rows.size(0), device=h.device, dtype=torch.float32)  # every position is predicted
    return ops.lm_head_loss(rows, weight, targets.reshape(-1), mask, backend=backend).mean()


class LMObjective(nn.Module):
    """model + loss in one module, so that DDP and torch.compile wrap the whole computation."""

    def __init__(self, lm: LMModel):
        super().__init__()
        self.lm = lm

    def forward(self, x, y):
        head = self.lm.lm_head
        return lm_loss(self.lm.transformer(input_ids=x), head.decoder.weight, y, head.backend)


# ----------------------------------------------------------------------------------------- setup
def resolve_vocab(args) -> tuple[str, str]:
    """Vocabulary files: the arguments', else the --init_from folder's, else the --model_dir folder's
    (the release's names first, then Hugging Face's)."""
    return find_vocab(args.init_from or args.model_dir, args.encoder_path, args.bpe_path)


def learn_vocab(args, out: Path) -> tuple[str, str]:
    """--merges N: BPE learned from the training documents (as `python -m gpt1_fast.vocab` does), written
    into the output folder."""
    from . import corpus
    from .text import learn_bpe

    enc, bpe = out / VOCAB_OUT[0], out / VOCAB_OUT[1]
    if not (enc.is_file() and bpe.is_file()):
        learn_bpe(corpus.read_documents(args.data), args.merges, enc, bpe, verbose=sys.stderr.isatty())
    return str(enc), str(bpe)


def fingerprint(args, total_steps: int, vocab_digest: str, train_meta: dict) -> dict:
    fp = {k: getattr(args, k) for k in MATH_ARGS}
    fp.update(total_steps=total_steps, vocab_digest=vocab_digest, data_digest=train_meta.get("digest"),
              init_from=str(Path(args.init_from).resolve()) if args.init_from else None)
    return fp


class JsonlLog:
    """<out>/log.jsonl, one JSON object a line, appended and flushed; on resume the lines after the
    checkpoint's step are dropped (they will be written again) and a half-written last line too."""

    def __init__(self, path: Path, header: dict, resume_step: int | None):
        self.path = path
        lines = []
        if resume_step is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("step", -1) <= resume_step:
                    lines.append(line)
        lines.append(json.dumps(dict(header, time=time.time())))
        atomic_write_text(path, "\n".join(lines) + "\n")
        self.f = open(path, "a", encoding="utf-8")

    def log(self, **rec):
        self.f.write(json.dumps(dict(rec, time=time.time())) + "\n")
        self.f.flush()

    def close(self):
        self.f.close()


def write_model_folder(out: Path, lm: LMModel, cfg: GPTConfig, layout: EmbeddingLayout, vocab, meta: dict):
    """A Hugging Face openai-gpt folder (what train/generate/export_hf read) plus this project's
    facts under config.json's "gpt1_fast" key, and the vocabulary copied beside it."""
    from .weights import export_hf

    for src, name in zip(vocab, VOCAB_OUT):
        if Path(src).resolve() != (out / name).resolve():
            atomic_write(out / name, lambda f, s=src: f.write(Path(s).read_bytes()), mode="wb")
    export_hf(lm.transformer, out)
    config = json.loads((out / "config.json").read_text())
    config["gpt1_fast"] = dict(cfg=cfg.to_dict(), layout=layout.to_dict(), vocab=list(VOCAB_OUT), **meta)
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    for flag in ("n_batch", "n_ctx", "keep", "log_every", "eval_every"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag} must be >= 1, got {getattr(args, flag)}")
    if args.merges is not None and (args.init_from or args.encoder_path):
        raise SystemExit("error: --merges learns a new vocabulary; it cannot be combined with --init_from or "
                         "--encoder_path (their weights/ids belong to another vocabulary)")
    dist = Dist(args.device)
    try:
        return _run(args, dist)
    finally:
        dist.close()


def _prepare(args, dist: Dist, out: Path):
    """Vocabulary and token files (rank 0 writes them, the others wait and read)."""
    from . import corpus

    data_dir = Path(args.data_dir or out / "data")

    def vocab():
        return learn_vocab(args, out) if args.merges is not None else resolve_vocab(args)

    if dist.main:
        enc, bpe = vocab()
        corpus.encode_corpus(list(args.data), data_dir, (enc, bpe), val_fraction=args.val_fraction,
                             workers=args.workers, seed=args.seed, verbose=sys.stderr.isatty())
    dist.barrier()
    enc, bpe = vocab()
    digest = corpus.vocab_digest(enc, bpe)
    return (enc, bpe), digest, corpus.open_split(data_dir, "train", digest), corpus.open_split(data_dir, "val", digest)


def _run(args, dist: Dist) -> dict:
    device, main_rank = dist.device, dist.main
    out = Path(args.out)
    ckpts = CheckpointDir(out / "checkpoints", keep=args.keep)
    if args.resume is None and ckpts.latest() is not None:
        raise SystemExit(f"error: {out} already holds checkpoints ({ckpts.latest().name}): pass --resume to "
                         "continue that run, or choose a new --out")
    if args.n_batch % dist.world:
        raise SystemExit(f"error: --n_batch {args.n_batch} must be divisible by the {dist.world} processes")
    per_rank = args.n_batch // dist.world
    micro = args.micro_batch or per_rank
    if micro < 1 or per_rank % micro:
        raise SystemExit(f"error: --micro_batch {micro} must divide the per-process batch {per_rank}")
    use_bf16 = args.dtype == "bf16" or (args.dtype == "auto" and device.type == "cuda")
    use_compile = args.compile if args.compile is not None else device.type == "cuda"
    tty = sys.stderr.isatty() and main_rank

    vocab, vocab_digest, train_tf, val_tf = _prepare(args, dist, out)
    train_tokens, val_tokens = train_tf.tokens, val_tf.tokens
    n_vocab = int(train_tf.meta["n_vocab"])
    sampler = WindowSampler(len(train_tokens), args.n_ctx, args.n_batch, args.seed)
    total = args.max_steps if args.max_steps is not None else max(1, math.ceil(args.epochs * sampler.steps_per_epoch))
    v_starts = val_starts(len(val_tokens), args.n_ctx, args.eval_windows)
    fp = fingerprint(args, total, vocab_digest, train_tf.meta)

    torch.manual_seed(args.seed)
    layout = EmbeddingLayout(n_vocab, (), args.n_ctx)
    cfg = GPTConfig(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, embd_pdrop=args.embd_pdrop,
                    attn_pdrop=args.attn_pdrop, resid_pdrop=args.resid_pdrop, afn=args.afn, backend=args.backend)
    lm = LMModel(cfg, layout.size, args.n_ctx)
    if args.init_from:
        from .weights import load_openai_pretrained_model

        load_openai_pretrained_model(lm.transformer, n_ctx=args.n_ctx, n_special=0, n_transfer=args.n_layer,
                                     n_embd=args.n_embd, path=args.init_from)
    lm.to(device)
    opt = OpenAIAdam(lm.parameters(), lr=args.lr, schedule="warmup_constant", warmup=0, t_total=-1, b1=args.b1,
                     b2=args.b2, e=args.e, l2=args.l2, vector_l2=args.vector_l2, max_grad_norm=args.max_grad_norm)
    torch.manual_seed(args.seed + dist.rank)  # same init everywhere, own dropout masks per process

    step, tokens_seen, resumed_window = 0, 0, [0.0, 0]
    if args.resume is not None:
        ckpt = ckpts.load(None if args.resume == "latest" else args.resume, fp)
        lm.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, tokens_seen = ckpt["step"], ckpt["tokens_seen"]
        resumed_window = ckpt["log_window"]
        if not restore_rng_states(ckpt["rng"], dist.rank, dist.world) and main_rank:
            print(f"warning: checkpoint written by {len(ckpt['rng'])} processes, resuming with {dist.world}: "
                  "dropout masks differ from an uninterrupted run", file=sys.stderr)
        del ckpt

    objective = LMObjective(lm)
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        objective = DDP(objective, device_ids=[device.index] if device.type == "cuda" else None)
    if use_compile:
        objective = torch.compile(objective)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    plain = LMObjective(lm)  # evaluation: rank 0 alone, no DDP, not compiled

    @torch.no_grad()
    def evaluate() -> float:
        lm.eval()
        total_loss = 0.0
        for i in range(0, len(v_starts), micro):
            x, y = windows(val_tokens, v_starts[i:i + micro], args.n_ctx, device)
            with autocast():
                total_loss += plain(x, y).item() * len(x)  # windows are equally long: token mean
        lm.train()
        return total_loss / len(v_starts)

    def save(step):
        rngs = all_rng_states(dist.world)
        if main_rank:
            ckpts.save(step, {"model": lm.state_dict(), "optimizer": opt.state_dict(), "tokens_seen": tokens_seen,
                              "sampler": sampler.state_dict(step), "rng": rngs,
                              "log_window": [loss_sum.item(), loss_n]}, fp)  # the train loss since the last log
        dist.barrier()

    log = None
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in lm.parameters())
        log = JsonlLog(out / "log.jsonl", dict(kind="pretrain", step=step, args=vars(args), n_params=n_params,
                                               total_steps=total, steps_per_epoch=sampler.steps_per_epoch,
                                               train_tokens=len(train_tokens), val_tokens=len(val_tokens),
                                               world=dist.world, resumed=args.resume is not None),
                       step if args.resume is not None else None)
        print(f"{n_params / 1e6:.1f}M parameters, {len(train_tokens)} training tokens, {sampler.steps_per_epoch} "
              f"updates per epoch, {total} updates from {step}", flush=True)

    from tqdm import tqdm

    n_micro = per_rank // micro
    bar = tqdm(total=total, initial=step, ncols=90, desc="pretrain", disable=not tty)
    lm.train()
    t_log, tok_log = time.time(), 0
    loss_sum, loss_n = torch.tensor(resumed_window[0], device=device), resumed_window[1]
    val_loss = None
    while step < total:
        lr = args.lr * warmup_cosine_after(step, args.warmup_steps, total)
        for group in opt.param_groups:
            group["lr"] = lr
        mine = sampler.starts(step)[dist.rank * per_rank:(dist.rank + 1) * per_rank]
        for k in range(n_micro):
            x, y = windows(train_tokens, mine[k * micro:(k + 1) * micro], args.n_ctx, device)
            sync = dist.world == 1 or k == n_micro - 1
            with (contextlib.nullcontext() if sync else objective.no_sync()), autocast():
                loss = objective(x, y) / n_micro
            loss.backward()
            loss_sum += loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        loss_n += 1
        tokens_seen += args.n_batch * args.n_ctx
        tok_log += args.n_batch * args.n_ctx
        bar.update(1)
        if step % args.log_every == 0 or step == total:
            train_loss = loss_sum.item() / loss_n  # rank 0's share of the batch (a sync every log_every)
            dt = time.time() - t_log
            if main_rank:
                log.log(step=step, epoch=step / sampler.steps_per_epoch, loss=train_loss, lr=lr,
                        tokens=tokens_seen, tokens_per_s=tok_log / max(dt, 1e-9))
                bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}")
            t_log, tok_log, loss_sum, loss_n = time.time(), 0, torch.zeros((), device=device), 0
        if step % args.eval_every == 0 or step == total:
            if main_rank:
                val_loss = evaluate()
                log.log(step=step, val_loss=val_loss, val_ppl=math.exp(min(val_loss, 700)))
                print(f"step {step}: val loss {val_loss:.4f}, perplexity {math.exp(min(val_loss, 700)):.2f}",
                      flush=True)
            dist.barrier()
        if (args.save_every and step % args.save_every == 0) or step == total:
            save(step)
    bar.close()
    if main_rank and val_loss is None:  # resumed from the final checkpoint, or --max_steps 0
        val_loss = evaluate()
        log.log(step=step, val_loss=val_loss, val_ppl=math.exp(min(val_loss, 700)))

    result = {"steps": step, "total_steps": total, "tokens_seen": tokens_seen, "val_loss": val_loss, "out": str(out)}
    if main_rank:
        log.close()
        write_model_folder(out, lm, cfg, layout, vocab, dict(steps=step, tokens_seen=tokens_seen,
                                                             val_loss=val_loss, fingerprint=fp))
        try:
            from .plot import plot_log

            result["plot"] = str(plot_log(out / "log.jsonl", out / "loss.png"))
        except ImportError as e:
            print(f"warning: no loss plot ({e}); pip install matplotlib", file=sys.stderr)
        except ValueError as e:  # the run's results are written; a plot is not worth failing it
            print(f"warning: no loss plot ({e})", file=sys.stderr)
    dist.barrier()
    return result


def cli(argv=None):
    """Command-line entry: bad input is one clear line, no traceback."""
    from .weights import CheckpointError

    try:
        main(argv)
    except (FileNotFoundError, ResumeError, CheckpointError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    cli()
