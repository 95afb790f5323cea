"""`python -m gpt1_fast.pretrain` on a small generated corpus with a tiny model (CPU): the paper's
schedule, the windows, the loss falling, gradient accumulation and DDP equal to one process, the
output folder loading in train / generate / export_hf / transformers, and the plot command."""
import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("spacy")
pytest.importorskip("ftfy")

sys.path.insert(0, str(Path(__file__).parent))
import pretrain_helpers as h  # noqa: E402

from gpt1_fast import pretrain  # noqa: E402
from gpt1_fast import pretraining  # noqa: E402
from gpt1_fast.opt import OpenAIAdam, lr_at, warmup_then_cosine  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("pretrain")
    corpus = h.write_corpus(d / "corpus")
    enc, bpe = h.learn_vocab(corpus, d / "vocab")
    return {"dir": d, "data": [str(corpus / "texts"), str(corpus / "more.jsonl")], "enc": enc, "bpe": bpe,
            "data_dir": str(d / "tokens")}


def base_args(work, out, *extra):
    return ["--data", *work["data"], "--out", str(out), "--encoder_path", work["enc"], "--bpe_path", work["bpe"],
            "--tokens_dir", work["data_dir"], "--val_fraction", "0.1", "--workers", "1", *h.TINY, *map(str, extra)]


def records(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


# -------------------------------------------------------------------------------------- schedule
def paper_schedule(t, W, T):
    """Linear from 0 over W updates, then cosine from 1 to 0 at update T (t = updates done)."""
    return t / W if t < W else 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))


def test_schedule_is_the_papers_formula():
    W, T = 2000, 10000
    want = {0: 0.0, 1: 1 / 2000, 1000: 0.5, 1999: 1999 / 2000, 2000: 1.0, 4000: 0.5 * (1 + math.cos(math.pi / 4)),
            6000: 0.5, 8000: 0.5 * (1 + math.cos(3 * math.pi / 4)), 10000: 0.0}
    for t, f in want.items():
        assert warmup_then_cosine(t / T, W / T) == pytest.approx(f, abs=1e-12), t
        assert paper_schedule(t, W, T) == pytest.approx(f, abs=1e-12), t
    assert warmup_then_cosine(0.5, 0) == pytest.approx(0.5)  # no warmup: pure cosine
    assert warmup_then_cosine(0.5, 2.0) == pytest.approx(0.25)  # the run ends inside the warm-up
    # The optimizer applies it (lr_at: the step size with Adam's bias correction).
    p = torch.nn.Parameter(torch.zeros(3))
    opt = OpenAIAdam([p], lr=2.5e-4, schedule="warmup_then_cosine", warmup=W / T, t_total=T, fused=False)
    assert lr_at(opt.param_groups[0], 7000) == pytest.approx(
        2.5e-4 * 0.5 * (1 + math.cos(math.pi * 5 / 8)) * math.sqrt(1 - 0.999 ** 7001) / (1 - 0.9 ** 7001), rel=1e-12)


def test_training_loop_uses_the_schedule_per_update(work, tmp_path):
    out = tmp_path / "run"
    pretrain.main(base_args(work, out, "--max_steps", 12, "--log_every", 1, "--warmup_steps", 4, "--save_every", 0))
    lrs = {r["step"]: r["lr"] for r in records(out) if "lr" in r}
    assert sorted(lrs) == list(range(1, 13))
    for step, lr in lrs.items():  # the line of update `step` logs the lr that update used (t = step - 1)
        assert lr == pytest.approx(2.5e-4 * paper_schedule(step - 1, 4, 12), rel=1e-12), step
    assert lrs[1] == 0.0 and lrs[5] == pytest.approx(2.5e-4)


