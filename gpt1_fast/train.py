"""Fine-tune GPT-1 on ROCStories (Story Cloze Test), as the TF release's train.py does (SPEC §4-§6).

    python -m gpt1_fast.train --data_dir data/ --submit --analysis            # pretrained model/ folder
    python -m gpt1_fast.train --data_dir data/ --from_scratch --n_layer 2 ... # no checkpoint needed
    torchrun --nproc_per_node 4 -m gpt1_fast.train ...                        # several GPUs (DDP)

Loss: mean(clf_losses) + lm_coef * mean(lm_losses), LM loss per sequence = masked sum / mask sum.
Evaluation after each epoch and at updates 1000, 2000, 4000, ... of the first epoch, on the first
n_valid training stories and the validation split; one JSON line each in log/<desc>.jsonl.
--submit keeps the best-validation parameters (save/<desc>/best_params.pt) and writes
submission/ROCStories.tsv from them; --analysis prints the best validation and the test accuracy.
Every file is written atomically (temporary file + rename).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import data as rocdata
from . import ops
from .config import GPTConfig
from .model import DoubleHeadModel
from .opt import SCHEDULES, OpenAIAdam

EVAL_UPDATES_FIRST_EPOCH = tuple(1000 * 2 ** k for k in range(16))  # 1000, 2000, 4000, ...
SUBMISSION_FILE = "ROCStories.tsv"
VOCAB_FILES = (("encoder_bpe_40000.json", "vocab_40000.bpe"), ("vocab.json", "merges.txt"))  # release, HF


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpt1_fast.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--dataset", default="rocstories", choices=["rocstories"], help="task (only ROCStories, as the release)")
    a("--desc", default="rocstories", help="run name: log/<desc>.jsonl, save/<desc>/ (default rocstories)")
    a("--data_dir", default="data/", help="folder holding the two Story Cloze CSVs (default data/)")
    a("--log_dir", default="log/", help="folder for <desc>.jsonl (default log/)")
    a("--save_dir", default="save/", help="folder for <desc>/best_params.pt with --submit (default save/)")
    a("--submission_dir", default="submission/", help="folder for ROCStories.tsv (default submission/)")
    a("--cache_dir", default=None,
      help="cache of encoded datasets, keyed by the hash of the CSVs and vocabulary files "
           "(default $XDG_CACHE_HOME/gpt1_fast or ~/.cache/gpt1_fast; 'none' disables it)")
    a("--submit", action="store_true", help="keep the best-validation parameters and write the test predictions")
    a("--analysis", action="store_true", help="print best validation accuracy and test accuracy (needs --submit)")
    a("--seed", type=int, default=42, help="random seed (default 42)")
    a("--n_iter", type=int, default=3, help="epochs (default 3)")
    a("--n_batch", type=int, default=64,
      help="stories per update, over all GPUs (default 64; the TF release used 4 GPUs x 8 = 32, the PyTorch "
           "port 8, and reports +2.5 points going from 8 to 20)")
    a("--max_grad_norm", type=float, default=1, help="clip gradients by their global norm (default 1; <=0: off)")
    a("--lr", type=float, default=6.25e-5, help="peak learning rate (default 6.25e-5)")
    a("--lr_warmup", type=float, default=0.002, help="warmup, as a fraction of all updates (default 0.002)")
    a("--n_ctx", type=int, default=512, help="context cap; the real one is fitted to the data (default 512)")
    a("--n_embd", type=int, default=768, help="width (default 768)")
    a("--n_head", type=int, default=12, help="attention heads (default 12)")
    a("--n_layer", type=int, default=12, help="blocks (default 12)")
    a("--embd_pdrop", type=float, default=0.1, help="embedding dropout (default 0.1)")
    a("--attn_pdrop", type=float, default=0.1, help="attention-weight dropout (default 0.1)")
    a("--resid_pdrop", type=float, default=0.1, help="residual dropout (default 0.1)")
    a("--clf_pdrop", type=float, default=0.1, help="classifier-input dropout (default 0.1)")
    a("--l2", type=float, default=0.01, help="decoupled weight decay (default 0.01)")
    a("--vector_l2", action="store_true", help="apply l2 to vectors (biases, gains) too")
    a("--opt", default="adam", choices=["adam"], help="optimizer: OpenAI's Adam with the weight-decay fix")
    a("--afn", default="gelu", choices=["gelu", "relu", "swish"], help="MLP activation (default gelu)")
    a("--lr_schedule", default="warmup_linear", choices=sorted(SCHEDULES), help="default warmup_linear")
    a("--encoder_path", default=None,
      help="BPE vocabulary json (default <model_dir>/encoder_bpe_40000.json, i.e. model/encoder_bpe_40000.json)")
    a("--bpe_path", default=None, help="BPE merges (default <model_dir>/vocab_40000.bpe)")
    a("--n_transfer", type=int, default=12, help="pretrained blocks to load (default 12; -1: none)")
    a("--lm_coef", type=float, default=0.5, help="weight of the auxiliary LM loss (default 0.5)")
    a("--b1", type=float, default=0.9, help="Adam beta1 (default 0.9)")
    a("--b2", type=float, default=0.999, help="Adam beta2 (default 0.999)")
    a("--e", type=float, default=1e-8, help="Adam epsilon (default 1e-8)")
    a("--n_valid", type=int, default=374, help="validation stories held out of the val file (default 374)")
    a("--model_dir", default="model/",
      help="pretrained checkpoint: the release's model/ folder (params_shapes.json, params_0..9.npy) or a "
           "Hugging Face openai-gpt folder (default model/)")
    a("--from_scratch", action="store_true", help="random initialisation instead of the pretrained weights")
    a("--device", default=None, help="cpu, cuda or cuda:N (default cuda when available)")
    a("--backend", default="auto", choices=list(ops.BACKENDS),
      help="op implementation: torch (reference), triton (fused kernels), auto (triton on CUDA; default)")
    a("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
      help="compute precision: bf16 autocast or fp32 (default auto: bf16 on CUDA, fp32 on CPU); "
           "parameters and optimizer state stay fp32")
    a("--compile", default=None, action=argparse.BooleanOptionalAction,
      help="torch.compile the training forward (default: on for CUDA, off on CPU)")
    a("--n_batch_eval", type=int, default=None, help="stories per evaluation batch (default 2 x per-rank batch)")
    return p


# -------------------------------------------------------------------------------------- helpers
def atomic_write(path, write_fn, mode="w"):
    """Write via a temporary file in the same folder and rename over `path` (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            write_fn(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def resolve_vocab(args):
    """Vocabulary files: the arguments, else the release's (or a HF folder's) files in model_dir."""
    if args.encoder_path and args.bpe_path:
        return args.encoder_path, args.bpe_path
    md = Path(args.model_dir)
    enc, bpe = VOCAB_FILES[0]
    for e, b in VOCAB_FILES:
        if (md / e).is_file():
            enc, bpe = e, b
            break
    return args.encoder_path or str(md / enc), args.bpe_path or str(md / bpe)


def checkpoint_present(model_dir) -> bool:
    md = Path(model_dir)
    return ((md / "params_shapes.json").is_file() and (md / "params_0.npy").is_file()) or \
        (md / "model.safetensors").is_file() or (md / "pytorch_model.bin").is_file()


def missing_checkpoint_message(model_dir) -> str:
    return (f"no pretrained checkpoint in {model_dir}: expected the original release's model/ folder "
            "(params_shapes.json, params_0.npy ... params_9.npy, encoder_bpe_40000.json, vocab_40000.bpe) from "
            "https://github.com/openai/finetune-transformer-lm, or a Hugging Face openai-gpt folder "
            "(model.safetensors, vocab.json, merges.txt). Point --model_dir at it, or pass --from_scratch "
            "to train from a random initialisation.")


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gpt1_fast")


class LazyTextEncoder:
    """Reads the vocabulary now (its size, and a clear error if a file is missing) but builds the
    TextEncoder (ftfy + spaCy) only on a cache miss: with the encoded datasets cached, training runs
    on a machine without spaCy/ftfy."""

    def __init__(self, encoder_path, bpe_path):
        from .text import read_vocab

        self.paths = (encoder_path, bpe_path)
        self.n_vocab = len(read_vocab(encoder_path, bpe_path)[0])
        self._te = None

    def encode(self, texts, verbose=False):
        if self._te is None:
            from .text import TextEncoder

            self._te = TextEncoder(*self.paths)
        return self._te.encode(texts, verbose=verbose)


class Dist:
    """torch.distributed when launched by torchrun with WORLD_SIZE > 1, else a single process."""

    def __init__(self, device_arg):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device_arg is None:
            device_arg = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device_arg)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local if self.world > 1 else torch.cuda.current_device())
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        self.device = dev
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def close(self):
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def lm_and_clf_losses(lm_logits, clf_logits, x, m, y):
    """Per-sequence LM losses (masked mean of next-token cross-entropy) and per-story clf losses."""
    T = x.size(-2)
    targets = x[..., 1:, 0].reshape(-1)
    mask = m[..., 1:].reshape(-1, T - 1)
    lm = ops.cross_entropy(lm_logits, targets).view(-1, T - 1)
    lm_losses = (lm * mask).sum(1) / mask.sum(1)
    clf_losses = ops.cross_entropy(clf_logits, y)
    return lm_losses, clf_losses


