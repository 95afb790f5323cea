"""The one fine-tuning loop of every task (SPEC §6, §8): random batches, one update each, evaluation
after each epoch (and at updates 1000, 2000, 4000, ... of the first), the parameters of the best
validation score kept, predictions and submission files from them.

All loop state lives in the Trainer (epoch, batch inside the epoch, updates, the data-order RNG,
best score, history): `state_dict()` / `load_state_dict()` carry it. Every output path comes from
one `RunPaths`; every file is written with `fileio.atomic_write`.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_model, save_model
from ..fileio import atomic_write_text, remove_stale_temporaries
from .common import METRIC_KEYS, METRIC_TITLES, compute_metrics, make_batch

EVAL_UPDATES_FIRST_EPOCH = tuple(1000 * 2 ** k for k in range(16))  # 1000, 2000, 4000, ...


@dataclass
class TrainConfig:
    n_iter: int = 3                 # epochs
    n_batch: int = 64               # examples per update, over all processes
    n_batch_eval: int | None = None  # examples per evaluation batch (default 2 x per-process batch)
    n_valid: int = 374              # first training examples scored at each evaluation ("tr_")
    seed: int = 42                  # data order
    padding: str = "batch"          # each batch to its longest sequence ("batch", "pow2"), or to n_ctx ("global")
    submit: bool = False            # keep the best parameters, write predictions
    bf16: bool = False              # autocast
    verbose: bool = False           # progress bars


class RunPaths:
    """Every file a run writes, in one place: by default all in the run's own folder
    `<runs_dir>/<desc>/` (log.jsonl, config.json, best_params.pt, the submission files). The seed's
    --log_dir/--save_dir/--submission_dir move the log, the parameters or the submissions back to
    the seed's places (<log_dir>/<desc>.jsonl, <save_dir>/<desc>/, <submission_dir>/<Task>.tsv)."""

    def __init__(self, desc: str, log_dir=None, save_dir=None, submission_dir=None, runs_dir="runs/"):
        self.desc = desc
        self.run_dir = Path(runs_dir) / desc
        self.log = Path(log_dir) / f"{desc}.jsonl" if log_dir else self.run_dir / "log.jsonl"
        save = Path(save_dir) / desc if save_dir else self.run_dir
        self.config = save / "config.json"
        self.best_params = save / "best_params.pt"
        self.checkpoints = save / "checkpoints"  # --save_every / --resume (resume.CheckpointDir)
        self.submission_dir = Path(submission_dir) if submission_dir else self.run_dir

    def submission(self, file_name: str) -> Path:
        return self.submission_dir / file_name

    def outputs(self, task) -> list[Path]:
        """The files this run may write (for `task`): what an earlier run's results would be."""
        subs = [self.submission(task.submission_file(s)) for s in (*task.eval_splits, *task.test_splits)]
        return [self.log, self.config, self.best_params, *subs]

    def earlier_results(self, task) -> list[Path]:
        """Existing outputs, and the resume checkpoints (--save_every) of an earlier run in this folder."""
        return [p for p in self.outputs(task) if p.exists()] + sorted(self.checkpoints.glob("step_*.pt"))

    def claim(self, task, overwrite: bool) -> None:
        """Make the folders; remove what a killed run left half-written; with `overwrite`, delete the
        earlier run's files first, so the folders never mix two runs. Call after all validation."""
        for folder in {p.parent for p in self.outputs(task)}:
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder)
        if overwrite:
            for p in self.earlier_results(task):
                p.unlink()


class JsonlLogger:
    """First line the run's arguments, then one line per evaluation. The whole file is rewritten
    atomically on every line (it stays small), so a crash never leaves half a line."""

    def __init__(self, path, **header):
        self.path = Path(path)
        self.lines = [json.dumps(dict(header, time=time.time()))]
        self._flush()

    def log(self, **kw):
        self.lines.append(json.dumps(dict(kw, time=time.time())))
        self._flush()

    def _flush(self):
        atomic_write_text(self.path, "\n".join(self.lines) + "\n")


