"""A CPU stand-in for `torch.cuda.set_sync_debug_mode("error")`: a dispatch mode that fails on every op
which makes the host wait for the device on a GPU (a scalar read: `.item()`, `bool(t)`, `int(t)`; an
output whose shape depends on the data: `nonzero`, boolean indexing, `unique`, `masked_select`).

gpt1_fast's fused ops are custom ops: under a dispatch mode the dispatcher hands them over whole, so
their Python bodies (the `FusedOp` forward/backward) are run here under the mode, and every op they
issue is checked too.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten.is_nonzero.default, aten.equal.default, aten._unique2.default, aten.unique_dim.default,
           aten.unique_consecutive.default, aten.repeat_interleave.Tensor}


def _bodies() -> dict:
    """{op name: Python body} of every registered FusedOp (imports the kernels)."""
    from gpt1_fast.kernels import _op, attention, layernorm_gelu, lm_head  # noqa: F401

    out = {}
    for module in (attention, layernorm_gelu, lm_head):
        for v in vars(module).values():
            if isinstance(v, _op.FusedOp):
                out[f"gpt1_fast::{v.name}_fwd"] = v.forward
                out[f"gpt1_fast::{v.name}_bwd"] = v.backward
    return out


class NoHostSync(TorchDispatchMode):
    """`with NoHostSync(): step()` raises AssertionError at the first host-synchronising op; `seen`
    holds the name of every op that ran (the fused ops' bodies included)."""

    def __init__(self):
        super().__init__()
        self.bodies = _bodies()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        self.seen.append(name)
        if func in SYNCING or (func is aten.index.Tensor and any(
                i is not None and i.dtype == torch.bool for i in args[1])):
            raise AssertionError(f"host-synchronising op in the step: {func}")
        body = self.bodies.get(name)
        if body is not None:
            with self:
                return body(*args, **kwargs)
        return func(*args, **kwargs)
