"""One model folder through the whole lifecycle, as a new user runs it, tiny model on the CPU:
pretrain on ONE text file -> fine-tune from its folder without a shape flag -> predict on a new file ->
generate from the fine-tuned folder -> transformers loads it with the same task logits; each stage's
output is the next one's input. (Kills and exact resume of each stage: tests/test_resume.py.)"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

pytest.importorskip("spacy")
pytest.importorskip("ftfy")

from fixtures_tasks import write_fixture  # noqa: E402
from gpt1_fast import generate, predict, pretrain, train  # noqa: E402
from gpt1_fast.folder import load_pretrained, read_config  # noqa: E402
from gpt1_fast.text import learn_bpe  # noqa: E402

SHAPE = ["--n_layer", "1", "--n_embd", "32", "--n_head", "2"]
RUN = ["--device", "cpu", "--backend", "torch"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    d = tmp_path_factory.mktemp("life")
    glue = write_fixture("sst-2", d / "SST-2", n_rows=48, seed=0, n_eval=16)
    texts = [line.split("\t")[0] for line in (glue / "train.tsv").read_text().splitlines()[1:]]
    rng = random.Random(0)
    book = "\n\n".join(" ".join(rng.sample(texts, 4)) for _ in range(120))  # one file, paragraphs
    (d / "book.txt").write_text(book, encoding="utf-8")
    learn_bpe([book], 150, d / "vocab" / "enc.json", d / "vocab" / "merges.bpe")
    vocab = ["--encoder_path", str(d / "vocab" / "enc.json"), "--bpe_path", str(d / "vocab" / "merges.bpe")]
    pre = pretrain.main(["--data", str(d / "book.txt"), "--out", str(d / "pre"), *vocab, *SHAPE, *RUN,
                         "--n_ctx", "32", "--n_batch", "4", "--max_steps", "6", "--warmup_steps", "2",
                         "--eval_every", "3", "--save_every", "3", "--workers", "1", "--val_fraction", "0.1"])
    ft = train.main(["--dataset", "sst-2", "--data_dir", str(glue), "--model_dir", str(d / "pre"), *RUN,
                     "--runs_dir", str(d / "runs"), "--n_batch", "8", "--n_iter", "2", "--n_valid", "8",
                     "--cache_dir", "none", "--submit"])
    return d, glue, pre, ft


def test_pretraining_on_one_text_file_writes_a_model_folder(stages):
    d, _, pre, _ = stages
    info = read_config(d / "pre")  # the run folder: its model/
    assert info.kind == "folder" and info.head is None and (info.cfg.n_embd, info.cfg.n_layer) == (32, 1)
    meta = json.loads((d / "pre" / "data" / "val.json").read_text())
    assert meta["documents"] == 12 and pre["steps"] == 6  # 10 % of the 120 paragraphs held out


def test_fine_tuning_takes_the_shapes_from_the_folder(stages):
    d, _, _, ft = stages
    info = read_config(d / "runs" / "sst-2" / "model")
    assert info.head is not None and info.task == "sst-2" and (info.cfg.n_embd, info.cfg.n_head) == (32, 2)
    assert info.layout.n_vocab == read_config(d / "pre").layout.n_vocab
    cfg = json.loads((d / "runs" / "sst-2" / "config.json").read_text())
    assert cfg["args"]["n_embd"] == 32 and cfg["args"]["n_layer"] == 1  # resolved from the folder, logged
    with pytest.raises(SystemExit):  # a contradicting shape flag: one line naming both
        train.cli(["--dataset", "sst-2", "--data_dir", str(stages[1]), "--model_dir", str(d / "pre"), *RUN,
                   "--n_embd", "64", "--runs_dir", str(d / "other")])
    assert not (d / "other").exists()


def test_predict_on_new_files_and_on_a_split(stages, tmp_path, capsys):
    d, glue, _, _ = stages
    model = d / "runs" / "sst-2" / "model"
    dev = [line.split("\t") for line in (glue / "dev.tsv").read_text().splitlines()[1:]]
    (tmp_path / "new.txt").write_text("\n".join(t for t, _ in dev) + "\n")
    (tmp_path / "new.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in dev))
    plain = predict.main(["--model_dir", str(model), "--data", str(tmp_path / "new.txt"), *RUN,
                          "--predictions", str(tmp_path / "p.tsv")])
    labelled = predict.main(["--model_dir", str(model), "--data", str(tmp_path / "new.jsonl"), *RUN,
                             "--predictions", str(tmp_path / "q.tsv")])
    split = predict.main(["--model_dir", str(d / "runs" / "sst-2"), "--data_dir", str(glue), "--split", "dev", *RUN,
                          "--predictions", str(tmp_path / "r.tsv")])
    native = predict.main(["--model_dir", str(model), "--data", str(glue / "dev.tsv"), *RUN,
                           "--predictions", str(tmp_path / "s.tsv")])
    assert plain["scores"] == {} and labelled["scores"] == split["scores"] == native["scores"]
    assert np.array_equal(plain["predictions"], labelled["predictions"])
    assert np.array_equal(plain["predictions"], split["predictions"])
    out = capsys.readouterr().out
    assert f"SST-2 dev Accuracy: {split['scores']['SST-2']['accuracy']:.2f}" in out
    # the run's own prediction file of the dev split, written by train --submit with the same model
    kept = (d / "runs" / "sst-2" / "predictions" / "SST-2.dev.tsv").read_text()
    assert (tmp_path / "r.tsv").read_text() == kept


def test_predict_cuts_long_inputs_as_training_did_and_says_so(stages, tmp_path, capsys):
    d, _, _, _ = stages
    (tmp_path / "long.txt").write_text(" ".join(["the film was good ."] * 60) + "\nthe film was bad .\n")
    predict.main(["--model_dir", str(d / "runs" / "sst-2" / "model"), "--data", str(tmp_path / "long.txt"), *RUN])
    captured = capsys.readouterr()
    assert "note: 1 of 2 examples are longer than the model's context" in captured.err
    assert captured.out.splitlines()[0] == "index\tprediction" and len(captured.out.splitlines()) == 3


def test_generate_from_the_fine_tuned_folder(stages):
    d = stages[0]
    texts = generate.main(["--model_dir", str(d / "runs" / "sst-2" / "model"), "--prompt", "the film",
                           "--gen_len", "4", "--greedy", *RUN])
    assert len(texts) == 1 and texts[0] and "_start_" not in texts[0] and "</w>" not in texts[0]


def test_transformers_loads_the_fine_tuned_folder_with_the_same_task_logits(stages):
    transformers = pytest.importorskip("transformers")
    d = stages[0]
    folder = d / "runs" / "sst-2" / "model"
    ours, info = load_pretrained(folder, backend="torch")
    hf = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(folder).eval()
    L = info.layout
    ids = torch.tensor([[L.start, 5, 9, 14, L.clf], [L.start, 7, L.clf, 0, 0]])
    X = torch.stack([ids, torch.arange(L.pos_offset, L.pos_offset + 5).expand(2, 5)], -1)[:, None]
    with torch.no_grad():
        want = ours.task_logits(X)
        mc = (ids == L.clf).int().argmax(-1)
        got = hf(input_ids=ids, mc_token_ids=mc).mc_logits[:, :2]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_resumed_pretraining_inside_its_warmup_equals_the_uninterrupted_run(stages, tmp_path):
    """--max_steps raised on --resume: inside the warm-up (lr = t / W whatever the total) the run goes
    on exactly as one that had asked for the larger total from the start."""
    d = stages[0]
    common = ["--data", str(d / "book.txt"), "--encoder_path", str(d / "vocab" / "enc.json"), "--bpe_path",
              str(d / "vocab" / "merges.bpe"), *SHAPE, *RUN, "--n_ctx", "32", "--n_batch", "4",
              "--warmup_steps", "100", "--save_every", "2", "--workers", "1", "--val_fraction", "0.1"]
    pretrain.main(common + ["--out", str(tmp_path / "a"), "--max_steps", "4"])
    pretrain.main(common + ["--out", str(tmp_path / "b"), "--max_steps", "2"])
    pretrain.main(common + ["--out", str(tmp_path / "b"), "--max_steps", "4", "--resume"])
    a, _ = load_pretrained(tmp_path / "a")
    b, _ = load_pretrained(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
