"""Tensor files and names of the Hugging Face `openai-gpt` layout, written once.

This package's transformer keeps ONE embedding table (tokens | specials | positions, see layout.py)
and names its parameters as the original (`h.0.attn.c_attn.w`, `ln_1.g`); Hugging Face's
`OpenAIGPTModel` has `tokens_embed` (tokens and specials) and `positions_embed`, and the usual
PyTorch names (`h.0.attn.c_attn.weight`, `ln_1.weight`). Both store every weight [in, out]: no
transposition. `transformer_to_hf` / `transformer_from_hf` map between the two; the files are read
and written with safetensors (no pickled code runs) or, for `pytorch_model.bin`, with
`torch.load(weights_only=True)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from .errors import CheckpointError
from .fileio import atomic_write_bytes

# Per-layer arrays in the release's order and their parameter names in this package.
LAYER_PARAMS = ("attn.c_attn.w", "attn.c_attn.b", "attn.c_proj.w", "attn.c_proj.b", "ln_1.g", "ln_1.b",
                "mlp.c_fc.w", "mlp.c_fc.b", "mlp.c_proj.w", "mlp.c_proj.b", "ln_2.g", "ln_2.b")
# The same arrays' names in Hugging Face's OpenAIGPTModel.
HF_LAYER_PARAMS = ("attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
                   "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
                   "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias")
TOKENS, POSITIONS = "tokens_embed.weight", "positions_embed.weight"
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")  # what a Hugging Face folder may hold, preferred first


class TransformerWeights(NamedTuple):
    """A transformer's parameters under our names, the embedding table still in its two parts."""
    tokens: torch.Tensor               # [n_vocab + n_special, C]
    positions: torch.Tensor            # [n_ctx, C]
    layers: dict[str, torch.Tensor]    # "h.<i>.<param>" (LAYER_PARAMS), w's [in, out]

    @property
    def n_layer(self) -> int:
        return layer_count(self.layers)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """TransformerModel's state dict (without the constant attention-mask buffers)."""
        return {"embed.weight": torch.cat([self.tokens, self.positions], 0), **self.layers}

    @classmethod
    def from_state_dict(cls, sd: dict, pos_offset: int) -> "TransformerWeights":
        w = sd["embed.weight"]
        return cls(w[:pos_offset], w[pos_offset:], {k: v for k, v in sd.items() if k.startswith("h.")
                                                    and not k.endswith(".attn.b")})


def layer_count(keys) -> int:
    """1 + the largest block index among `h.<i>.*` keys (0 without any)."""
    return 1 + max((int(k.split(".")[1]) for k in keys if k.startswith("h.") and k.split(".")[1].isdigit()),
                   default=-1)


def transformer_to_hf(tw: TransformerWeights, prefix: str = "transformer.") -> dict[str, torch.Tensor]:
    """Our names -> Hugging Face's (`tokens_embed`, `positions_embed`, `h.<i>.attn.c_attn.weight`, ...)."""
    out = {f"{prefix}{TOKENS}": tw.tokens, f"{prefix}{POSITIONS}": tw.positions}
    for i in range(tw.n_layer):
        for ours, hf in zip(LAYER_PARAMS, HF_LAYER_PARAMS):
            out[f"{prefix}h.{i}.{hf}"] = tw.layers[f"h.{i}.{ours}"]
    return out


def transformer_from_hf(sd: dict, file) -> TransformerWeights:
    """Hugging Face names (with or without the `transformer.` prefix; other keys ignored) -> ours. A
    missing tensor is a CheckpointError naming `file`."""
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}

    def get(name):
        if name not in sd:
            raise CheckpointError(f"{file}: tensor {name!r} not found (expected a Hugging Face openai-gpt "
                                  "state dict: tokens_embed, positions_embed, h.<i>.*)")
        return sd[name]

    tok, pos = get(TOKENS), get(POSITIONS)
    if tok.dim() != 2 or pos.dim() != 2 or tok.shape[1] != pos.shape[1]:
        raise CheckpointError(f"{file}: {TOKENS} {tuple(tok.shape)} and {POSITIONS} {tuple(pos.shape)} must be "
                              "[rows, n_embd] of one width")
    layers = {f"h.{i}.{ours}": get(f"h.{i}.{hf}") for i in range(layer_count(sd))
              for ours, hf in zip(LAYER_PARAMS, HF_LAYER_PARAMS)}
    return TransformerWeights(tok, pos, layers)


# ----------------------------------------------------------------------------------- the files
def read_safetensors(f) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file, floating ones as float32 (bf16/f16 widened)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    """The .safetensors file of float32 copies of `tensors` (each its own storage, contiguous)."""
    from safetensors.torch import save

    # clone: tied rows (tokens and positions of one table) must not share storage in the file
    return save({k: t.detach().to("cpu", torch.float32).contiguous().clone() for k, t in tensors.items()},
                 metadata)


def write_safetensors(f, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """float32 copies of `tensors` to `f`, atomically (a failed write leaves no half-written file)."""
    atomic_write_bytes(f, safetensors_bytes(tensors, metadata))


def read_torch_state_dict(f) -> dict[str, torch.Tensor]:
    """A `pytorch_model.bin` read weights-only (never executes pickled code), floats as float32."""
    try:
        sd = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{f}: cannot read as a weights-only PyTorch state dict ({e})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{f}: expected a state dict (names -> tensors)")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def weights_file(folder) -> Path | None:
    """The folder's weights file (model.safetensors preferred), or None."""
    return next((Path(folder) / n for n in WEIGHTS_FILES if (Path(folder) / n).is_file()), None)


def read_weights_file(f) -> dict[str, torch.Tensor]:
    f = Path(f)
    return read_safetensors(f) if f.suffix == ".safetensors" else read_torch_state_dict(f)
