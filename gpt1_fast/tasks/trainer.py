"""The one fine-tuning loop of every task: random batches, one update each, evaluation after each
epoch (and at updates 1000, 2000, 4000, ... of the first), the best validation score tracked.

The Trainer writes no file: what happens to the best model (`on_best`), after each update
(`after_update`: checkpoints) and to each evaluation (`logger`) is the caller's. It follows the
protocol of the pretraining trainer (gpt1_fast.pretraining.LMTrainer): `fit()`, `train_step()`,
`evaluate()`, `state_dict()` / `load_state_dict()` for the loop state (epoch, batch inside the epoch,
updates, the data-order RNG, best score, history), with `.model`, `.opt` and `.n_updates`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..context import RunContext
from ..inference import task_logits
from ..opt import scheduled_lr
from ..progress import Progress
from .common import METRIC_KEYS, Encoded, compute_metrics, make_batch

EVAL_UPDATES_FIRST_EPOCH = tuple(1000 * 2 ** k for k in range(16))  # 1000, 2000, 4000, ...


@dataclass
class TrainConfig:
    n_iter: int = 3                 # epochs
    n_batch: int = 64               # examples per update, over all processes
    n_batch_eval: int | None = None  # examples per evaluation batch (default 2 x per-process batch)
    n_valid: int = 374              # first training examples scored at each evaluation ("tr_")
    seed: int = 42                  # data order
    padding: str = "batch"          # each batch to its longest sequence ("batch", "pow2"), or to n_ctx ("global")
    log_every: int = 10             # the training loss (mean of the updates since) into the log every N updates
    cuda_graphs: bool = False       # capture the device step in a CUDA graph per batch shape (gpt1_fast.graphs)
    verbose: bool = False           # progress: a bar on a terminal, else a line every 30 s

    @classmethod
    def from_args(cls, args, verbose: bool = False) -> "TrainConfig":
        return cls(n_iter=args.n_iter, n_batch=args.n_batch, n_batch_eval=args.n_batch_eval, n_valid=args.n_valid,
                   seed=args.seed, padding=args.padding, log_every=getattr(args, "log_every", 10),
                   cuda_graphs=getattr(args, "cuda_graphs", False), verbose=verbose)


def updates_per_epoch(n_train: int, n_batch: int) -> int:
    """Full batches in an epoch (the last partial batch is dropped, as the release)."""
    return n_train // n_batch


class Trainer:
    """Fine-tunes `model` (a DoubleHeadModel whose forward(x, mask, labels) gives the loss) on a task.

    ctx: the RunContext (device, autocast, the compiled / DDP step model, this process among
    `world`: each takes its slice of every batch; rank 0 evaluates); default: one process, fp32, eager.
    on_best(trainer): called when an evaluation improves the validation score (the caller keeps the model).
    """

    def __init__(self, task, data, model, optimizer, config: TrainConfig, ctx: RunContext | None = None,
                 logger=None, on_best: Callable[["Trainer"], None] | None = None):
        self.task, self.data, self.layout = task, data.splits, data.layout
        self.groups = getattr(data, "groups", {})  # named subsets of a split's examples (RACE's levels)
        self.model, self.opt, self.config, self.logger, self.on_best = model, optimizer, config, logger, on_best
        self.ctx = ctx or RunContext.local(next(model.parameters()).device)
        self.step_model = self.ctx.wrap(model, dynamic=config.padding == "batch")
        self._step = self._device_step
        if config.cuda_graphs:
            from ..graphs import CapturedStep

            self._step = CapturedStep(self._device_step, optimizer)
        world = self.ctx.dist.world
        if config.n_batch % world:
            raise ValueError(f"n_batch {config.n_batch} must be divisible by the number of processes {world}")
        self.n_batch_rank = config.n_batch // world
        self.n_batch_eval = config.n_batch_eval or 2 * self.n_batch_rank
        self.n_train = len(self.data["train"])
        self.n_batches = updates_per_epoch(self.n_train, config.n_batch)
        # loop state (state_dict)
        self.epoch, self.batch, self.n_updates = 0, 0, 0
        self.rng = np.random.RandomState(config.seed)
        self.perm = None  # this epoch's order, drawn at its first batch
        self.best_score = -math.inf
        self.history: list[dict] = []
        self.tokens = {"real": 0, "padded": 0}
        self.loss_window = [torch.zeros((), device=self.device), 0]  # training loss since the last log line
        self.after_update: list[Callable[["Trainer"], None]] = []  # e.g. checkpoints: the loop state is complete

    @property
    def main(self) -> bool:
        return self.ctx.main

    @property
    def device(self):
        return self.ctx.device

    def _bar(self, n, desc):
        import sys

        from tqdm import tqdm

        on = self.config.verbose and self.main and sys.stderr.isatty()
        return tqdm(range(n), ncols=80, leave=False, desc=desc, disable=not on)

    # ---------------------------------------------------------------------------------- training
    def train_step(self, idx) -> torch.Tensor:
        """One update on training examples `idx` (this process's share of the batch) -> the loss."""
        X, M, Y = make_batch(self.data["train"], idx, self.layout, self.device, self.config.padding)
        loss = self._step(X, M, Y)
        self.n_updates += 1
        self.tokens["real"] += int(self.data["train"].lengths[idx].sum())  # host-side: no device sync
        self.tokens["padded"] += M.numel()
        self.loss_window[0] += loss
        self.loss_window[1] += 1
        return loss

    def _device_step(self, X, M, Y) -> torch.Tensor:
        """Forward, backward, optimizer step on a batch: all on the device, no host sync (what a CUDA
        graph captures with --cuda_graphs)."""
        with self.ctx.autocast():
            out = self.step_model(X, M, Y)
        out["loss"].backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return out["loss"].detach()

    def fit(self) -> list[dict]:
        """Train for the remaining epochs (from the loop state: a restored Trainer continues)."""
        self.model.train()
        nb, rank = self.n_batch_rank, self.ctx.dist.rank
        progress = Progress(self.n_batches * self.config.n_iter, self.n_updates, "train",
                            enabled=self.config.verbose and self.main)
        while self.epoch < self.config.n_iter:
            if self.perm is None:
                self.perm = self.rng.permutation(self.n_train)
            while self.batch < self.n_batches:
                rows = self.perm[self.batch * self.config.n_batch:(self.batch + 1) * self.config.n_batch]
                idx = rows[rank * nb:(rank + 1) * nb]
                loss = self.train_step(idx)
                self.batch += 1
                progress.update(self.n_updates, int(self.data["train"].lengths[idx].sum()), loss)
                if self.n_updates % self.config.log_every == 0:
                    self.log_training_loss()
                if self.epoch == 0 and self.n_updates in EVAL_UPDATES_FIRST_EPOCH:
                    self.evaluate(self.epoch)
                for hook in self.after_update:
                    hook(self)
            self.epoch, self.batch, self.perm = self.epoch + 1, 0, None
            self.evaluate(self.epoch)
        progress.close()
        return self.history

    def log_training_loss(self) -> None:
        """The mean training objective of the updates since the last line, and the learning rate, into
        the log (this process's share of the batch; reading it is one sync every log_every updates)."""
        total, n = self.loss_window
        if self.main and self.logger is not None and n:
            self.logger.log(n_updates=self.n_updates, loss=total.item() / n,
                            lr=scheduled_lr(self.opt.param_groups[0], self.n_updates - 1))
        self.loss_window = [torch.zeros((), device=self.device), 0]

    # -------------------------------------------------------------------------------- evaluation
    def logits(self, split: str, n: int | None = None) -> torch.Tensor:
        """Task-head outputs (float32, on the CPU) for the first n examples of a split, in order."""
        enc = self.data[split]
        if n is not None and n < len(enc):
            enc = Encoded(enc.tokens[:n], enc.lengths[:n], None if enc.labels is None else enc.labels[:n], enc.ids[:n])
        return task_logits(self.model, enc, self.layout, batch_size=self.n_batch_eval, padding=self.config.padding,
                           settings=self.ctx.inference, progress=lambda r: self._bar(len(r), f"eval {split}"))

    def predict(self, split: str) -> np.ndarray:
        """The task's predictions (class ids, or scores) for every example of a split."""
        return self.task.predict(self.logits(split).numpy())

    def score(self, split: str, n: int | None = None) -> tuple[float, dict[str, float]]:
        """(mean task loss, metrics in percent) of the first n examples of a labelled split; a split with
        groups (RACE's levels) also has each group's metrics, under "<metric>_<group>"."""
        logits = self.logits(split, n)
        y = self.data[split].labels[:len(logits)]
        cost = self.model.task_loss(logits, torch.from_numpy(y)).sum().item() / len(y)
        preds = self.task.predict(logits.numpy())
        metrics = compute_metrics(self.task.metrics, y, preds)
        if n is None and split in self.groups:
            for group, by_metric in self.task.group_metrics(y, preds, self.groups[split]).items():
                metrics.update({f"{m}_{group}": v for m, v in by_metric.items()})
        return cost, metrics

    def eval_prefixes(self) -> dict[str, str]:
        """Log-key prefix of each scored split: tr (first n_valid training examples), va (the one
        validation split) or the split's own name when the task has several."""
        evals = self.task.eval_splits
        return {"train": "tr", **{s: ("va" if len(evals) == 1 else s) for s in evals}}

    def evaluate(self, n_epochs: int) -> dict | None:
        """Score, log one line, print it, and call on_best if the validation score improved. A task
        without a validation split has nothing to select on: nothing is scored."""
        rec = None
        if self.main and self.task.eval_splits:
            scores = {s: self.score(s, self.config.n_valid if s == "train" else None) for s in self.eval_prefixes()}
            rec = dict(n_epochs=n_epochs, n_updates=self.n_updates)
            rec.update({f"{p}_cost": scores[s][0] for s, p in self.eval_prefixes().items()})
            for s, p in self.eval_prefixes().items():
                rec.update({f"{p}_{metric_key(m)}": v for m, v in scores[s][1].items()})
            if self.logger is not None:
                self.logger.log(**rec)
            self.history.append(rec)
            print(format_record(rec), flush=True)
            self.consider(rec[self.selection_key])
        self.ctx.barrier()
        return rec

    @property
    def selection_key(self) -> str:
        """Log key of the model-selection score: the task's first metric on its first validation split."""
        return f"{self.eval_prefixes()[self.task.eval_splits[0]]}_{METRIC_KEYS[self.task.metrics[0]]}"

    def consider(self, score: float) -> None:
        """Keep the model (on_best) when `score` beats the best so far (a nan score never does)."""
        if score > self.best_score:
            self.best_score = score
            if self.on_best is not None:
                self.on_best(self)

    def best_record(self) -> dict:
        """The evaluation with the best validation score (nan counts as the worst)."""
        return max(self.history, key=lambda r: _finite(r[self.selection_key]))

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The loop's state (not the model's or the optimizer's), JSON-serialisable."""
        kind, keys, pos, has_gauss, gauss = self.rng.get_state()
        return {"epoch": self.epoch, "batch": self.batch, "n_updates": self.n_updates,
                "rng": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
                "perm": None if self.perm is None else self.perm.tolist(),
                "best_score": self.best_score, "history": list(self.history), "tokens": dict(self.tokens),
                "loss_window": [self.loss_window[0].item(), self.loss_window[1]]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch, self.n_updates = state["epoch"], state["batch"], state["n_updates"]
        kind, keys, pos, has_gauss, gauss = state["rng"]
        self.rng.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        self.perm = None if state["perm"] is None else np.asarray(state["perm"], dtype=np.int64)
        self.best_score, self.history = state["best_score"], list(state["history"])
        self.tokens = dict(state.get("tokens", {"real": 0, "padded": 0}))
        total, n = state.get("loss_window", [0.0, 0])
        self.loss_window = [torch.tensor(total, device=self.device), n]


def metric_key(name: str) -> str:
    """A metric's log key: acc, f1, ...; a group's metric keeps the group: acc_RACE-m."""
    base, _, group = name.partition("_")
    return METRIC_KEYS[base] + (f"_{group}" if group else "")


def format_record(rec: dict) -> str:
    """An evaluation as one `key=value` line, the log's keys: n_epochs=1 n_updates=93 tr_cost=0.692 ..."""
    return " ".join(f"{k}={v:.3f}" if k.endswith("_cost") else f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in rec.items())


def _finite(x: float) -> float:
    return -math.inf if math.isnan(x) else x
