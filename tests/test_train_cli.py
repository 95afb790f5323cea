"""`python -m gpt1_fast.train` end to end on small synthetic Story Cloze files (CPU, tiny model, from
scratch): exit status, log, submission, printed accuracies; bad inputs give clear errors."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("spacy")
pytest.importorskip("ftfy")

from gpt1_fast import generate, synthetic, train  # noqa: E402
from gpt1_fast.checkpoint import load_model  # noqa: E402
from gpt1_fast.errors import CheckpointError, DataError  # noqa: E402
from gpt1_fast.tasks import rocstories  # noqa: E402
from gpt1_fast.text import learn_bpe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL = Path(__file__).resolve().parents[2] / "shared" / "openai-gpt"
TINY = ["--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--device", "cpu", "--backend", "torch"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("roc")
    synthetic.write_rocstories(d / "data", n=120, n_test=50, seed=7)
    val = rocstories.read_csv(d / "data" / rocstories.VAL_FILE)
    learn_bpe(val.stories + val.endings1 + val.endings2, 300, d / "vocab" / "enc.json", d / "vocab" / "merges.bpe")
    return d


def common(work, data_dir=None):
    return ["--data_dir", str(data_dir or work / "data"), "--from_scratch", "--encoder_path",
            str(work / "vocab" / "enc.json"), "--bpe_path", str(work / "vocab" / "merges.bpe"),
            "--cache_dir", str(work / "cache"), "--n_valid", "40", "--runs_dir", str(work / "runs"),
            "--overwrite"] + TINY


def test_end_to_end_cli(work):
    out = work / "run"
    cmd = [sys.executable, "-m", "gpt1_fast.train", *common(work), "--n_batch", "16", "--n_iter", "2",
           "--desc", "e2e", "--log_dir", str(out / "log"), "--save_dir", str(out / "save"),
           "--submission_dir", str(out / "submission"), "--submit", "--analysis"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    # Log: the arguments, then one line per epoch (80 training stories / 16 = 5 updates per epoch).
    lines = [json.loads(x) for x in (out / "log" / "e2e.jsonl").read_text().splitlines()]
    assert lines[0]["desc"] == "e2e" and lines[0]["n_batch"] == 16 and lines[0]["lm_coef"] == 0.5
    assert [(x["n_epochs"], x["n_updates"]) for x in lines[1:]] == [(1, 5), (2, 10)]
    for x in lines[1:]:
        assert 0 <= x["tr_acc"] <= 100 and 0 <= x["va_acc"] <= 100 and x["tr_cost"] > 0 and x["va_cost"] > 0
        # Accuracies are counts out of 40 stories.
        assert abs(x["va_acc"] * 40 / 100 - round(x["va_acc"] * 40 / 100)) < 1e-6

    # Submission: header + one prediction per test story, 0 or 1.
    rows = list(csv.reader(open(out / "submission" / "ROCStories.tsv"), delimiter="\t"))
    assert rows[0] == ["index", "prediction"]
    assert [int(r[0]) for r in rows[1:]] == list(range(50)) and {r[1] for r in rows[1:]} <= {"0", "1"}

    # Printed accuracies agree with the log (best valid) and with the submission vs the test labels.
    m_va = re.search(r"^ROCStories Valid Accuracy: (\d+\.\d\d)$", r.stdout, re.M)
    m_te = re.search(r"^ROCStories Test Accuracy:  (\d+\.\d\d)$", r.stdout, re.M)
    assert m_va and m_te, r.stdout
    assert float(m_va.group(1)) == pytest.approx(max(x["va_acc"] for x in lines[1:]), abs=0.005)
    labels = rocstories.read_csv(work / "data" / rocstories.TEST_FILE).labels
    preds = np.array([int(r[1]) for r in rows[1:]])
    assert float(m_te.group(1)) == pytest.approx((preds == labels).mean() * 100, abs=0.005)
    # Per-evaluation lines: the log's keys and values.
    assert re.search(r"^n_epochs=1 n_updates=5 tr_cost=\d+\.\d{3} va_cost=\d+\.\d{3} tr_acc=\d+\.\d\d "
                     r"va_acc=\d+\.\d\d$", r.stdout, re.M)

    # The best parameters and their config drive the sampler.
    best = out / "save" / "e2e" / "best_params.pt"
    assert best.is_file() and (best.parent / "config.json").is_file()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    texts = generate.main(["--checkpoint", str(best), "--prompt", "Anna wanted a new bike.", "--gen_len", "6",
                           "--device", "cpu", "--backend", "torch"])
    assert len(texts) == 1 and texts[0] and "</w>" not in texts[0]


def test_cli_reports_bad_data_without_traceback(work, tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpt1_fast.train", *common(work, tmp_path / "nothing")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert rocstories.VAL_FILE in r.stderr and "rochester.edu/nlp/rocstories" in r.stderr


def broken_copy(work, tmp_path, edit):
    d = tmp_path / "bad"
    d.mkdir()
    for name in (rocstories.VAL_FILE, rocstories.TEST_FILE):
        (d / name).write_bytes((work / "data" / name).read_bytes())
    rows = list(csv.reader(open(d / rocstories.VAL_FILE, encoding="utf-8")))
    edit(rows)
    with open(d / rocstories.VAL_FILE, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return d


def test_malformed_row_in_training_file(work, tmp_path):
    d = broken_copy(work, tmp_path, lambda rows: rows[10].pop())
    with pytest.raises(DataError, match=re.escape(rocstories.VAL_FILE) + r":11: expected 8 columns"):
        train.main(common(work, d))


def test_bad_label_in_training_file(work, tmp_path):
    def edit(rows):
        rows[4][7] = "0"

    d = broken_copy(work, tmp_path, edit)
    with pytest.raises(DataError, match=r":5: AnswerRightEnding must be 1 or 2, found '0'"):
        train.main(common(work, d))


def test_missing_checkpoint_says_how_to_get_one(work, tmp_path):
    args = [a for a in common(work) if a != "--from_scratch"] + ["--model_dir", str(tmp_path)]
    with pytest.raises(CheckpointError, match="finetune-transformer-lm.*--from_scratch"):
        train.main(args)


def test_every_flag_has_help():
    parser = train.build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    seed_flags = ("dataset desc data_dir log_dir save_dir submission_dir submit analysis seed n_iter n_batch "
                  "max_grad_norm lr lr_warmup n_ctx n_embd n_head n_layer embd_pdrop attn_pdrop resid_pdrop "
                  "clf_pdrop l2 vector_l2 opt afn lr_schedule encoder_path bpe_path n_transfer lm_coef b1 b2 e "
                  "n_valid model_dir from_scratch device backend dtype compile").split()
    assert {f"--{f}" for f in seed_flags} <= flags
    assert all(a.help for a in parser._actions)
    d = parser.parse_args([])
    assert (d.seed, d.n_iter, d.n_batch, d.lr, d.lr_warmup, d.n_ctx, d.l2, d.lm_coef, d.n_valid, d.e) == \
        (42, 3, 64, 6.25e-5, 0.002, 512, 0.01, 0.5, 374, 1e-8)


def test_real_vocabulary_from_scratch(tmp_path):
    """Real-format folder with the release's 40478-token vocabulary, tiny model, one epoch."""
    enc, bpe = REAL / "encoder_bpe_40000.json", REAL / "vocab_40000.bpe"
    if not (enc.is_file() and bpe.is_file()):
        pytest.skip(f"real GPT-1 vocabulary not found in {REAL}")
    synthetic.write_rocstories(tmp_path / "data", n=24, n_test=8, seed=3)
    res = train.main(["--data_dir", str(tmp_path / "data"), "--from_scratch", "--encoder_path", str(enc),
                      "--bpe_path", str(bpe), "--cache_dir", "none", "--n_valid", "8", "--n_batch", "8",
                      "--n_iter", "1", "--n_embd", "16", "--log_dir", str(tmp_path / "log"),
                      "--save_dir", str(tmp_path / "save"), "--submission_dir", str(tmp_path / "sub"),
                      "--submit", "--analysis"] + TINY[:2] + TINY[6:] + ["--n_head", "2"])
    assert res["n_updates"] == 2 and 0 <= res["test_acc"] <= 100
    meta = json.loads((tmp_path / "save" / "rocstories" / "config.json").read_text())
    assert meta["layout"]["n_vocab"] == 40478 and meta["layout"]["size"] == 40478 + 3 + res["n_ctx"]


