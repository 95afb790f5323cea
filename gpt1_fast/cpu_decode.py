"""Decoding on a CPU in bf16 with the weights packed once per generation.

A decoding step multiplies a few rows (one token per sequence) by every weight matrix, so it is as fast
as the weights stream from memory. Under plain bf16 autocast, oneDNN converts and re-blocks each fp32
weight at every step (about 5 GB/s on a Zen 4 core); here every matrix is converted to bf16 and
re-blocked once, when the generation starts (`torch.ops.mkldnn._reorder_linear_weight`, as
torch.compile's frozen CPU graphs do), and each step's products read the packed copy
(`torch.ops.mkldnn._linear_pointwise`: 12-14 GB/s per core). The results are the bits autocast's
products give: the same kernels on the same bf16 values.

The model's code is unchanged: `PackedLinears` is a torch function mode under which the linear layers'
`x @ w` and `torch.addmm(b, x, w)` on the packed matrices run on their packed copies; everything else
(embeddings, LayerNorm, attention over the cache) runs as the model writes it, under bf16 autocast.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

MATMULS = (torch.Tensor.__matmul__, torch.Tensor.matmul, torch.matmul)  # `x @ w` arrives as Tensor.matmul


def packable(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether a generation in `dtype` on `device` runs on packed weights: bf16 on a CPU whose PyTorch
    has oneDNN (mkldnn) and its packed linear op."""
    return (device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _pack(w_out_in: torch.Tensor, rows: int) -> torch.Tensor:
    """An [out, in] matrix as bf16 in oneDNN's blocked layout for `rows`-row products."""
    return torch.ops.mkldnn._reorder_linear_weight(w_out_in.detach().to(torch.bfloat16).contiguous(), rows)


class PackedLinears(TorchFunctionMode):
    """Within it, `x @ w` and `torch.addmm(b, x, w)` with w one of `weights` (the model's [in, out]
    matrices, 2-D x) run as oneDNN linear layers on bf16 copies of w packed once; `logits(h)` is the
    tied LM head, h @ tableᵀ, the same way. rows: the product's expected number of rows (a hint)."""

    def __init__(self, weights, table: torch.Tensor, rows: int):
        super().__init__()
        self.packed = {id(w): (w, _pack(w.t(), rows)) for w in weights}  # w kept: its id stays its own
        self.bias = {}
        self.table = _pack(table, rows)

    def _bf16(self, b):
        if b is None:
            return None
        if id(b) not in self.bias:
            self.bias[id(b)] = (b, b.detach().to(torch.bfloat16))
        return self.bias[id(b)][1]

    def linear(self, x: torch.Tensor, packed: torch.Tensor, bias=None) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed, self._bf16(bias), "none", [], "")

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """[B, C] hidden states -> [B, vocab] bf16 logits h @ tableᵀ."""
        return self.linear(h, self.table)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not kwargs:
            if func is torch.addmm and len(args) == 3 and id(args[2]) in self.packed and args[1].dim() == 2:
                return self.linear(args[1], self.packed[id(args[2])][1], args[0])
            if func in MATMULS and len(args) == 2 and id(args[1]) in self.packed and args[0].dim() == 2:
                return self.linear(args[0], self.packed[id(args[1])][1])
        return func(*args, **kwargs)


def packed_linears(transformer, rows: int) -> PackedLinears:
    """PackedLinears over every weight matrix of the transformer's blocks, and its embedding table as
    the LM head."""
    return PackedLinears(transformer.block_matrices().values(), transformer.embed.weight, rows)
