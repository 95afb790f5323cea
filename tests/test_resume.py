"""Exact resume (gpt1_fast.resume): a pretraining killed with SIGKILL at a random moment, or in the
middle of writing a checkpoint, resumes to bit-identical final parameters; damaged and mismatched
checkpoints are one-line errors; only the newest `keep` checkpoints stay."""
import json
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("spacy")
pytest.importorskip("ftfy")

sys.path.insert(0, str(Path(__file__).parent))
import pretrain_helpers as h  # noqa: E402

from gpt1_fast import pretrain  # noqa: E402
from gpt1_fast.folder import load_pretrained  # noqa: E402
from gpt1_fast.cli import UsageError  # noqa: E402
from gpt1_fast.resume import CheckpointDir, ResumeError, rng_state, set_rng_state  # noqa: E402

STEPS = 24


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    corpus = h.write_corpus(d / "corpus")
    enc, bpe = h.learn_vocab(corpus, d / "vocab")
    w = {"dir": d, "data": [str(corpus / "texts"), str(corpus / "more.jsonl")], "enc": enc, "bpe": bpe,
         "data_dir": str(d / "tokens")}
    # The uninterrupted reference (dropout on: the RNG states matter). Epochs are 38 updates: 24 stay in one.
    pretrain.main(args(w, d / "reference"))
    return w


def args(work, out, *extra, steps=STEPS, save_every=3):
    return ["--data", *work["data"], "--out", str(out), "--encoder_path", work["enc"], "--bpe_path", work["bpe"],
            "--tokens_dir", work["data_dir"], "--val_fraction", "0.1", "--workers", "1", "--lr", "3e-3",
            "--max_steps", str(steps), "--save_every", str(save_every), *h.TINY, *map(str, extra)]


def assert_same_weights(a, b):
    wa, wb = h.read_weights(a), h.read_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), f"{k} differs (max {np.abs(wa[k] - wb[k]).max()})"


