"""The task layer: every family's input transform (hand-worked ids), per-batch padding (exact), the
fine-tuning objective (mask, shift, lm_coef), the kept parameters (scripted scores), the loop state."""
import json
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt1_fast.config import GPTConfig
from gpt1_fast.layout import EmbeddingLayout
from gpt1_fast.model import DoubleHeadModel
from gpt1_fast.opt import OpenAIAdam
from gpt1_fast.tasks import classification, entailment, multiple_choice, rocstories, similarity
from gpt1_fast.tasks.readers import DATASETS
from gpt1_fast.tasks.common import Encoded, batch_width, make_batch
from gpt1_fast.tasks.task import DatasetTask, TaskData
from gpt1_fast.folder import load_pretrained
from gpt1_fast.runfolder import RunPaths  # noqa: E402
from gpt1_fast.tasks.submission import analysis  # noqa: E402
from gpt1_fast.tasks.trainer import TrainConfig, Trainer
from fixtures_tasks import CountingEncoder
from roc_helpers import transform_roc

# tokens 0..9 | _start_ 10, _delimiter_ 11, _classify_ 12 | positions from 13
LAYOUT = EmbeddingLayout(10, n_ctx=12)
S, D, C = 10, 11, 12


def test_classification_transform():
    assert classification.transform({"text": [[1, 2, 3], [4]]}, LAYOUT) == [[[S, 1, 2, 3, C]], [[S, 4, C]]]
    # cut to n_ctx - 2 tokens so that start + text + clf fit
    assert classification.transform({"text": [list(range(1, 10)) * 2]}, LAYOUT.with_n_ctx(6)) == \
        [[[S, 1, 2, 3, 4, C]]]


def test_entailment_transform():
    got = entailment.transform({"premise": [[1, 2]], "hypothesis": [[3]]}, LAYOUT)
    assert got == [[[S, 1, 2, D, 3, C]]]
    # each text cut to n_ctx // 2 - 2 = 4 tokens
    got = entailment.transform({"premise": [[1, 2, 3, 4, 5, 6]], "hypothesis": [[7, 8, 9, 1, 2]]}, LAYOUT)
    assert got == [[[S, 1, 2, 3, 4, D, 7, 8, 9, 1, C]]]


def test_similarity_transform_has_both_orders():
    got = similarity.transform({"text_a": [[1, 2]], "text_b": [[3]]}, LAYOUT)
    assert got == [[[S, 1, 2, D, 3, C], [S, 3, D, 1, 2, C]]]


def test_multiple_choice_transform():
    got = multiple_choice.transform({"context": [[1, 2, 3]], "choices": [[[4], [5, 6]]]}, LAYOUT)
    assert got == [[[S, 1, 2, 3, D, 4, C], [S, 1, 2, 3, D, 5, 6, C]]]
    # RACE: a long context keeps its end, as much as fits beside the longest answer: one window for all
    ctx = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    got = multiple_choice.transform({"context": [ctx], "choices": [[[4, 5], [6]]]}, LAYOUT.with_n_ctx(10))
    assert got == [[[S, 5, 6, 7, 8, 9, D, 4, 5, C], [S, 5, 6, 7, 8, 9, D, 6, C]]]
    # ROCStories (the original): story and ending each cut to their first n_ctx // 2 - 2 tokens
    got = multiple_choice.transform({"context": [ctx], "choices": [[[4, 5, 6, 7, 8]]]}, LAYOUT.with_n_ctx(10),
                                    keep_context_end=False)
    assert got == [[[S, 1, 2, 3, D, 4, 5, 6, C]]]


