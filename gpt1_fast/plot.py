"""Draw a run's curves from its JSONL log (pretraining or fine-tuning) into a PNG a person can read.

    python -m gpt1_fast.plot runs/sst-2/log.jsonl                 # -> runs/sst-2/log.png
    python -m gpt1_fast.plot runs/books/log.jsonl --out books.png  # a pretraining log

The figure is titled with the run's name (its folder's) and what it did; every panel has one
quantity, in words and units, over updates, with its training and validation curves together:
- pretraining (gpt1_fast.pretrain): the loss in nats per token (training batches, `loss`, and the
  validation windows, `val_loss`), the learning rate, the throughput;
- fine-tuning (gpt1_fast.train): the training objective (task + lm_coef x LM loss, every --log_every
  updates), the task loss and each metric (`tr_`: the first --n_valid training examples, `va_` or a
  split's name: validation; RACE's levels, MNLI's matched/mismatched each a curve), the learning rate.
A half-written last line (a killed run) is skipped.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

# A metric's log key (gpt1_fast.tasks.trainer.metric_key) -> its axis label.
METRIC_AXES = {"acc": "accuracy (%)", "f1": "F1 (%)", "mcc": "Matthews correlation (× 100)",
               "pearson": "Pearson correlation (× 100)", "spearman": "Spearman correlation (× 100)"}
SCORE_KEY = re.compile(r"^(?P<split>.+?)_(?P<metric>" + "|".join(METRIC_AXES) + r")(?:_(?P<group>.+))?$")
SMOOTH_ABOVE = 60  # more points than this: a faint raw curve and its moving average


@dataclass
class Panel:
    """One quantity: its title, y-axis label and curves {label: (xs, ys)}; `smooth`: a noisy quantity
    (many points: a faint raw curve and its moving average); `best`: the label of the curve whose
    maximum marks the model kept (fine-tuning's selection score)."""
    title: str
    ylabel: str
    curves: dict = field(default_factory=dict)
    smooth: bool = False
    best: str | None = None


# --------------------------------------------------------------------------------------- reading
def read_log(path) -> list[dict]:
    """The log's records (objects), skipping lines that do not parse (a killed writer's last line)."""
    from .logs import read_records

    return read_records(path)


def log_kind(records, path="log") -> str:
    if any("val_loss" in r or "step" in r and "loss" in r for r in records):
        return "pretrain"
    if any(k.endswith("_cost") for r in records for k in r) or any("n_updates" in r and "loss" in r for r in records):
        return "finetune"
    raise ValueError(f"{path}: no loss records (expected pretraining 'loss'/'val_loss' lines or fine-tuning "
                     "'loss'/'tr_cost'/'va_cost' lines)")


def series(records, x: str, y: str):
    pts = [(r[x], r[y]) for r in records if x in r and y in r and isinstance(r[y], (int, float))
           and math.isfinite(r[y])]
    return [p[0] for p in pts], [p[1] for p in pts]


def header(records) -> dict:
    """The run's options: the log's first line (pretraining keeps them under "args")."""
    if not records:
        return {}
    first = records[0]
    return first.get("args", first) if ("args" in first or "desc" in first) else {}


def run_name(path, records) -> str:
    """The run folder's name (runs/<desc>/log.jsonl, <out>/log.jsonl), or the log's own (log/<desc>.jsonl)."""
    path = Path(path).resolve()
    desc = header(records).get("desc")
    return desc or (path.parent.name if path.stem == "log" else path.stem)


# --------------------------------------------------------------------------------------- panels
def pretrain_panels(records) -> list[Panel]:
    loss = Panel("loss", "loss (nats per token)", smooth=True)
    for key, label in (("loss", "training batches"), ("val_loss", "validation windows")):
        xs, ys = series(records, "step", key)
        if xs:
            loss.curves[label] = (xs, ys)
    panels = [loss, Panel("learning rate", "learning rate", {"": series(records, "step", "lr")})]
    xs, ys = series(records, "step", "tokens_per_s")
    if xs:
        panels.append(Panel("throughput", "tokens per second", {"": (xs, ys)}, smooth=True))
    return panels


def split_label(split: str, n_valid) -> str:
    if split == "tr":
        return "training examples" + (f" (first {n_valid})" if n_valid else "")
    return "validation" if split == "va" else split


def finetune_panels(records) -> list[Panel]:
    """The objective, the task loss, one panel per metric (every split and group a curve), the lr."""
    n_valid = header(records).get("n_valid")
    lm_coef = header(records).get("lm_coef")
    objective = Panel("training objective", "loss (nats)", smooth=True)
    xs, ys = series(records, "n_updates", "loss")
    if xs:
        what = f"task + {lm_coef:g} × LM loss" if isinstance(lm_coef, (int, float)) and lm_coef else "task loss"
        objective.curves[f"training batches ({what})"] = (xs, ys)
    task = Panel("task loss", "loss (nats per example)")
    metrics: dict[str, Panel] = {}
    keys = list(dict.fromkeys(k for r in records if "n_epochs" in r for k in r))
    for k in keys:
        xs, ys = series(records, "n_updates", k)
        if not xs:
            continue
        if k.endswith("_cost"):
            task.curves[split_label(k[:-len("_cost")], n_valid)] = (xs, ys)
        elif (m := SCORE_KEY.match(k)) is not None:
            label = split_label(m["split"], n_valid) + (f", {m['group']}" if m["group"] else "")
            axis = METRIC_AXES[m["metric"]]
            panel = metrics.setdefault(axis, Panel(axis.split(" (")[0], axis))
            panel.curves[label] = (xs, ys)
            if m["split"] != "tr" and not m["group"] and not any(p.best for p in metrics.values()):
                panel.best = label  # the first metric of the first validation split selects the model
    lr = Panel("learning rate", "learning rate", {"": series(records, "n_updates", "lr")})
    return [p for p in (objective, task, *metrics.values(), lr) if any(c[0] for c in p.curves.values())]


def subtitle(kind: str, records) -> str:
    h = header(records)
    shape = (f"{h['n_layer']} layer{'s' * (h['n_layer'] != 1)}, width {h['n_embd']}, {h['n_head']} heads"
             if all(isinstance(h.get(k), int) for k in ("n_layer", "n_embd", "n_head")) else "")
    if kind == "pretrain":
        batch = f"{h['n_batch']} × {h['n_ctx']} tokens per update" if h.get("n_batch") and h.get("n_ctx") else ""
        return ", ".join(x for x in ("pretraining", shape, batch) if x)
    what = f"fine-tuning on {h['dataset']}" if h.get("dataset") else "fine-tuning"
    return ", ".join(x for x in (what, shape, f"batch {h['n_batch']}" if h.get("n_batch") else "") if x)


# -------------------------------------------------------------------------------------- drawing
def _moving_average(ys, width: int):
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y - (ys[i - width] if i >= width else 0.0)
        out.append(total / min(i + 1, width))
    return out


def draw_panel(ax, panel: Panel) -> None:
    from matplotlib.ticker import MaxNLocator

    best = None
    for i, (label, (xs, ys)) in enumerate(panel.curves.items()):
        if not xs:
            continue
        color = f"C{i}"
        if panel.smooth and len(xs) > SMOOTH_ABOVE:
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(xs, _moving_average(ys, max(2, len(xs) // 50)), color=color, label=label and f"{label}, smoothed")
        else:
            ax.plot(xs, ys, color=color, marker="o" if len(xs) <= SMOOTH_ABOVE else None, markersize=3,
                    label=label or None)
        if label == panel.best:
            j = max(range(len(ys)), key=lambda k: (ys[k], -k))  # the first best: the model kept
            best = xs[j], ys[j], color
    if best is not None:  # drawn last: on top, and last in the legend
        ax.plot(best[0], best[1], linestyle="none", marker="*", markersize=13, color=best[2], markeredgecolor="black",
                label=f"best, kept in model/ (update {best[0]})")
    ax.set(title=panel.title, xlabel="updates", ylabel=panel.ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(left=0)  # the whole run, from its start
    ax.grid(alpha=0.3)
    if panel.ylabel == "learning rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if any(panel.curves):
        ax.legend(fontsize="small")


def figure(path):
    """The log's figure (matplotlib, not saved): one panel per quantity, titled with the run's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(path)
    kind = log_kind(records, path)
    panels = pretrain_panels(records) if kind == "pretrain" else finetune_panels(records)
    cols = 2 if len(panels) == 4 else min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows + 0.6), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        draw_panel(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.remove()
    fig.suptitle(f"{run_name(path, records)}\n{subtitle(kind, records)}", fontsize="large")
    fig.tight_layout()
    return fig


def plot_log(path, out=None) -> Path:
    """Write the PNG (default: the log's path with .png) and return its path."""
    import matplotlib.pyplot as plt

    from .fileio import atomic_write

    fig = figure(path)
    out = Path(out) if out else Path(path).with_suffix(".png")
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------- command line
PROG = "python -m gpt1_fast.plot"


def build_parser():
    from . import options

    p = options.build_parser(options.PLOT, PROG, __doc__)
    p.add_argument("log", help="a run's JSONL log: runs/<desc>/log.jsonl (fine-tuning), <out>/log.jsonl (pretraining)")
    return p


def main(argv=None) -> Path:
    from . import options
    from .deps import require

    args = options.parse(options.PLOT, build_parser(), argv)
    require("plot", "plotting")
    out = plot_log(args.log, args.out)
    print(out)
    return out


def cli(argv=None) -> None:
    """Command-line entry: one `error:` line, no traceback (2: a flag, 1: a file or a missing package)."""
    from .cli import run_cli

    run_cli(main, argv, PROG, file_errors=(ValueError,))


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
    ax.set(xlabel="pretraining updates", ylabel="zero-shot score, normalised\n(0: chance, 1: the best score given)",
           title="zero-shot performance over pretraining")
    ax.grid(alpha=0.3)
    if curves_:
        ax.legend()
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=100), mode="wb")
    plt.close(fig)
    return Path(out)


if __name__ == "__main__":
    cli()