def wait_for(cond, proc, timeout=120):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"run ended before the kill: {proc.stderr.read()[-2000:]}"
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(work, tmp_path):
    out = tmp_path / "run"
    ckpts = CheckpointDir(out / "checkpoints")
    # Each checkpoint write sleeps 50 ms so the run lasts long enough to be killed at a random moment.
    proc = h.popen_pretrain(args(work, out, save_every=1), slow_checkpoints=0.05)
    wait_for(lambda: ckpts.latest() is not None, proc)
    time.sleep(random.uniform(0, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(ckpts.latest().name[5:-3])
    assert 1 <= killed_at < STEPS
    r = pretrain.main(args(work, out, "--resume", save_every=1))
    assert r["steps"] == STEPS
    assert_same_weights(out, work["dir"] / "reference")
    # The log holds each update once, as the uninterrupted run's.
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in recs if "loss" in x]
    assert steps == list(range(2, STEPS + 1, 2))
    ref = [json.loads(x) for x in (work["dir"] / "reference" / "log.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in recs if "loss" in x] == [x["loss"] for x in ref if "loss" in x]


def test_kill_during_a_checkpoint_write_leaves_the_previous_one(work, tmp_path):
    out = tmp_path / "run"
    folder = out / "checkpoints"
    ckpts = CheckpointDir(folder)
    proc = h.popen_pretrain(args(work, out), slow_checkpoints=1.5)
    wait_for(lambda: ckpts.latest() is not None, proc)  # step 3 complete
    wait_for(lambda: any(p.name.endswith(".tmp") for p in folder.iterdir()), proc)  # step 6 being written
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for _, p in ckpts.list()] == ["step_000000003.pt"]
    assert any(p.name.endswith(".tmp") for p in folder.iterdir())  # the half-written file, never renamed
    assert ckpts.load()["step"] == 3
    pretrain.main(args(work, out, "--resume"))
    assert_same_weights(out, work["dir"] / "reference")
    assert not any(p.name.endswith(".tmp") for p in folder.iterdir())


def test_damaged_or_mismatched_checkpoints_are_clear_errors(work, tmp_path):
    out = tmp_path / "run"
    pretrain.main(args(work, out, steps=6))
    ckpts = CheckpointDir(out / "checkpoints")
    latest = ckpts.latest()
    # Without --resume: no silent restart over an existing run.
    with pytest.raises(UsageError, match="holds the checkpoints of an earlier run .*--resume"):
        pretrain.main(args(work, out, steps=6))
    # Math arguments differ: named, one line.
    r = h.run_pretrain(args(work, out, "--resume", "--lr", "1e-3", steps=6))
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and last.startswith("error: ") and "lr: checkpoint 0.003, this run 0.001" in last
    assert "Traceback" not in r.stderr
    # Runtime arguments may differ (micro-batching, logging).
    pretrain.main(args(work, out, "--resume", "--micro_batch", 4, "--log_every", 3, steps=6))
    # Damaged: truncated file.
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ResumeError, match=r"step_000000006.pt: damaged checkpoint, cannot be read .*older ones: .*step_000000003.pt"):
        pretrain.main(args(work, out, "--resume", steps=6))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing written or deleted
    # The previous one can be named explicitly.
    prev = ckpts.list()[0][1]
    r = pretrain.main(args(work, out, "--resume", str(prev), steps=6))
    assert r["steps"] == 6
    latest.write_bytes(b"not a checkpoint")
    with pytest.raises(ResumeError, match="damaged"):
        ckpts.load(latest)
    with pytest.raises(ResumeError, match="no checkpoint"):
        CheckpointDir(tmp_path / "empty").load()


def test_a_finished_run_trains_on_when_max_steps_is_raised(work, tmp_path):
    """--max_steps raised on --resume: the updates done stay, the schedule stretches to the new total
    from there (the run then differs from an uninterrupted one of the new length after the warm-up)."""
    out = tmp_path / "run"
    pretrain.main(args(work, out, steps=6))
    r = pretrain.main(args(work, out, "--resume", steps=9))
    assert r["steps"] == 9 and r["total_steps"] == 9
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs if "loss" in x] == [2, 4, 6, 8, 9]
    t = 8  # the lr logged at update 8 (t = 7 updates done) follows the new total: cosine over 9 - 4 updates
    lr = next(x["lr"] for x in recs if x.get("step") == t and "lr" in x)
    assert lr == pytest.approx(3e-3 * 0.5 * (1 + np.cos(np.pi * (t - 1 - 4) / (9 - 4))), rel=1e-9)


def test_checkpoint_dir_keeps_the_newest_and_drops_a_replaced_future(tmp_path):
    ck = CheckpointDir(tmp_path, keep=2)
    fp = {"lr": 1.0}
    for s in (1, 2, 3, 4):
        ck.save(s, {"x": torch.tensor([s])}, fp)
    assert [s for s, _ in ck.list()] == [3, 4]
    ck.save(2, {"x": torch.tensor([2])}, fp)  # resumed from an older one: its later ones are gone
    assert [s for s, _ in ck.list()] == [2]
    c = ck.load(fingerprint=fp)
    assert c["step"] == 2 and c["x"].item() == 2 and c["fingerprint"] == fp
    with pytest.raises(ResumeError, match="lr: checkpoint 1.0, this run 2.0"):
        ck.load(fingerprint={"lr": 2.0})
    one = CheckpointDir(tmp_path / "one", keep=1)
    for s in (5, 6):
        one.save(s, {}, fp)
    assert [s for s, _ in one.list()] == [6]


def test_rng_states_round_trip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


# -------------------------------------------------------------------------------------- fine-tuning
@pytest.fixture(scope="module")
def roc(tmp_path_factory):
    from fixtures_tasks import story_cloze_with_vocab

    d = tmp_path_factory.mktemp("roc")
    story_cloze_with_vocab(d, n=80, n_test=20, seed=3, merges=150)
    return d