# --------------------------------------------------------------------------------------- windows
def test_windows_cover_an_epoch_once_and_predict_every_position():
    tokens = np.arange(1000, dtype=np.uint16)
    s = pretraining.WindowSampler(len(tokens), 16, 8, seed=3)
    assert s.n_windows == (1000 - 16) // 16 and s.steps_per_epoch == s.n_windows // 8
    starts = np.concatenate([s.starts(i) for i in range(s.steps_per_epoch)])
    shift = starts.min() % 16
    assert len(set(starts.tolist())) == len(starts) and set((starts - shift) % 16) == {0}  # non-overlapping
    assert starts.max() + 17 <= 1000  # every window has n_ctx + 1 tokens
    assert not np.array_equal(starts[:8], np.sort(starts[:8]))  # random order
    # A new epoch: new shift/order; the same step always gives the same windows (a pure function).
    e1 = np.concatenate([s.starts(s.steps_per_epoch + i) for i in range(s.steps_per_epoch)])
    assert not np.array_equal(np.sort(e1), np.sort(starts)) or not np.array_equal(e1, starts)
    assert np.array_equal(pretraining.WindowSampler(1000, 16, 8, seed=3).starts(5), s.starts(5))
    x, y = pretraining.windows(tokens, [0, 100], 16, "cpu")
    assert x.shape == y.shape == (2, 16)
    assert torch.equal(x[1], torch.arange(100, 116)) and torch.equal(y[1], torch.arange(101, 117))
    v = pretraining.val_starts(200, 16, 0)
    assert v.tolist() == [16 * k for k in range(12)]
    assert pretraining.val_starts(1000, 16, 4).tolist() == [0, 16 * 20, 16 * 41, 16 * 61]
    with pytest.raises(ValueError, match="fewer than one batch"):
        pretraining.WindowSampler(100, 16, 8, seed=0)
    with pytest.raises(ValueError, match="val_fraction"):
        pretraining.val_starts(16, 16, 0)


def test_lm_loss_is_next_token_cross_entropy_over_the_token_rows():
    """LMModel(input_ids, targets): the mean cross-entropy of every position's next token, the softmax
    over the token rows of the table (not the position rows)."""
    from gpt1_fast.config import GPTConfig
    from gpt1_fast.model import LMModel

    torch.manual_seed(0)
    n_vocab, n_ctx = 30, 8
    lm = LMModel(GPTConfig(n_embd=16, n_head=2, n_layer=1, backend="torch"), n_vocab + n_ctx, n_ctx).eval()
    x, y = torch.randint(0, n_vocab, (2, 5)), torch.randint(0, n_vocab, (2, 5))
    logits = lm(input_ids=x)  # [2, 5, n_vocab + n_ctx]
    want = torch.nn.functional.cross_entropy(logits[..., :n_vocab].reshape(-1, n_vocab), y.reshape(-1))
    got = lm(input_ids=x, targets=y)["loss"]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    whole_table = torch.nn.functional.cross_entropy(logits.reshape(-1, n_vocab + n_ctx), y.reshape(-1))
    assert (got - whole_table).abs() > 1e-4  # the position rows are outside the softmax


