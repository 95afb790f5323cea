"""Model configuration. `DEFAULT_CONFIG` is GPT-1 as released (and the seed's name for it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass
class GPTConfig:
    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    afn: str = "gelu"  # 'gelu' (tanh form), 'relu' or 'swish', as the seed
    clf_pdrop: float = 0.1
    # Which implementation every compute op uses (gpt1_fast.ops): 'torch' is the literal reference
    # math, 'triton' the fused kernels, 'auto' picks Triton for CUDA tensors and torch otherwise.
    backend: str = "auto"
    # Recompute each block's forward in backward (torch.utils.checkpoint, non-reentrant) instead of
    # keeping its activations: pretraining-size batches in less memory for about a third more compute.
    activation_checkpointing: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **kw) -> "GPTConfig":
        return replace(self, **kw)

    @classmethod
    def from_options(cls, args) -> "GPTConfig":
        """The model's configuration from an entry point's options (gpt1_fast.options): the one place
        where options become a GPTConfig. Options an entry point lacks keep the defaults."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


DEFAULT_CONFIG = GPTConfig()
