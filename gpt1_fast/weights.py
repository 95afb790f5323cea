"""Pretrained weights in and out.

In:  the original release's `model/` folder (params_shapes.json + params_0.npy … params_9.npy,
     SPEC §1), or a Hugging Face `openai-gpt` folder (model.safetensors or pytorch_model.bin, read
     without executing pickled code).
Out: a Hugging Face folder (config.json + model.safetensors) that `transformers` loads.

Every input is validated completely before anything is copied: on any error the model is untouched,
and the error names the file and what was expected vs found.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError
from .fileio import atomic_write_bytes, atomic_write_text

N_SHARDS = 10
# Per-layer arrays in the release's order (SPEC §1) and their parameter names in this package.
LAYER_PARAMS = ("attn.c_attn.w", "attn.c_attn.b", "attn.c_proj.w", "attn.c_proj.b", "ln_1.g", "ln_1.b",
                "mlp.c_fc.w", "mlp.c_fc.b", "mlp.c_proj.w", "mlp.c_proj.b", "ln_2.g", "ln_2.b")
# The same arrays' names in Hugging Face's OpenAIGPTModel.
HF_LAYER_PARAMS = ("attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
                   "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
                   "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias")
RELEASE_URL = "https://github.com/openai/finetune-transformer-lm (folder model/)"


# ------------------------------------------------------------------------- original release format
def _read_shapes(path: Path) -> list[tuple[int, ...]]:
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
    shapes = _read_shapes(path)
    shards = [_read_shard(path / f"params_{n}.npy") for n in range(N_SHARDS)]
    sizes = [math.prod(s) for s in shapes]
    total, found = sum(sizes), sum(s.shape[0] for s in shards)
    if found != total:
        raise CheckpointError(f"{path}: the {N_SHARDS} shards hold {found} float32 values, "
                              f"params_shapes.json needs {total}")
    flat = np.concatenate(shards)
    offsets = np.cumsum(sizes)[:-1]
    return [a.reshape(s) for a, s in zip(np.split(flat, offsets), shapes)]


# ----------------------------------------------------------------------------------- safetensors
def read_safetensors(f) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as float32 (bf16/f16 widened) or its own integer dtype."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from None
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in sd.items()}


def write_safetensors(f, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """float32 copies of `tensors` to `f`, atomically (a failed write leaves no half-written file)."""
    from safetensors.torch import save

    # clone: tied rows (tokens and positions of one table) must not share storage in the file
    data = save({k: t.detach().to("cpu", torch.float32).clone() for k, t in tensors.items()}, metadata)
    atomic_write_bytes(f, data)


def read_hf_checkpoint(path) -> list[np.ndarray]:
    """A Hugging Face openai-gpt folder as the release's array list: [positions, tokens, layer arrays...]
    (w's as [1, in, out] like the release)."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        f = path / "model.safetensors"
        sd = read_safetensors(f)
    elif (path / "pytorch_model.bin").is_file():
        f = path / "pytorch_model.bin"
        try:  # weights_only: never executes pickled code
            sd = {k: v.float().numpy() for k, v in torch.load(f, map_location="cpu", weights_only=True).items()}  # noqa: E501
        except Exception as e:
            raise CheckpointError(f"{f}: cannot read as a weights-only PyTorch state dict ({e})") from None
    else:
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    n_layer = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("h.")), default=-1)

    def get(name):
        if name not in sd:
            raise CheckpointError(f"{f}: tensor {name!r} not found")
        return sd[name]

    arrays = [get("positions_embed.weight"), get("tokens_embed.weight")]
    for i in range(n_layer):
        for hf in HF_LAYER_PARAMS:
            a = get(f"h.{i}.{hf}")
            arrays.append(a[None] if hf.endswith("weight") and a.ndim == 2 else a)
    return arrays


# ------------------------------------------------------------------------------------------ loading
def _transformer(model):
    return model.transformer if hasattr(model, "transformer") else model