def finetune_args(roc, out, *extra):
    return ["--data_dir", str(roc / "data"), "--from_scratch", "--encoder_path", str(roc / "enc.json"),
            "--bpe_path", str(roc / "merges.bpe"), "--cache_dir", str(roc / "cache"), "--n_valid", "20",
            "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--device", "cpu", "--backend", "torch",
            "--n_batch", "8", "--n_iter", "2", "--log_dir", str(out / "log"), "--save_dir", str(out / "save"),
            "--submission_dir", str(out / "sub"), "--submit", "--save_every", "1", *map(str, extra)]


def finetune_outputs(out):
    log = [{k: v for k, v in json.loads(x).items() if k != "time"}
           for x in (out / "log" / "rocstories.jsonl").read_text().splitlines()[1:]]
    best = load_pretrained(out / "save" / "rocstories" / "model")[0].state_dict()
    return log, best, (out / "sub" / "ROCStories.tsv").read_text()


@pytest.fixture
def one_thread():
    """Bitwise equality holds for the same thread count: the killed run is a subprocess with
    OMP_NUM_THREADS=1, so the in-process reference and resumed runs use one thread too."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_finetuning_killed_mid_epoch_resumes_to_the_same_parameters_and_submission(roc, tmp_path, one_thread):
    from gpt1_fast import train

    train.main(finetune_args(roc, tmp_path / "ref"))  # 60 training stories / 8 = 7 updates per epoch
    out = tmp_path / "run"
    folder = CheckpointDir(out / "save" / "rocstories" / "checkpoints")
    proc = h.popen_pretrain(finetune_args(roc, out), module="gpt1_fast.train", slow_checkpoints=0.3)
    wait_for(lambda: folder.latest() is not None and int(folder.latest().name[5:-3]) >= 2, proc)
    time.sleep(random.uniform(0, 0.25))  # each checkpoint write takes 0.3 s: at most one more
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step = int(folder.latest().name[5:-3])
    assert 2 <= step <= 4  # mid-epoch: the first epoch has 7 updates
    with pytest.raises(UsageError, match="has checkpoints .*step_.*--resume"):  # refused before anything is written
        train.main(finetune_args(roc, out))
    with pytest.raises(ResumeError, match="lr: checkpoint 6.25e-05, this run 0.001"):
        train.main(finetune_args(roc, out, "--resume", "--lr", "1e-3"))
    train.main(finetune_args(roc, out, "--resume"))
    (log_a, best_a, sub_a), (log_b, best_b, sub_b) = finetune_outputs(tmp_path / "ref"), finetune_outputs(out)
    assert log_a == log_b and sub_a == sub_b
    assert best_a.keys() == best_b.keys() and all(torch.equal(best_a[k], best_b[k]) for k in best_a)


@pytest.mark.timeout(600)
def test_two_gloo_ranks_resumed_with_dropout_equal_the_uninterrupted_two_rank_run(work, tmp_path):
    """Under DDP each process restores its own RNG states (dropout masks differ per rank): a 2-rank run
    stopped at update 2 and resumed to 4 (inside the warm-up, where the total does not change the
    learning rate) equals the uninterrupted 2-rank run of 4 updates, with dropout on."""
    import socket
    import subprocess

    def launch(out, *extra):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                    "127.0.0.1", "--master_port", str(port)]
        cmd = h.pretrain_cmd(args(work, out, "--warmup_steps", 100, *extra, steps=4), launcher=launcher)
        r = subprocess.run(cmd, cwd=h.REPO, env=h.env(), capture_output=True, text=True, timeout=500)
        assert r.returncode == 0, r.stderr[-3000:]

    launch(tmp_path / "whole")
    launch(tmp_path / "resumed", "--max_steps", 2)
    launch(tmp_path / "resumed", "--resume")
    ck = torch.load(CheckpointDir(tmp_path / "resumed" / "checkpoints").latest(), weights_only=True)
    assert len(ck["rng"]) == 2 and not torch.equal(ck["rng"][0]["torch"], ck["rng"][1]["torch"])
    assert_same_weights(tmp_path / "resumed", tmp_path / "whole")
