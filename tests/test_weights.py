"""Checkpoint loading: synthetic shards in the exact release format; damaged inputs; HF round trip."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel, TransformerModel
from gpt1_fast.weights import (LAYER_PARAMS, CheckpointError, export_hf, load_openai_pretrained_model,
                               read_openai_checkpoint)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "openai-gpt"


def small_shapes(n_layer=2, n_embd=16, n_vocab=50, n_pos=20):
    shapes = [[n_pos, n_embd], [n_vocab, n_embd]]
    for _ in range(n_layer):
        shapes += [[1, n_embd, 3 * n_embd], [3 * n_embd], [1, n_embd, n_embd], [n_embd], [n_embd], [n_embd],
                   [1, n_embd, 4 * n_embd], [4 * n_embd], [1, 4 * n_embd, n_embd], [n_embd], [n_embd], [n_embd]]
    return shapes


def write_release(path: Path, shapes, n_shards=10):
    """Synthetic release: each array i holds i*1e-3 + arange(size)*1e-7, so every element's place is known."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "params_shapes.json").write_text(json.dumps(shapes))
    arrays = [(i * 1e-3 + np.arange(math.prod(s)) * 1e-7).astype(np.float32) for i, s in enumerate(shapes)]
    flat = np.concatenate(arrays)
    for n, part in enumerate(np.array_split(flat, n_shards)):
        np.save(path / f"params_{n}.npy", part)
    return [a.reshape(s) for a, s in zip(arrays, shapes)]


def expected_array(i, shape):
    return (i * 1e-3 + np.arange(math.prod(shape)) * 1e-7).astype(np.float32).reshape(shape)


@pytest.fixture
def release(tmp_path):
    shapes = small_shapes()
    arrays = write_release(tmp_path / "model", shapes)
    return tmp_path / "model", shapes, arrays


def small_cfg(**kw):
    base = dict(n_embd=16, n_head=2, n_layer=2, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0,
                backend="torch")
    base.update(kw)
    return GPTConfig(**base)


def test_every_array_lands_in_its_place(release):
    path, shapes, arrays = release
    n_special, n_ctx = 3, 8
    model = TransformerModel(small_cfg(), vocab=50 + n_special + n_ctx, n_ctx=n_ctx)
    np.random.seed(0)
    load_openai_pretrained_model(model, n_ctx=n_ctx, n_special=n_special, n_embd=16, path=path)
    w = model.embed.weight.detach().numpy()
    np.testing.assert_array_equal(w[:50], arrays[1])  # tokens first
    np.testing.assert_array_equal(w[50 + n_special:], arrays[0][:n_ctx])  # then the first n_ctx positions
    assert 0.005 < w[50:50 + n_special].std() < 0.05  # specials ~ N(0, 0.02)
    sd = model.state_dict()
    for i, a in enumerate(arrays[2:]):
        name = f"h.{i // 12}.{LAYER_PARAMS[i % 12]}"
        np.testing.assert_array_equal(sd[name].numpy(), a.reshape(sd[name].shape), err_msg=name)


def test_n_transfer_minus_one_loads_only_the_embedding(release):
    path, _, arrays = release
    model = TransformerModel(small_cfg(), vocab=50 + 20, n_ctx=20)
    before = model.h[0].attn.c_attn.w.detach().clone()
    load_openai_pretrained_model(model, n_transfer=-1, n_embd=16, path=path)
    assert torch.equal(model.h[0].attn.c_attn.w, before)
    np.testing.assert_array_equal(model.embed.weight.detach().numpy()[:50], arrays[1])


def test_loads_into_a_model_with_a_transformer(release):
    path, _, arrays = release
    model = DoubleHeadModel(small_cfg(), clf_token=52, task_head_type="multiple_choice", vocab=50 + 3 + 8, n_ctx=8)
    load_openai_pretrained_model(model, n_ctx=8, n_special=3, n_embd=16, path=path)
    np.testing.assert_array_equal(model.transformer.h[1].ln_2.b.detach().numpy(), arrays[-1])