def test_rocstories_transform_equals_the_release_arrays():
    x1 = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 1], [1, 2]]
    x2, x3 = [[1, 2], [1, 2, 3, 4, 5, 6, 7]], [[2], [2, 3]]
    X, M = transform_roc(x1, x2, x3, 9, 4, start=S, delimiter=D, clf_token=C, pos_offset=13)
    seqs = multiple_choice.transform({"context": x1, "choices": list(zip(x2, x3))}, EmbeddingLayout(10, n_ctx=12),
                                     keep_context_end=False)
    enc = Encoded.from_sequences(seqs, np.zeros(2, dtype=np.int64), ["0", "1"], 9)
    Xb, Mb, _ = make_batch(enc, [0, 1], EmbeddingLayout(10, n_ctx=9), "cpu", padding="global")
    assert torch.equal(Xb, torch.from_numpy(X)) and torch.equal(Mb, torch.from_numpy(M))


def test_batch_width_and_positions():
    seqs = [[[S, 1, C]], [[S, 1, 2, 3, 4, 5, 6, 7, 8, C]]]
    enc = Encoded.from_sequences(seqs, np.array([0, 1]), ["a", "b"], 12)
    X, M, Y = make_batch(enc, [0], LAYOUT, "cpu")
    assert X.shape == (1, 1, 8, 2)  # 3 tokens, rounded up to a multiple of 8
    assert X[0, 0, :, 0].tolist() == [S, 1, C, 0, 0, 0, 0, 0] and X[0, 0, :, 1].tolist() == list(range(13, 21))
    assert M[0, 0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0] and Y.tolist() == [0]
    assert batch_width(enc.lengths[[0, 1]], 12) == 12  # capped at n_ctx
    assert make_batch(enc, [0], LAYOUT, "cpu", padding="global")[0].shape == (1, 1, 12, 2)
    widths = {batch_width(np.array([t]), 512, "pow2") for t in range(1, 513)}
    assert widths == {8, 16, 32, 64, 128, 256, 512}
    assert [batch_width(np.array([t]), 300, "pow2") for t in (3, 9, 17, 257)] == [8, 16, 32, 300]
    assert [batch_width(np.array([t]), 300, "batch") for t in (3, 9, 16, 297)] == [8, 16, 16, 300]