def test_cached_encoding_needs_no_spacy(work, tmp_path, monkeypatch):
    """With the encoded files cached, training runs where spaCy/ftfy are missing (the GPU machine)."""
    from gpt1_fast import text

    args = common(work) + ["--n_batch", "40", "--n_iter", "1", "--log_dir", str(tmp_path)]
    train.main(args)  # fills (or reuses) the cache

    def no_deps():
        raise ImportError("no spaCy here")

    monkeypatch.setattr(text, "_require_text_deps", no_deps)
    assert train.main(args)["n_updates"] == 2
    with pytest.raises(ImportError):  # a cache miss does need them
        train.main(common(work) + ["--n_batch", "40", "--n_iter", "1", "--log_dir", str(tmp_path),
                                   "--cache_dir", "none"])


def test_torchrun_ddp_matches_single_process(work, tmp_path):
    """2 CPU processes (gloo) x 8 stories = one process x 16: same updates without dropout."""
    z = common(work) + ["--n_batch", "16", "--n_iter", "1", "--lr", "1e-3", "--embd_pdrop", "0", "--attn_pdrop", "0",
                        "--resid_pdrop", "0", "--clf_pdrop", "0"]
    train.main(z + ["--log_dir", str(tmp_path / "single")])  # also fills the cache for the ranks
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "gpt1_fast.train", *z, "--log_dir", str(tmp_path / "ddp")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    single, ddp = ([json.loads(x) for x in (tmp_path / d / "rocstories.jsonl").read_text().splitlines()[1:]]
                   for d in ("single", "ddp"))
    assert len(single) == len(ddp) == 1 and single[0]["n_updates"] == ddp[0]["n_updates"] == 5
    for k in ("tr_cost", "va_cost"):
        assert ddp[0][k] == pytest.approx(single[0][k], rel=1e-5)


