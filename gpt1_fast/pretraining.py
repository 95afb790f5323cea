"""The pretraining loop (the paper's first stage): windows of a token file, the LM objective, validation.

`LMTrainer` follows the fine-tuning Trainer's protocol (gpt1_fast.tasks.trainer): `fit()`,
`train_step()`, `evaluate()`, `state_dict()` / `load_state_dict()` for the loop state, with `.model`,
`.opt` and `.n_updates`, so checkpoints and resume (gpt1_fast.resume.Checkpointing) serve both. The
loss lives in the model (`LMModel(input_ids=x, targets=y)`), the learning-rate schedule in the
optimizer (OpenAIAdam's `warmup_then_cosine`), the device rules in the RunContext.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .context import RunContext


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


@dataclass
class LMConfig:
    n_ctx: int
    n_batch: int            # sequences per update, over all processes
    total_steps: int        # updates in all
    warmup_steps: int
    seed: int = 0
    micro_batch: int | None = None  # sequences per forward pass per process (None: the whole share)
    eval_every: int = 1000
    eval_windows: int = 256
    log_every: int = 10
    verbose: bool = False


class LMTrainer:
    """Pretrains `model` (an LMModel) on `train_tokens`, validating on fixed windows of `val_tokens`."""

    def __init__(self, model, optimizer, train_tokens, val_tokens, config: LMConfig, ctx: RunContext, logger=None):
        self.model, self.opt, self.config, self.ctx, self.logger = model, optimizer, config, ctx, logger
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.sampler = WindowSampler(len(train_tokens), config.n_ctx, config.n_batch, config.seed)
        self.v_starts = val_starts(len(val_tokens), config.n_ctx, config.eval_windows)
        world = ctx.dist.world
        if config.n_batch % world:
            raise ValueError(f"--n_batch {config.n_batch} must be divisible by the {world} processes")
        self.per_rank = config.n_batch // world
        self.micro = config.micro_batch or self.per_rank
        if self.per_rank % self.micro:
            raise ValueError(f"--micro_batch {self.micro} must divide the per-process batch {self.per_rank}")
        self.step_model = ctx.wrap(model)
        self.set_schedule(config.total_steps)
        # loop state (state_dict)
        self.n_updates, self.tokens_seen = 0, 0
        self.loss_sum, self.loss_n = torch.zeros((), device=ctx.device), 0  # the train loss since the last log
        self.val_loss, self.evaluated = None, False  # evaluated: on every process (val_loss: rank 0's)
        self.after_update: list = []  # e.g. checkpoints: the loop state is complete there

    def set_schedule(self, total_steps: int) -> None:
        """The paper's schedule over `total_steps` updates: linear warm-up, then cosine to 0."""
        self.config.total_steps = total_steps
        for g in self.opt.param_groups:
            g.update(schedule="warmup_then_cosine", t_total=total_steps,
                     warmup=self.config.warmup_steps / total_steps)

    def lr(self) -> float:
        from .opt import SCHEDULES

        g = self.opt.param_groups[0]
        return g["lr"] * SCHEDULES[g["schedule"]](self.n_updates / g["t_total"], g["warmup"])

    # ---------------------------------------------------------------------------------- training
    def train_step(self) -> torch.Tensor:
        """One update: this process's windows of the step, gradients accumulated over micro-batches."""
        rank, n_micro = self.ctx.dist.rank, self.per_rank // self.micro
        mine = self.sampler.starts(self.n_updates)[rank * self.per_rank:(rank + 1) * self.per_rank]
        for k in range(n_micro):
            x, y = windows(self.train_tokens, mine[k * self.micro:(k + 1) * self.micro], self.config.n_ctx,
                           self.ctx.device)
            sync = self.ctx.dist.world == 1 or k == n_micro - 1
            with (nullcontext() if sync else self.step_model.no_sync()), self.ctx.autocast():
                loss = self.step_model(input_ids=x, targets=y)["loss"] / n_micro
            loss.backward()
            self.loss_sum += loss.detach()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.n_updates += 1
        self.loss_n += 1
        self.tokens_seen += self.config.n_batch * self.config.n_ctx
        return loss

    def fit(self) -> float | None:
        """Train up to total_steps (from the loop state: a restored trainer continues)."""
        from tqdm import tqdm

        c = self.config
        bar = tqdm(total=c.total_steps, initial=self.n_updates, ncols=90, desc="pretrain",
                   disable=not (c.verbose and self.ctx.main))
        self.model.train()
        t_log, tok_log = time.time(), 0
        while self.n_updates < c.total_steps:
            lr = self.lr()
            self.train_step()
            tok_log += c.n_batch * c.n_ctx
            bar.update(1)
            if self.n_updates % c.log_every == 0 or self.n_updates == c.total_steps:
                self._log_train(lr, tok_log / max(time.time() - t_log, 1e-9), bar)
                t_log, tok_log = time.time(), 0
            if self.n_updates % c.eval_every == 0 or self.n_updates == c.total_steps:
                self.evaluate()
            for hook in self.after_update:
                hook(self)
        bar.close()
        if not self.evaluated:  # resumed from the final checkpoint
            self.evaluate()
        return self.val_loss

    def _log_train(self, lr: float, tokens_per_s: float, bar) -> None:
        train_loss = self.loss_sum.item() / self.loss_n  # rank 0's share of the batch (a sync every log_every)
        if self.ctx.main:
            if self.logger is not None:
                self.logger.log(step=self.n_updates, epoch=self.n_updates / self.sampler.steps_per_epoch,
                                loss=train_loss, lr=lr, tokens=self.tokens_seen, tokens_per_s=tokens_per_s)
            bar.set_postfix(loss=f"{train_loss:.3f}", lr=f"{lr:.2e}")
        self.loss_sum, self.loss_n = torch.zeros((), device=self.ctx.device), 0

    # -------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean next-token loss over the fixed validation windows (this process alone, no DDP)."""
        self.model.eval()
        total = 0.0
        for i in range(0, len(self.v_starts), self.micro):
            x, y = windows(self.val_tokens, self.v_starts[i:i + self.micro], self.config.n_ctx, self.ctx.device)
            with self.ctx.autocast():
                total += self.model(input_ids=x, targets=y)["loss"].item() * len(x)  # equal windows: token mean
        self.model.train()
        return total / len(self.v_starts)

    def evaluate(self) -> float | None:
        self.evaluated = True
        if self.ctx.main:
            self.val_loss = self.validation_loss()
            ppl = math.exp(min(self.val_loss, 700))
            if self.logger is not None:
                self.logger.log(step=self.n_updates, val_loss=self.val_loss, val_ppl=ppl)
            print(f"step {self.n_updates}: val loss {self.val_loss:.4f}, perplexity {ppl:.2f}", flush=True,
                  file=sys.stdout)
        self.ctx.barrier()
        return self.val_loss

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"n_updates": self.n_updates, "tokens_seen": self.tokens_seen,
                "log_window": [self.loss_sum.item(), self.loss_n]}

    def load_state_dict(self, state: dict) -> None:
        """The loop state of a checkpoint. Called after the optimizer's state is loaded (which brings
        the checkpoint's schedule): the schedule is set again for this run's total, so a finished
        run can be extended (--max_steps raised)."""
        self.n_updates, self.tokens_seen = state["n_updates"], state["tokens_seen"]
        self.loss_sum = torch.tensor(state["log_window"][0], device=self.ctx.device)
        self.loss_n = state["log_window"][1]
        self.set_schedule(self.config.total_steps)
