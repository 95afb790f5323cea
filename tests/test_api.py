"""The scikit-learn style facade: a tiny model fitted from scratch on a generated task of each kind,
predictions, save -> load in a fresh process -> the same predictions; bad input gives clear errors."""
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("spacy")
pytest.importorskip("ftfy")

from gpt1_fast import Classifier, Entailment, MultipleChoice, Regressor, Similarity  # noqa: E402
from gpt1_fast.api import GPTEstimator  # noqa: E402
from gpt1_fast.errors import CheckpointError  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORDS = "good bad happy sad dog cat ran sat big small red blue".split()


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    from gpt1_fast.text import learn_bpe

    d = tmp_path_factory.mktemp("vocab")
    learn_bpe([" ".join(WORDS)] * 3 + ["The dog ran. A cat sat!"], 20, d / "enc.json", d / "merges.bpe")
    return d


def tiny(cls, vocab, **kw):
    base = dict(from_scratch=True, encoder_path=str(vocab / "enc.json"), bpe_path=str(vocab / "merges.bpe"),
                n_embd=16, n_head=2, n_layer=1, n_batch=8, n_iter=2, lr=1e-3, lr_warmup=0.1, device="cpu",
                backend="torch", verbose=False, n_ctx=32)
    base.update(kw)
    return cls(**base)


def sentence(rng, must):
    words = [rng.choice(WORDS[4:]) for _ in range(rng.randint(2, 5))] + [must]
    rng.shuffle(words)
    return " ".join(words)


def task_data(kind, n=24, seed=0):
    rng = random.Random(seed)
    if kind == "classifier":
        y = [rng.choice(["pos", "neg"]) for _ in range(n)]
        return [sentence(rng, "good" if v == "pos" else "bad") for v in y], y
    if kind == "entailment":
        y = [rng.choice(["yes", "no", "maybe"]) for _ in range(n)]
        return [(sentence(rng, "happy"), sentence(rng, {"yes": "happy", "no": "sad", "maybe": "big"}[v]))
                for v in y], y
    if kind == "similarity":
        y = [rng.choice([0, 1]) for _ in range(n)]
        X = []
        for v in y:
            a = sentence(rng, "red")
            X.append((a, a if v else sentence(rng, "blue")))
        return X, y
    if kind == "multiple_choice":
        y = [rng.randrange(3) for _ in range(n)]
        X = [(sentence(rng, "dog"), [sentence(rng, "good" if k == v else "bad") for k in range(3)]) for v in y]
        return X, y
    if kind == "regressor":
        X = [sentence(rng, "good") for _ in range(n)]
        return X, [float(x.split().count("dog")) for x in X]
    raise KeyError(kind)


KINDS = {"classifier": Classifier, "entailment": Entailment, "similarity": Similarity,
         "multiple_choice": MultipleChoice, "regressor": Regressor}


@pytest.fixture(scope="module")
def fitted(vocab, tmp_path_factory):
    out = {}
    root = tmp_path_factory.mktemp("saved")
    for kind, cls in KINDS.items():
        X, y = task_data(kind)
        Xv, yv = task_data(kind, n=8, seed=1)
        est = tiny(cls, vocab).fit(X, y, eval_set=(Xv, yv) if kind == "classifier" else None)
        est.save(root / kind)
        out[kind] = (est, Xv, root / kind)
    return out


def test_each_kind_fits_and_predicts(fitted):
    for kind, (est, Xv, _) in fitted.items():
        pred = est.predict(Xv)
        assert len(pred) == len(Xv), kind
        one_by_one = np.concatenate([est.decision_function([x]) for x in Xv])
        np.testing.assert_allclose(est.decision_function(Xv), one_by_one, rtol=0, atol=1e-5, err_msg=kind)
        if kind == "regressor":
            assert pred.dtype == np.float64
            with pytest.raises(AttributeError):
                est.predict_proba(Xv)
            continue
        proba = est.predict_proba(Xv)
        assert proba.shape == (len(Xv), len(est.classes_)), kind
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
        assert list(pred) == [est.classes_[i] for i in proba.argmax(1)], kind
    clf = fitted["classifier"][0]
    assert clf.classes_ == ["neg", "pos"] and len(clf.history_) == 2 and "va_acc" in clf.history_[0]
    assert fitted["multiple_choice"][0].classes_ == [0, 1, 2]
    assert fitted["similarity"][0].model_.task_head.n_class == 2  # both orders summed, 2 labels


def test_saved_folder_loads_in_a_fresh_process_with_the_same_predictions(fitted):
    expected = {k: est.predict(Xv).tolist() for k, (est, Xv, _) in fitted.items()}
    for kind, (_, _, path) in fitted.items():
        # a model folder: the estimator's parameters and classes in its config, the vocabulary beside it
        assert sorted(p.name for p in path.iterdir()) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
        meta = json.loads((path / "config.json").read_text())["gpt1_fast"]
        assert meta["extra"]["estimator"] == type(fitted[kind][0]).__name__ and meta["options"]["n_embd"] == 16
    script = ("import json, sys; import gpt1_fast as g; from gpt1_fast.api import GPTEstimator\n"
              "cases = json.loads(sys.stdin.read()); out = {}\n"
              "for kind, (path, X) in cases.items():\n"
              "    X = [tuple(x) if isinstance(x, list) and len(x) == 2 and kind != 'classifier' else x for x in X]\n"
              "    X = [(x[0], list(x[1])) for x in X] if kind == 'multiple_choice' else X\n"
              "    out[kind] = GPTEstimator.load(path).predict(X).tolist()\n"
              "print(json.dumps(out))\n")
    cases = {k: (str(path), Xv) for k, (_, Xv, path) in fitted.items()}
    r = subprocess.run([sys.executable, "-c", script], input=json.dumps(cases), capture_output=True, text=True,
                       cwd=REPO, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                                   "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    for kind in KINDS:
        if kind == "regressor":
            np.testing.assert_allclose(got[kind], expected[kind], rtol=0, atol=1e-6)
        else:
            assert got[kind] == expected[kind], kind


def test_load_checks_the_class_and_the_weights(fitted, tmp_path):
    from gpt1_fast.weights import CheckpointError

    path = fitted["classifier"][2]
    assert isinstance(Classifier.load(path), Classifier)
    with pytest.raises(CheckpointError, match="holds a Classifier, not a Regressor"):
        Regressor.load(path)
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in path.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes()[:-64])
    with pytest.raises(CheckpointError, match="model.safetensors: its SHA-256 differs from the one config.json records"):
        Classifier.load(bad)
    with pytest.raises(CheckpointError, match="nothing: not found"):
        Classifier.load(tmp_path / "nothing")