@pytest.mark.skipif(not (SHARED / "params_shapes.json").exists(), reason="../shared/openai-gpt not present")
def test_real_shape_list(tmp_path):
    shapes = json.loads((SHARED / "params_shapes.json").read_text())
    assert len(shapes) == 146 and sum(math.prod(s) for s in shapes) > 116e6
    path = tmp_path / "model"
    path.mkdir()
    (path / "params_shapes.json").write_text(json.dumps(shapes))
    flat = (np.arange(sum(math.prod(s) for s in shapes), dtype=np.int64) % 1009).astype(np.float32)
    for n, part in enumerate(np.array_split(flat, 10)):
        np.save(path / f"params_{n}.npy", part)
    del flat
    model = TransformerModel(GPTConfig(backend="torch"), vocab=40478 + 3 + 77, n_ctx=77)
    load_openai_pretrained_model(model, n_ctx=77, n_special=3, path=path)
    offsets = np.concatenate([[0], np.cumsum([math.prod(s) for s in shapes])])
    sd = model.state_dict()

    def ref(i, shape):
        return (np.arange(offsets[i], offsets[i] + math.prod(shape), dtype=np.int64) % 1009).astype(
            np.float32).reshape(shape)

    np.testing.assert_array_equal(sd["embed.weight"][:40478].numpy(), ref(1, (40478, 768)))
    np.testing.assert_array_equal(sd["embed.weight"][-77:].numpy(), ref(0, (512, 768))[:77])
    for i in (2, 8, 13, 100, 145):  # first/mid/last arrays
        name = f"h.{(i - 2) // 12}.{LAYER_PARAMS[(i - 2) % 12]}"
        np.testing.assert_array_equal(sd[name].numpy(), ref(i, shapes[i]).reshape(sd[name].shape), err_msg=name)


# ------------------------------------------------------------------------------------ damaged inputs
def _model():
    return TransformerModel(small_cfg(), vocab=50 + 20, n_ctx=20)


def _assert_untouched(model, before):
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was modified by a failed load"


@pytest.mark.parametrize("damage,match", [
    (lambda p: (p / "params_7.npy").unlink(), r"params_7\.npy: shard not found"),
    (lambda p: (p / "params_shapes.json").unlink(), r"params_shapes\.json: not found"),
    (lambda p: (p / "params_3.npy").write_bytes((p / "params_3.npy").read_bytes()[:-40]),
     r"params_3\.npy: truncated: header says \d+ float32 values \(\d+ bytes\), file holds \d+ bytes"),
    (lambda p: (p / "params_2.npy").write_bytes(b"garbage"), r"params_2\.npy: not a \.npy file"),
    (lambda p: np.save(p / "params_9.npy", np.zeros(3, np.float32)),
     r"shards hold \d+ float32 values, params_shapes\.json needs \d+"),
    (lambda p: np.save(p / "params_0.npy", np.zeros((2, 2), np.float64)),
     r"params_0\.npy: expected a 1-D float32 array, found float64"),
    (lambda p: (p / "params_shapes.json").write_text("[[1, 2], [3]"), r"params_shapes\.json: not valid JSON"),
    (lambda p: (p / "params_shapes.json").write_text(json.dumps(small_shapes()[:-1])),
     r"expected 2 \+ 12\*n_layer shapes .* found 25"),
])
def test_damaged_checkpoint_gives_a_clear_error_and_loads_nothing(release, damage, match):
    path, _, _ = release
    damage(path)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=match):
        load_openai_pretrained_model(model, n_embd=16, path=path)
    _assert_untouched(model, before)


def test_wrong_shapes_name_the_array(tmp_path):
    shapes = small_shapes()
    shapes[2 + 12 + 6] = [1, 16, 48]  # layer 1 mlp.c_fc.w should be [1, 16, 64]
    shapes[2 + 12 + 7] = [48]
    write_release(tmp_path, shapes)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"array #20 \(h\.1\.mlp\.c_fc\.w\): model expects \(16, 64\), checkpoint has \(16, 48\)"):
        load_openai_pretrained_model(model, n_embd=16, path=tmp_path)
    _assert_untouched(model, before)


