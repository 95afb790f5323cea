"""Zero-shot behaviours of the pretrained language model alone (Radford et al. 2018, section 5, Figure 2 right).

    python -m gpt1_fast.zeroshot --model_dir model/ --dataset sst-2 --data_dir glue_data/SST-2
    python -m gpt1_fast.zeroshot --checkpoints runs/books --dataset race --data_dir RACE --out zs.jsonl
    python -m gpt1_fast.zeroshot --checkpoints runs/books --dataset cola --data_dir glue_data/CoLA \\
        --out zs.jsonl --plot figure2.png --best sst-2=93.2 --best cola=35.0 --best race=59.0 --best dprd=76.0

The paper's heuristics, each scored by the language model's log-probabilities over the text tokens:
- sst-2: the sentence with " very" appended; positive when the model gives the word "positive" a
  higher probability next than "negative" (accuracy);
- cola: the sentence's average token log-probability (each token after the first, given the ones
  before it), acceptable above a threshold chosen on the training split for the best MCC (MCC);
- race: the answer with the highest average token log-probability after the article and question,
  the article cut from its start to fit (the same window for the 4 answers; accuracy);
- dprd (Rahman & Ng 2012, train.c.txt / test.c.txt): each candidate put in place of the pronoun; the
  one after which the rest of the sentence has the higher average token log-probability (accuracy).
Shared contexts are run once: the 2 words of SST-2 and the 4 answers of RACE continue one cached
prefix (key/value cache). --checkpoints evaluates every checkpoints/step_*.pt of a pretraining run
(`gpt1_fast.pretrain --out` folder; keep them with its --keep) and writes one JSON line per update.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


DATASETS = ("sst-2", "cola", "race", "dprd")
DEFAULT_SPLIT = {"sst-2": "dev", "cola": "dev", "race": "dev", "dprd": "test"}
METRIC = {"sst-2": "accuracy", "cola": "mcc", "race": "accuracy", "dprd": "accuracy"}
CHANCE = {"sst-2": 50.0, "cola": 0.0, "race": 25.0, "dprd": 50.0}  # a random guess, in the metric's percent


# ------------------------------------------------------------------------------------------- models
def load_lm(path, device="cpu", backend="auto"):
    """-> (LMModel in eval mode, text encoder, n_vocab): any model gpt1_fast.folder reads (the release's
    model/, a transformers openai-gpt folder, a model folder, a pretraining run, a checkpoint file),
    without its task head. The one place zero-shot evaluation loads a model."""
    from .folder import load_pretrained
    from .text import TextEncoder

    lm, info = load_pretrained(path, head=False, backend=backend, device=device)
    return lm, TextEncoder(*info.require_vocab()), info.layout.n_vocab


def checkpoint_step(path) -> int:
    """The update a pretraining checkpoint (checkpoints/step_<N>.pt) was written at."""
    from .resume import CheckpointDir

    return int(CheckpointDir(Path(path).parent).load(path)["step"])


# ------------------------------------------------------------------------------------------ scoring
@torch.no_grad()
def continuation_logprobs(lm, prefixes, continuations, n_vocab: int, batch_size: int = 16):
    """Per example i and continuation k: the log-probability of each token of continuations[i][k]
    given prefixes[i] and the tokens before it, under the text-token distribution (softmax over the
    first n_vocab rows of the tied table) -> list (examples) of lists of float64 arrays.

    Each prefix runs once (examples of similar length batched, left-padded); its key/value cache is
    repeated for its continuations, which run together (right-padded). A prefix longer than fits
    beside its longest continuation in n_ctx keeps its last tokens."""
    out = [None] * len(prefixes)
    order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i]))
    for b in range(0, len(order), batch_size):
        rows = order[b:b + batch_size]
        for i, lp in zip(rows, _score_batch(lm.transformer, n_vocab, [prefixes[i] for i in rows],
                                            [continuations[i] for i in rows])):
            out[i] = lp
    return out


def _score_batch(tr, n_vocab, prefixes, conts):
    n_ctx, we = tr.n_ctx, tr.embed.weight[:n_vocab]
    dev = we.device
    conts = [[list(c[:n_ctx - 1]) for c in cs] for cs in conts]
    fed = max((len(c) - 1 for cs in conts for c in cs), default=0)  # continuation tokens fed (not the last)
    prefixes = [list(p[max(0, len(p) - (n_ctx - fed)):]) for p in prefixes]
    if not all(prefixes):
        raise ValueError("every example needs a non-empty context to condition on")
    P = max(map(len, prefixes))
    ids = torch.zeros(len(prefixes), P, dtype=torch.long, device=dev)
    real = torch.zeros(len(prefixes), P, dtype=torch.bool, device=dev)
    for j, p in enumerate(prefixes):
        ids[j, P - len(p):] = torch.tensor(p, device=dev)
        real[j, P - len(p):] = True
    h, cache = tr(input_ids=ids, attention_mask=real, kv_cache=tr.new_kv_cache(len(prefixes), capacity=P + fed))
    first = torch.log_softmax((h[:, -1] @ we.T).double(), -1)  # the first continuation token's distribution
    rows = [j for j, cs in enumerate(conts) for _ in cs]
    flat = [c for cs in conts for c in cs]
    lps = [first[r, c[:1]].cpu().numpy() for r, c in zip(rows, flat)]
    if fed:
        cache = _repeat_cache(tr, cache, torch.tensor(rows, device=dev), P + fed)
        nxt = torch.zeros(len(flat), fed, dtype=torch.long, device=dev)
        mask = torch.zeros(len(flat), fed, dtype=torch.bool, device=dev)
        for j, c in enumerate(flat):
            nxt[j, :len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long, device=dev)
            mask[j, :len(c) - 1] = True
        h2, _ = tr(input_ids=nxt, attention_mask=mask, kv_cache=cache)
        logp = torch.log_softmax((h2 @ we.T).double(), -1)
        for j, c in enumerate(flat):
            if len(c) > 1:
                rest = logp[j, torch.arange(len(c) - 1, device=dev), torch.tensor(c[1:], device=dev)]
                lps[j] = np.concatenate([lps[j], rest.cpu().numpy()])
    it = iter(lps)
    return [[next(it) for _ in cs] for cs in conts]


def _repeat_cache(tr, cache, rows, capacity):
    """A cache whose row r is row rows[r] of `cache` (a prefix shared by several continuations)."""
    new = tr.new_kv_cache(len(rows), capacity=capacity)
    L = cache.length
    for i in range(len(new.k)):
        new.k[i][:, :, :L] = cache.k[i][rows, :, :L]
        new.v[i][:, :, :L] = cache.v[i][rows, :, :L]
    new.mask[:, :L] = cache.mask[rows, :L]
    new.length = L
    return new


def _mean(lp: np.ndarray, empty: float = -np.inf) -> float:
    return float(lp.mean()) if len(lp) else empty


# ------------------------------------------------------------------------------------- heuristics
def sst2(score, encode, texts, labels) -> float:
    """Accuracy: positive (label 1) when p("positive") > p("negative") after the sentence + " very"."""
    from .tasks.common import compute_metrics

    prefixes = encode([t.rstrip() + " very" for t in texts])
    words = encode(["negative", "positive"])  # SST-2's labels 0 and 1
    lp = score(prefixes, [words] * len(prefixes))
    preds = np.array([int(p[1].sum() > p[0].sum()) for p in lp])
    return compute_metrics(("accuracy",), labels, preds)["accuracy"]


def average_logprobs(score, encode, texts) -> np.ndarray:
    """Each text's average token log-probability (tokens after the first); 0 for a one-token text."""
    ids = encode(texts)
    keep = [i for i, t in enumerate(ids) if len(t) > 1]
    out = np.zeros(len(ids))
    lp = score([ids[i][:1] for i in keep], [[ids[i][1:]] for i in keep])
    out[keep] = [_mean(p[0]) for p in lp]
    return out


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold t (predict 1 where score > t) of the highest MCC on (scores, labels), midway
    between two neighbouring scores."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], np.asarray(labels)[order].astype(np.float64)
    n, pos = len(s), y.sum()
    tp = np.concatenate([[0.0], np.cumsum(y)])  # the top j predicted 1, j = 0..n
    j = np.arange(n + 1, dtype=np.float64)
    fp, fn = j - tp, pos - tp
    tn = n - pos - fp
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1), 0.0)
    cut = np.ones(n + 1, dtype=bool)
    cut[1:n] = s[:-1] > s[1:]  # only between distinct scores
    k = int(np.argmax(np.where(cut, mcc, -np.inf)))
    if k == 0:
        return float(s[0]) + 1.0
    return float(s[-1]) - 1.0 if k == n else float((s[k - 1] + s[k]) / 2)