def test_export_hf_loads_in_transformers(fitted, tmp_path):
    transformers = pytest.importorskip("transformers")
    est = fitted["multiple_choice"][0]
    est.export_hf(tmp_path / "hf")
    hf = transformers.OpenAIGPTDoubleHeadsModel.from_pretrained(tmp_path / "hf")
    assert hf.config.n_embd == 16 and hf.config.vocab_size == est.layout_.pos_offset


def test_pandas_columns(vocab):
    pd = pytest.importorskip("pandas")
    X, y = task_data("entailment")
    df = pd.DataFrame(X, columns=["premise", "hypothesis"])
    est = tiny(Entailment, vocab, n_iter=1).fit(df, pd.Series(y))
    assert list(est.predict(df.head(3))) == list(est.predict(X[:3]))


def test_bad_input_is_a_clear_error(fitted, vocab):
    clf = fitted["classifier"][0]
    X, y = task_data("classifier")
    with pytest.raises(ValueError, match="y has 23 labels for 24 examples"):
        tiny(Classifier, vocab).fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"X\[2\] is an empty string"):
        tiny(Classifier, vocab).fit(X[:2] + ["  "] + X[3:], y)
    with pytest.raises(ValueError, match=r"X\[0\]: expected a pair of texts"):
        tiny(Entailment, vocab).fit(X, y)
    with pytest.raises(ValueError, match="make no batch of n_batch=64"):
        tiny(Classifier, vocab, n_batch=64).fit(X, y)
    with pytest.raises(ValueError, match=r"y\[0\]: expected the index of the right answer \(0..2\)"):
        Xm, _ = task_data("multiple_choice")
        tiny(MultipleChoice, vocab).fit(Xm, ["a"] * len(Xm))
    with pytest.raises(ValueError, match="same number of answers"):
        tiny(MultipleChoice, vocab).fit([("a dog", ["good", "bad"]), ("a cat", ["good"])], [0, 1])
    with pytest.raises(NotFittedError):
        tiny(Classifier, vocab).predict(X)
    with pytest.raises(TypeError, match="single string"):
        clf.predict("good dog")
    with pytest.raises(CheckpointError, match="nonexistent: not found.*release.*from_scratch for a random"):
        Classifier(model_dir="/nonexistent", verbose=False).fit(X, y)


def test_parameters_are_keywords_and_round_trip():
    est = Classifier(n_iter=5, lr=1e-4)
    p = est.get_params()
    assert p["n_iter"] == 5 and p["lm_coef"] == 0.5 and p["n_batch"] == 64 and p["model_dir"] == "model/"
    assert Classifier(**p).get_params() == p
    assert est.set_params(n_iter=1).n_iter == 1 and "n_iter=1" in repr(est)
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        est.set_params(nope=1)
    with pytest.raises(TypeError):
        Classifier(5)  # keywords only
    assert set(GPTEstimator._get_param_names()) >= {"lr_schedule", "b1", "b2", "e", "l2", "vector_l2", "max_grad_norm",
                                                 "n_transfer", "padding", "dtype", "compile", "n_batch_eval"}


def test_every_training_option_of_the_cli_is_a_keyword_with_its_default():
    import inspect

    from gpt1_fast import options, train

    cli_only = {"dataset", "desc", "data_dir", "log_dir", "save_dir", "submission_dir", "cache_dir", "submit",
                "analysis", "opt", "runs_dir", "overwrite", "save_every", "keep", "resume", "stsb_objective",
                "log_every", "diagnostic", "cuda_graphs"}
    defaults = {k: v.default for k, v in inspect.signature(Classifier.__init__).parameters.items() if k != "self"}
    cli = vars(train.build_parser().parse_args([]))
    assert {k: v for k, v in cli.items() if k not in cli_only} == {k: defaults[k] for k in cli if k not in cli_only}
    assert set(defaults) == set(options.ESTIMATOR.names)


def test_regressor_on_pairs_uses_both_orders(vocab, tmp_path):
    rng = random.Random(3)
    X = [(sentence(rng, "red"), sentence(rng, "blue")) for _ in range(16)]
    y = [float(a.count("dog") + b.count("dog")) for a, b in X]
    est = tiny(Regressor, vocab, n_iter=1).fit(X, y)
    assert est.pairs_ and est.model_.regression and type(est.model_.task_head).__name__ == "SimilarityHead"
    swapped = [(b, a) for a, b in X]  # both orders summed: the score of (a, b) is the score of (b, a)
    np.testing.assert_allclose(est.predict(swapped), est.predict(X), rtol=0, atol=1e-5)
    again = Regressor.load(est.save(tmp_path / "r"))
    np.testing.assert_array_equal(again.predict(X), est.predict(X))
    with pytest.raises(ValueError, match="fitted on pairs of texts"):
        again.predict(["good dog"])
