"""Draw a run's loss curves from its JSONL log (pretraining or fine-tuning) into a PNG.

    python -m gpt1_fast.plot runs/books/log.jsonl                 # -> runs/books/log.png
    python -m gpt1_fast.plot log/rocstories.jsonl --out roc.png   # a gpt1_fast.train log

Pretraining logs (gpt1_fast.pretrain) have `loss`/`lr` lines and `val_loss` lines per `step`;
fine-tuning logs (gpt1_fast.train) have `<split>_cost` and metric keys (`tr_acc`, `va_acc`, `va_f1`, ...)
per `n_updates`. The left panel shows the losses, the right one the learning rate or the scores.
A half-written last line (a killed run) is skipped.
"""
from __future__ import annotations

import argparse
from pathlib import Path

METRIC_SUFFIXES = ("_acc", "_f1", "_mcc", "_pearson", "_spearman")  # gpt1_fast.tasks' log keys


def curves(records, kind: str):
    """(x key, loss keys, right-panel keys, right-panel title) of a log. Fine-tuning logs name each
    scored split by a prefix (tr, va, or the split's name for tasks with several): every `*_cost`
    is a loss, every metric key goes to the right panel."""
    if kind == "pretrain":
        return "step", ["loss", "val_loss"], ["lr"], "learning rate"
    keys = sorted({k for r in records for k in r})
    return ("n_updates", [k for k in keys if k.endswith("_cost")],
            [k for k in keys if k.endswith(METRIC_SUFFIXES)], "score (%)")


def read_log(path) -> list[dict]:
    """The log's records (objects), skipping lines that do not parse (a killed writer's last line)."""
    from .logs import read_records

    return read_records(path)


def log_kind(records, path="log") -> str:
    if any("loss" in r or "val_loss" in r for r in records):
        return "pretrain"
    if any("tr_cost" in r or "va_cost" in r for r in records):
        return "finetune"
    raise ValueError(f"{path}: no loss records (expected pretraining 'loss'/'val_loss' lines or fine-tuning "
                     "'tr_cost'/'va_cost' lines)")


def series(records, x: str, y: str):
    pts = [(r[x], r[y]) for r in records if x in r and y in r and r[y] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_log(path, out=None) -> Path:
    """Write the PNG (default: the log's name with .png) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_write

    path = Path(path)
    records = read_log(path)
    x, losses, right, right_title = curves(records, log_kind(records, path))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for y in losses:
        xs, ys = series(records, x, y)
        if xs:
            ax1.plot(xs, ys, label=y, marker="o" if len(xs) < 30 else None, markersize=3)
    ax1.set(xlabel=x, ylabel="loss (nats per token)" if x == "step" else "loss", title=path.name)
    if ax1.lines:
        ax1.legend()
    for y in right:
        xs, ys = series(records, x, y)
        if xs:
            ax2.plot(xs, ys, label=y, marker="o" if len(xs) < 30 else None, markersize=3)
    ax2.set(xlabel=x, title=right_title)
    if ax2.lines:
        ax2.legend()
    fig.tight_layout()
    out = Path(out) if out else path.with_suffix(".png")
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    plt.close(fig)
    return out


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(prog="python -m gpt1_fast.plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="a run's JSONL log (pretraining <out>/log.jsonl or fine-tuning log/<desc>.jsonl)")
    p.add_argument("--out", default=None, help="PNG to write (default: the log's path with .png)")
    args = p.parse_args(argv)
    try:
        out = plot_log(args.log, args.out)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    except ImportError as e:
        raise SystemExit(f"error: plotting needs matplotlib ({e}): pip install matplotlib") from None
    print(out)
    return out


# ------------------------------------------------------------------- zero-shot (Figure 2, right)
def zero_shot_curves(records, best: dict[str, float]) -> dict[str, tuple[list, list]]:
    """{"<dataset> <split>": (updates, normalised scores)} of gpt1_fast.zeroshot's JSON lines (those
    with a "step"): (score - chance) / (best - chance), 0 at a random guess, 1 at `best[dataset]`."""
    curves_ = {}
    for r in sorted((r for r in records if "step" in r), key=lambda r: r["step"]):
        if r["dataset"] not in best:
            raise ValueError(f"no best score for {r['dataset']} (--best {r['dataset']}=SCORE): its curve "
                             "is normalised between chance and it")
        b, c = best[r["dataset"]], r["chance"]
        if b == c:
            raise ValueError(f"the best score of {r['dataset']} equals its chance score {c:g}")
        xs, ys = curves_.setdefault(f"{r['dataset']} {r['split']}", ([], []))
        xs.append(r["step"])
        ys.append((r["score"] - c) / (b - c))
    return curves_


def plot_zero_shot(records, best: dict[str, float], out) -> Path:
    """Figure 2 (right) of the paper: each task's zero-shot score over pretraining updates, normalised
    between chance and `best` (the paper: the state of the art of a single model). -> the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_write

    curves_ = zero_shot_curves(records, best)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in sorted(curves_.items()):
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="pretraining updates", ylabel="normalised zero-shot score", title="zero-shot (chance = 0)")
    if curves_:
        ax.legend()
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    plt.close(fig)
    return Path(out)


if __name__ == "__main__":
    main()
