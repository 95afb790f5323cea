"""The tied LM head + cross-entropy on the CPU: only the rows that count are multiplied.

    lm_head_loss(h [N, C], weight [V, C], targets [N], mask [N]) -> float32 loss [N],
    loss[i] = mask[i] * (logsumexp_v(h[i] . weight[v]) - h[i] . weight[targets[i]])

the reference's `cross_entropy(h @ weightᵀ, targets) * mask` (gpt1_fast.ops, backend "torch"), over
every row of the table, positions and specials included. What it saves on a CPU, where the head is
about a third of a fine-tuning step at GPT-1 size:

- Rows with mask 0 (padding: about a third of a fine-tuning batch) are never multiplied. Which rows
  are kept is read on the host (`nonzero`): a CPU has no device queue to stall, and the op is opaque
  to torch.compile, so the graph around it keeps static shapes.
- The logits stay in the compute dtype (bf16 under autocast): no float32 copy of the [N, V] matrix,
  no float32 log-softmax output. The log-sum-exp runs over chunks of rows in float32, so the float32
  temporaries are one chunk's.
- Backward forms the logits' gradient, mask[i] * dloss[i] * (softmax - onehot), from the saved
  logits and log-sum-exp in one pass per chunk, then two GEMMs: dh = G @ weight, dweight = Gᵀ @ h.
  (The reference's autograd takes the float32 log-softmax backward, casts, and multiplies by the
  full [N, V] gradient, masked rows included.)

Registered as the opaque ops `gpt1_fast::cpu_lm_head_fwd` / `_bwd` (torch.library.custom_op with fake
implementations and `register_autograd`), so a compiled training step traces it without a graph break.
Under autocast the caller casts h and weight to the autocast dtype first (`lm_head_loss` below), as the
reference's matmul does; dweight comes back in that dtype and autograd casts it on to the parameter's.
"""
from __future__ import annotations

import torch

__all__ = ["lm_head_loss", "CHUNK_ROWS"]

# Rows per chunk of the float32 softmax: 128 x 40990 x 4 bytes = 21 MB of temporaries, in cache-sized
# steps that still keep the vectorised exp/max loops long.
CHUNK_ROWS = 128


def _kept(mask: torch.Tensor) -> torch.Tensor | None:
    """The indices of the rows with mask != 0, or None when every row is kept (pretraining)."""
    rows = (mask != 0).nonzero().squeeze(1)
    return None if rows.numel() == mask.numel() else rows


def _take(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return x if rows is None else x.index_select(0, rows)


@torch.library.custom_op("gpt1_fast::cpu_lm_head_fwd", mutates_args=(), device_types="cpu")
def _forward(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (loss [N] fp32, logits [N, V] in h's dtype with the kept rows first, lse [N] fp32).
    Rows of `logits` past the kept count are not written (backward never reads them)."""
    rows = _kept(mask)
    k = h.size(0) if rows is None else rows.numel()
    logits = h.new_empty(h.size(0), weight.size(0))
    torch.mm(_take(h, rows), weight.t(), out=logits[:k])
    lse = torch.zeros(h.size(0), dtype=torch.float32)
    for s in range(0, k, CHUNK_ROWS):
        e = min(s + CHUNK_ROWS, k)
        lse[s:e] = torch.logsumexp(logits[s:e].float(), dim=1)
    t = _take(targets, rows)
    picked = logits[:k].gather(1, t[:, None]).squeeze(1).float()
    loss = torch.zeros(h.size(0), dtype=torch.float32)
    kept_loss = (lse[:k] - picked) * _take(mask, rows).float()
    if rows is None:
        loss.copy_(kept_loss)
    else:
        loss.index_copy_(0, rows, kept_loss)
    return loss, logits, lse


@_forward.register_fake
def _(h, weight, targets, mask):
    n = h.size(0)
    return (h.new_empty(n, dtype=torch.float32), h.new_empty(n, weight.size(0)),
            h.new_empty(n, dtype=torch.float32))


@torch.library.custom_op("gpt1_fast::cpu_lm_head_bwd", mutates_args=(), device_types="cpu")
def _backward(dloss: torch.Tensor, logits: torch.Tensor, lse: torch.Tensor, h: torch.Tensor,
              weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (dh [N, C], dweight [V, C]) in the compute dtype (h's and weight's)."""
    rows = _kept(mask)
    k = h.size(0) if rows is None else rows.numel()
    scale = (_take(dloss, rows) * _take(mask, rows)).float()
    t = _take(targets, rows)
    grad = torch.empty_like(logits[:k])  # G = scale * (softmax - onehot), in the compute dtype
    buf = torch.empty(min(CHUNK_ROWS, k), logits.size(1), dtype=torch.float32)  # one chunk, reused
    for s in range(0, k, CHUNK_ROWS):
        e = min(s + CHUNK_ROWS, k)
        p = buf[:e - s]
        torch.sub(logits[s:e], lse[s:e, None], out=p)  # float32 whatever the logits' dtype
        p.exp_()
        p[torch.arange(e - s), t[s:e]] -= 1.0
        p.mul_(scale[s:e, None])
        grad[s:e].copy_(p)
    dh_kept = torch.mm(grad, weight)
    dh = dh_kept if rows is None else h.new_zeros(h.shape).index_copy_(0, rows, dh_kept)
    dweight = torch.mm(grad.t(), _take(h, rows))  # h and weight share the compute dtype
    return dh, dweight


@_backward.register_fake
def _(dloss, logits, lse, h, weight, targets, mask):
    return torch.empty_like(h), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    h, weight, targets, mask = inputs
    _, logits, lse = output
    ctx.save_for_backward(logits, lse, h, weight, targets, mask)
    ctx.mark_non_differentiable(logits, lse)


def _grads(ctx, dloss, _dlogits, _dlse):
    logits, lse, h, weight, targets, mask = ctx.saved_tensors
    dh, dweight = _backward(dloss.contiguous(), logits, lse, h, weight, targets, mask)
    return dh, dweight, None, None


_forward.register_autograd(_grads, setup_context=_setup_context)


def lm_head_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row LM loss through the tied head on CPU tensors (see the module docstring). Under CPU
    autocast the products run in the autocast dtype, as the reference's matmul."""
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        h, weight = h.to(dtype), weight.to(dtype)
    elif h.dtype != weight.dtype:
        raise ValueError(f"lm_head_loss: h is {h.dtype} and weight {weight.dtype}; outside autocast they "
                         "must have the same dtype")
    with torch.autocast("cpu", enabled=False):
        return _forward(h.contiguous(), weight.contiguous(), targets, mask)[0]
