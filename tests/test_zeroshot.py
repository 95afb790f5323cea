"""Zero-shot heuristics (gpt1_fast.zeroshot): the cached scorer against full recomputation, each
heuristic's decision on planted log-probabilities, the DPRD reader, and the whole command on a tiny
language model trained here to hold the planted preferences."""
import json

import numpy as np
import pytest
import torch

from gpt1_fast import zeroshot as zs
from gpt1_fast.config import GPTConfig
from gpt1_fast.errors import DataError
from gpt1_fast.model import LMModel
from gpt1_fast.tasks.readers import read_dprd

N_VOCAB, N_CTX = 30, 12


def tiny_lm(seed=0, n_ctx=N_CTX):
    torch.manual_seed(seed)
    cfg = GPTConfig(n_embd=32, n_head=4, n_layer=2, embd_pdrop=0, attn_pdrop=0, resid_pdrop=0, backend="torch")
    lm = LMModel(cfg, vocab=N_VOCAB + n_ctx, n_ctx=n_ctx).eval()
    with torch.no_grad():  # livelier than the N(0, 0.02) init, so that contexts matter
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return lm


def brute_force(lm, prefix, cont):
    """One sequence, no cache: log p of each continuation token over the text tokens (the last one is
    predicted, never fed)."""
    ids = torch.tensor([prefix + cont[:-1]])
    logp = torch.log_softmax(lm(input_ids=ids)[0, :, :N_VOCAB].double(), -1)
    return np.array([logp[len(prefix) - 1 + k, t].item() for k, t in enumerate(cont)])


# ----------------------------------------------------------------------------------------- scorer
def test_cached_scores_equal_full_recomputation():
    lm = tiny_lm()
    rng = np.random.default_rng(0)
    prefixes = [rng.integers(0, N_VOCAB, n).tolist() for n in (3, 1, 6, 2, 5)]
    conts = [[rng.integers(0, N_VOCAB, n).tolist() for n in ks] for ks in ([2, 1, 4], [3], [1, 1], [5, 2], [1])]
    got = zs.continuation_logprobs(lm, prefixes, conts, N_VOCAB, batch_size=2)
    for p, cs, g in zip(prefixes, conts, got):
        assert len(g) == len(cs)
        for c, lp in zip(cs, g):
            np.testing.assert_allclose(lp, brute_force(lm, p, c), rtol=0, atol=2e-5)
    # a prefix too long for n_ctx beside its continuation keeps its last tokens
    long = rng.integers(0, N_VOCAB, 20).tolist()
    lp = zs.continuation_logprobs(lm, [long], [[[1, 2, 3]]], N_VOCAB)[0][0]
    np.testing.assert_allclose(lp, brute_force(lm, long[-(N_CTX - 2):], [1, 2, 3]), rtol=0, atol=2e-5)


def test_each_prefix_runs_once_for_all_its_continuations(monkeypatch):
    lm = tiny_lm()
    fed = []
    forward = type(lm.transformer).forward

    def counting(self, *a, attention_mask=None, **kw):
        fed.append(int(attention_mask.sum()))
        return forward(self, *a, attention_mask=attention_mask, **kw)

    monkeypatch.setattr(type(lm.transformer), "forward", counting)
    prefixes = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]]
    conts = [[[1, 2], [3, 4, 5], [6], [7, 8]], [[9, 9, 9], [1]]]
    zs.continuation_logprobs(lm, prefixes, conts, N_VOCAB, batch_size=8)
    assert sum(fed) == 6 + 4 + sum(len(c) - 1 for cs in conts for c in cs)  # prefixes once, not per answer


def test_best_threshold_maximises_mcc_between_distinct_scores():
    scores = np.array([0.3, -1.0, 2.0, 0.9, -0.5, 0.9])
    labels = np.array([1, 0, 1, 1, 0, 0])
    t = zs.best_threshold(scores, labels)
    assert t == pytest.approx((0.3 - 0.5) / 2)  # {2.0, 0.9, 0.9, 0.3} above: MCC 0.707, the best cut
    assert zs.best_threshold(np.array([1.0, 2.0]), np.array([0, 0])) > 2.0  # all negative: above every score
    assert zs.best_threshold(np.array([1.0, 1.0, 3.0]), np.array([1, 0, 1])) == 2.0  # never between ties


# --------------------------------------------------------------------------- heuristics, planted
class Words:
    """encode: one id per word (a planted 'language model' reads the words back)."""

    def __init__(self):
        self.ids, self.words = {}, []

    def __call__(self, texts):
        out = []
        for t in texts:
            out.append([self.ids.setdefault(w, len(self.ids)) for w in t.split()])
            self.words += [w for w in self.ids if w not in self.words]
        return out

    def text(self, ids):
        return [self.words[i] for i in ids]