class JsonlLogger:
    """log/<desc>.jsonl: first line the run's arguments, then one line per evaluation. The whole file
    is rewritten atomically on every line (it stays small), so a crash never leaves half a line."""

    def __init__(self, path, **header):
        self.path = Path(path)
        self.lines = [json.dumps(dict(header, time=time.time()))]
        self._flush()

    def log(self, **kw):
        self.lines.append(json.dumps(dict(kw, time=time.time())))
        self._flush()

    def _flush(self):
        atomic_write(self.path, lambda f: f.write("\n".join(self.lines) + "\n"))


def rocstories_analysis(data_dir, submission_path, log_path):
    """The release's analysis: best validation accuracy in the log, test accuracy of the submission."""
    test = rocdata.read_rocstories_csv(Path(data_dir) / rocdata.TEST_FILE)
    with open(submission_path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    preds = np.asarray([int(r[1]) for r in rows if r and r[0] != ""])
    if len(preds) != len(test.labels):
        raise ValueError(f"{submission_path}: {len(preds)} predictions for {len(test.labels)} test stories")
    test_acc = float((preds == test.labels).mean() * 100.0)
    with open(log_path, encoding="utf-8") as f:
        logs = [json.loads(line) for line in f if line.strip()][1:]
    valid_acc = logs[int(np.argmax([entry["va_acc"] for entry in logs]))]["va_acc"]
    print("ROCStories Valid Accuracy: %.2f" % valid_acc)
    print("ROCStories Test Accuracy:  %.2f" % test_acc)
    return valid_acc, test_acc


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.analysis and not args.submit:
        raise SystemExit("--analysis reads the submission file: pass --submit too")
    encoder_path, bpe_path = resolve_vocab(args)
    if not args.from_scratch and not checkpoint_present(args.model_dir):
        raise SystemExit("error: " + missing_checkpoint_message(args.model_dir))
    dist = Dist(args.device)
    try:
        return _run(args, dist, encoder_path, bpe_path)
    finally:
        dist.close()


def _run(args, dist: Dist, encoder_path, bpe_path) -> dict:
    device, main_rank = dist.device, dist.main
    if args.n_batch % dist.world:
        raise SystemExit(f"--n_batch {args.n_batch} must be divisible by the number of processes {dist.world}")
    n_batch_rank = args.n_batch // dist.world
    n_batch_eval = args.n_batch_eval or 2 * n_batch_rank
    use_bf16 = args.dtype == "bf16" or (args.dtype == "auto" and device.type == "cuda")
    use_compile = args.compile if args.compile is not None else device.type == "cuda"
    tty = sys.stderr.isatty() and main_rank

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    text_encoder = LazyTextEncoder(encoder_path, bpe_path)
    if args.cache_dir is None:
        cache_dir = default_cache_dir()
    else:
        cache_dir = None if args.cache_dir.lower() in ("none", "") else args.cache_dir
    load = lambda: rocdata.load_rocstories(args.data_dir, text_encoder, (encoder_path, bpe_path),  # noqa: E731
                                           n_valid=args.n_valid, cache_dir=cache_dir, verbose=tty)
    if main_rank:
        splits = load()
    dist.barrier()  # rank 0 filled the cache; the others read it
    if not main_rank:
        splits = load()
    (trX1, trX2, trX3, trY), (vaX1, vaX2, vaX3, vaY), (teX1, teX2, teX3, teY) = splits

    n_vocab = text_encoder.n_vocab
    n_special = len(rocdata.SPECIALS)
    start, delimiter, clf_token = n_vocab, n_vocab + 1, n_vocab + 2
    max_len, n_ctx = rocdata.context_length(splits, args.n_ctx)
    vocab = n_vocab + n_special + n_ctx

    def transform(x1, x2, x3):
        x, m = rocdata.transform_roc(x1, x2, x3, n_ctx, max_len, start, delimiter, clf_token, n_vocab + n_special)
        return torch.from_numpy(x).to(device), torch.from_numpy(m).to(device)

    trX, trM = transform(trX1, trX2, trX3)
    vaX, vaM = transform(vaX1, vaX2, vaX3)
    teX, teM = transform(teX1, teX2, teX3)
    trY_t, vaY_t = torch.from_numpy(trY).to(device), torch.from_numpy(vaY).to(device)
    n_train, n_valid = len(trY), min(args.n_valid, len(trY))
    n_updates_total = (n_train // args.n_batch) * args.n_iter
    if n_updates_total == 0:
        raise SystemExit(f"{n_train} training stories make no batch of {args.n_batch}: lower --n_batch")

    cfg = GPTConfig(n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer, embd_pdrop=args.embd_pdrop,
                    attn_pdrop=args.attn_pdrop, resid_pdrop=args.resid_pdrop, afn=args.afn,
                    clf_pdrop=args.clf_pdrop, backend=args.backend)
    model = DoubleHeadModel(cfg, clf_token, "multiple_choice", vocab, n_ctx)
    if not args.from_scratch:
        from .weights import CheckpointError, load_openai_pretrained_model

        try:
            load_openai_pretrained_model(model.transformer, n_ctx=n_ctx, n_special=n_special,
                                         n_transfer=args.n_transfer, n_embd=args.n_embd, path=args.model_dir)
        except (CheckpointError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}\n{missing_checkpoint_message(args.model_dir)}") from None
    model.to(device)
    opt = OpenAIAdam(model.parameters(), lr=args.lr, schedule=args.lr_schedule, warmup=args.lr_warmup,
                     t_total=n_updates_total, b1=args.b1, b2=args.b2, e=args.e, l2=args.l2,
                     vector_l2=args.vector_l2, max_grad_norm=args.max_grad_norm)

    train_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if use_compile:
        train_model = torch.compile(train_model)
    torch.manual_seed(args.seed + dist.rank)  # same init everywhere (DDP broadcasts), own dropout masks

    def autocast():
        if use_bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    run_dir = Path(args.save_dir) / args.desc
    best_path = run_dir / "best_params.pt"
    log_path = Path(args.log_dir) / f"{args.desc}.jsonl"
    logger = None
    if main_rank:
        logger = JsonlLogger(log_path, **vars(args))
        if args.submit:
            meta = dict(cfg=cfg.to_dict(), n_ctx=n_ctx, n_vocab=n_vocab, n_special=n_special, vocab=vocab,
                        specials=list(rocdata.SPECIALS), encoder_path=str(encoder_path), bpe_path=str(bpe_path))
            atomic_write(run_dir / "config.json", lambda f: json.dump(meta, f, indent=2))

    @torch.no_grad()
    def iter_apply(X, M, desc):
        """Classifier logits of every story (no LM head: evaluation needs only the choice logits)."""
        model.eval()
        out = []
        from tqdm import tqdm

        for i in tqdm(range(0, len(X), n_batch_eval), ncols=80, leave=False, desc=desc, disable=not tty):
            x = X[i:i + n_batch_eval]
            with autocast():
                h = model.transformer(x)
                out.append(model.task_head(h, x).float())
        model.train()
        return torch.cat(out)

    def clf_metrics(logits, y):
        cost = ops.cross_entropy(logits, y).sum().item() / len(y)
        acc = (logits.argmax(1) == y).float().mean().item() * 100.0
        return cost, acc

    best_score = 0.0
    history = []

    def save_best():
        sd = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
        atomic_write(best_path, lambda f: torch.save(sd, f), mode="wb")

    def evaluate(n_epochs, n_updates):
        nonlocal best_score
        if main_rank:
            tr_cost, tr_acc = clf_metrics(iter_apply(trX[:n_valid], trM[:n_valid], "eval train"), trY_t[:n_valid])
            va_cost, va_acc = clf_metrics(iter_apply(vaX, vaM, "eval valid"), vaY_t)
            rec = dict(n_epochs=n_epochs, n_updates=n_updates, tr_cost=tr_cost, va_cost=va_cost,
                       tr_acc=tr_acc, va_acc=va_acc)
            logger.log(**rec)
            history.append(rec)
            print("%d %d %.3f %.3f %.2f %.2f" % (n_epochs, n_updates, tr_cost, va_cost, tr_acc, va_acc), flush=True)
            if args.submit and va_acc > best_score:
                best_score = va_acc
                save_best()
        dist.barrier()

    if main_rank and args.submit:
        save_best()  # as the release: the initial parameters count as "best" until beaten

    from tqdm import tqdm

    rng = np.random.RandomState(args.seed)
    n_updates = 0
    n_batches = n_train // args.n_batch
    model.train()
    t0 = time.time()
    for epoch in range(args.n_iter):
        perm = torch.from_numpy(rng.permutation(n_train)).to(device)
        bar = tqdm(range(n_batches), ncols=80, leave=False, desc=f"epoch {epoch + 1}/{args.n_iter}", disable=not tty)
        for b in bar:
            idx = perm[b * args.n_batch:(b + 1) * args.n_batch][dist.rank * n_batch_rank:(dist.rank + 1) * n_batch_rank]
            xmb, mmb, ymb = trX[idx], trM[idx], trY_t[idx]
            with autocast():
                lm_logits, clf_logits = train_model(xmb)
            lm_losses, clf_losses = lm_and_clf_losses(lm_logits, clf_logits, xmb, mmb, ymb)
            loss = clf_losses.mean() + args.lm_coef * lm_losses.mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            n_updates += 1
            if tty and n_updates % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if epoch == 0 and n_updates in EVAL_UPDATES_FIRST_EPOCH:
                evaluate(epoch, n_updates)
        evaluate(epoch + 1, n_updates)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t0
    if main_rank:
        print(f"{n_updates} updates of {args.n_batch} stories in {train_s:.1f}s, evaluations included "
              f"({n_updates * args.n_batch / train_s:.1f} stories/s)", flush=True)

    result = dict(n_ctx=n_ctx, n_updates=n_updates, train_seconds=train_s, history=history)
    if main_rank and args.submit:
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=True))
        preds = iter_apply(teX, teM, "predict test").argmax(1).cpu().numpy()
        sub_path = Path(args.submission_dir) / SUBMISSION_FILE

        def write_sub(f):
            f.write("index\tprediction\n")
            for i, p in enumerate(preds):
                f.write(f"{i}\t{int(p)}\n")

        atomic_write(sub_path, write_sub)
        result.update(submission=str(sub_path), best_params=str(best_path))
        if args.analysis:
            result["valid_acc"], result["test_acc"] = rocstories_analysis(args.data_dir, sub_path, log_path)
    dist.barrier()
    return result


def cli(argv=None):
    """Command-line entry: bad input (a missing or malformed file) is one clear line, no traceback."""
    from .weights import CheckpointError

    try:
        main(argv)
    except (FileNotFoundError, rocdata.DataError, CheckpointError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    cli()