# ------------------------------------------------------------------------------------------- model
def tiny_model(head, lm_coef=0.5, layout=LAYOUT, seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(n_embd=16, n_head=2, n_layer=1, embd_pdrop=0, attn_pdrop=0, resid_pdrop=0, clf_pdrop=0,
                    backend="torch")
    return DoubleHeadModel(cfg, layout.clf, head, layout.size, layout.n_ctx, lm_coef=lm_coef)


def random_batch(n_seq=2, B=3, gen=None, lengths=None):
    gen = gen or torch.Generator().manual_seed(1)
    seqs = []
    for b in range(B):
        ex = []
        for s in range(n_seq):
            n = lengths[b][s] if lengths else int(torch.randint(1, 9, (1,), generator=gen))
            ex.append([S] + torch.randint(0, 10, (n,), generator=gen).tolist() + [C])
        seqs.append(ex)
    return Encoded.from_sequences(seqs, np.arange(B) % 2, [str(i) for i in range(B)], LAYOUT.n_ctx)


@pytest.mark.parametrize("padding", ["batch", "pow2"])
@pytest.mark.parametrize("head,n_seq", [(("classification", 3), 1), ("multiple_choice", 3),
                                        (("similarity", 2), 2), ("similarity", 2)])
def test_padding_more_changes_nothing(head, n_seq, padding):
    model = tiny_model(head)
    enc = random_batch(n_seq)
    if head == "similarity":
        enc.labels = np.array([0.5, 3.0, 4.5], dtype=np.float32)
    short = make_batch(enc, [0, 1, 2], LAYOUT, "cpu", padding=padding)
    full = make_batch(enc, [0, 1, 2], LAYOUT, "cpu", padding="global")
    assert short[0].size(-2) < full[0].size(-2)
    a, b = model(*short), model(*full)
    for k in ("loss", "task_losses", "lm_losses", "task_logits"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def reference_lm_losses(model, X, M):
    """SPEC §4 written out token by token: position t predicts token t+1, weighted by M[t+1]."""
    T = X.size(-2)
    lm_logits = model(X)[0].view(-1, T - 1, LAYOUT.size)
    x, m = X[..., 0].reshape(-1, T), M.reshape(-1, T)
    out = []
    for i in range(x.size(0)):
        terms = [F.cross_entropy(lm_logits[i, t], x[i, t + 1]) * m[i, t + 1] for t in range(T - 1)]
        out.append(torch.stack(terms).sum() / m[i, 1:].sum())
    return torch.stack(out)


def test_lm_loss_is_shifted_and_masked():
    model = tiny_model("multiple_choice").eval()
    X, M, Y = make_batch(random_batch(3), [0, 1, 2], LAYOUT, "cpu", padding="global")
    out = model(X, M, Y)
    torch.testing.assert_close(out["lm_losses"], reference_lm_losses(model, X, M))
    # tokens after a sequence's end (mask 0) do not count
    X2 = X.clone()
    X2[..., 0][M == 0] = 7
    torch.testing.assert_close(model(X2, M, Y)["lm_losses"], out["lm_losses"])
    assert not torch.allclose(model(X2, torch.ones_like(M), Y)["lm_losses"], out["lm_losses"])


@pytest.mark.parametrize("lm_coef", [0.0, 0.5, 2.0])
def test_objective_weights_the_lm_loss(lm_coef):
    model = tiny_model("multiple_choice", lm_coef=lm_coef).eval()
    X, M, Y = make_batch(random_batch(3), [0, 1, 2], LAYOUT, "cpu")
    out = model(X, M, Y)
    task = F.cross_entropy(model(X)[1], Y, reduction="none")
    torch.testing.assert_close(out["task_losses"], task)
    want = task.mean() + lm_coef * reference_lm_losses(model, X, M).mean()
    torch.testing.assert_close(out["loss"], want)
    assert (out["lm_losses"] is None) == (lm_coef == 0)


def test_regression_head_uses_squared_error():
    model = tiny_model("similarity").eval()
    enc = random_batch(2)
    enc.labels = np.array([0.5, 3.0, 4.5], dtype=np.float32)
    X, M, Y = make_batch(enc, [0, 1, 2], LAYOUT, "cpu")
    out = model(X, M, Y)
    torch.testing.assert_close(out["task_losses"], (model(X)[1] - Y) ** 2)


# ----------------------------------------------------------------------------------------- trainer
def fake_task_data(n_train=32):
    task = DatasetTask(DATASETS["sst-2"])
    gen = torch.Generator().manual_seed(2)
    splits = {}
    for name, n in (("train", n_train), ("dev", 8), ("test", 6)):
        enc = random_batch(1, B=n, gen=gen)
        enc.labels = None if name == "test" else np.arange(n) % 2
        splits[name] = enc
    return task, TaskData(LAYOUT, splits)


def make_trainer(tmp_path, n_iter=3, submit=True, **kw):
    """A Trainer that keeps its best model in a model folder, as the train command's."""
    from gpt1_fast.sources import Source
    from gpt1_fast.train import BestModel

    task, data = fake_task_data()
    model = tiny_model(task.head_type)
    opt = OpenAIAdam(model.parameters(), lr=1e-2, t_total=n_iter * 4, max_grad_norm=1)
    cfg = TrainConfig(n_iter=n_iter, n_batch=8, n_valid=8, **kw)
    paths = RunPaths("t", tmp_path / "runs", tmp_path / "log", tmp_path / "save", tmp_path / "sub")
    vocab = (tmp_path / "enc.json", tmp_path / "merges.bpe")
    tmp_path.mkdir(parents=True, exist_ok=True)
    vocab[0].write_text(json.dumps({str(i): i for i in range(10)}))
    vocab[1].write_text("#version: 0.2\n")
    src = Source(info=None, cfg=None, vocab=tuple(map(str, vocab)), n_ctx=12)  # BestModel reads the vocabulary
    best = BestModel(paths.model, LAYOUT, task, src, {}) if submit else None
    trainer = Trainer(task, data, model, opt, cfg, on_best=best)
    trainer.paths = paths
    return trainer


def submit(trainer):
    from gpt1_fast.train import submit as write_predictions

    return write_predictions(trainer, trainer.paths)


def test_kept_parameters_are_those_of_the_best_validation_score(tmp_path, capsys):
    trainer = make_trainer(tmp_path, n_iter=4)
    scripted, snapshots = iter([50.0, 80.0, 60.0, 79.0]), []
    real_score = trainer.score

    def score(split, n=None):
        cost, metrics = real_score(split, n)
        if split == "dev":
            metrics = {"accuracy": next(scripted)}
            snapshots.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return cost, metrics

    trainer.score = score
    trainer.fit()
    assert [h["va_acc"] for h in trainer.history] == [50.0, 80.0, 60.0, 79.0] and trainer.best_score == 80.0
    saved = load_pretrained(trainer.paths.model)[0].state_dict()
    assert all(torch.equal(saved[k], snapshots[1][k]) for k in saved)
    assert not all(torch.equal(saved[k], snapshots[3][k]) for k in saved)  # training did move them
    submit(trainer)
    assert all(torch.equal(v, snapshots[1][k]) for k, v in trainer.model.state_dict().items())


def test_submission_files_and_analysis(tmp_path, capsys):
    trainer = make_trainer(tmp_path, n_iter=2)
    trainer.fit()
    written = submit(trainer)
    assert set(written) == {"dev", "test"}
    assert written["test"] == str(tmp_path / "sub" / "SST-2.tsv")  # test predictions alone in the submission folder
    assert written["dev"] == str(tmp_path / "save" / "t" / "predictions" / "SST-2.dev.tsv")
    lines = open(written["test"]).read().splitlines()
    assert lines[0] == "index\tprediction" and [l.split("\t")[0] for l in lines[1:]] == [str(i) for i in range(6)]
    assert {l.split("\t")[1] for l in lines[1:]} <= {"0", "1"}
    # the dev predictions of the kept parameters reproduce the best logged validation score
    dev = [int(l.split("\t")[1]) for l in open(written["dev"]).read().splitlines()[1:]]
    acc = 100 * np.mean(np.array(dev) == trainer.data["dev"].labels)
    out = analysis(trainer, written)
    assert out["valid_acc"] == pytest.approx(acc) == pytest.approx(max(h["va_acc"] for h in trainer.history))
    assert f"SST-2 Valid Accuracy: {acc:.2f}" in capsys.readouterr().out


def test_loop_state_round_trip(tmp_path):
    a = make_trainer(tmp_path / "a", n_iter=2, submit=False)
    a.fit()
    state = json.loads(json.dumps(a.state_dict()))  # JSON-serialisable
    b = make_trainer(tmp_path / "b", n_iter=2, submit=False)
    b.load_state_dict(state)
    assert (b.epoch, b.batch, b.n_updates, b.history) == (2, 0, 8, a.history)
    # 2 epochs over all 32 rows: every real token twice; computed positions = batches x 8 x their width
    assert a.tokens["real"] == 2 * a.data["train"].lengths.sum() and b.tokens == a.tokens
    assert a.tokens["padded"] >= a.tokens["real"]
    assert a.rng.randint(1 << 30) == b.rng.randint(1 << 30)
    assert b.best_score == a.best_score == max(h["va_acc"] for h in a.history)


def test_trainer_draws_one_permutation_per_epoch(tmp_path):
    trainer = make_trainer(tmp_path, n_iter=2, submit=False)
    seen = []
    trainer.train_step = lambda idx: seen.append(list(idx)) or torch.tensor(0.0)
    trainer.evaluate = lambda n_epochs: None
    trainer.fit()
    rng = np.random.RandomState(42)
    want = [p[b * 8:(b + 1) * 8].tolist() for p in (rng.permutation(32), rng.permutation(32)) for b in range(4)]
    assert seen == want and trainer.n_updates == 0  # (train_step replaced: nothing counted)


def test_train_cli_builds_the_objective_from_its_flags():
    from gpt1_fast import train

    args = train.build_parser().parse_args(["--lm_coef", "0.25", "--from_scratch", "--n_layer", "1", "--n_embd", "16",
                                            "--n_head", "2", "--backend", "torch"])
    model = train.build_model(args, DatasetTask(DATASETS["sst-2"]), LAYOUT, train.model_source(args))
    assert model.lm_coef == 0.25 and model.task_head.linear.out_features == 2
    assert model.transformer.embed.weight.shape == (LAYOUT.size, 16)


def test_evaluation_sorted_by_length_returns_the_split_order(tmp_path):
    trainer = make_trainer(tmp_path, submit=False, n_batch_eval=3)
    trainer.model.eval()
    one_by_one = torch.cat([trainer.model.task_logits(make_batch(trainer.data["dev"], [i], LAYOUT, "cpu")[0])
                            for i in range(8)])
    torch.testing.assert_close(trainer.logits("dev"), one_by_one, rtol=1e-5, atol=1e-6)


def test_lm_head_loss_reference():
    from gpt1_fast import ops

    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(6, 8, generator=g), torch.randn(20, 8, generator=g)
    t = torch.randint(0, 20, (6,), generator=g)
    mask = torch.tensor([1.0, 0, 1, 1, 0, 1])
    got = ops.lm_head_loss(h, w, t, mask, backend="torch")
    assert got.dtype == torch.float32 and got.shape == (6,)
    torch.testing.assert_close(got, F.cross_entropy(h @ w.T, t, reduction="none") * mask)
    assert (got[mask == 0] == 0).all() and (got[mask == 1] > 0).all()


def test_dataset_encoded_once_and_choices_regrouped(tmp_path):
    from fixtures_tasks import write_fixture
    from gpt1_fast.tasks import get_task
    from gpt1_fast.tasks.readers import read_split

    data = write_fixture("race", tmp_path / "race", n_rows=8, seed=0)
    task, enc = get_task("race"), CountingEncoder()
    first = task.load(data, enc, (), cache_dir=tmp_path / "cache")
    calls = enc.calls
    again = task.load(data, enc, (), cache_dir=tmp_path / "cache")
    assert enc.calls == calls  # every split from the cache
    assert all(np.array_equal(first.splits[k].tokens, again.splits[k].tokens) for k in first.splits)
    split = read_split("race", data, "dev")
    L = first.layout
    ex = first.splits["dev"]
    ids = lambda s: [enc.table[w] for w in s.split()]  # noqa: E731
    assert ex.tokens.shape[1] == 4 and ex.ids == split.ids
    for i, (context, question, answers) in enumerate(zip(*(split.fields[k] for k in ("context", "question", "choices")))):
        for k, answer in enumerate(answers):
            want = [L.start] + ids(context) + ids(question) + [L.delimiter] + ids(answer) + [L.clf]
            assert ex.tokens[i, k, :ex.lengths[i, k]].tolist() == want


def test_help_lists_every_dataset_and_its_files():
    from gpt1_fast import train

    parser = train.build_parser()
    text = parser.format_help()
    choices = next(a for a in parser._actions if "--dataset" in a.option_strings).choices
    assert set(choices) == {"rocstories", *DATASETS}
    for name, spec in DATASETS.items():
        line = next(x for x in text.splitlines() if x.strip().startswith(f"{name}:"))
        assert all(str(f) in line for f in spec.splits.values()) and spec.family in line
    assert rocstories.VAL_FILE in text and rocstories.TEST_FILE in text


def test_seed_import_line_and_generate_does_not_need_train():
    import subprocess
    import sys

    from gpt1_fast.model import DEFAULT_CONFIG, TransformerModel, load_openai_pretrained_model  # the port's line
    from gpt1_fast import weights

    assert load_openai_pretrained_model is weights.load_openai_pretrained_model
    assert TransformerModel(DEFAULT_CONFIG.replace(n_layer=1, n_embd=8, n_head=2), vocab=20, n_ctx=4)
    code = "import sys, gpt1_fast.generate; print('gpt1_fast.train' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
