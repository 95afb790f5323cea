"""Tolerances predicted from the dtype and the reduction length, so that a GPU test fails when a kernel
is less accurate than its arithmetic allows, instead of a bound loosened until the test passed.

The error model (round to nearest; u = unit roundoff = finfo(dtype).eps / 2: 2^-24 float32, 2^-11
float16, 2^-8 bfloat16):
- One rounding of x gives x(1 + d) with |d| <= u; over many values d spreads evenly over [-u, u]:
  rms u/sqrt(3). So a tensor rounded once to its dtype has normwise relative error
  |y' - y| / |y| = u/sqrt(3) (`ROUND`), which is what the float64 reference sees of a kernel that
  computes in float32 and stores bf16.
- Independent roundings on a result's path add in quadrature: n of them give sqrt(n) u/sqrt(3). An
  absolute error e on a logit z becomes a relative error e on exp(z), so rounding a logit of size
  |z| to bf16 perturbs the softmax by |z| u/sqrt(3): a rounding "weighs" |z| there.
- A length-K float32 reduction of products that are exact (bf16 x bf16 fits in float32) adds about
  sqrt(K) u32 relative (a random walk; K u32 in the worst case): 2e-6 at K = 40,990, far below one
  bf16 rounding. Inputs rounded *before* a dot product (autocast casting a float32 weight to bf16)
  count as one rounding each: their K errors add with random signs, like the terms they perturb.
- Normwise errors over many elements concentrate at their rms: a tolerance of SAFETY = 3 times the
  predicted rms is far outside the spread for >= 1000 elements, yet a kernel one rounding worse, a
  wrong mask or a lost term fails it. A maximum over n elements of Gaussian-like errors sits near
  sqrt(2 ln n) sigma (`tail`).
tests/test_tolerances.py checks this model against measured errors on the CPU.
"""
from __future__ import annotations

import math

import torch

SAFETY = 3.0


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def rounding_rms(dtype: torch.dtype) -> float:
    """rms relative error of one rounding to `dtype`."""
    return unit_roundoff(dtype) / math.sqrt(3)


def predicted(roundings: dict | None = None, K: int = 0, acc: torch.dtype = torch.float32) -> float:
    """Predicted normwise relative error: `roundings` {dtype: how many (or their weight)} on the path,
    plus a length-K reduction in `acc`."""
    var = sum(n * rounding_rms(d) ** 2 for d, n in (roundings or {}).items())
    return math.sqrt(var + K * unit_roundoff(acc) ** 2)


def tolerance(roundings: dict | None = None, K: int = 0, acc: torch.dtype = torch.float32) -> float:
    """SAFETY x the predicted normwise relative error."""
    return SAFETY * predicted(roundings, K, acc)


def tail(n: int) -> float:
    """How many standard deviations the largest of n Gaussian-like errors reaches, with room: sqrt(2 ln n) + 1.5."""
    return math.sqrt(2 * math.log(max(n, 2))) + 1.5


def lm_head_loss_bound(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, logits_dtype: torch.dtype,
                       weight_rounded: bool) -> torch.Tensor:
    """Per-row bound on |loss - loss_float64| for the LM head + cross-entropy computed with logits
    stored in `logits_dtype` (its GEMM output), on the rows of h [N, C] against w [V, C] (float64 here).

    loss = logsumexp(z) - z_t, so a logit error e_v moves it by e_t - sum_v p_v e_v:
    - logits rounded once to logits_dtype: |e_v| <= u |z_v| (a hard bound):
      u (|z_t| + sum_v p_v |z_v|);
    - weight rounded to the compute dtype before the GEMM (weight_rounded): e_v is a sum of C
      rounding errors h_k w_vk d_k, Gaussian-like with std s_v = u/sqrt(3) |h o w_v|, so the row's
      error has std sqrt(s_t^2 + sum_v p_v^2 s_v^2), taken `tail(N)` times;
    - the float32 accumulations: sqrt(C) u32 |h| |w_v| per logit, twice (both terms), and the
      log-sum-exp's float32 sum over V: sqrt(V) u32. Negligible beside a bf16 rounding.
    """
    h, w = h.double(), w.double()
    z = h @ w.t()
    p = torch.softmax(z, dim=1)
    rows = torch.arange(h.shape[0], device=h.device)
    u = unit_roundoff(logits_dtype)
    bound = u * (z[rows, targets].abs() + (p * z.abs()).sum(1))
    if weight_rounded:
        s2 = rounding_rms(logits_dtype) ** 2 * ((h * h) @ (w * w).t())  # s_v^2 per row and column
        bound += tail(h.shape[0]) * (s2[rows, targets] + (p * p * s2).sum(1)).sqrt()
    u32 = unit_roundoff(torch.float32)
    acc = 2 * math.sqrt(h.shape[1]) * u32 * h.norm(dim=1) * w.norm(dim=1).max() + math.sqrt(w.shape[0]) * u32
    return bound + acc
