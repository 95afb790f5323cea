"""Pretrained weights into a model, as the seed's `load_openai_pretrained_model` does.

Reads the original release's `model/` folder (params_shapes.json + params_0.npy ... params_9.npy)
or a Hugging Face `openai-gpt` folder (model.safetensors or pytorch_model.bin, read without executing
pickled code; this project's model folders are such folders). Every input is validated completely
before anything is copied: on any error the model is untouched, and the error names the file and
what was expected vs found. Model folders of every kind (runs, checkpoints) and `export_hf`: see
gpt1_fast.folder.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError
from .folder_save import export_hf
from .hf_io import (HF_LAYER_PARAMS, LAYER_PARAMS, TransformerWeights, layer_count, read_safetensors,
                    read_weights_file, transformer_from_hf, transformer_to_hf, weights_file, write_safetensors)

__all__ = ["CheckpointError", "LAYER_PARAMS", "HF_LAYER_PARAMS", "read_openai_checkpoint", "release_weights",
           "read_transformer", "load_openai_pretrained_model", "copy_into", "hf_state_dict", "export_hf",
           "read_safetensors", "write_safetensors"]
N_SHARDS = 10
RELEASE_URL = "https://github.com/openai/finetune-transformer-lm (folder model/)"


# ------------------------------------------------------------------------- original release format
def read_shapes(path: Path) -> list[tuple[int, ...]]:
    f = path / "params_shapes.json"
    if not f.is_file():
        raise CheckpointError(f"{f}: not found. Expected the original release's model/ folder "
                              f"(params_shapes.json + params_0.npy ... params_9.npy) from {RELEASE_URL}")
    try:
        shapes = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(shapes, list) or not all(
            isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) for s in shapes):
        raise CheckpointError(f"{f}: expected a JSON list of shapes (lists of non-negative ints)")
    if len(shapes) < 2 or (len(shapes) - 2) % len(LAYER_PARAMS):
        raise CheckpointError(f"{f}: expected 2 + 12*n_layer shapes (positions, tokens, 12 per layer), "
                              f"found {len(shapes)}")
    return [tuple(s) for s in shapes]


def _read_shard(f: Path) -> np.ndarray:
    if not f.is_file():
        raise CheckpointError(f"{f}: shard not found (the release has params_0.npy ... params_{N_SHARDS - 1}.npy; "
                              f"get them from {RELEASE_URL})")
    with open(f, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(fh)
        except Exception as e:
            raise CheckpointError(f"{f}: not a .npy file ({e})") from None
        header_end = fh.tell()
    if dtype != np.float32 or len(shape) != 1:
        raise CheckpointError(f"{f}: expected a 1-D float32 array, found {dtype} with shape {shape}")
    want = shape[0] * 4
    have = f.stat().st_size - header_end
    if have < want:
        raise CheckpointError(f"{f}: truncated: header says {shape[0]} float32 values ({want} bytes), "
                              f"file holds {have} bytes of data")
    return np.load(f, mmap_mode="r")


def read_openai_checkpoint(path) -> list[np.ndarray]:
    """The release's arrays, in order, each reshaped to its shape (w's keep their leading 1)."""
    path = Path(path)
    shapes = read_shapes(path)
    shards = [_read_shard(path / f"params_{n}.npy") for n in range(N_SHARDS)]
    sizes = [math.prod(s) for s in shapes]
    total, found = sum(sizes), sum(s.shape[0] for s in shards)
    if found != total:
        raise CheckpointError(f"{path}: the {N_SHARDS} shards hold {found} float32 values, "
                              f"params_shapes.json needs {total}")
    flat = np.concatenate(shards)
    offsets = np.cumsum(sizes)[:-1]
    return [a.reshape(s) for a, s in zip(np.split(flat, offsets), shapes)]


def release_weights(path) -> TransformerWeights:
    """The release's arrays under our names (w's without their leading 1)."""
    arrays = read_openai_checkpoint(path)
    layers = {}
    for i, a in enumerate(arrays[2:]):
        name = f"h.{i // len(LAYER_PARAMS)}.{LAYER_PARAMS[i % len(LAYER_PARAMS)]}"
        a = a.reshape(a.shape[1:]) if name.endswith(".w") and a.ndim == 3 and a.shape[0] == 1 else a
        layers[name] = torch.from_numpy(np.array(a, dtype=np.float32))  # a writable copy of the memory map
    pos, tok = (torch.from_numpy(np.array(a, dtype=np.float32)) for a in arrays[:2])
    if pos.dim() != 2 or tok.dim() != 2 or pos.shape[1] != tok.shape[1]:
        raise CheckpointError(f"{path}: positions {tuple(pos.shape)} and tokens {tuple(tok.shape)} must be "
                              "[rows, n_embd] of one width")
    return TransformerWeights(tok, pos, layers)


def read_transformer(path) -> TransformerWeights:
    """The release's folder or a Hugging Face folder (model.safetensors or pytorch_model.bin)."""
    path = Path(path)
    f = weights_file(path)
    if (path / "params_shapes.json").exists() or f is None:
        return release_weights(path)
    return transformer_from_hf(read_weights_file(f), f)


