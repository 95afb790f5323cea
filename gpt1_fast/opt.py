"""OpenAIAdam: Adam with the decoupled weight-decay fix, exactly as GPT-1's TF release computes it
(SPEC §5), with **global** gradient-norm clipping (the PyTorch port clipped each parameter on its own,
a bug not copied here).

One step, t = steps done before it:
    g *= max_grad_norm / max(||all grads||, max_grad_norm)            (if max_grad_norm > 0)
    lrt = lr * schedule(t / t_total, warmup) * sqrt(1 - b2^(t+1)) / (1 - b1^(t+1))
    m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
    p -= lrt * (m / (sqrt(v) + e) + l2 p)     (l2 term for >1-D params, or all with vector_l2)

Two implementations of the same step:
- fused (`gpt1_fast._C`, sources in gpt1_fast/csrc/): the global norm is one device reduction, then one
  multi-tensor kernel per group reads p, g, m, v once and writes p, m, v once, clipping on the fly
  (p.grad is left unscaled, as in the TF release where clipping is functional). No host sync: with
  `capturable=True` the step counters live on the device and lrt is computed there, so a whole
  step can be captured in a CUDA graph.
- unfused: multi-tensor (`torch._foreach_*`): a handful of launches for all parameters, no
  per-parameter Python arithmetic, no host synchronisation (the step counter lives on the CPU).
Both keep the same state (`step`: 0-d float32 tensor, `exp_avg`, `exp_avg_sq`), so a checkpoint of
one continues identically in the other.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
from torch.optim import Optimizer


def warmup_cosine(x, warmup=0.002):
    s = 1.0 if 0 < warmup and x <= warmup else 0.0  # warmup <= 0: none (TF would divide 0 by 0)
    return (x / warmup if s else 0.0) + (1 - s) * (0.5 * (1 + math.cos(math.pi * x)))


def warmup_constant(x, warmup=0.002):
    s = 1.0 if 0 < warmup and x <= warmup else 0.0  # warmup <= 0: none (TF would divide 0 by 0)
    return (x / warmup if s else 0.0) + (1 - s) * 1.0


def warmup_linear(x, warmup=0.002):
    s = 1.0 if 0 < warmup and x <= warmup else 0.0  # warmup <= 0: none (TF would divide 0 by 0)
    return ((x / warmup if s else 0.0) + (1 - s)) * (1 - x)


def warmup_then_cosine(x, warmup=0.002):
    """The paper's pretraining schedule (Radford et al. 2018, 4.1): linear from 0 over the first
    `warmup` of the updates, then cosine from 1 to 0 at the end. Unlike `warmup_cosine` (the TF
    release's fine-tuning schedule, whose cosine spans the whole run, so it restarts below 1 after the
    warm-up) the cosine starts where the warm-up ends. warmup >= 1: the run ends inside the warm-up;
    warmup <= 0: none."""
    if 0 < warmup and x <= warmup:
        return x / warmup
    w = max(warmup, 0.0)
    return 0.5 * (1.0 + math.cos(math.pi * (x - w) / (1.0 - w)))


SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "warmup_cosine": warmup_cosine,
    "warmup_constant": warmup_constant,
    "warmup_linear": warmup_linear,
    "warmup_then_cosine": warmup_then_cosine,
}


def lr_at(group: dict, t: int) -> float:
    """The effective step size lrt of SPEC §5 for a group at step index t (0 for the first step)."""
    sched = SCHEDULES[group["schedule"]]
    factor = sched(t / group["t_total"], group["warmup"]) if group["t_total"] > 0 else 1.0
    return group["lr"] * factor * math.sqrt(1 - group["b2"] ** (t + 1)) / (1 - group["b1"] ** (t + 1))


# Schedule ids of the C++/CUDA kernels (gpt1_fast/csrc/openai_adam.h enum Schedule).
SCHEDULE_IDS = {"warmup_cosine": 0, "warmup_constant": 1, "warmup_linear": 2, "warmup_then_cosine": 3}


def _fused_unavailable_reason(device_type: str = "cpu") -> str | None:
    """None when the fused extension can be used on `device_type`, else why not (may build it)."""
    from . import _ext

    return _ext.unavailable_reason(device_type)


class OpenAIAdam(Optimizer):
    """OpenAI's Adam (see module docstring). Signature of the seed port, plus `fused`.

    max_grad_norm applies to the global norm over every parameter of every group (it is read from
    the constructor, not per group). Groups may set their own lr, l2, vector_l2, schedule, warmup.
    fused: None = the fused extension when available (float32 parameters on CPU/CUDA), else the
    multi-tensor path (one warning if the extension cannot be loaded or built); True = require it;
    False = the multi-tensor path.
    capturable: keep the step counters on the parameters' device (fused only), so that step() can be
    captured in a CUDA graph; otherwise they stay on the CPU and lrt is computed on the host.
    """

    def __init__(self, params, lr, schedule="warmup_linear", warmup=0.002, t_total=-1, b1=0.9, b2=0.999,
                 e=1e-8, l2=0.0, vector_l2=False, max_grad_norm=-1.0, fused: bool | None = None,
                 capturable: bool = False, **kwargs):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if schedule not in SCHEDULES:
            raise ValueError(f"invalid schedule {schedule!r}; expected one of {sorted(SCHEDULES)}")
        if not (0.0 <= warmup < 1.0 or warmup == -1 or (schedule == "warmup_then_cosine" and warmup >= 0)):
            raise ValueError(f"invalid warmup {warmup}: expected a fraction of t_total in [0, 1)")
        if not 0.0 <= b1 < 1.0:
            raise ValueError(f"invalid b1 {b1}")
        if not 0.0 <= b2 < 1.0:
            raise ValueError(f"invalid b2 {b2}")
        if not e >= 0.0:
            raise ValueError(f"invalid epsilon {e}")
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        defaults = dict(lr=lr, schedule=schedule, warmup=warmup, t_total=t_total, b1=b1, b2=b2, e=e, l2=l2,
                        vector_l2=vector_l2, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm
        self.fused = False
        if fused or fused is None:
            reason = self._fused_reason(warn=fused is None)
            if fused and reason:
                raise RuntimeError(f"OpenAIAdam(fused=True) is unavailable: {reason}. "
                                   "Use fused=None (falls back) or fused=False.")
            self.fused = reason is None
        self.capturable = bool(capturable)
        if self.capturable and not self.fused:
            raise RuntimeError("OpenAIAdam(capturable=True) needs the fused step (fused=True or None with the "
                               "extension available)")

    def _fused_reason(self, warn: bool) -> str | None:
        params = [p for g in self.param_groups for p in g["params"]]
        bad = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
        if bad:
            return f"the fused step needs float32 parameters, got {', '.join(bad)}"
        for device_type in sorted({p.device.type for p in params} or {"cpu"}):
            reason = _fused_unavailable_reason(device_type)
            if reason:
                if warn and device_type in ("cpu", "cuda"):  # an extension problem, not an unsupported device
                    # once per reason: Python's default warning filter shows a message once per place
                    warnings.warn(f"OpenAIAdam: fused step unavailable ({reason}); using the multi-tensor path",
                                  RuntimeWarning, stacklevel=4)
                return reason
        return None

    # -------------------------------------------------------------------------------------- step
    def _params_with_grad(self):
        return [p for g in self.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def clip_grad_norm_(self) -> torch.Tensor | None:
        """Scale every gradient by max_grad_norm / max(global_norm, max_grad_norm), on the device.
        Returns the global norm (a device tensor: reading it is the caller's sync, not ours)."""
        grads = [p.grad for p in self._params_with_grad()]
        if self.max_grad_norm <= 0 or not grads:
            return None
        by_device: dict = {}
        for g in grads:
            by_device.setdefault((g.device, g.dtype), []).append(g)
        first = grads[0].device
        sq = [torch.stack(torch._foreach_norm(gs)).float().pow(2).sum().to(first) for gs in by_device.values()]
        total = torch.stack(sq).sum().sqrt()
        coef = self.max_grad_norm / torch.clamp(total, min=self.max_grad_norm)
        for (dev, _), gs in by_device.items():
            torch._foreach_mul_(gs, coef.to(dev))
        return total

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.fused:
            self._fused_step()
            return loss
        self.clip_grad_norm_()
        for group in self.param_groups:
            self._foreach_group_step(group)
        return loss

    # ------------------------------------------------------------------------------- fused step
    def _init_state(self, p, state):
        step_device = p.device if (self.fused and self.capturable) else "cpu"
        state["step"] = torch.zeros((), dtype=torch.float32, device=step_device)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _fused_step(self):
        ops = torch.ops.gpt1_fast
        capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
        # [(group, {device: (params, grads, exp_avgs, exp_avg_sqs, steps)})]
        work = []
        grads_by_device: dict = {}
        for group in self.param_groups:
            lists: dict = {}
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError("OpenAIAdam does not support sparse gradients")
                if p.dtype != torch.float32:
                    raise RuntimeError(f"OpenAIAdam(fused=True) needs float32 parameters, got {p.dtype}")
                state = self.state[p]
                if not state:
                    self._init_state(p, state)
                if capturing and state["step"].device != p.device:
                    raise RuntimeError("capturing OpenAIAdam.step() in a CUDA graph needs "
                                       "OpenAIAdam(..., capturable=True) (step counters on the device)")
                ls = lists.setdefault(p.device, ([], [], [], [], []))
                for lst, x in zip(ls, (p, g, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                    lst.append(x)
                grads_by_device.setdefault(p.device, []).append(g)
            work.append((group, lists))
        norms: dict = {}
        if self.max_grad_norm > 0 and grads_by_device:
            norms = {dev: ops.global_norm(gs) for dev, gs in grads_by_device.items()}
            if len(norms) > 1:  # parameters on several devices: combine the per-device norms
                first = next(iter(norms))
                total = torch.stack([n.to(first) for n in norms.values()]).pow(2).sum().sqrt()
                norms = {dev: total.to(dev) for dev in norms}
        for group, lists in work:
            l2 = group["l2"] if group["l2"] > 0 else 0.0
            for dev, (params, grads, exp_avgs, exp_avg_sqs, steps) in lists.items():
                ops.openai_adam_(params, grads, exp_avgs, exp_avg_sqs, steps, norms.get(dev),
                                 float(self.max_grad_norm), float(group["lr"]), SCHEDULE_IDS[group["schedule"]],
                                 float(group["warmup"]), float(group["t_total"]), float(group["b1"]),
                                 float(group["b2"]), float(group["e"]), float(l2), bool(group["vector_l2"]))

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        # Same format either way; only where `step` lives depends on this optimizer's mode.
        for p, state in self.state.items():
            if "step" in state:
                device = p.device if (self.fused and self.capturable) else "cpu"
                # A copy: the counter is advanced in place and must not alias the caller's state_dict.
                state["step"] = torch.as_tensor(state["step"]).detach().to(device=device, dtype=torch.float32,
                                                                           copy=True)

    def _foreach_group_step(self, group):
        # Bucket by (step count, device, dtype): usually one bucket per group.
        buckets: dict = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("OpenAIAdam does not support sparse gradients")
            state = self.state[p]
            if not state:
                self._init_state(p, state)
            decay = group["l2"] > 0 and (p.dim() > 1 or group["vector_l2"])
            key = (int(state["step"].item()), p.device, p.dtype)
            buckets.setdefault(key, []).append((p, state, decay))
        b1, b2, e = group["b1"], group["b2"], group["e"]
        for (t, _, _), items in buckets.items():
            params = [p for p, _, _ in items]
            grads = [p.grad if p.grad.dtype == p.dtype else p.grad.to(p.dtype) for p in params]
            m = [s["exp_avg"] for _, s, _ in items]
            v = [s["exp_avg_sq"] for _, s, _ in items]
            lrt = lr_at(group, t)
            torch._foreach_mul_(m, b1)
            torch._foreach_add_(m, grads, alpha=1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_add_(denom, e)
            upd = torch._foreach_div(m, denom)
            dec = [i for i, (_, _, d) in enumerate(items) if d]
            if dec:
                torch._foreach_add_([upd[i] for i in dec], [params[i] for i in dec], alpha=group["l2"])
            torch._foreach_add_(params, upd, alpha=-lrt)
            for _, s, _ in items:
                s["step"] += 1
