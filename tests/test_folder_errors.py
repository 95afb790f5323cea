"""Every damaged model folder or file is one CheckpointError line naming the file and what was
expected vs found; a folder whose files are consistent but wrong (a tensor missing, transposed,
padding rows that are not padding) is caught by the shape and padding checks behind the SHA-256."""
import hashlib
import json
import shutil

import pytest
import torch
from folder_helpers import LAYOUT, make, write_vocab

from gpt1_fast.errors import CheckpointError
from gpt1_fast.folder import load_pretrained, read_config, save_pretrained
from gpt1_fast.hf_head import HF_HEAD


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    root = tmp_path_factory.mktemp("orig")
    model = make("classification").eval()
    return save_pretrained(model, root / "m", layout=LAYOUT, vocab_paths=write_vocab(root / "v"),
                           label_names=["a", "b", "c"])


def edit_config(fn):
    def damage(p):
        d = json.loads((p / "config.json").read_text())
        fn(d)
        (p / "config.json").write_text(json.dumps(d))
    return damage


def record_digest(p):
    """config.json records the weights file's new SHA-256: the folder is consistent again."""
    digest = hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()
    edit_config(lambda d: d["gpt1_fast"]["files"].update({"model.safetensors": digest}))(p)


def tamper(fn):
    """Change the tensors AND record the new file's SHA-256: a consistent folder with wrong contents."""
    def damage(p):
        from safetensors.torch import load_file, save_file

        sd = load_file(str(p / "model.safetensors"))
        fn(sd)
        save_file(sd, str(p / "model.safetensors"), {"format": "pt"})
        record_digest(p)
    return damage


def truncate(p):
    (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-64])
    record_digest(p)


def flip_a_byte(p):
    b = bytearray((p / "model.safetensors").read_bytes())
    b[-5] ^= 0x40
    (p / "model.safetensors").write_bytes(bytes(b))


def pad_rows(sd):
    sd[f"{HF_HEAD}.weight"][5, 0] = 1.0


def section(**kw):
    return edit_config(lambda d: d["gpt1_fast"].update(kw))