def test_vocabulary_mismatch(release):
    path, _, _ = release
    model = TransformerModel(small_cfg(), vocab=50 + 3 + 20, n_ctx=20)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"vocabulary size.*\(73, 16\).*\(70, 16\) = 50 tokens \+ 0 specials \+ 20 positions"):
        load_openai_pretrained_model(model, n_embd=16, path=path)
    _assert_untouched(model, before)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*finetune-transformer-lm"):
        read_openai_checkpoint(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ HF round trip
def test_hf_export_reload_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = DoubleHeadModel(small_cfg(), clf_token=52, task_head_type="multiple_choice", vocab=50 + 3 + 8, n_ctx=8)
    export_hf(src, tmp_path / "hf")
    dst = TransformerModel(small_cfg(), vocab=50 + 3 + 8, n_ctx=8)
    load_openai_pretrained_model(dst, n_embd=16, path=tmp_path / "hf")  # 53 token rows already hold the specials
    for k, v in dst.state_dict().items():
        assert torch.equal(v, src.transformer.state_dict()[k]), k


def test_hf_pytorch_bin_is_read_weights_only(tmp_path):
    from gpt1_fast.weights import hf_state_dict

    torch.manual_seed(1)
    src = TransformerModel(small_cfg(), vocab=50 + 8, n_ctx=8)
    (tmp_path / "hf").mkdir()
    torch.save({k: v.clone() for k, v in hf_state_dict(src).items()}, tmp_path / "hf" / "pytorch_model.bin")
    dst = TransformerModel(small_cfg(), vocab=50 + 8, n_ctx=8)
    load_openai_pretrained_model(dst, n_embd=16, path=tmp_path / "hf")
    assert torch.equal(dst.h[1].mlp.c_proj.w, src.h[1].mlp.c_proj.w)
    # A pickle that would run code is refused, not executed.
    (tmp_path / "evil").mkdir()

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Boom()}, tmp_path / "evil" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_openai_pretrained_model(dst, n_embd=16, path=tmp_path / "evil")


# ------------------------------------------------------------------------------------ safetensors
def _hf_folder(tmp_path):
    torch.manual_seed(2)
    src = TransformerModel(small_cfg(), vocab=50 + 8, n_ctx=8)
    export_hf(src, tmp_path / "hf")
    return src, tmp_path / "hf" / "model.safetensors"


def test_export_is_a_real_safetensors_file(tmp_path):
    from safetensors.torch import load_file

    src, f = _hf_folder(tmp_path)
    sd = load_file(str(f))  # the package itself reads it back
    assert torch.equal(sd["transformer.tokens_embed.weight"], src.embed.weight[:50])
    assert torch.equal(sd["transformer.positions_embed.weight"], src.embed.weight[50:])
    assert sd["transformer.h.1.attn.c_attn.weight"].dtype == torch.float32
    assert not [p for p in f.parent.iterdir() if "tmp" in p.name]


@pytest.mark.parametrize("damage,match", [
    (lambda f: f.write_bytes(f.read_bytes()[:-100]), r"model\.safetensors: not a readable safetensors file"),
    (lambda f: f.write_bytes(b"garbage"), r"model\.safetensors: not a readable safetensors file"),
    (lambda f: f.write_bytes(b"\xff" * 8 + f.read_bytes()[8:]), r"model\.safetensors: not a readable safetensors file"),
])
def test_damaged_safetensors_gives_a_clear_error_and_loads_nothing(tmp_path, damage, match):
    _, f = _hf_folder(tmp_path)
    damage(f)
    model = TransformerModel(small_cfg(), vocab=50 + 8, n_ctx=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=match):
        load_openai_pretrained_model(model, n_embd=16, path=f.parent)
    _assert_untouched(model, before)


def test_bf16_safetensors_is_widened(tmp_path):
    from safetensors.torch import save_file

    from gpt1_fast.weights import hf_state_dict

    torch.manual_seed(3)
    src = TransformerModel(small_cfg(), vocab=50 + 8, n_ctx=8)
    (tmp_path / "hf").mkdir()
    save_file({k: v.to(torch.bfloat16).clone() for k, v in hf_state_dict(src).items()},
              str(tmp_path / "hf" / "model.safetensors"))
    dst = TransformerModel(small_cfg(), vocab=50 + 8, n_ctx=8)
    load_openai_pretrained_model(dst, n_embd=16, path=tmp_path / "hf")
    assert torch.equal(dst.h[0].attn.c_attn.w, src.h[0].attn.c_attn.w.to(torch.bfloat16).float())