# ------------------------------------------------------------------------------------- a real run
def test_tiny_model_pretrains_and_validation_loss_falls(work, tmp_path):
    out = tmp_path / "run"
    r = pretrain.main(base_args(work, out, "--max_steps", 40, "--lr", 5e-3, "--save_every", 20))
    recs = records(out)
    val = [x for x in recs if "val_loss" in x]
    assert [x["step"] for x in val] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert val[-1]["val_loss"] < val[0]["val_loss"] - 0.5, val  # learns the patterned corpus
    assert all(x["val_ppl"] == pytest.approx(math.exp(x["val_loss"])) for x in val)
    train = [x for x in recs if "loss" in x]
    assert train[-1]["loss"] < train[0]["loss"] and all(x["tokens_per_s"] > 0 for x in train)
    assert train[-1]["tokens"] == 40 * 8 * 16
    assert recs[0]["kind"] == "pretrain" and recs[0]["total_steps"] == 40
    assert r["val_loss"] == val[-1]["val_loss"]
    for f in ("model/config.json", "model/model.safetensors", "model/vocab.json", "model/merges.txt", "loss.png",
              "log.jsonl"):
        assert (out / f).is_file(), f
    assert (out / "model" / "vocab.json").read_bytes() == Path(work["enc"]).read_bytes()  # copied: self-contained
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["model_type"] == "openai-gpt" and cfg["n_positions"] == 16 and cfg["n_embd"] == 32
    g = cfg["gpt1_fast"]
    assert g["layout"]["specials"] == [] and g["layout"]["n_ctx"] == 16 and g["extra"]["steps"] == 40
    assert g["model"]["n_layer"] == 1 and g["head"] is None and r["model"] == str(out / "model")
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_epochs_set_the_number_of_updates(work, tmp_path):
    r = pretrain.main(base_args(work, tmp_path / "run", "--epochs", 0.5, "--save_every", 0))
    spe = records(tmp_path / "run")[0]["steps_per_epoch"]
    assert r["total_steps"] == math.ceil(0.5 * spe) and r["steps"] == r["total_steps"]