class Trainer:
    """Fine-tunes `model` (a DoubleHeadModel whose forward(x, mask, labels) gives the loss) on a task.

    train_model: what the training step calls (the model, or its DDP / torch.compile wrapper).
    rank, world, barrier: this process among `world` (each takes its slice of every batch; rank 0
    evaluates, logs and writes)."""

    def __init__(self, task, data, model, optimizer, config: TrainConfig, paths: RunPaths, logger=None,
                 train_model=None, rank: int = 0, world: int = 1, barrier=lambda: None):
        self.task, self.data, self.layout = task, data.splits, data.layout
        self.model, self.opt, self.config, self.paths, self.logger = model, optimizer, config, paths, logger
        self.train_model = train_model or model
        self.rank, self.world, self.barrier = rank, world, barrier
        self.device = next(model.parameters()).device
        if config.n_batch % world:
            raise ValueError(f"--n_batch {config.n_batch} must be divisible by the number of processes {world}")
        self.n_batch_rank = config.n_batch // world
        self.n_batch_eval = config.n_batch_eval or 2 * self.n_batch_rank
        self.n_train = len(self.data["train"])
        self.n_batches = self.n_train // config.n_batch  # the last partial batch is dropped
        # loop state (state_dict)
        self.epoch, self.batch, self.n_updates = 0, 0, 0
        self.rng = np.random.RandomState(config.seed)
        self.perm = None  # this epoch's order, drawn at its first batch
        self.best_score = -math.inf
        self.history: list[dict] = []
        self.tokens = {"real": 0, "padded": 0}
        self.checkpoint_config: dict = {}  # stored with the parameters in best_params.pt (train.py: model, layout, vocabulary)
        self.last_saved: tuple | None = None  # (n_updates, score) of the newest complete best_params.pt
        self.after_update = None  # called with the trainer after every update (and its evaluation)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.config.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _bar(self, n, desc):
        from tqdm import tqdm

        return tqdm(range(n), ncols=80, leave=False, desc=desc, disable=not (self.config.verbose and self.main))

    # ---------------------------------------------------------------------------------- training
    def train_step(self, idx) -> torch.Tensor:
        X, M, Y = make_batch(self.data["train"], idx, self.layout, self.device, self.config.padding)
        with self.autocast():
            out = self.train_model(X, M, Y)
        out["loss"].backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.n_updates += 1
        self.tokens["real"] += int(self.data["train"].lengths[idx].sum())  # host-side: no device sync
        self.tokens["padded"] += M.numel()
        return out["loss"]

    def fit(self):
        """Train for the remaining epochs (from the loop state: a restored Trainer continues)."""
        self.model.train()
        if self.main and self.config.submit and self.n_updates == 0:
            self.save_best()  # as the release: the initial parameters stand until an evaluation beats them
        nb = self.n_batch_rank
        while self.epoch < self.config.n_iter:
            if self.perm is None:
                self.perm = self.rng.permutation(self.n_train)
            bar = self._bar(self.n_batches - self.batch, f"epoch {self.epoch + 1}/{self.config.n_iter}")
            for _ in bar:
                rows = self.perm[self.batch * self.config.n_batch:(self.batch + 1) * self.config.n_batch]
                loss = self.train_step(rows[self.rank * nb:(self.rank + 1) * nb])
                self.batch += 1
                if self.config.verbose and self.n_updates % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
                if self.epoch == 0 and self.n_updates in EVAL_UPDATES_FIRST_EPOCH:
                    self.evaluate(self.epoch)
                if self.after_update is not None:
                    self.after_update(self)  # e.g. a checkpoint: the loop state is complete here
            self.epoch, self.batch, self.perm = self.epoch + 1, 0, None
            self.evaluate(self.epoch)
        return self.history

    # -------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def logits(self, split: str, n: int | None = None) -> torch.Tensor:
        """Task-head outputs (float32, on the CPU) for the first n examples of a split, in order.
        With per-batch padding, batches are formed from examples of similar length."""
        enc = self.data[split]
        n = len(enc) if n is None else min(n, len(enc))
        order = np.arange(n)
        if self.config.padding != "global":
            order = np.argsort(enc.lengths[:n].max(1), kind="stable")
        self.model.eval()
        out = []
        for b in self._bar(math.ceil(n / self.n_batch_eval), f"eval {split}"):
            X, _, _ = make_batch(enc, order[b * self.n_batch_eval:(b + 1) * self.n_batch_eval], self.layout,
                                 self.device, self.config.padding)
            with self.autocast():
                out.append(self.model.task_logits(X).float().cpu())
        self.model.train()
        logits = torch.cat(out) if out else torch.zeros(0)
        result = torch.empty_like(logits)
        result[torch.from_numpy(order)] = logits
        return result

    def score(self, split: str, n: int | None = None) -> tuple[float, dict[str, float]]:
        """(mean task loss, metrics in percent) of the first n examples of a labelled split."""
        logits = self.logits(split, n)
        y = self.data[split].labels[:len(logits)]
        cost = self.model.task_loss(logits, torch.from_numpy(y)).sum().item() / len(y)
        return cost, compute_metrics(self.task.metrics, y, self.task.predict(logits.numpy()))

    def eval_prefixes(self) -> dict[str, str]:
        """Log-key prefix of each scored split: tr (first n_valid training examples), va (the one
        validation split) or the split's own name when the task has several."""
        evals = self.task.eval_splits
        return {"train": "tr", **{s: ("va" if len(evals) == 1 else s) for s in evals}}

    def evaluate(self, n_epochs: int) -> dict | None:
        """Score, log one line, print it, and keep the parameters if the validation score improved."""
        rec = None
        if self.main:
            scores = {s: self.score(s, self.config.n_valid if s == "train" else None) for s in self.eval_prefixes()}
            rec = dict(n_epochs=n_epochs, n_updates=self.n_updates)
            rec.update({f"{p}_cost": scores[s][0] for s, p in self.eval_prefixes().items()})
            for m in self.task.metrics:
                rec.update({f"{p}_{METRIC_KEYS[m]}": scores[s][1][m] for s, p in self.eval_prefixes().items()})
            if self.logger is not None:
                self.logger.log(**rec)
            self.history.append(rec)
            print(format_record(rec), flush=True)
            self.consider(rec[self.selection_key])
        self.barrier()
        return rec

    @property
    def selection_key(self) -> str:
        """Log key of the model-selection score: the task's first metric on its first validation split."""
        return f"{self.eval_prefixes()[self.task.eval_splits[0]]}_{METRIC_KEYS[self.task.metrics[0]]}"

    def consider(self, score: float):
        """Keep the parameters when `score` beats the best so far (a nan score never does)."""
        if self.config.submit and score > self.best_score:
            self.best_score = score
            self.save_best()

    def save_best(self):
        """The parameters and what reads them (`checkpoint_config`) as one file (checkpoint.save_model)."""
        save_model(self.paths.best_params, self.model.state_dict(),
                   dict(self.checkpoint_config, n_updates=self.n_updates, score=self.best_score))
        self.last_saved = (self.n_updates, self.best_score)

    # ------------------------------------------------------------------------------- submission
    def submit(self) -> dict[str, str]:
        """Load the best parameters and write predictions for every split but train: the test
        submission(s) and the validation splits' predictions. -> {split: path}."""
        self.model.load_state_dict(load_model(self.paths.best_params, map_location=self.device)[1])
        written = {}
        for split in (*self.task.eval_splits, *self.task.test_splits):
            preds = self.task.predict(self.logits(split).numpy())
            path = self.paths.submission(self.task.submission_file(split))
            ids = self.data[split].ids
            atomic_write_text(path, "index\tprediction\n" + "".join(
                f"{i}\t{self.task.format_prediction(p)}\n" for i, p in zip(ids, preds)))
            written[split] = str(path)
        return written

    def analysis(self, written: dict[str, str]) -> dict[str, float]:
        """Print the validation score(s) of the best evaluation in the log and the metrics of every
        labelled test split's submission file against its labels (the release's --analysis)."""
        best = max(self.history, key=lambda r: _finite(r[self.selection_key]))
        lines, out = [], {}
        for split, prefix in list(self.eval_prefixes().items())[1:]:
            title = "Valid" if prefix == "va" else split
            for m in self.task.metrics:
                key = f"{prefix}_{METRIC_KEYS[m]}"
                lines.append((f"{self.task.display} {title} {METRIC_TITLES[m]}:", best[key]))
                out[f"valid_{METRIC_KEYS[m]}" if prefix == "va" else key] = best[key]
        for split in self.task.test_splits:
            y = self.data[split].labels
            if y is None:
                continue
            preds = read_predictions(written[split], self.task)
            if len(preds) != len(y):
                raise ValueError(f"{written[split]}: {len(preds)} predictions for {len(y)} examples")
            title = "Test" if split == "test" else split
            for m, v in compute_metrics(self.task.metrics, y, preds).items():
                lines.append((f"{self.task.display} {title} {METRIC_TITLES[m]}:", v))
                out[f"{'test' if split == 'test' else split}_{METRIC_KEYS[m]}"] = v
        width = max(len(label) for label, _ in lines)
        for label, v in lines:
            print(f"{label.ljust(width)} {v:.2f}")
        return out

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The loop's state (not the model's or the optimizer's), JSON-serialisable."""
        kind, keys, pos, has_gauss, gauss = self.rng.get_state()
        return {"epoch": self.epoch, "batch": self.batch, "n_updates": self.n_updates,
                "rng": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
                "perm": None if self.perm is None else self.perm.tolist(),
                "best_score": self.best_score, "history": list(self.history), "tokens": dict(self.tokens)}

    def load_state_dict(self, state: dict):
        self.epoch, self.batch, self.n_updates = state["epoch"], state["batch"], state["n_updates"]
        kind, keys, pos, has_gauss, gauss = state["rng"]
        self.rng.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        self.perm = None if state["perm"] is None else np.asarray(state["perm"], dtype=np.int64)
        self.best_score, self.history = state["best_score"], list(state["history"])
        self.tokens = dict(state.get("tokens", {"real": 0, "padded": 0}))


def format_record(rec: dict) -> str:
    """An evaluation as one `key=value` line, the log's keys: n_epochs=1 n_updates=93 tr_cost=0.692 ..."""
    return " ".join(f"{k}={v:.3f}" if k.endswith("_cost") else f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in rec.items())


def _finite(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def read_predictions(path, task) -> np.ndarray:
    """A submission file (`index\\tprediction` with a header) -> predictions in the task's ids."""
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return np.asarray([task.parse_prediction(r[1]) for r in rows if r and r[0] != ""])