def fake_release(path, n_vocab, n_embd=32, n_layer=1, n_pos=64, seed=0):
    """A release-format model/ folder (params_shapes.json + params_0..9.npy) for a tiny model."""
    rng = np.random.RandomState(seed)
    shapes = [[n_pos, n_embd], [n_vocab, n_embd]]
    for _ in range(n_layer):
        shapes += [[1, n_embd, 3 * n_embd], [3 * n_embd], [1, n_embd, n_embd], [n_embd], [n_embd], [n_embd],
                   [1, n_embd, 4 * n_embd], [4 * n_embd], [1, 4 * n_embd, n_embd], [n_embd], [n_embd], [n_embd]]
    flat = (rng.randn(sum(int(np.prod(s)) for s in shapes)) * 0.02).astype(np.float32)
    path.mkdir(parents=True)
    (path / "params_shapes.json").write_text(json.dumps(shapes))
    for i, part in enumerate(np.array_split(flat, 10)):
        np.save(path / f"params_{i}.npy", part)
    return flat


def test_pretrained_path_train_and_generate(work, tmp_path):
    """Without --from_scratch: the checkpoint in --model_dir is loaded (n_ctx positions, 3 specials)."""
    n_vocab = len(json.loads((work / "vocab" / "enc.json").read_text(encoding="utf-8")))
    flat = fake_release(tmp_path / "model", n_vocab)
    args = [a for a in common(work) if a != "--from_scratch"] + [
        "--model_dir", str(tmp_path / "model"), "--n_batch", "40", "--n_iter", "1", "--lr", "0",
        "--log_dir", str(tmp_path / "log"), "--save_dir", str(tmp_path / "save"),
        "--submission_dir", str(tmp_path / "sub"), "--submit"]
    res = train.main(args)
    sd = load_model(tmp_path / "save" / "rocstories" / "best_params.pt")[1]
    we = sd["transformer.embed.weight"].numpy()
    assert we.shape == (n_vocab + 3 + res["n_ctx"], 32)
    pos, tok = flat[:64 * 32].reshape(64, 32), flat[64 * 32:64 * 32 + n_vocab * 32].reshape(n_vocab, 32)
    np.testing.assert_array_equal(we[:n_vocab], tok)
    np.testing.assert_array_equal(we[n_vocab + 3:], pos[:res["n_ctx"]])
    out = generate.main(["--model_dir", str(tmp_path / "model"), "--encoder_path", str(work / "vocab" / "enc.json"),
                         "--bpe_path", str(work / "vocab" / "merges.bpe"), "--n_ctx", "64", "--n_embd", "32",
                         "--n_head", "2", "--n_layer", "1", "--prompt", "Ben saw a kite.", "--gen_len", "4",
                         "--device", "cpu"])
    assert len(out) == 1 and out[0]


def test_demo_pipeline_smoke(tmp_path, capsys):
    """`make demo`'s code path on a tiny synthetic set (extra arguments go to gpt1_fast.train; the
    last occurrence of a flag wins, so these shrink the run)."""
    from gpt1_fast import demo

    threads_before = torch.get_num_threads()
    res = demo.main(["--out", str(tmp_path / "demo"), "--mode", "scratch", "--n_stories", "60", "--n_merges", "80",
                     "--n_iter", "1", "--n_valid", "20", "--n_batch", "20", "--n_layer", "1", "--n_embd", "16"])
    out = capsys.readouterr().out
    assert "DEMO FROM SCRATCH" in out and "ROCStories Test Accuracy:" in out
    assert res["n_updates"] == 2 and (tmp_path / "demo" / "runs" / "demo" / "submission" / "ROCStories.tsv").is_file()
    assert torch.get_num_threads() == threads_before


def test_activation_checkpointing_flag_same_run(work, tmp_path, monkeypatch):
    """--activation_checkpointing recomputes the blocks in backward (checkpoint is called once per
    block and training step): the same evaluations as without."""
    import torch.utils.checkpoint as ckpt_mod

    calls = []
    real = ckpt_mod.checkpoint
    monkeypatch.setattr(ckpt_mod, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = common(work) + ["--n_batch", "40", "--n_iter", "1"]
    plain = train.main(args + ["--log_dir", str(tmp_path / "a")])
    assert not calls
    ckpt = train.main(args + ["--log_dir", str(tmp_path / "b"), "--activation_checkpointing"])
    assert len(calls) == ckpt["n_updates"] * 1  # TINY: one block
    assert plain["history"] == ckpt["history"] and plain["history"]