def test_gradient_accumulation_equals_the_full_batch(work, tmp_path):
    nodrop = ["--embd_pdrop", 0, "--attn_pdrop", 0, "--resid_pdrop", 0, "--max_steps", 6, "--save_every", 0]
    pretrain.main(base_args(work, tmp_path / "full", *nodrop))
    pretrain.main(base_args(work, tmp_path / "acc", *nodrop, "--micro_batch", 2))
    a, b = h.read_weights(tmp_path / "full"), h.read_weights(tmp_path / "acc")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=2e-6, err_msg=k)
    # The logged loss is the batch mean either way (Adam alone would hide a gradient scale).
    la, lb = ([r["loss"] for r in records(tmp_path / d) if "loss" in r] for d in ("full", "acc"))
    np.testing.assert_allclose(la, lb, rtol=1e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_ddp_two_gloo_ranks_equal_one_process(work, tmp_path):
    nodrop = ["--embd_pdrop", 0, "--attn_pdrop", 0, "--resid_pdrop", 0, "--max_steps", 4, "--save_every", 2]
    pretrain.main(base_args(work, tmp_path / "one", *nodrop))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", str(_free_port())]
    cmd = h.pretrain_cmd(base_args(work, tmp_path / "two", *nodrop), launcher=launcher)
    r = subprocess.run(cmd, cwd=h.REPO, env=h.env(), capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert records(tmp_path / "two")[0]["world"] == 2
    a, b = h.read_weights(tmp_path / "one"), h.read_weights(tmp_path / "two")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=2e-6, err_msg=k)
    # Both ranks' RNG states are in the checkpoint (dropout masks resume per process).
    ck = torch.load(sorted((tmp_path / "two" / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    assert len(ck["rng"]) == 2 and not torch.equal(ck["rng"][0]["torch"], ck["rng"][1]["torch"])


# ------------------------------------------------------------------------ the output folder's users
@pytest.fixture(scope="module")
def pretrained(work, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt") / "run"
    pretrain.main(base_args(work, out, "--max_steps", 6, "--save_every", 0, "--n_ctx", 32))
    return out


def test_output_folder_loads_in_transformers_and_export_hf(pretrained, tmp_path):
    transformers = pytest.importorskip("transformers")
    from gpt1_fast.folder import export_hf, load_pretrained

    ours, info = load_pretrained(pretrained, backend="torch")  # the run folder: its model/
    n_vocab = info.layout.n_vocab
    ids = torch.randint(0, n_vocab, (2, 20))
    with torch.no_grad():
        want = ours(input_ids=ids)
    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(pretrained / "model").eval()
    with torch.no_grad():
        got = hf(ids).logits
    # HF's LM head covers the token rows; ours the whole table (positions too, as the original).
    assert torch.allclose(got, want[..., :n_vocab], atol=1e-4)
    again = export_hf(ours, tmp_path / "hf")
    hf2 = transformers.OpenAIGPTLMHeadModel.from_pretrained(again).eval()
    with torch.no_grad():
        assert torch.allclose(hf2(ids).logits, got, atol=1e-5)


def test_output_folder_fine_tunes_in_train_and_samples_in_generate(pretrained, tmp_path):
    from gpt1_fast import generate, synthetic, train

    synthetic.write_rocstories(tmp_path / "data", n=60, n_test=20, seed=1)
    res = train.main(["--data_dir", str(tmp_path / "data"), "--model_dir", str(pretrained),  # no shape flags
                      "--device", "cpu", "--backend", "torch",
                      "--n_batch", "8", "--n_iter", "1", "--n_valid", "20", "--cache_dir", "none",
                      "--log_dir", str(tmp_path / "log"), "--save_dir", str(tmp_path / "save"),
                      "--submission_dir", str(tmp_path / "sub"), "--submit"])
    assert res["n_updates"] == 5 and Path(res["submission"]).is_file()
    texts = generate.main(["--model_dir", str(pretrained), "--prompt", "the cat sat", "--gen_len", "5",
                           "--device", "cpu", "--backend", "torch"])
    assert len(texts) == 1 and texts[0]


# ------------------------------------------------------------------ errors (the plots: tests/test_plot.py)
def test_bad_arguments_are_one_line_errors(work, tmp_path, capsys):
    for extra, want in [(("--micro_batch", 3), "error: argument --micro_batch: 3 must divide the per-process batch 8"),
                        (("--merges", 100, "--init_from", "model/"), "error: argument --merges: it learns a new "
                                                                     "vocabulary")]:
        with pytest.raises(SystemExit) as e:
            pretrain.cli(base_args(work, tmp_path / "a", *extra))
        assert e.value.code == 2 and capsys.readouterr().err.startswith(want)
        assert not (tmp_path / "a").exists()  # nothing written
    r = h.run_pretrain(base_args(work, tmp_path / "c", "--n_batch", 4096))
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: the training split has")
    assert "Traceback" not in r.stderr


def test_merges_learns_the_vocabulary_from_the_corpus(work, tmp_path):
    from gpt1_fast.corpus import read_documents
    from gpt1_fast.text import learn_bpe

    out = tmp_path / "run"
    args = ["--data", *work["data"], "--out", str(out), "--merges", "60", "--val_fraction", "0.1", "--workers", "1",
            "--max_steps", "2", "--save_every", "0", *h.TINY]
    pretrain.main(args)
    learn_bpe(list(read_documents(work["data"])), 60, tmp_path / "e.json", tmp_path / "m.bpe")
    assert (out / "vocab.json").read_bytes() == (tmp_path / "e.json").read_bytes()
    assert (out / "merges.txt").read_bytes() == (tmp_path / "m.bpe").read_bytes()
    meta = json.loads((out / "data" / "train.json").read_text())
    assert meta["n_vocab"] == len(json.loads((out / "vocab.json").read_text()))


def test_init_from_starts_at_the_given_weights(work, pretrained, tmp_path):
    out = tmp_path / "cont"
    pretrain.main(["--data", *work["data"], "--out", str(out), "--init_from", str(pretrained), "--tokens_dir",
                   str(tmp_path / "tok"), "--val_fraction", "0.1", "--workers", "1", *h.TINY, "--n_ctx", "32",
                   "--max_steps", "1", "--lr", "0", "--save_every", "0"])  # lr 0: one update that moves nothing
    a, b = h.read_weights(pretrained), h.read_weights(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (out / "model" / "vocab.json").read_bytes() == (pretrained / "model" / "vocab.json").read_bytes()


def test_help_names_the_command_and_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        pretrain.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "python -m gpt1_fast.pretrain" in text
    for action in pretrain.build_parser()._actions:
        assert action.help, action.dest  # every flag explained