# ------------------------------------------------------------------------------------------ loading
def _transformer(model):
    return model.transformer if hasattr(model, "transformer") else model


def copy_into(tr, embed: torch.Tensor, layers: dict, n_transfer: int, path, table: str) -> None:
    """Copy the embedding table and the first `n_transfer` blocks (-1: none; at most the model's) into
    the TransformerModel `tr`, after checking every shape (on error nothing is copied). `table` says
    what the table's rows are, for the error message."""
    if tuple(tr.embed.weight.shape) != tuple(embed.shape):
        raise CheckpointError(
            f"{path}: embedding table mismatch (vocabulary size): the model has {tuple(tr.embed.weight.shape)}, "
            f"the checkpoint gives {tuple(embed.shape)} = {table}")
    n_layers = 0 if n_transfer == -1 else min(n_transfer, len(tr.h))  # a shallower model takes the first layers
    if n_layers > layer_count(layers):
        raise CheckpointError(f"{path}: {n_layers} layers to transfer but the checkpoint has only "
                              f"{layer_count(layers)}")
    named = tr.state_dict()
    todo = {"embed.weight": embed}
    for i in range(n_layers):
        for j, param in enumerate(LAYER_PARAMS):
            name, a = f"h.{i}.{param}", layers[f"h.{i}.{param}"]
            if named[name].shape != a.shape:
                raise CheckpointError(f"{path}: array #{2 + i * len(LAYER_PARAMS) + j} ({name}): model expects "
                                      f"{tuple(named[name].shape)}, checkpoint has {tuple(a.shape)}")
            todo[name] = a
    with torch.no_grad():  # everything validated: now copy (nothing is half-loaded on error)
        for name, a in todo.items():
            named[name].copy_(a)


def load_openai_pretrained_model(model, n_ctx=-1, n_special=-1, n_transfer=12, n_embd=768, path="./model/",
                                 path_names=None):
    """Load pretrained weights into a TransformerModel (or a model with `.transformer`), as the seed.

    The embedding table becomes [the checkpoint's token rows, n_special rows ~ N(0, 0.02), its first
    n_ctx positions] (n_ctx <= 0: all; n_special <= 0: none). The first `n_transfer` layers are
    copied (-1: none; the embedding is always loaded; a model with fewer layers takes the first
    ones). `path` is the release folder or a Hugging Face folder. `path_names` is accepted for
    compatibility with the seed and ignored (the order is fixed).
    """
    path = Path(path)
    tr = _transformer(model)
    tw = read_transformer(path)
    if tw.tokens.shape[1] != n_embd:
        raise CheckpointError(f"{path}: checkpoint width is {tw.tokens.shape[1]}, n_embd argument is {n_embd}")
    pos = tw.positions
    if n_ctx > 0:
        if n_ctx > pos.shape[0]:
            raise CheckpointError(f"{path}: n_ctx {n_ctx} exceeds the checkpoint's {pos.shape[0]} positions")
        pos = pos[:n_ctx]
    special = torch.from_numpy((np.random.randn(max(n_special, 0), n_embd) * 0.02).astype(np.float32))
    copy_into(tr, torch.cat([tw.tokens, special, pos]), tw.layers, n_transfer, path,
              f"{tw.tokens.shape[0]} tokens + {special.shape[0]} specials + {pos.shape[0]} positions; build the "
              "model with vocab = n_vocab + n_special + n_ctx")
    print(f"Loading weights from {path} ...", file=sys.stderr)  # a status line: stderr (loaded: every shape fit)
    return model


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """The transformer's weights under Hugging Face openai-gpt names (`transformer.` prefixed for a
    model that has a `.transformer`)."""
    tr = _transformer(model)
    sd = {k: v.detach() for k, v in tr.state_dict().items()}
    return transformer_to_hf(TransformerWeights.from_state_dict(sd, tr.pos_offset),
                             "transformer." if tr is not model else "")