def planted(words, rule):
    """A scorer whose log p(token | context) = rule(context words, token word)."""
    def score(prefixes, conts):
        out = []
        for p, cs in zip(prefixes, conts):
            out.append([np.array([rule(words.text(p + c[:k]), words.text([t])[0]) for k, t in enumerate(c)])
                        for c in cs])
        return out
    return score


def test_sst2_compares_positive_and_negative_after_very():
    w = Words()
    rule = lambda ctx, t: 0.0 if (t == "positive") == ("good" in ctx) and ctx[-1] == "very" else -3.0  # noqa: E731
    acc = zs.sst2(planted(w, rule), w, ["a good film . ", "a bad film .", "so good"], np.array([1, 0, 1]))
    assert acc == 100.0
    flipped = lambda ctx, t: rule(ctx, {"positive": "negative", "negative": "positive"}[t])  # noqa: E731
    assert zs.sst2(planted(w, flipped), w, ["a good film .", "a bad film ."], np.array([1, 0])) == 0.0


def test_cola_threshold_comes_from_the_training_split():
    w = Words()
    rule = lambda ctx, t: -1.0 if t.startswith("ok") else -4.0  # noqa: E731
    train = (["ok1 ok2 ok3", "x bad bad", "ok1 ok4", "x bad"], np.array([1, 0, 1, 0]))
    dev = (["ok1 ok2", "x bad bad bad", "x ok2 bad"], np.array([1, 0, 0]))  # the last averages -2.5
    assert zs.cola(planted(w, rule), w, train, dev) == 100.0
    train = (["ok1 ok2 ok3", "x ok1 bad"], np.array([1, 1]))  # a threshold below -2.5 from train: all 1
    assert zs.cola(planted(w, rule), w, train, dev) == 0.0  # MCC 0 for constant predictions


def test_race_takes_the_highest_average_not_the_highest_sum():
    w = Words()
    rule = lambda ctx, t: {"red": -1.0, "very": -0.1, "long": -0.1, "answer": -0.1}.get(t, -2.0)  # noqa: E731
    fields = {"context": ["the ball was red ."], "question": ["what colour ?"],
              "choices": [["dog", "red", "very long wrong answer", "cat"]]}
    assert zs.race(planted(w, rule), w, fields, np.array([1]), n_ctx=64) == 0.0  # mean -0.55 beats -1.0
    rule2 = lambda ctx, t: -0.5 if t == "red" and "red" in ctx[:-1] else -2.0  # noqa: E731
    assert zs.race(planted(w, rule2), w, fields, np.array([1]), n_ctx=64) == 100.0


def test_dprd_scores_the_rest_of_the_sentence_after_each_candidate(tmp_path):
    f = tmp_path / "test.c.txt"
    f.write_text("The bee landed on the flower because it had pollen.\nit\nThe bee,the flower\nthe flower\n\n"
                 "The bee landed on the flower because it wanted pollen .\nit\nThe bee,the flower\nThe bee\n\n")
    s = read_dprd(f)
    assert s.fields["before"][0] == "The bee landed on the flower because " and s.fields["after"][0] == " had pollen."
    assert s.fields["candidates"][1] == ["The bee", "the flower"] and s.labels.tolist() == [1, 0]
    w = Words()

    def rule(ctx, t):  # "flower had", "bee wanted"
        return 0.0 if (ctx[-1], t) in {("flower", "had"), ("bee", "wanted")} else -2.0

    assert zs.dprd(planted(w, rule), w, s.fields, s.labels) == 100.0


# ----------------------------------------------------------------------------------- DPRD reader
@pytest.mark.parametrize("text,line,msg", [
    ("A b c.\nit\nA,B\n", 1, r"expected an example of 4 lines .* found 3 lines"),
    ("Tom saw Ann.\nhe\nTom\nTom\n\n", 3, r"expected two candidates separated by a comma, found 'Tom'"),
    ("Tom saw Ann.\nhe\nTom,Ann\nBob\n", 4, r"expected one of the candidates 'Tom' or 'Ann', found 'Bob'"),
    ("x\n\nTom saw Ann.\nhe\nTom,Ann\nTom\n", 1, r"expected an example of 4 lines"),
    ("Tom saw Ann; she ran.\nshe\nTom,Ann\nTom\n\nThe theme.\nhe\nThe,theme\nThe\n", 7,
     r"expected a pronoun that is a word of the sentence on line 6, found 'he'"),
])
def test_dprd_errors_name_file_and_line(tmp_path, text, line, msg):
    f = tmp_path / "train.c.txt"
    f.write_text(text)
    with pytest.raises(DataError, match=rf"train\.c\.txt:{line}: {msg}"):
        read_dprd(f)