def cola(score, encode, train, evaluated) -> float:
    """MCC on `evaluated` ((texts, labels)) at the threshold of the best MCC on `train`."""
    from .tasks.common import compute_metrics

    t = best_threshold(average_logprobs(score, encode, train[0]), train[1])
    preds = (average_logprobs(score, encode, evaluated[0]) > t).astype(np.int64)
    return compute_metrics(("mcc",), evaluated[1], preds)["mcc"]


def race(score, encode, fields, labels, n_ctx: int) -> float:
    """Accuracy: the answer of the highest average token log-probability after article + question."""
    from .tasks.common import compute_metrics
    from .tasks.multiple_choice import shared_window

    articles, questions = encode(fields["context"]), encode(fields["question"])
    flat = iter(encode([a for answers in fields["choices"] for a in answers]))
    prefixes, conts = [], []
    for a, q, answers in zip(articles, questions, fields["choices"]):
        ctx, q, ans = shared_window(a, q, [next(flat) for _ in answers], n_ctx)
        prefixes.append(ctx + q)
        conts.append(ans)
    lp = score(prefixes, conts)
    preds = np.array([int(np.argmax([_mean(p) for p in ps])) for ps in lp])
    return compute_metrics(("accuracy",), labels, preds)["accuracy"]


def dprd(score, encode, fields, labels) -> float:
    """Accuracy: the candidate after which the rest of the sentence has the higher average log-probability."""
    from .tasks.common import compute_metrics

    prefixes = encode([b + c for b, cands in zip(fields["before"], fields["candidates"]) for c in cands])
    rest = encode(fields["after"])
    lp = score(prefixes, [[rest[i // 2]] for i in range(len(prefixes))])
    means = np.array([_mean(p[0]) for p in lp]).reshape(-1, 2)
    return compute_metrics(("accuracy",), labels, means.argmax(1))["accuracy"]


# ---------------------------------------------------------------------------------------- datasets
def read_data(dataset: str, data_dir, split: str, limit: int | None = None) -> dict:
    """{"eval": the scored split, "train": CoLA's training split} by the task layer's readers; the
    first `limit` examples of each."""
    from .errors import UsageError
    from .tasks.readers import DPRD_FILES, read_dprd, read_split

    if dataset == "dprd":
        if split not in DPRD_FILES:
            raise UsageError(f"--split: dprd has the splits {', '.join(DPRD_FILES)}, not {split!r}")
        data = {"eval": read_dprd(Path(data_dir) / DPRD_FILES[split])}
    else:
        data = {"eval": read_split(dataset, data_dir, split)}
        if dataset == "cola":
            data["train"] = read_split("cola", data_dir, "train")
    for name, s in data.items():
        if s.labels is None:
            raise UsageError(f"--split {split}: {dataset}'s {split} file has no labels to score against (use dev)")
        if limit is not None:
            s.fields = {k: v[:limit] for k, v in s.fields.items()}
            s.labels, s.ids = s.labels[:limit], s.ids[:limit]
    return data


def memo_encoder(encoder):
    """encode(texts) through `encoder` with every text's ids kept (checkpoints re-score the same texts)."""
    seen: dict[str, list[int]] = {}

    def encode(texts):
        new = list(dict.fromkeys(t for t in texts if t not in seen))
        if new:
            seen.update(zip(new, encoder.encode(new)))
        return [seen[t] for t in texts]

    return encode


def evaluate(lm, encode, n_vocab: int, dataset: str, data: dict, batch_size: int = 16) -> float:
    """The dataset's zero-shot score (percent: accuracy, CoLA MCC) of the language model `lm`."""
    def score(prefixes, continuations):
        return continuation_logprobs(lm, prefixes, continuations, n_vocab, batch_size)

    ev = data["eval"]
    if dataset == "sst-2":
        return sst2(score, encode, ev.fields["text"], ev.labels)
    if dataset == "cola":
        tr = data["train"]
        return cola(score, encode, (tr.fields["text"], tr.labels), (ev.fields["text"], ev.labels))
    if dataset == "race":
        return race(score, encode, ev.fields, ev.labels, lm.transformer.n_ctx)
    return dprd(score, encode, ev.fields, ev.labels)


def write_records(path, records: list[dict]) -> list[dict]:
    """Merge records into the JSONL at `path` (a record replaces one of the same dataset, split and
    step), sorted; written atomically. -> every record of the file."""
    from .fileio import atomic_write_text

    path = Path(path)
    old = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    key = lambda r: (r["dataset"], r["split"], r.get("step", -1))  # noqa: E731
    merged = {key(r): r for r in old + records}
    out = [merged[k] for k in sorted(merged)]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in out))
    return out


# --------------------------------------------------------------------------------------------- CLI
def build_parser():
    from . import options

    return options.build_parser(options.ZEROSHOT, "python -m gpt1_fast.zeroshot", __doc__)


def _best(items) -> dict[str, float]:
    from .errors import UsageError

    best = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            best[name] = float(value)
        except ValueError:
            raise UsageError(f"--best: expected DATASET=SCORE, got {item!r}") from None
        if name not in DATASETS:
            raise UsageError(f"--best: expected a dataset of {', '.join(DATASETS)}, got {name!r}")
    return best


def _check(args):
    """-> (split, out, best, device) once every option is checked (UsageError otherwise)."""
    from .cli import check_device
    from .errors import UsageError

    if (args.model_dir is None) == (args.checkpoints is None):
        raise UsageError("argument --model_dir: pass one of --model_dir (a model) and --checkpoints (a pretraining "
                         "run's checkpoints)")
    from .deps import require

    require("text", "encoding the examples")
    require("metrics", "scoring them")
    if args.plot:
        require("plot", "--plot")
    best = _best(args.best)
    out = args.scores or (str(Path(args.checkpoints) / "zeroshot.jsonl") if args.checkpoints else None)
    if args.plot and not (out and args.dataset in best):
        raise UsageError("argument --plot: it needs --scores (or --checkpoints) and a --best for every dataset it draws")
    return args.split or DEFAULT_SPLIT[args.dataset], out, best, check_device(args.device)


def main(argv=None) -> list[dict]:
    from .errors import CheckpointError, DataError, MissingPackage, ResumeError, UsageError

    from . import options

    p = build_parser()
    args = options.parse(options.ZEROSHOT, p, argv)
    try:
        split, out, best, device = _check(args)
        data = read_data(args.dataset, args.data_dir, split, args.limit)
        records = _run(args, data, split, device, out)
        if args.plot:
            from .plot import plot_zero_shot

            plot_zero_shot(records, best, args.plot)
    except UsageError as e:
        p.error(str(e))
    except (DataError, CheckpointError, ResumeError, FileNotFoundError, ValueError, MissingPackage) as e:
        raise SystemExit(f"error: {e}") from None
    return records


def _run(args, data, split, device, out) -> list[dict]:
    """Score the model folder, or every checkpoint of the run; print a line for each, and merge it
    into the JSONL `out` at once (a stopped evaluation keeps what it scored). -> the records (all of
    `out`'s when given)."""
    from .resume import CheckpointDir

    base = {"dataset": args.dataset, "split": split, "metric": METRIC[args.dataset], "chance": CHANCE[args.dataset],
            "n": len(data["eval"].labels)}
    if args.model_dir:
        steps = [(None, args.model_dir)]
    else:
        steps = CheckpointDir(Path(args.checkpoints) / "checkpoints").list()
        if not steps:
            raise FileNotFoundError(f"{Path(args.checkpoints) / 'checkpoints'}: no step_<N>.pt checkpoints")
    records, encode = [], None
    for step, path in steps:
        lm, encoder, n_vocab = load_lm(path, device, args.backend)
        encode = encode or memo_encoder(encoder)
        rec = dict(base, **({} if step is None else {"step": step}))
        rec["score"] = evaluate(lm, encode, n_vocab, args.dataset, data, args.n_batch_eval or 16)
        records = write_records(out, [rec]) if out else records + [rec]
        where = "" if step is None else f" step {rec['step']}"
        print(f"{args.dataset} {split}{where} {rec['metric']}: {rec['score']:.2f} ({rec['n']} examples; "
              f"chance {rec['chance']:g})", flush=True)
    return records


if __name__ == "__main__":
    main()
