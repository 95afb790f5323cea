"""Exact resume: one checkpoint file holds everything a run needs to continue bit for bit.

A checkpoint is `<folder>/step_<N>.pt`, written atomically (gpt1_fast.fileio.atomic_write: temporary
file, fsync, rename), so after a `kill -9` at any moment the newest complete file on disk is the
previous checkpoint. It holds the model, the optimizer state (moments and step counters), the loop
state the caller passes (step, data position, ...), every RNG state (Python, NumPy, torch CPU, CUDA
when initialised; one entry per process under DDP) and a fingerprint of the arguments that change
the math, so that a checkpoint and its configuration are one unit: resuming with different math is
an error that names the differing arguments, never a silent restart.

The newest `keep` checkpoints are kept (default 2: if the newest is ever damaged on disk, the one
before it can be named explicitly); older ones are deleted only after the new one is complete.
Files are read with `torch.load(weights_only=True)`: no pickled code runs.
"""
from __future__ import annotations

import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .errors import ResumeError
from .fileio import atomic_write, remove_stale_temporaries

FORMAT = "gpt1_fast-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step_(\d+)\.pt$")


# ------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict:
    """Every RNG the training loop may draw from, in a form `torch.load(weights_only=True)` reads."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states(world: int = 1) -> list[dict]:
    """Every process's rng_state(), indexed by rank (a collective under DDP: call it on all ranks)."""
    if world == 1:
        return [rng_state()]
    states = [None] * world
    torch.distributed.all_gather_object(states, rng_state())
    return states


def restore_rng_states(states: list[dict], rank: int, world: int) -> bool:
    """This process's RNG states from a checkpoint's list; False (nothing restored) when the
    checkpoint was written by another number of processes (then dropout masks will differ)."""
    if len(states) != world:
        return False
    set_rng_state(states[rank])
    return True


# ---------------------------------------------------------------------------------- fingerprints
def check_fingerprint(saved: dict, current: dict, path) -> None:
    """Raise ResumeError naming every argument whose value differs between checkpoint and run."""
    keys = sorted(set(saved) | set(current))
    diff = [f"{k}: checkpoint {saved.get(k, '(absent)')!r}, this run {current.get(k, '(absent)')!r}"
            for k in keys if saved.get(k) != current.get(k)]
    if diff:
        raise ResumeError(f"{path} belongs to a different configuration ({'; '.join(diff)}); rerun with the "
                          "checkpoint's arguments, or use a new --out folder to start over")


# ------------------------------------------------------------------------------------ the folder
class CheckpointDir:
    """The checkpoints of one run: `save(step, state)`, `latest()`, `load(path, fingerprint)`."""

    def __init__(self, folder, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.folder = Path(folder)
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.folder / f"step_{step:09d}.pt"

    def list(self) -> list[tuple[int, Path]]:
        """(step, path) of every complete checkpoint, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1][1] if found else None

    def save(self, step: int, state: dict, fingerprint: dict) -> Path:
        """Write `state` (tensors, numbers, strings, lists, dicts) as the checkpoint of `step`, then
        delete the older ones beyond `keep` and any of later steps (a future this run replaces)."""
        payload = {"format": FORMAT, "version": VERSION, "step": int(step), "fingerprint": dict(fingerprint),
                   "time": time.time(), **state}
        path = self.path(step)
        atomic_write(path, lambda f: torch.save(payload, f), mode="wb")
        found = self.list()
        older = [p for s, p in found if s < step]
        for s, p in found:
            if s > step or p in older[:max(0, len(older) - (self.keep - 1))]:
                p.unlink(missing_ok=True)
        return path

    def load(self, path=None, fingerprint: dict | None = None) -> dict:
        """The checkpoint at `path` (default: the latest), checked for format and fingerprint."""
        remove_stale_temporaries(self.folder)  # what a write killed mid-way left (one writer per run)
        if path is None:
            path = self.latest()
            if path is None:
                raise ResumeError(f"--resume: no checkpoint in {self.folder} (files step_<N>.pt); "
                                  "run without --resume to start")
        path = Path(path)
        if not path.is_file():
            raise ResumeError(f"{path}: checkpoint not found")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ResumeError(f"{path}: damaged checkpoint, cannot be read ({first}); older ones: "
                              f"{[p.name for _, p in self.list() if p != path] or 'none'}") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise ResumeError(f"{path}: not a gpt1_fast checkpoint (expected format {FORMAT!r})")
        if ckpt.get("version") != VERSION:
            raise ResumeError(f"{path}: checkpoint version {ckpt.get('version')}, this code reads {VERSION}")
        if fingerprint is not None:
            check_fingerprint(ckpt["fingerprint"], dict(fingerprint), path)
        return ckpt


# ------------------------------------------------------------------------------- trainers' state
class Checkpointing:
    """Exact resume for a trainer of either kind (tasks.trainer.Trainer, pretraining.LMTrainer): both
    have `.model`, `.opt`, `.n_updates` and `state_dict()` / `load_state_dict()` for their loop state.
    A checkpoint holds those three states and every process's RNG states, under the run's
    fingerprint (the options that change the math, and digests of the data and vocabulary)."""

    def __init__(self, folder, fingerprint: dict, ctx, keep: int = 2):
        self.dir = CheckpointDir(folder, keep=keep)
        self.fingerprint, self.ctx = dict(fingerprint), ctx

    def latest(self) -> Path | None:
        return self.dir.latest()

    def load(self, which: str = "latest") -> dict:
        """The checkpoint `which` ("latest" or a path), read and checked against the fingerprint."""
        return self.dir.load(None if which == "latest" else which, self.fingerprint)

    def restore(self, trainer, ckpt) -> dict:
        """Load model, optimizer, loop state (in this order) and this process's RNG states from
        `ckpt` (a loaded checkpoint, or "latest" or a path); -> the checkpoint."""
        if not isinstance(ckpt, dict):
            ckpt = self.load(ckpt)
        trainer.model.load_state_dict(ckpt["model"])
        trainer.opt.load_state_dict(ckpt["optimizer"])
        trainer.load_state_dict(ckpt["trainer"])
        dist = self.ctx.dist
        if not restore_rng_states(ckpt["rng"], dist.rank, dist.world) and dist.main:
            print(f"warning: checkpoint written by {len(ckpt['rng'])} processes, resuming with {dist.world}: "
                  "dropout masks differ from an uninterrupted run", file=sys.stderr)
        return ckpt

    def save(self, trainer) -> Path | None:
        """Checkpoint at the trainer's update count (a collective under DDP: call on every process)."""
        rngs = all_rng_states(self.ctx.dist.world)
        path = None
        if self.ctx.main:
            path = self.dir.save(trainer.n_updates, {"model": trainer.model.state_dict(),
                                                     "optimizer": trainer.opt.state_dict(),
                                                     "trainer": trainer.state_dict(), "rng": rngs}, self.fingerprint)
        self.ctx.barrier()
        return path

    def every(self, n: int):
        """An after-update hook: a checkpoint at every n-th update (n 0: none)."""
        def hook(trainer):
            if n > 0 and trainer.n_updates % n == 0:
                self.save(trainer)
        return hook