DAMAGE = {
    "empty folder": (lambda p: [f.unlink() for f in p.iterdir()], r"no model here; expected a model folder"),
    "bad json": (lambda p: (p / "config.json").write_text("{'n_embd': 32"), r"config\.json: not valid JSON"),
    "json list": (lambda p: (p / "config.json").write_text("[1, 2]"), r"config\.json: expected a JSON object, found list"),
    "other json": (lambda p: (p / "config.json").write_text('{"foo": 1}'),
                   r"config\.json: not a model's config\.json \(expected model_type 'openai-gpt'"),
    "newer version": (section(version=2), r"gpt1_fast section of format 'gpt1_fast-model-folder' version 2; this code "
                                          r"reads 'gpt1_fast-model-folder' version 1"),
    "layout": (edit_config(lambda d: d["gpt1_fast"]["layout"].pop("n_vocab")),
               r"config\.json: the embedding layout is damaged \(KeyError"),
    "layout edited": (edit_config(lambda d: d["gpt1_fast"]["layout"].update(size=99)),
                      r"embedding layout is damaged .*size 99 does not match"),
    "hf key edited": (edit_config(lambda d: d.update(vocab_size=99)),
                      r"config\.json: vocab_size is 99 but its gpt1_fast section says 43"),
    "n_head": (edit_config(lambda d: (d.update(n_head=5), d["gpt1_fast"]["model"].update(n_head=5))),
               r"config\.json: n_head 5 does not divide n_embd 32"),
    "head type": (edit_config(lambda d: d["gpt1_fast"]["head"].update(type=["classification", 0])),
                  r"the task head's description is damaged .*expected 'multiple_choice'"),
    "labels": (section(label_names="abc"), r"label_names must be a list, found str"),
    "clf token": (edit_config(lambda d: d["gpt1_fast"]["head"].update(clf_token=LAYOUT.start)),
                  r"config\.json: the head reads token 40, but the layout's _classify_ token is 42"),
    "dropout": (edit_config(lambda d: d["gpt1_fast"]["model"].update(clf_pdrop=1.5)),
                r"clf_pdrop must be a probability in \[0, 1\), found 1\.5"),
    "weights gone": (lambda p: (p / "model.safetensors").unlink(),
                     r"model\.safetensors: not found \(config\.json describes a model whose weights are missing\)"),
    "flipped byte": (flip_a_byte, r"model\.safetensors: its SHA-256 differs from the one config\.json records"),
    "truncated": (truncate, r"model\.safetensors: not a readable safetensors file"),
    "head missing": (tamper(lambda sd: sd.pop(f"{HF_HEAD}.weight")),
                     r"the classification head's tensors multiple_choice_head\.summary\.weight and .* not found"),
    "head shape": (tamper(lambda sd: sd.update({f"{HF_HEAD}.weight": sd[f"{HF_HEAD}.weight"][:3]})),
                   r"expected weight \(32, 32\) and bias \(32,\) for a classification head with 3 output\(s\), found "
                   r"\(3, 32\)"),
    "padding rows": (tamper(pad_rows), r"rows 3\.\. of the padded head must have weight 0 and bias -10000"),
    "layer missing": (tamper(lambda sd: sd.pop("transformer.h.1.mlp.c_fc.weight")),
                      r"tensor 'h\.1\.mlp\.c_fc\.weight' not found"),
    "transposed": (tamper(lambda sd: sd.update({"transformer.h.0.mlp.c_fc.weight":
                                                sd["transformer.h.0.mlp.c_fc.weight"].t().contiguous()})),
                   r"transformer\.h\.0\.mlp\.c_fc\.w: the model .*config\.json describes expects \(32, 128\), the "
                   r"file has \(128, 32\)"),
    "extra layer": (tamper(lambda sd: sd.update({k.replace("h.1.", "h.2."): v.clone() for k, v in list(sd.items())
                                                 if ".h.1." in k})),
                    r"tensors missing \[\], unexpected \['transformer\.h\.2\.attn\.c_attn\.b'"),
    "positions": (tamper(lambda sd: sd.update({"transformer.positions_embed.weight":
                                               sd["transformer.positions_embed.weight"][:8]})),
                  r"transformer\.embed\.weight: the model .* expects \(59, 32\), the file has \(51, 32\)"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_folder_is_one_line_naming_the_file(original, tmp_path, case):
    damage, match = DAMAGE[case]
    path = shutil.copytree(original, tmp_path / "m")
    damage(path)
    with pytest.raises(CheckpointError, match=match) as e:
        load_pretrained(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_the_vocabulary_changed_or_gone_is_said_when_it_is_needed(original, tmp_path):
    path = shutil.copytree(original, tmp_path / "m")
    (path / "merges.txt").write_text("#version: 0.2\nq r\n")
    info = read_config(path)
    assert info.vocab is None
    with pytest.raises(CheckpointError, match=r"merges\.txt: changed since the model was saved \(config\.json records"):
        info.require_vocab()
    load_pretrained(path)  # the weights do not need it
    (path / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match=r"vocab\.json: missing"):
        read_config(path).require_vocab()


@pytest.mark.parametrize("content,match", [
    (b"not a torch file", r"damaged or not a torch checkpoint"),
    ({"format": "something-else", "model": {}}, r"not a gpt1_fast checkpoint \(expected the format 'gpt1_fast-checkpoint'"
                                                r" of checkpoints/step_N\.pt or 'gpt1_fast-model' of best_params\.pt, "
                                                r"found 'something-else'\)"),
    ([1, 2, 3], r"not a gpt1_fast checkpoint .* found None"),
    ({"format": "gpt1_fast-model", "version": 7, "config": {}, "state_dict": {}}, r"unsupported gpt1_fast-model version 7"),
    ({"format": "gpt1_fast-checkpoint", "version": 1, "fingerprint": {}},
     r"a checkpoint without the model's tensors or its fingerprint"),
])
def test_a_bad_pt_file_is_one_line(tmp_path, content, match):
    f = tmp_path / "step_000000002.pt"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        torch.save(content, f)
    with pytest.raises(CheckpointError, match=match) as e:
        read_config(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_a_pickle_that_runs_code_is_refused_not_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "gpt1_fast-model", "x": Boom()}, tmp_path / "best_params.pt")
    with pytest.raises(CheckpointError, match=r"best_params\.pt: damaged or not a torch checkpoint"):
        read_config(tmp_path / "best_params.pt")


def test_a_path_that_is_not_there(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope: not found; expected a model folder .* the original release's "
                                              r"model/ folder .* a \.pt file"):
        read_config(tmp_path / "nope")