def load_openai_pretrained_model(model, n_ctx=-1, n_special=-1, n_transfer=12, n_embd=768, path="./model/",
                                 path_names=None):
    """Load pretrained weights into a TransformerModel (or a model with `.transformer`), as the seed.

    The embedding table becomes [40478 tokens, n_special rows ~ N(0, 0.02), first n_ctx positions]
    (n_ctx <= 0: all 512; n_special <= 0: none). The first `n_transfer` layers are copied
    (-1: none; the embedding is always loaded; a model with fewer layers takes the first ones). `path` is the release folder or a HF folder.
    `path_names` is accepted for compatibility with the seed and ignored (the order is fixed).
    """
    path = Path(path)
    tr = _transformer(model)
    params = read_openai_checkpoint(path) if (path / "params_shapes.json").exists() or not (
        (path / "model.safetensors").exists() or (path / "pytorch_model.bin").exists()) else read_hf_checkpoint(path)
    pos, tok = params[0], params[1]
    if pos.ndim != 2 or tok.ndim != 2 or pos.shape[1] != tok.shape[1]:
        raise CheckpointError(f"{path}: positions {pos.shape} and tokens {tok.shape} must be [rows, n_embd] of one width")
    if pos.shape[1] != n_embd:
        raise CheckpointError(f"{path}: checkpoint width is {pos.shape[1]}, n_embd argument is {n_embd}")
    if n_ctx > 0:
        if n_ctx > pos.shape[0]:
            raise CheckpointError(f"{path}: n_ctx {n_ctx} exceeds the checkpoint's {pos.shape[0]} positions")
        pos = pos[:n_ctx]
    special = (np.random.randn(max(n_special, 0), n_embd) * 0.02).astype(np.float32)
    we = np.concatenate([tok, special, pos], 0)
    if tuple(tr.embed.weight.shape) != we.shape:
        raise CheckpointError(
            f"{path}: embedding table mismatch (vocabulary size): the model has {tuple(tr.embed.weight.shape)}, "
            f"the checkpoint gives {we.shape} = {tok.shape[0]} tokens + {special.shape[0]} specials + "
            f"{pos.shape[0]} positions; build the model with vocab = n_vocab + n_special + n_ctx")
    n_ckpt_layers = (len(params) - 2) // len(LAYER_PARAMS)
    n_layers = 0 if n_transfer == -1 else min(n_transfer, len(tr.h))  # a shallower model takes the first layers
    if n_layers > n_ckpt_layers:
        raise CheckpointError(f"{path}: {n_layers} layers to transfer but the checkpoint has only {n_ckpt_layers}")
    named = tr.state_dict()
    todo = {"embed.weight": we}
    layer_arrays = params[2:2 + n_layers * len(LAYER_PARAMS)]
    for i, a in enumerate(layer_arrays):
        name = f"h.{i // len(LAYER_PARAMS)}.{LAYER_PARAMS[i % len(LAYER_PARAMS)]}"
        a = a.reshape(a.shape[1:]) if name.endswith(".w") and a.ndim == 3 and a.shape[0] == 1 else a
        if tuple(named[name].shape) != a.shape:
            raise CheckpointError(f"{path}: array #{i + 2} ({name}): model expects {tuple(named[name].shape)}, "
                                  f"checkpoint has {a.shape}")
        todo[name] = a
    # Everything validated: now copy (nothing is half-loaded on error).
    print(f"Loading weights from {path} ...", file=sys.stderr)
    with torch.no_grad():
        for name, a in todo.items():
            named[name].copy_(torch.from_numpy(np.array(a, dtype=np.float32)))  # a writable copy
    return model


# ------------------------------------------------------------------------------------------ export
def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """This model's weights under Hugging Face openai-gpt names (DoubleHeads names when it has an MC head)."""
    tr = _transformer(model)
    w = tr.embed.weight.detach()
    prefix = "transformer." if hasattr(model, "transformer") else ""
    sd = {f"{prefix}tokens_embed.weight": w[:tr.pos_offset], f"{prefix}positions_embed.weight": w[tr.pos_offset:]}
    for i, block in enumerate(tr.h):
        bsd = block.state_dict()
        for ours, hf in zip(LAYER_PARAMS, HF_LAYER_PARAMS):
            sd[f"{prefix}h.{i}.{hf}"] = bsd[ours]
    head = getattr(model, "task_head", None)
    if head is not None and type(head).__name__ == "MultipleChoiceHead":
        sd["multiple_choice_head.summary.weight"] = head.linear.weight.detach()
        sd["multiple_choice_head.summary.bias"] = head.linear.bias.detach()
    return sd


def export_hf(model, path, cfg=None) -> Path:
    """Write a Hugging Face openai-gpt folder (config.json + model.safetensors) for `model`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tr = _transformer(model)
    block = tr.h[0]
    config = {
        "architectures": ["OpenAIGPTDoubleHeadsModel" if hasattr(model, "task_head") else "OpenAIGPTModel"],
        "model_type": "openai-gpt",
        "vocab_size": tr.pos_offset,
        "n_positions": tr.n_ctx,
        "n_embd": tr.n_embd,
        "n_layer": len(tr.h),
        "n_head": block.attn.n_head,
        "afn": block.mlp.afn,
        "resid_pdrop": block.attn.resid_dropout.p,
        "embd_pdrop": tr.drop.p,
        "attn_pdrop": block.attn.attn_dropout.p,
        "layer_norm_epsilon": block.ln_1.e,
        "initializer_range": 0.02,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_activation": None,
        "summary_proj_to_labels": True,
        "summary_first_dropout": getattr(getattr(model, "task_head", None), "dropout", torch.nn.Dropout(0.1)).p,
        "num_labels": 1,
    }
    write_safetensors(path / "model.safetensors", hf_state_dict(model), metadata={"format": "pt"})
    atomic_write_text(path / "config.json", json.dumps(config, indent=2) + "\n")
    return path