def test_dprd_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: not found; expected DPRD's train\.c\.txt or test\.c\.txt"):
        read_dprd(tmp_path / "nope.txt")
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"e\.txt: expected at least one example, found none"):
        read_dprd(tmp_path / "e.txt")


# ------------------------------------------------------------------- the command, on a trained LM
SUBJECTS = ("the movie", "the film", "a story", "the plot")
POSITIVE, NEGATIVE = ("good", "great", "lovely"), ("bad", "awful", "dull")
THINGS, COLOURS, ANIMALS = ("ball", "kite", "car", "hat"), ("red", "blue", "green"), ("dog", "cat", "fish", "bird")
ORDERED = ("the dog ran to the park .", "a cat sat on the mat .", "the boy ate the bread .", "a bird sang in the tree .")
PAIRS = (("bee", "flower", "wanted", "had"), ("dog", "cat", "barked", "meowed"))  # "the bee wanted", "the flower had"


def corpus():
    lines = [f"{s} was {a} . very {'positive' if a in POSITIVE else 'negative'}"
             for s in SUBJECTS for a in POSITIVE + NEGATIVE]
    lines += list(ORDERED) * 3
    lines += [f"the {t} was {c} . what colour was the {t} ? {c}" for t in THINGS for c in COLOURS]
    lines += [f"the {a} {va} . the {b} {vb} ." for a, b, va, vb in PAIRS] * 3
    lines += [f"the {a} saw the {x} ." for x in ANIMALS for a in ("man", "boy")]
    return lines


def train_lm(encoder, n_vocab, n_ctx=32, steps=200):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is several times faster than two on a busy machine
    try:
        return _train(encoder, n_vocab, n_ctx, steps)
    finally:
        torch.set_num_threads(threads)


def _train(encoder, n_vocab, n_ctx, steps):
    torch.manual_seed(0)
    cfg = GPTConfig(n_embd=48, n_head=4, n_layer=2, embd_pdrop=0, attn_pdrop=0, resid_pdrop=0, backend="torch")
    lm = LMModel(cfg, n_vocab + n_ctx, n_ctx)
    seqs = encoder.encode(corpus())
    T = max(map(len, seqs))
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    opt = torch.optim.Adam(lm.parameters(), lr=5e-3)
    initial = {k: v.clone() for k, v in lm.state_dict().items()}
    for _ in range(steps):
        logits = lm(input_ids=ids)[:, :-1, :n_vocab]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, n_vocab), ids[:, 1:].reshape(-1), reduction="none")
        loss = (loss * mask[:, 1:].reshape(-1)).sum() / mask[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lm.eval(), cfg, initial, loss.item()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A gpt1_fast.pretrain-like output folder: the vocabulary, model/ (a model folder), two checkpoints
    that describe their model as pretrain's do."""
    pytest.importorskip("spacy")
    from gpt1_fast.folder import model_section, save_pretrained
    from gpt1_fast.layout import EmbeddingLayout
    from gpt1_fast.resume import CheckpointDir
    from gpt1_fast.text import TextEncoder, learn_bpe

    out = tmp_path_factory.mktemp("run")
    words = corpus() + ["positive negative very", "x1 ok2 bad"]
    learn_bpe(words * 2, 200, out / "vocab.json", out / "merges.txt")
    encoder = TextEncoder(out / "vocab.json", out / "merges.txt")
    n_vocab = len(encoder.encoder)
    lm, cfg, initial, loss = train_lm(encoder, n_vocab)
    assert loss < 1.0, loss
    layout, vocab = EmbeddingLayout(n_vocab, (), 32), (out / "vocab.json", out / "merges.txt")
    save_pretrained(lm, out / "model", layout=layout, vocab_paths=vocab)
    described = model_section(lm, layout=layout, vocab_paths=vocab)
    ckpts = CheckpointDir(out / "checkpoints", keep=5)
    ckpts.save(0, {"model": initial, "model_config": described}, {})
    ckpts.save(200, {"model": lm.state_dict(), "model_config": described}, {})
    return out


def write_data(root):
    sst = root / "SST-2"
    sst.mkdir()
    rows = [f"{s} was {a} . \t{int(a in POSITIVE)}" for s in SUBJECTS[::-1] for a in NEGATIVE + POSITIVE]
    (sst / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    cola = root / "CoLA"
    cola.mkdir()
    bad = [" ".join(s.split()[::-1][1:] + ["."]) for s in ORDERED]  # words reversed
    lines = [f"gj04\t1\t\t{s}" for s in ORDERED] + [f"gj04\t0\t*\t{s}" for s in bad]
    (cola / "train.tsv").write_text("\n".join(lines[::2] + lines[1::2]) + "\n")
    (cola / "dev.tsv").write_text("\n".join(lines) + "\n")
    race = root / "RACE" / "dev" / "middle"
    race.mkdir(parents=True)
    for k, (t, c) in enumerate(zip(THINGS, COLOURS * 2)):
        opts = list(ANIMALS[:3])
        opts.insert(k % 4, c)
        obj = {"article": f"the {t} was {c} . the boy saw the cat .", "questions": [f"what colour was the {t} ?"],
               "options": [opts], "answers": ["ABCD"[k % 4]], "id": f"middle{k}.txt"}
        (race / f"{k}.txt").write_text(json.dumps(obj))
    (root / "RACE" / "dev" / "high").mkdir()
    dprd = root / "DPRD"
    dprd.mkdir()
    blocks = []
    for a, b, va, vb in PAIRS:
        blocks += [f"The {a} met the {b} because it {vb} .\nit\nThe {a},the {b}\nthe {b}\n",
                   f"The {a} met the {b} because it {va} .\nit\nThe {a},the {b}\nThe {a}\n"]
    (dprd / "test.c.txt").write_text("\n".join(blocks))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("dataset,folder", [("sst-2", "SST-2"), ("cola", "CoLA"), ("race", "RACE"), ("dprd", "DPRD")])
def test_each_heuristic_finds_the_planted_preference(run, data, dataset, folder, capsys):
    recs = zs.main(["--model_dir", str(run), "--dataset", dataset, "--data_dir", str(data / folder),
                    "--device", "cpu", "--backend", "torch", "--n_batch_eval", "3"])
    assert len(recs) == 1 and recs[0]["score"] == 100.0, recs
    assert recs[0]["metric"] == zs.METRIC[dataset] and "step" not in recs[0]
    assert f"{dataset} {zs.DEFAULT_SPLIT[dataset]} {zs.METRIC[dataset]}: 100.00" in capsys.readouterr().out


def test_checkpoints_are_scored_per_update_and_drawn(run, data, tmp_path):
    out, png = tmp_path / "zs.jsonl", tmp_path / "fig2.png"
    for dataset, folder in (("sst-2", "SST-2"), ("dprd", "DPRD")):
        zs.main(["--checkpoints", str(run), "--dataset", dataset, "--data_dir", str(data / folder), "--scores", str(out),
                 "--device", "cpu", "--backend", "torch", "--plot", str(png), "--best", "sst-2=100",
                 "--best", "dprd=100"])
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["dataset"], r["step"]) for r in recs] == [("dprd", 0), ("dprd", 200), ("sst-2", 0), ("sst-2", 200)]
    assert recs[1]["score"] == recs[3]["score"] == 100.0 and recs[0]["chance"] == 50.0
    assert png.stat().st_size > 0
    from gpt1_fast.plot import zero_shot_curves

    curves = zero_shot_curves(recs, {"sst-2": 100.0, "dprd": 90.0})
    assert curves["sst-2 dev"] == ([0, 200], [(recs[2]["score"] - 50) / 50, 1.0])
    assert curves["dprd test"][1][1] == pytest.approx(50 / 40)
    with pytest.raises(ValueError, match="no best score for dprd"):
        zero_shot_curves(recs, {"sst-2": 100.0})


def test_bad_inputs_are_one_line(run, data, tmp_path, capsys):
    base = ["--model_dir", str(run), "--device", "cpu", "--backend", "torch"]
    (tmp_path / "test.c.txt").write_text("A b.\nit\nA,B\n")
    with pytest.raises(SystemExit, match=r"^error: .*test\.c\.txt:1: expected an example of 4 lines"):
        zs.main(base + ["--dataset", "dprd", "--data_dir", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        zs.main(base + ["--dataset", "dprd", "--data_dir", str(tmp_path), "--split", "dev"])
    assert e.value.code == 2 and "dprd has the splits train, test, not 'dev'" in capsys.readouterr().err
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "test.tsv").write_text("index\tsentence\n0\ta film .\n")
    with pytest.raises(SystemExit) as e:
        zs.main(base + ["--dataset", "sst-2", "--data_dir", str(tmp_path / "SST-2"), "--split", "test"])
    assert e.value.code == 2 and "has no labels to score against" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"^error: .*no model here"):
        zs.main(["--model_dir", str(tmp_path), "--dataset", "dprd", "--data_dir", str(data / "DPRD")])
    with pytest.raises(SystemExit) as e:
        zs.main(base + ["--dataset", "dprd", "--data_dir", str(data / "DPRD"), "--best", "dprd:3"])
    assert e.value.code == 2
